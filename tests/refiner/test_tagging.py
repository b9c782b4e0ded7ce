import sys

import pytest
import torch
from PIL import Image

from lyrics.refiner.stages import BackendError
from lyrics.refiner.tagging import ClipTagger, GivenTagger, RamTagger, rank_tags, read_vocabulary

from .toyscenes import random_scene


def test_vocabulary_file_with_thresholds_comments_and_duplicates(tmp_path):
    path = tmp_path / "tags.txt"
    path.write_text("# toy tags\nred  circle\t0.3\n\nblue square\nred circle\t0.9\ncat\t-0.5\n")
    assert read_vocabulary(path, 0.25) == [("red circle", 0.3), ("blue square", 0.25), ("cat", -0.5)]


def test_vocabulary_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "tags.txt"
    path.write_text("cat\ndog\tlots\n")
    with pytest.raises(BackendError, match=r"tags.txt:2: threshold 'lots'"):
        read_vocabulary(path, 0.25)
    with pytest.raises(BackendError, match="does not exist"):
        read_vocabulary(tmp_path / "missing.txt", 0.25)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(BackendError, match="has no tags"):
        read_vocabulary(tmp_path / "empty.txt", 0.25)


def test_rank_tags_applies_per_tag_thresholds_and_cap():
    scores = torch.tensor([0.30, 0.10, 0.50, 0.30])
    thresholds = torch.tensor([0.25, 0.05, 0.60, 0.25])
    assert rank_tags(scores, ["a", "b", "c", "d"], thresholds, 10) == [("a", pytest.approx(0.3)), ("d", pytest.approx(0.3)), ("b", pytest.approx(0.1))]
    assert [t for t, _ in rank_tags(scores, ["a", "b", "c", "d"], thresholds, 2)] == ["a", "d"]


def test_clip_tagger_scores_are_cosine_similarities(clip_dir, tmp_path):
    vocab = tmp_path / "tags.txt"
    vocab.write_text("red circle\t-1\nblue square\t-1\ncat\t-1\ndog\t1.1\n")
    tagger = ClipTagger(str(clip_dir), vocab, default_threshold=0.25, max_tags=3, batch_size=2)
    images = [random_scene(s, 2)[0] for s in range(3)]
    results = tagger.tag(images)
    assert len(results) == 3
    # recompute with the model directly: normalised image and prompt embeddings
    model, processor = tagger.model, tagger.processor
    with torch.no_grad():
        text = processor.tokenizer([f"a photo of a {t}." for t in tagger.tags], padding=True, return_tensors="pt")
        t_emb = torch.nn.functional.normalize(model.get_text_features(**text).pooler_output, dim=-1)
        pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
        i_emb = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    expected = i_emb @ t_emb.T
    for row, tagged in zip(expected, results):
        assert [t for t, _ in tagged] == [tagger.tags[i] for i in torch.sort(row[:3], descending=True, stable=True).indices.tolist()]
        assert [s for _, s in tagged] == pytest.approx(sorted(row[:3].tolist(), reverse=True), abs=1e-5)
        assert "dog" not in [t for t, _ in tagged]  # a cosine never reaches 1.1


def test_clip_tagger_needs_a_vocabulary(clip_dir):
    with pytest.raises(BackendError, match="needs a tag vocabulary"):
        ClipTagger(str(clip_dir), None)


def test_given_tagger():
    tagger = GivenTagger(max_tags=2)
    images = [Image.new("RGB", (2, 2))] * 2
    assert tagger.tag(images, [["cat", " cat ", "dog", "bird"], []]) == [[("cat", 1.0), ("dog", 1.0)], []]
    with pytest.raises(ValueError, match="no 'tags'"):
        tagger.tag(images, [["cat"], None])


def test_ram_tagger_without_the_ram_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ram", None)  # makes `import ram` fail even if it were installed
    checkpoint = tmp_path / "ram_plus_swin_large_14m.pth"
    checkpoint.write_bytes(b"weights")
    with pytest.raises(BackendError, match="needs the RAM\\+\\+ package"):
        RamTagger(str(checkpoint))


