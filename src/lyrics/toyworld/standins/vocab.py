"""Tokenizers for the stand-ins, trained on toy-world text with the `tokenizers` library.

* `train_clip_tokenizer`: lower-casing byte-level BPE with CLIP's `<|startoftext|>` /
  `<|endoftext|>` framing; the end token's id goes into `CLIPTextConfig.eos_token_id` (the text
  tower pools at its first occurrence).
* `train_mqformer_tokenizer`: BERT-style WordPiece (lower-casing, [PAD] [UNK] [CLS] [SEP] [MASK],
  `[CLS] text [SEP]` framing), then `lyrics.tokenization.prepare_mqformer_tokenizer`. Every integer
  0-999 is fed to the trainer, so the numbers of box text are whole words of the vocabulary.

All return transformers fast tokenizers (`PreTrainedTokenizerFast`) that save with
`save_pretrained` and load back with `AutoTokenizer.from_pretrained`.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from lyrics.tokenization import prepare_mqformer_tokenizer

CLIP_SPECIAL_TOKENS = ("<|pad|>", "<|unk|>", "<|startoftext|>", "<|endoftext|>")
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
NUMBERS = tuple(str(n) for n in range(1000))


def _number_lines(repeat: int = 3) -> list[str]:
    # Every number, glued to punctuation as in box text, so each is a word the trainer sees.
    return ["(" + "),(".join(NUMBERS) + ")"] * repeat


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
