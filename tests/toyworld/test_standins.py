import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lyrics.configuration import MQFormerConfig, SPATIAL_MARKUP_TOKENS
from lyrics.tokenization import mqformer_token_ids
from lyrics.toyworld.standins import (
    ClipStandinConfig,
    LMStandinConfig,
    evaluate_lm,
    evaluate_retrieval,
    train_clip_standin,
    train_lm_standin,
    train_standins,
)
from lyrics.toyworld.standins.corpus import StandinData, document_text, lm_documents
from lyrics.toyworld.standins.vocab import train_clip_tokenizer, train_lm_tokenizer, train_mqformer_tokenizer

TINY_CLIP = ClipStandinConfig(image_size=56, patch_size=14, vision_hidden_size=32, vision_layers=1, text_hidden_size=32,
                              text_layers=1, heads=2, projection_dim=16, steps=4, batch_size=8, warmup=1, eval_images=6)
# One stream of short blocks, one question per drill: the tiny path (the packed default is tested below).
TINY_LM = LMStandinConfig(hidden_size=32, layers=1, heads=2, intermediate_size=64, block_size=32, steps=16, batch_size=4, lr=1e-2,
                          warmup=1, eval_documents=4, pack_drills=False, isolate_documents=False, drill_questions=1,
                          initializer_range=0.02)


@pytest.fixture(scope="module")
def data(tiny_world):
    return StandinData.load(tiny_world[0])


@pytest.fixture(scope="module")
def documents(data):
    return [document_text(doc) for doc in lm_documents(data.train, np.random.default_rng(0))]


def test_corpus_reads_every_kind_of_text(data, documents):
    assert len(data.train) == 36 and len(data.val) == 14
    img = data.train[0]
    assert img.path.is_file() and len(img.captions) == 5 and img.qa and img.objects
    assert all(0 <= v <= 1 for _, box in img.boxes for v in box)
    text = " ".join(documents)
    for piece in ("Question: ", " Answer: ", "<Bbox>(", "</Box>", "<br><T>", "</T>"):
        assert piece in text
    assert "<boxes>" not in text  # dialogue placeholders are replaced by box text


def test_reading_drills_ask_about_their_list_and_carry_loss_only_on_the_answer(data, documents):
    from lyrics.toyworld.annotate import split_tag_pool
    from lyrics.toyworld.standins.corpus import reading_drill
    from lyrics.toyworld.standins.lm import _encode

    pool = split_tag_pool("train")
    rng = np.random.default_rng(0)
    images = [i for i in data.train if len(i.objects) >= 3]
    kinds = {"What color": 0, "Is there": 0, "Where is": 0}
    for img in images * 4:
        doc = reading_drill(img, rng, pool)
        (_, head), (listed, in_list), (question, in_question), (answer, supervised) = doc
        assert (head, in_list, in_question, supervised) == (False, False, False, True)
        tags = [t.split("</T>")[0] for t in listed.split("<T>")[1:]]
        assert 1 <= len(tags) <= len(img.objects) and set(tags) <= {t for t, _ in img.objects}
        kind = next(k for k in kinds if question.startswith("\n" + k))
        kinds[kind] += 1
        if kind == "What color":
            shape = question.split("the ")[1].split("?")[0]
            assert [t.split()[0] for t in tags if t.endswith(shape)] == [answer.strip()]
        elif kind == "Is there":
            asked = " ".join(question.split(" in the image?")[0].split()[3:])
            assert asked in pool and (answer == " yes") == (asked in tags)  # never a zero-shot pair
        else:
            assert answer.startswith(" <Bbox>(") and answer.endswith("</Box>")
    assert min(kinds.values()) > 0
    # only the answer (and the closing </s>) carries next-token loss
    tokenizer = train_lm_tokenizer(documents)
    doc = reading_drill(images[0], rng, pool)
    ids, labels, weights = _encode(tokenizer, [doc], drill_weight=3.0)[0]
    ids, labels, weights = torch.tensor(ids), torch.tensor(labels), torch.tensor(weights)
    assert torch.equal(weights, torch.full_like(weights, 3.0))
    assert tokenizer.decode(ids[labels != -100]).replace(" ", "") == (doc[-1][0] + "</s>").replace(" ", "")


