import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lyrics.configuration import MQFormerConfig
from lyrics.tokenization import mqformer_token_ids
from lyrics.toyworld.standins import (
    MQFORMER_CORPUS,
    ClipStandinConfig,
    StandinPaths,
    evaluate_retrieval,
    train_clip_standin,
    train_standins,
)
from lyrics.toyworld.standins.corpus import StandinData, vocabulary_texts
from lyrics.toyworld.standins.vocab import NUMBERS, train_clip_tokenizer, train_mqformer_tokenizer

TINY_CLIP = ClipStandinConfig(image_size=56, patch_size=14, vision_hidden_size=32, vision_layers=1, text_hidden_size=32,
                              text_layers=1, heads=2, projection_dim=16, steps=4, batch_size=8, warmup=1, eval_images=6)


@pytest.fixture(scope="module")
def data(tiny_world):
    return StandinData.load(tiny_world[0])


@pytest.fixture(scope="module")
def documents(data):
    return vocabulary_texts(data.train)


def test_corpus_reads_every_kind_of_text(data, documents):
    assert len(data.train) == 36 and len(data.val) == 14
    img = data.train[0]
    assert img.path.is_file() and len(img.captions) == 5 and img.qa and img.objects and img.dialogues
    assert all(0 <= v <= 1 for _, box in img.boxes for v in box)
    assert len(documents) == len(data.train)  # one document per image, holding all of its texts
    first = documents[0]
    assert all(caption in first for caption in img.captions)
    assert all(f"Question: {q} Answer: {a}" in first for q, a in img.qa + img.dialogues)
    assert f"{img.boxes[0][0]} is at <Bbox>(" in first and "Objects: <br><T>" in first
    text = " ".join(documents)
    for piece in ("Question: ", " Answer: ", "<Bbox>(", "</Box>", "<br><T>", "</T>"):
        assert piece in text
    assert "<boxes>" not in text  # dialogue placeholders are replaced by box text


def test_clip_and_mqformer_tokenizers(data, documents, tmp_path):
    from transformers import AutoTokenizer

    clip_tok = train_clip_tokenizer(c for img in data.train for c in img.captions)
    ids = clip_tok("A Large RED circle.").input_ids
    assert ids[0] == clip_tok.bos_token_id and ids[-1] == clip_tok.eos_token_id
    assert clip_tok.eos_token_id != 2  # CLIP's text tower treats eos id 2 as a legacy marker
    assert ids == clip_tok("a large red circle.").input_ids  # lower-cased

    mq = train_mqformer_tokenizer(documents)
    fields = mqformer_token_ids(mq)
    config = MQFormerConfig(**fields)
    assert config.vocab_size == len(mq) and mq.convert_ids_to_tokens(config.mask_token_id) == "[MASK]"
    tokens = mq.tokenize("<br><T>Red circle</T><Bbox>(12,345),(678,999)</Box></br>")
    assert tokens[:2] == ["<br>", "<T>"] and "red" in tokens and "345" in tokens and "</Box>" in tokens
    assert [n for n in NUMBERS if mq.tokenize(f"({n},") != ["(", n, ","]] == []  # every coordinate is one token
    encoded = mq("a red circle").input_ids
    assert encoded[0] == mq.cls_token_id and encoded[-1] == mq.sep_token_id
    mq.save_pretrained(tmp_path)
    assert mqformer_token_ids(AutoTokenizer.from_pretrained(tmp_path)) == fields


