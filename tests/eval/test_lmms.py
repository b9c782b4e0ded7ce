"""The lmms-eval adapter: registered through the `lmms_eval.models` entry point, `generate_until` on a
fake task built here (lmms-eval's own `Instance` objects and request layout), no log-likelihood."""

import pytest
from evalkit import shared_checkpoint, toy_scene

import lyrics.eval.lmms as adapter
from lyrics.eval.predictor import LyricsPredictor, Prompt

needs_lmms_eval = pytest.mark.skipif(
    adapter.LMMS_EVAL_IMPORT_ERROR is not None,
    reason=f"lmms-eval is not importable here: {adapter.LMMS_EVAL_IMPORT_ERROR!r} (pip install 'lyrics[lmms]')",
)


def test_adapter_imports_without_lmms_eval_and_says_how_to_install(monkeypatch):
    monkeypatch.setattr(adapter, "LMMS_EVAL_IMPORT_ERROR", ImportError("No module named 'lmms_eval'"))
    with pytest.raises(ImportError, match=r"pip install 'lyrics\[lmms\]'"):
        adapter.LyricsLMMS(pretrained="anything")


@needs_lmms_eval
def test_entry_point_registers_the_model(tmp_path, monkeypatch):
    from lmms_eval.api.model import lmms
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    # A distribution declaring the entry point exactly as lyrics' pyproject does.
    dist = tmp_path / "lyrics_entry_point_test-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lyrics-entry-point-test\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[lmms_eval.models]\nlyrics = lyrics.eval.lmms:manifest\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = ModelRegistryV2()
    registry.load_entrypoint_manifests(overwrite=True)
    cls = registry.get_model_class("lyrics")  # also checks it subclasses lmms and is a "simple" model
    assert cls is adapter.LyricsLMMS and issubclass(cls, lmms)


@pytest.fixture(scope="module")
def model():
    if adapter.LMMS_EVAL_IMPORT_ERROR is not None:
        pytest.skip(f"lmms-eval is not importable here: {adapter.LMMS_EVAL_IMPORT_ERROR!r}")
    return adapter.LyricsLMMS.create_from_arg_string(f"pretrained={shared_checkpoint()},batch_size=2")


def fake_task(model, contexts, gen_kwargs):
    """What lmms-eval's ConfigurableTask hands a simple model: documents in `task_dict[task][split]`
    and `generate_until` instances whose args are (context, gen_kwargs, doc_to_visual, doc_id, task, split)."""
    from lmms_eval.api.instance import Instance

    docs = [{"image": toy_scene(i), "answer": "yes"} for i in range(len(contexts))]
    model.task_dict = {"toy_task": {"test": docs}}

    def doc_to_visual(doc):
        return [doc["image"]]

    return docs, [
        Instance("generate_until", (ctx, dict(gen_kwargs), doc_to_visual, i, "toy_task", "test"), i, {"task": "toy_task", "doc_id": i, "repeats": 1})
        for i, ctx in enumerate(contexts)
    ]


@needs_lmms_eval
def test_generate_until_on_a_fake_task(model):
    contexts = ["Is there a red circle?", "<image>\nIs there a blue square?", "What colour is the shape?"]
    docs, requests = fake_task(model, contexts, {"max_new_tokens": 5, "temperature": 0, "until": ["\n\n"]})
    answers = model.generate_until(requests)
    assert len(answers) == 3 and all(isinstance(a, str) and a for a in answers)
    # the same prompts through the harness' predictor directly (image placeholder in front of the text)
    direct = LyricsPredictor.predict(
        model.predictor, [Prompt([{"from": "human", "value": ctx if ctx.startswith("<image>") else f"<image>\n{ctx}"}], [doc["image"]], 5) for ctx, doc in zip(contexts, docs)]
    )
    assert answers == [d.text for d in direct]
    accuracy = sum(a.strip().lower() == doc["answer"] for a, doc in zip(answers, docs)) / len(docs)  # the task's metric
    assert 0.0 <= accuracy <= 1.0

    _, requests = fake_task(model, contexts, {"max_new_tokens": 5, "until": [" "]})
    assert model.generate_until(requests) == [a.split(" ")[0] for a in answers]  # `until` cuts the answer


@needs_lmms_eval
def test_bad_requests_and_loglikelihood(model):
    _, requests = fake_task(model, ["<image> <image> two images?"], {"max_new_tokens": 2})
    with pytest.raises(ValueError, match="holds 2 <image> but the document has 1 images"):
        model.generate_until(requests)
    with pytest.raises(NotImplementedError, match="loglikelihood"):
        model.loglikelihood(requests)