@pytest.mark.parametrize("value", ["ram_plus_swin_b", None, "/nowhere/ram_plus_swin_large_14m.pth"])
def test_ram_needs_a_checkpoint_file_and_says_how_to_give_one(monkeypatch, value):
    """The paper preset names RAM++ (`ram_plus_swin_b`), which is no file: the error says RAM++ needs a
    checkpoint path and how to pass it, before the `ram` package is even looked for."""
    monkeypatch.setitem(sys.modules, "ram", None)
    with pytest.raises(BackendError, match="needs the path of a RAM\\+\\+ checkpoint file") as caught:
        RamTagger(value)
    message = str(caught.value)
    assert "--set tagger_model=/path/to/ram_plus_swin_large_14m.pth" in message and "docs/refiner.md" in message
    assert (repr(value) in message) if value else ("is not set" in message)


def test_paper_preset_tagger_is_refused_before_any_model_loads(monkeypatch):
    from lyrics.refiner.job import load_refiner_config
    from lyrics.refiner.pipeline import build_stages

    loaded = []
    monkeypatch.setattr("lyrics.refiner.tagging.ClipTagger.__init__", lambda self, *a, **k: loaded.append(a))
    with pytest.raises(BackendError, match="ram_plus_swin_b"):
        build_stages(load_refiner_config("paper"))
    # a RAM name given to the CLIP tagger is refused too, never handed to CLIPModel.from_pretrained
    config = load_refiner_config("paper", None, ["tagger_model=ram_plus_swin_b"], ["tagger=clip"])
    with pytest.raises(BackendError, match="names a RAM checkpoint"):
        build_stages(config)
    assert loaded == []


def test_backend_clip_picks_a_clip_checkpoint_unless_one_is_given():
    from lyrics.refiner.job import load_refiner_config

    assert load_refiner_config("paper").tagger_model == "ram_plus_swin_b"
    assert load_refiner_config("paper", None, None, ["tagger=clip"]).tagger_model == "openai/clip-vit-large-patch14"
    assert load_refiner_config("paper", None, ["tagger=clip"]).tagger_model == "openai/clip-vit-large-patch14"  # --set alike
    given = load_refiner_config("paper", None, ["tagger_model=/models/clip-vit-base-patch32"], ["tagger=clip"])
    assert (given.tagger, given.tagger_model) == ("clip", "/models/clip-vit-base-patch32")
    # switching to RAM does not keep a CLIP id either: RAM++ has no default, it needs a file
    assert load_refiner_config("tiny", None, ["tagger=clip"], ["tagger=ram"]).tagger_model is None
    # the same backend as the preset keeps the preset's model; other stages pick their defaults
    assert load_refiner_config("paper", None, None, ["tagger=ram"]).tagger_model == "ram_plus_swin_b"
    assert load_refiner_config("tiny", None, None, ["detector=grounding_dino"]).detector_model == "IDEA-Research/grounding-dino-tiny"


def test_ram_adapter_calls_the_package_api(monkeypatch, tmp_path):
    """A stand-in `ram` module with the package's API checks the adapter's wiring: model choice from
    the checkpoint name, the transform, and parsing of RAM's "a | b" tag strings."""
    import types

    built = {}

    class FakeModel(torch.nn.Module):
        def generate_tag(self, batch):
            assert batch.shape == (2, 3, 8, 8)
            return ["cat | dog | sofa", " bird "], ["zh", "zh"]

    def ram_plus(pretrained, image_size, vit):
        built.update(kind="ram_plus", pretrained=pretrained, image_size=image_size, vit=vit)
        return FakeModel()

    package = types.ModuleType("ram")
    package.get_transform = lambda image_size: (lambda image: torch.zeros(3, 8, 8))
    models = types.ModuleType("ram.models")
    models.ram_plus, models.ram = ram_plus, None
    package.models = models
    monkeypatch.setitem(sys.modules, "ram", package)
    monkeypatch.setitem(sys.modules, "ram.models", models)
    checkpoint = tmp_path / "ram_plus_swin_large_14m.pth"
    checkpoint.write_bytes(b"weights")
    tagger = RamTagger(str(checkpoint), max_tags=2)
    assert built == {"kind": "ram_plus", "pretrained": str(checkpoint), "image_size": 384, "vit": "swin_l"}
    assert tagger.tag([Image.new("RGB", (4, 4))] * 2) == [[("cat", 1.0), ("dog", 1.0)], [("bird", 1.0)]]
    with pytest.raises(BackendError, match="missing.pth', which is not a file"):
        RamTagger(str(tmp_path / "missing.pth"))