def test_reading_drill_probe_options_list_enough_objects_and_can_ask_first(data):
    """`min_objects` and `question_first` are the probes of `bench/lm_reading.py`."""
    from lyrics.toyworld.annotate import split_tag_pool
    from lyrics.toyworld.standins.corpus import reading_drill

    pool, rng = split_tag_pool("train"), np.random.default_rng(0)
    images = [i for i in data.train if len(i.objects) >= 3]
    counts = [reading_drill(img, rng, pool, min_objects=3)[1][0].count("<br>") for img in images * 3]
    assert min(counts) == 3 and max(counts) > 3
    assert min(reading_drill(img, rng, pool)[1][0].count("<br>") for img in images * 3) == 1  # default: 1 to all
    (head, _), _, (tail, _), (answer, supervised) = reading_drill(images[0], rng, pool, question_first=True)
    assert head.startswith("USER: ") and head.endswith("?\nObjects: ") and tail == " ASSISTANT:" and supervised


def test_reading_drill_asks_several_questions_about_one_list(data):
    """`questions` > 1: one list, then that many supervised turns (multi-query recall)."""
    from lyrics.toyworld.annotate import split_tag_pool
    from lyrics.toyworld.standins.corpus import reading_drill

    pool, rng = split_tag_pool("train"), np.random.default_rng(0)
    images = [i for i in data.train if len(i.objects) >= 3]
    for img in images[:5]:
        doc = reading_drill(img, rng, pool, questions=5)
        assert len(doc) == 2 + 2 * 5 and doc[0] == ("USER: Objects: ", False) and not doc[1][1]
        turns = doc[2:]
        assert all(q.startswith("\n") and q.endswith(" ASSISTANT:") and not sq for q, sq in turns[0::2])
        assert all(sa and a.startswith(" ") for a, sa in turns[1::2])
        assert document_text(doc).count("<br>") == doc[1][0].count("<br>")  # the list is given once
    assert len(reading_drill(images[0], rng, pool)) == 4  # the default: one question


def test_reading_drill_kinds_weigh_the_questions(data):
    """`kinds` (colour, existence, box) sets how often each question is asked; a zero weight never asks it."""
    from lyrics.toyworld.annotate import split_tag_pool
    from lyrics.toyworld.standins.corpus import reading_drill

    pool, rng = split_tag_pool("train"), np.random.default_rng(0)
    images = [i for i in data.train if len(i.objects) >= 3]
    text = "".join(document_text(reading_drill(img, rng, pool, questions=8, kinds=(1, 3, 0))) for img in images)
    colour, exists = text.count("What color"), text.count("Is there")
    assert "Where is" not in text and exists > 2 * colour > 0


def test_reading_drill_prefix_puts_a_caption_before_the_list(data):
    """`prefix`: some drills read the list behind other text, as stage 2 puts the image's tokens there."""
    from lyrics.toyworld.annotate import split_tag_pool
    from lyrics.toyworld.standins.corpus import reading_drill

    pool, rng = split_tag_pool("train"), np.random.default_rng(0)
    heads = [(img, reading_drill(img, rng, pool, prefix=0.5)[0]) for img in data.train[:20]]
    prefixed = [(img, head) for img, (head, _) in heads if head != "USER: Objects: "]
    assert 0 < len(prefixed) < len(heads) and all(not supervised for _, (_, supervised) in heads)
    for img, head in prefixed:
        assert head.startswith("USER: ") and head.endswith("\nObjects: ") and head[6:-10] in img.captions


def test_lm_standin_initial_weights_follow_initializer_range(documents):
    from lyrics.toyworld.standins.lm import build_model

    tokenizer = train_lm_tokenizer(documents)
    torch.manual_seed(0)
    for std in (0.02, 0.1):
        model = build_model(LMStandinConfig(hidden_size=64, intermediate_size=128, heads=2, initializer_range=std), tokenizer)
        assert model.config.initializer_range == std
        assert model.model.layers[0].self_attn.q_proj.weight.std().item() == pytest.approx(std, rel=0.1)


