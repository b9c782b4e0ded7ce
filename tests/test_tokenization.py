import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lyrics.configuration import MQFormerConfig
from lyrics.refiner.spatial import format_spatial
from lyrics.tokenization import mqformer_token_ids, prepare_mqformer_tokenizer

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "circle", "(", ")", ",", "1", "##2", "t", "br", "<", ">", "/"]


def bert_like():
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )


def test_special_tokens_are_appended_in_a_fixed_order_and_never_split(tmp_path):
    tokenizer = prepare_mqformer_tokenizer(bert_like())
    ids = mqformer_token_ids(tokenizer)
    assert (ids["dec_token_id"], ids["bos_token_id"], ids["mlm_token_id"]) == (17, 18, 19)
    assert ids["vocab_size"] == len(WORDS) + 9
    text = "[BOS]" + format_spatial([("Red circle", (0.012, 0.012, 0.001, 0.001))]) + "[CLS] red"
    tokens = tokenizer.tokenize(text)
    for markup in ("[BOS]", "<br>", "<T>", "</T>", "<Bbox>", "</Box>", "</br>", "[CLS]"):
        assert markup in tokens
    assert "red" in tokens  # ordinary words are still lower-cased
    # ids survive save/load and feed straight into the config
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert mqformer_token_ids(reloaded) == ids
    assert MQFormerConfig(**ids).mlm_token_id == 19
    # idempotent
    assert len(prepare_mqformer_tokenizer(reloaded)) == ids["vocab_size"]


def test_unprepared_tokenizer_is_refused():
    with pytest.raises(ValueError, match="prepare_mqformer_tokenizer"):
        mqformer_token_ids(bert_like())