def test_clip_standin_trains_deterministically_and_loads_back(tiny_world, data, tmp_path, one_thread):
    from transformers import AutoProcessor, CLIPModel, CLIPVisionModel

    from lyrics.models.image_encoder import ImageEncoder

    root = tiny_world[0]
    log = train_clip_standin(root, tmp_path / "a", TINY_CLIP, data=data)
    again = train_clip_standin(root, tmp_path / "b", TINY_CLIP, data=data)
    assert log.loss == again.loss and len(log.loss) == TINY_CLIP.steps
    weights_a, weights_b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)

    saved = json.loads((tmp_path / "a" / "train_log.json").read_text())
    assert saved["loss"] == log.loss and saved["config"]["steps"] == 4 and saved["world"]["seed"] == 7

    model = CLIPModel.from_pretrained(tmp_path / "a").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "a")
    vision = CLIPVisionModel.from_pretrained(tmp_path / "a").eval()
    pixels = processor(images=[Image.open(data.val[0].path)], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 56, 56)
    with torch.no_grad():
        assert torch.equal(vision(pixel_values=pixels).last_hidden_state, model.vision_model(pixel_values=pixels).last_hidden_state)
    # the metrics computed before saving are reproduced exactly by the reloaded checkpoint
    assert evaluate_retrieval(model, processor, data.val[: TINY_CLIP.eval_images]) == log.metrics["val_retrieval"]
    encoder = ImageEncoder.from_pretrained(str(tmp_path / "a"), feature_layer=-1)
    assert encoder(pixels).shape == (1, 1 + (56 // 14) ** 2, 32)


def test_train_standins_trains_clip_and_the_tokenizer_and_reuses_them(tiny_world, tmp_path, one_thread):
    from transformers import AutoTokenizer

    root, out = tiny_world[0], tmp_path / "standins"
    paths = train_standins(root, out, clip=TINY_CLIP)
    assert isinstance(paths, StandinPaths) and not hasattr(paths, "lm")
    assert (paths.clip, paths.mqformer_tokenizer) == (out / "clip", out / "mqformer_tokenizer")
    assert sorted(p.name for p in out.iterdir()) == ["clip", "mqformer_tokenizer"]  # no LLM is trained here
    assert (paths.clip / "model.safetensors").is_file() and list(paths.logs) == ["clip"]
    assert len(paths.logs["clip"]["loss"]) == TINY_CLIP.steps
    tokenizer = AutoTokenizer.from_pretrained(paths.mqformer_tokenizer)
    assert mqformer_token_ids(tokenizer) == paths.mqformer_token_ids and MQFormerConfig(**paths.mqformer_token_ids).vocab_size > 100

    files = (paths.clip / "model.safetensors", paths.mqformer_tokenizer / "mqformer_token_ids.json")
    stamps = {p: p.stat().st_mtime_ns for p in files}
    again = train_standins(root, out, clip=TINY_CLIP)
    assert again.logs["clip"]["loss"] == paths.logs["clip"]["loss"] and again.mqformer_token_ids == paths.mqformer_token_ids
    assert {p: p.stat().st_mtime_ns for p in files} == stamps  # nothing retrained

    changed = train_standins(root, out, clip=ClipStandinConfig(**{**TINY_CLIP.__dict__, "steps": 3}))
    assert len(changed.logs["clip"]["loss"]) == 3 and (out / "clip" / "model.safetensors").stat().st_mtime_ns != stamps[files[0]]
    assert files[1].stat().st_mtime_ns == stamps[files[1]]  # the tokenizer does not depend on CLIP's config


def test_a_saved_tokenizer_of_other_text_is_rebuilt(tiny_world, tmp_path, one_thread):
    """A vocabulary saved from other training text (no or another `corpus` in its record) is rebuilt."""
    root, out = tiny_world[0], tmp_path / "standins"
    paths = train_standins(root, out, clip=TINY_CLIP)
    record_path = paths.mqformer_tokenizer / "mqformer_token_ids.json"
    record = json.loads(record_path.read_text())
    assert record["corpus"] == MQFORMER_CORPUS and record["token_ids"] == paths.mqformer_token_ids
    del record["corpus"]  # as the vocabulary trained on the LM stand-in's documents was saved
    record["token_ids"] = {**record["token_ids"], "vocab_size": 7}
    record_path.write_text(json.dumps(record))
    again = train_standins(root, out, clip=TINY_CLIP)
    assert again.mqformer_token_ids == paths.mqformer_token_ids and json.loads(record_path.read_text())["corpus"] == MQFORMER_CORPUS


def test_a_finished_standin_is_found_again_with_a_tuple_in_its_config(tmp_path):
    """Saved as JSON, a tuple field reads back as a list: the run must still count as finished."""
    from lyrics.toyworld.standins import _finished
    from lyrics.toyworld.standins.training import LOG_NAME

    config = {"steps": 4, "sizes": (1, 4, 1)}
    (tmp_path / LOG_NAME).write_text(json.dumps({"config": config, "world": {"seed": 0}}))
    assert _finished(tmp_path, config, {"seed": 0})["config"]["sizes"] == [1, 4, 1]
    assert _finished(tmp_path, {**config, "sizes": (1, 8, 1)}, {"seed": 0}) is None
    assert _finished(tmp_path, config, {"seed": 1}) is None  # another world
    assert _finished(tmp_path / "missing", config, {"seed": 0}) is None


def test_mqformer_vocabulary_is_the_same_in_every_process(documents, tmp_path):
    """tokenizers' WordPiece trainer gave each process its own vocabulary (hash-map order); ours must
    not: two fresh interpreters (different string-hash seeds) build identical tokenizer files."""
    import os
    import subprocess
    import sys

    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps(documents[:40]))
    script = (
        "import json, sys; from lyrics.toyworld.standins.vocab import train_mqformer_tokenizer; "
        "tok = train_mqformer_tokenizer(json.loads(open(sys.argv[1]).read())); tok.save_pretrained(sys.argv[2])"
    )
    files = []
    for n, hash_seed in enumerate(("1", "2")):
        out = tmp_path / f"tok{n}"
        subprocess.run([sys.executable, "-c", script, str(corpus), str(out)], check=True, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        files.append((out / "tokenizer.json").read_bytes())
    assert files[0] == files[1]
    vocab = json.loads(files[0])["model"]["vocab"]
    assert "circle" in vocab and "##e" in vocab and "999" in vocab