def test_lm_tokenizer_numbers_markup_and_round_trip(documents, tmp_path):
    from transformers import AutoTokenizer

    tok = train_lm_tokenizer(documents)
    for n in (0, 7, 42, 100, 537, 999):
        assert tok.tokenize(f"({n}")[1:] == [str(n)]  # one token each, as in box text
    assert len(tok.tokenize("(123,456),(789,999)")) == 9
    for markup in SPATIAL_MARKUP_TOKENS:
        assert tok.tokenize(markup) == [markup]
    assert tok.tokenize("<image>") == ["<image>"] and "<image>" in tok.all_special_tokens
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<s>", "</s>", "<pad>", "<unk>")
    # a tag's words are the same tokens as the same words in running text (what reading a list needs)
    tagged = tok.tokenize("<br><T>red star</T><Bbox>(1,2),(3,4)</Box></br>")
    assert tagged[2:4] == tok.tokenize("a red star")[1:3] == ["Ġred", "Ġstar"]
    text = documents[0]
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id
    # decoding puts a space after markup tokens and before the first word; re-encoding is lossless
    decoded = tok.decode(ids, skip_special_tokens=True)
    assert tok(decoded).input_ids == ids and decoded.replace("> ", ">").strip() == text.replace("> ", ">")
    sentence = "Write a short description for the image."
    assert tok.decode(tok(sentence).input_ids, skip_special_tokens=True).strip() == sentence
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text).input_ids == ids and loaded.convert_tokens_to_ids("<image>") == tok.convert_tokens_to_ids("<image>")


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


