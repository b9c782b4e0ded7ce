"""The MQ-Former's text vocabulary: a BERT WordPiece tokenizer plus the tokens the objectives need.

Paper section 3.1/3.2: the text transformer reads "[BOS] spatial representation [CLS] caption";
ICG replaces [CLS] by [DEC], MSP replaces [BOS] by [MLM] and masks whole objects with [MASK]. BERT has
[CLS], [SEP], [MASK] and [PAD]; we append [DEC], [BOS], [MLM] (in that order, so [DEC] keeps LAVIS'
id 30522 on bert-base-uncased) and the six markup tokens of the spatial representation, which must
never be split or lower-cased by WordPiece.
"""

from __future__ import annotations

from typing import Any

from lyrics.configuration import MQFORMER_SPECIAL_TOKENS, SPATIAL_MARKUP_TOKENS


def prepare_mqformer_tokenizer(tokenizer: Any) -> Any:
    """Add the objectives' special tokens and the spatial markup to a BERT-style tokenizer, in place.

    Idempotent: tokens already present keep their ids.
    """
    missing = [t for t in (*MQFORMER_SPECIAL_TOKENS, *SPATIAL_MARKUP_TOKENS) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    for name in ("cls_token", "sep_token", "mask_token", "pad_token"):
        if getattr(tokenizer, name, None) is None:
            raise ValueError(f"the MQ-Former tokenizer needs a BERT-style {name}; {type(tokenizer).__name__} has none")
    return tokenizer


def mqformer_token_ids(tokenizer: Any) -> dict[str, int]:
    """The `MQFormerConfig` fields that depend on the tokenizer: vocabulary size and special-token ids."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in MQFORMER_SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer lacks {missing}: call prepare_mqformer_tokenizer first")
    return {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "mask_token_id": tokenizer.mask_token_id,
        "dec_token_id": vocab["[DEC]"],
        "bos_token_id": vocab["[BOS]"],
        "mlm_token_id": vocab["[MLM]"],
    }


def load_mqformer_tokenizer(name_or_path: str = "google-bert/bert-base-uncased", **kwargs: Any) -> Any:
    """Load a BERT tokenizer with transformers' `AutoTokenizer` and prepare it for the MQ-Former."""
    from transformers import AutoTokenizer

    return prepare_mqformer_tokenizer(AutoTokenizer.from_pretrained(name_or_path, **kwargs))
