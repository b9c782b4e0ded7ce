"""Tokenizers for the stand-ins, trained on toy-world text with the `tokenizers` library.

* `train_clip_tokenizer`: lower-casing byte-level BPE with CLIP's `<|startoftext|>` /
  `<|endoftext|>` framing; the end token's id goes into `CLIPTextConfig.eos_token_id` (the text
  tower pools at its first occurrence).
* `train_mqformer_tokenizer`: BERT-style WordPiece (lower-casing, [PAD] [UNK] [CLS] [SEP] [MASK],
  `[CLS] text [SEP]` framing), then `lyrics.tokenization.prepare_mqformer_tokenizer`. Every integer
  0-999 is a whole word of the vocabulary, so the numbers of box text are one token each.

The WordPiece vocabulary is chosen here, not by `tokenizers.trainers.WordPieceTrainer`: that trainer
gives a different vocabulary from one process to the next on the same text (its `##` continuation
tokens get ids in hash-map iteration order, and the ids break ties between equally frequent merges;
huggingface/tokenizers issue 1794, measured here: 592 of 1,266 ids differed between two quickstart
runs). The toy language has a few hundred words, so the vocabulary is every character (word-initial
and `##` continuation), then whole words by frequency, ties by spelling: the same text always gives
the same ids, and the `tokenizers` WordPiece model does the tokenizing. The BPE trainer of the CLIP
stand-in has no continuation prefix and repeats exactly (tests/toyworld/test_standins.py).

All return transformers fast tokenizers (`PreTrainedTokenizerFast`) that save with
`save_pretrained` and load back with `AutoTokenizer.from_pretrained`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from lyrics.tokenization import prepare_mqformer_tokenizer

CLIP_SPECIAL_TOKENS = ("<|pad|>", "<|unk|>", "<|startoftext|>", "<|endoftext|>")
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
NUMBERS = tuple(str(n) for n in range(1000))


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


def wordpiece_vocabulary(
    texts: Iterable[str], normalizer, pre_tokenizer, vocab_size: int, special_tokens: Iterable[str], required: Iterable[str] = ()
) -> dict[str, int]:
    """A deterministic WordPiece vocabulary (module docstring): special tokens, every character as a
    word start and as a `##` continuation (sorted), the `required` words, then the text's whole
    words by count (ties by spelling) up to `vocab_size`. A word left out is split into the longest
    pieces present, down to characters."""
    required = list(required)
    words: Counter[str] = Counter()
    for text in texts:
        words.update(word for word, _span in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for word in (*words, *required) for c in word})
    vocab: dict[str, int] = {}
    for token in (*special_tokens, *chars, *(f"##{c}" for c in chars), *required):
        vocab.setdefault(token, len(vocab))
    if len(vocab) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the {len(vocab)} special tokens, characters and required words")
    for word, _count in sorted(words.items(), key=lambda item: (-item[1], item[0])):
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(word, len(vocab))
    return vocab


def train_mqformer_tokenizer(texts: Iterable[str], vocab_size: int = 1536) -> PreTrainedTokenizerFast:
    """BERT-style WordPiece on toy text (deterministic, see `wordpiece_vocabulary`), prepared for the
    MQ-Former's objectives."""
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # Every coordinate of box text is a whole word, however rare.
    vocab = wordpiece_vocabulary(texts, normalizer, pre_tokenizer, vocab_size, BERT_SPECIAL_TOKENS, required=NUMBERS)
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )
    return prepare_mqformer_tokenizer(fast)