def test_lm_standin_learns_and_loads_back(tiny_world, data, tmp_path, one_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log = train_lm_standin(tiny_world[0], tmp_path / "lm", TINY_LM, data=data)
    assert np.mean(log.loss[-2:]) < log.loss[0] - 1.5  # it learns even in a few steps
    assert log.loss[0] == pytest.approx(log.metrics["uniform_loss"], abs=0.5)  # an untrained model is near uniform
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lm").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "lm")
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.vocab_size == len(tokenizer)
    docs = lm_documents(data.val[: TINY_LM.eval_documents], np.random.default_rng(TINY_LM.seed + 1), drills_per_image=TINY_LM.drills_per_image)
    assert evaluate_lm(model, tokenizer, docs, TINY_LM.block_size)["loss"] == pytest.approx(log.metrics["val"]["loss"], abs=1e-6)
    saved = json.loads((tmp_path / "lm" / "train_log.json").read_text())
    assert saved["final_loss"] == pytest.approx(log.final_loss) and len(saved["loss"]) == TINY_LM.steps


def test_supervised_loss_is_the_causal_lm_loss(data, documents, one_thread):
    from lyrics.toyworld.standins.lm import LMStandinConfig, build_model, pack_blocks, supervised_loss

    tokenizer = train_lm_tokenizer(documents)
    documents = lm_documents(data.train, np.random.default_rng(0))  # with drills: labels -100 on their lists
    drills, plain = [d for d in documents if len(d) > 1], [d for d in documents if len(d) == 1]
    documents = drills[:3] + plain[:1] + drills[3:10]
    torch.manual_seed(0)
    model = build_model(LMStandinConfig(hidden_size=32, intermediate_size=64, heads=2), tokenizer).eval()
    packed = pack_blocks(tokenizer, documents, 192, drill_weight=5.0)
    ids, labels, weights = (packed[k][:4] for k in ("input_ids", "labels", "weights"))
    assert (labels == -100).any() and (labels != -100).any() and {1.0, 5.0} <= set(weights.unique().tolist())
    with torch.no_grad():
        assert supervised_loss(model, ids, labels).item() == pytest.approx(model(input_ids=ids, labels=labels).loss.item(), rel=1e-5)
        weighted = supervised_loss(model, ids, labels, weights).item()
        per_token = torch.nn.functional.cross_entropy(model(input_ids=ids).logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")
        w = weights[:, 1:] * (labels[:, 1:] != -100)
        assert weighted == pytest.approx(((per_token * w).sum() / w.sum()).item(), rel=1e-5)


def test_packed_blocks_hold_whole_drills_that_see_only_themselves(data, documents, one_thread):
    from lyrics.toyworld.standins.lm import LMStandinConfig, _encode, build_model, pack_blocks

    tokenizer = train_lm_tokenizer(documents)
    documents = lm_documents(data.train, np.random.default_rng(0), drills_per_image=4)
    packed = pack_blocks(tokenizer, documents, 192, drill_weight=3.0)
    ids, labels, weights, positions = (packed[k] for k in ("input_ids", "labels", "weights", "position_ids"))
    assert ids.shape == labels.shape == weights.shape == positions.shape and ids.shape[1] == 192
    assert (weights == 0).float().mean() < 0.02  # plain text fills the room a waiting drill leaves
    # every drill appears whole, from its <s> (position 0) to its </s>, inside one block
    encoded = [e for d, e in zip(documents, _encode(tokenizer, documents, 3.0)) if len(d) > 1 and len(e[0]) <= 192]
    rows = [r.tolist() for r in ids]
    found = 0
    for drill_ids, _, _ in encoded:
        n = len(drill_ids)
        hits = [(r, i) for r, row in enumerate(rows) for i in range(192 - n + 1) if row[i : i + n] == drill_ids]
        assert hits and all(positions[r, i : i + n].tolist() == list(range(n)) for r, i in hits)
        found += 1
    assert found == sum(len(d) > 1 for d in documents) > 0  # no drill longer than a block here, none lost
    assert (labels[weights == 3.0] != -100).any() and (labels[weights == 1.0] != -100).any()
    # a document in a packed block is computed as if alone: attention stops at its <s>
    torch.manual_seed(0)
    model = build_model(LMStandinConfig(hidden_size=32, intermediate_size=64, heads=2), tokenizer).eval()
    row = next(r for r in range(len(ids)) if (positions[r] == 0).sum() >= 3)
    starts = (positions[row] == 0).nonzero().flatten().tolist() + [192]
    with torch.no_grad():
        together = model.model(input_ids=ids[row : row + 1], position_ids=positions[row : row + 1], use_cache=False).last_hidden_state[0]
        for a, b in zip(starts[1:-1], starts[2:]):
            alone = model.model(input_ids=ids[row : row + 1, a:b], use_cache=False).last_hidden_state[0]
            assert torch.allclose(alone, together[a:b], atol=1e-5)
        unmasked = model.model(input_ids=ids[row : row + 1], use_cache=False).last_hidden_state[0]
        assert not torch.allclose(unmasked[starts[1] : starts[2]], together[starts[1] : starts[2]], atol=1e-3)


def test_lm_standin_trains_on_packed_isolated_drills(data, documents, one_thread):
    from dataclasses import replace

    from lyrics.toyworld.standins.lm import fit_lm
    from lyrics.toyworld.standins.training import seed_everything

    tokenizer = train_lm_tokenizer(documents)
    docs = lm_documents(data.train, np.random.default_rng(0), drills_per_image=2)
    config = replace(TINY_LM, pack_drills=True, isolate_documents=True, block_size=192, steps=12)
    _, log = fit_lm(config, tokenizer, docs, seed_everything(0))
    assert np.mean(log.loss[-3:]) < log.loss[0] - 1.0 and log.metrics["train_tokens"] % 192 == 0
    with pytest.raises(ValueError, match="isolate_documents needs pack_drills"):
        replace(TINY_LM, isolate_documents=True)  # a stream has no document boundaries to isolate


def test_train_standins_reuses_finished_runs(tiny_world, tmp_path, one_thread):
    root = tiny_world[0]
    paths = train_standins(root, tmp_path / "standins", clip=TINY_CLIP, lm=TINY_LM)
    assert (paths.clip / "model.safetensors").is_file() and (paths.lm / "model.safetensors").is_file()
    assert MQFormerConfig(**paths.mqformer_token_ids).vocab_size > 100
    stamps = {p: p.stat().st_mtime_ns for p in (paths.clip / "model.safetensors", paths.lm / "model.safetensors")}
    again = train_standins(root, tmp_path / "standins", clip=TINY_CLIP, lm=TINY_LM)
    assert again.logs["clip"]["loss"] == paths.logs["clip"]["loss"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained
    changed = train_standins(root, tmp_path / "standins", clip=TINY_CLIP, lm=LMStandinConfig(**{**TINY_LM.__dict__, "steps": 3}))
    assert len(changed.logs["lm"]["loss"]) == 3 and (paths.clip / "model.safetensors").stat().st_mtime_ns == stamps[paths.clip / "model.safetensors"]


def test_a_finished_standin_is_found_again_with_a_tuple_in_its_config(tmp_path):
    """Saved as JSON, a tuple field (`drill_kinds`) reads back as a list: the run must still count as finished."""
    from dataclasses import asdict

    from lyrics.toyworld.standins import _finished
    from lyrics.toyworld.standins.training import LOG_NAME

    config = asdict(LMStandinConfig(drill_kinds=(1, 4, 1)))
    (tmp_path / LOG_NAME).write_text(json.dumps({"config": config, "world": {"seed": 0}}))
    assert _finished(tmp_path, config, {"seed": 0})["config"]["drill_kinds"] == [1, 4, 1]
    assert _finished(tmp_path, asdict(LMStandinConfig(drill_kinds=(1, 8, 1))), {"seed": 0}) is None
