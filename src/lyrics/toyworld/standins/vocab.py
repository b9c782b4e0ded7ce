"""Tokenizers for the stand-ins, trained on toy-world text with the `tokenizers` library.

* `train_lm_tokenizer`: byte-level BPE for the LLaMA-architecture LM (open vocabulary: any text
  encodes), with `<s>`, `</s>`, `<pad>`, `<unk>` and `<image>` special, the spatial markup tokens
  as whole added tokens, and every integer 0-999 a single token, so a box
  `(123,456),(789,999)` costs 9 tokens. The digits-as-words guarantee comes from the byte-level
  pre-tokenizer (a run of digits is one word) and from feeding every number to the trainer; it is
  checked after training.
* `train_clip_tokenizer`: lower-casing byte-level BPE with CLIP's `<|startoftext|>` /
  `<|endoftext|>` framing; the end token's id goes into `CLIPTextConfig.eos_token_id` (the text
  tower pools at its first occurrence).
* `train_mqformer_tokenizer`: BERT-style WordPiece (lower-casing, [PAD] [UNK] [CLS] [SEP] [MASK],
  `[CLS] text [SEP]` framing), then `lyrics.tokenization.prepare_mqformer_tokenizer`.

All return transformers fast tokenizers (`PreTrainedTokenizerFast`) that save with
`save_pretrained` and load back with `AutoTokenizer.from_pretrained`.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from lyrics.configuration import SPATIAL_MARKUP_TOKENS
from lyrics.tokenization import prepare_mqformer_tokenizer

LM_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")  # LLaMA order: unk 0, bos 1, eos 2
CLIP_SPECIAL_TOKENS = ("<|pad|>", "<|unk|>", "<|startoftext|>", "<|endoftext|>")
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
NUMBERS = tuple(str(n) for n in range(1000))


def _number_lines(repeat: int = 3) -> list[str]:
    # Every number, glued to punctuation as in box text, so each becomes one BPE word of its own.
    return ["(" + "),(".join(NUMBERS) + ")"] * repeat


def train_lm_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Byte-level BPE with numbers 0-999 as single tokens (see module docstring)."""
    tok = Tokenizer(models.BPE(unk_token=None))
    # add_prefix_space: the spatial markup tokens are added tokens, which split the text before
    # pre-tokenization, so "<T>red star</T>" gives "Ġred Ġstar", the same ids as "a red star". Without
    # it the tag's first word is a different token ("red") from the same word in questions and
    # answers ("Ġred"), and reading a colour out of the spatial text needs a learned word-to-word map.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(LM_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*texts, *_number_lines()], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=["<image>"],
    )
    fast.add_tokens(list(SPATIAL_MARKUP_TOKENS))  # whole tokens, but not stripped when decoding
    # as in box text: "(" then the number (a bare "7" would get the prefix space)
    split_numbers = [n for n in NUMBERS if fast.tokenize(f"({n}")[1:] != [n]]
    if split_numbers:
        raise ValueError(
            f"LM tokenizer: {len(split_numbers)} numbers are not single tokens (e.g. {split_numbers[:3]}); "
            f"raise vocab_size (now {vocab_size})"
        )
    return fast


def train_clip_tokenizer(texts: Iterable[str], vocab_size: int = 768) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, special_tokens=list(CLIP_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|pad|>", unk_token="<|unk|>"
    )


def train_mqformer_tokenizer(texts: Iterable[str], vocab_size: int = 1536) -> PreTrainedTokenizerFast:
    """BERT-style WordPiece trained on toy text, prepared for the MQ-Former's objectives."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=list(BERT_SPECIAL_TOKENS), show_progress=False)
    tok.train_from_iterator([*texts, *_number_lines()], trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )
    return prepare_mqformer_tokenizer(fast)
