import json
import os
from pathlib import Path

import numpy as np
import pytest

from lyrics.toyworld import layouts, spec, world
from lyrics.toyworld.world import WorldExistsError, generate_world, load_manifest

from . import oracle

SMALL = {"train": 6, "val": 4, "test": 5, "zeroshot": 4}
ZERO_SHOT_TAGS = {f"{c} {s}" for c, s in spec.ZERO_SHOT_PAIRS}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_worlds(tmp_path):
    a = generate_world(tmp_path / "a", seed=3, sizes=SMALL)
    b = generate_world(tmp_path / "b", seed=3, sizes=SMALL)
    assert a == b
    files_a, files_b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert files_a == files_b and len(files_a) > 40
    c = generate_world(tmp_path / "c", seed=4, sizes=SMALL)
    assert c["images"] != a["images"]


def test_parallel_drawing_gives_the_same_world(tmp_path, monkeypatch):
    monkeypatch.setattr(world, "PARALLEL_MIN_IMAGES", 1)
    monkeypatch.setattr(world, "CHUNK", 3)
    generate_world(tmp_path / "serial", seed=5, sizes=SMALL)
    generate_world(tmp_path / "parallel", seed=5, sizes=SMALL, workers=2)
    assert tree(tmp_path / "serial") == tree(tmp_path / "parallel")


def test_rerun_is_a_noop_and_other_content_is_refused(tmp_path):
    out = tmp_path / "w"
    first = generate_world(out, seed=1, sizes=SMALL)
    stamp = (out / "world.json").stat().st_mtime_ns
    assert generate_world(out, seed=1, sizes=SMALL) == first
    assert (out / "world.json").stat().st_mtime_ns == stamp
    with pytest.raises(WorldExistsError, match="seed 1"):
        generate_world(out, seed=2, sizes=SMALL)
    with pytest.raises(WorldExistsError, match="different toy world"):
        generate_world(out, seed=1, sizes={**SMALL, "train": 7})
    (out / first["files"][0]["path"]).unlink()
    with pytest.raises(WorldExistsError, match="incomplete"):
        generate_world(out, seed=1, sizes=SMALL)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(WorldExistsError, match="not empty"):
        generate_world(other, seed=1, sizes=SMALL)
    assert (other / "mine.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert generate_world(empty, seed=1, sizes=SMALL)["seed"] == 1
    with pytest.raises(ValueError, match="unknown split"):
        generate_world(tmp_path / "x", sizes={"training": 3})


def test_a_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(layouts, "aokvqa", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate_world(tmp_path / "w", seed=0, sizes=SMALL)
    assert list(tmp_path.iterdir()) == []


def test_manifest_lists_every_file(tiny_world):
    root, manifest = tiny_world
    assert load_manifest(root) == manifest
    listed = {f["path"] for f in manifest["files"]} | {img["file_name"] for img in manifest["images"]} | {"world.json"}
    dirs = {d["path"]: d for d in manifest["directories"]}
    for path in root.rglob("*"):
        if path.is_file():
            rel = str(path.relative_to(root))
            assert rel in listed or str(Path(rel).parent) in dirs, rel
    for d in dirs.values():
        assert len([p for p in (root / d["path"]).iterdir() if p.is_file()]) == d["files"]
    for entry in manifest["files"]:
        assert (root / entry["path"]).is_file() and entry["records"] >= 0
    assert manifest["sizes"] == {"train": 36, "val": 14, "test": 20, "zeroshot": 16}
    assert len(manifest["images"]) == sum(manifest["sizes"].values())
    assert len({img["image_id"] for img in manifest["images"]}) == len(manifest["images"])


def _texts_of_split(root, manifest, split):
    """Every annotation file written for one split (the shared RefCOCO files are checked separately)."""
    return [(root / f["path"]).read_text() for f in manifest["files"] if f["split"] == split and not f["path"].endswith(".p")]


def test_zero_shot_pairs_only_in_the_zero_shot_split(tiny_world):
    root, manifest = tiny_world
    for img in manifest["images"]:
        present = {o["tag"] for o in img["objects"]}
        if img["split"] == "zeroshot":
            assert present & ZERO_SHOT_TAGS
        else:
            assert not present & ZERO_SHOT_TAGS
    for split in ("train", "val", "test"):
        for text in _texts_of_split(root, manifest, split):
            assert not any(tag in text for tag in ZERO_SHOT_TAGS)
    with open(root / "refcoco" / "refs(unc).p", "rb") as handle:
        refs = oracle.NoGlobals(handle).load()
    assert not any(tag in s["sent"] for r in refs for s in r["sentences"] for tag in ZERO_SHOT_TAGS)
    assert any(tag in text for text in _texts_of_split(root, manifest, "zeroshot") for tag in ZERO_SHOT_TAGS)


def _entry(manifest, fmt, split):
    return next(f for f in manifest["files"] if f["format"] == fmt and f["split"] == split)


def test_coco_captions_layout(tiny_world):
    root, manifest = tiny_world
    for split in ("train", "val", "test", "zeroshot"):
        entry = _entry(manifest, "coco_captions", split)
        data = json.loads((root / entry["path"]).read_text())
        assert set(data) >= {"info", "licenses", "images", "annotations"} and data["licenses"] == []
        ids = {img["id"] for img in data["images"]}
        for img in data["images"]:
            assert set(img) == {"id", "file_name", "width", "height"} and (img["width"], img["height"]) == (224, 224)
            assert (root / entry["image_root"] / img["file_name"]).is_file()
        for ann in data["annotations"]:
            assert set(ann) == {"id", "image_id", "caption"} and ann["image_id"] in ids and ann["caption"]
        assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"]) == entry["records"]


def test_vqav2_layout_and_path_rule(tiny_world):
    root, manifest = tiny_world
    for split in ("train", "val", "test", "zeroshot"):
        q_entry, a_entry = _entry(manifest, "vqav2_questions", split), _entry(manifest, "vqav2_annotations", split)
        questions = json.loads((root / q_entry["path"]).read_text())
        annotations = json.loads((root / a_entry["path"]).read_text())
        assert (questions["task_type"], questions["data_type"]) == ("Open-Ended", "mscoco")
        subtype = questions["data_subtype"]
        assert subtype == f"toy{split}" and q_entry["path"].endswith(f"v2_OpenEnded_mscoco_{subtype}_questions.json")
        assert a_entry["path"].endswith(f"v2_mscoco_{subtype}_annotations.json")
        by_id = {q["question_id"]: q for q in questions["questions"]}
        assert len(by_id) == len(questions["questions"]) == len(annotations["annotations"])
        for ann in annotations["annotations"]:
            q = by_id[ann["question_id"]]
            assert set(q) == {"image_id", "question", "question_id"} and q["image_id"] == ann["image_id"]
            assert ann["answer_type"] in ("yes/no", "number", "other")
            assert ann["question_type"] in ("color", "shape", "count", "existence", "position")
            assert [a["answer_id"] for a in ann["answers"]] == list(range(1, 11))
            assert all(a["answer"] == ann["multiple_choice_answer"] and a["answer_confidence"] == "yes" for a in ann["answers"])
            image = root / q_entry["image_root"] / subtype / f"COCO_{subtype}_{q['image_id']:012d}.jpg"
            assert image.is_file()


def test_refcoco_layout(tiny_world):
    root, manifest = tiny_world
    objects = {img["image_id"]: img["objects"] for img in manifest["images"]}
    split_of = {img["image_id"]: img["split"] for img in manifest["images"]}
    mask_api = pytest.importorskip("pycocotools.mask")
    for folder, allowed in (("refcoco", {"train", "val", "test"}), ("refcoco_zeroshot", {"test"})):
        with open(root / folder / "refs(unc).p", "rb") as handle:
            refs = oracle.NoGlobals(handle).load()  # builtins only: a restricted unpickler reads it
        instances = json.loads((root / folder / "instances.json").read_text())
        assert {c["name"] for c in instances["categories"]} == set(spec.SHAPES)
        anns = {a["id"]: a for a in instances["annotations"]}
        image_ids = {img["id"] for img in instances["images"]}
        for ref in refs:
            assert set(ref) == {"ref_id", "ann_id", "image_id", "split", "sentences", "sent_ids", "category_id", "file_name"}
            assert ref["split"] in allowed and ref["image_id"] in image_ids
            if folder == "refcoco":
                assert ref["split"] == split_of[ref["image_id"]]
            assert ref["sent_ids"] == [s["sent_id"] for s in ref["sentences"]]
            for s in ref["sentences"]:
                assert set(s) == {"sent", "raw", "tokens", "sent_id"} and s["tokens"] == s["sent"].split()
            ann = anns[ref["ann_id"]]
            assert ann["image_id"] == ref["image_id"] and ann["category_id"] == ref["category_id"]
            assert (root / "images" / "train2014" / f"COCO_train2014_{ref['image_id']:012d}.jpg").is_file()
        for ann in anns.values():
            k = ann["id"] - ann["image_id"] * 100
            obj = objects[ann["image_id"]][k]
            x1, y1, x2, y2 = obj["box"]
            assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1] and ann["iscrowd"] == 0 and ann["area"] == obj["area"]
            segmentation = ann["segmentation"]  # compressed COCO RLE, as COCO.annToRLE passes it on
            mask = mask_api.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()})
            assert mask.sum() == obj["area"]
            assert list(mask_api.toBbox(mask_api.encode(np.asfortranarray(mask)))) == ann["bbox"]
        ref_ids = [r["ref_id"] for r in refs]
        assert len(set(ref_ids)) == len(ref_ids)


def test_pope_layout(tiny_world):
    root, manifest = tiny_world
    for split in ("val", "test", "zeroshot"):
        for sampling in ("random", "popular", "adversarial", "paraphrase"):
            entry = _entry(manifest, f"pope_{sampling}", split)
            assert entry["path"] == f"pope/{split}/coco_pope_{sampling}.json"
            lines = [json.loads(line) for line in (root / entry["path"]).read_text().splitlines()]
            assert lines and len(lines) == entry["records"]
            for item in lines:
                assert set(item) == {"question_id", "image", "text", "label"} and item["label"] in ("yes", "no")
                assert (root / entry["image_root"] / item["image"]).is_file()
            assert [item["question_id"] for item in lines] == list(range(1, len(lines) + 1))


def test_mme_layout_b(tiny_world):
    root, manifest = tiny_world
    for split in ("val", "test", "zeroshot"):
        base = root / "mme" / split
        assert sorted(p.name for p in base.iterdir()) == sorted(["existence", "count", "position", "color"])
        for subtask in base.iterdir():
            txts = sorted(subtask.glob("*.txt"))
            assert txts
            for txt in txts:
                assert txt.with_suffix(".jpg").is_file()  # image and txt side by side
                lines = txt.read_text().splitlines()
                assert len(lines) == 2
                (q1, a1), (q2, a2) = (line.split("\t") for line in lines)
                assert (a1, a2) == ("Yes", "No")
                assert q1.endswith(" Please answer yes or no.") and q2.endswith(" Please answer yes or no.")


def test_aokvqa_and_shikra_layouts(tiny_world):
    root, manifest = tiny_world
    for split in ("train", "val", "test", "zeroshot"):
        entry = _entry(manifest, "aokvqa", split)
        items = json.loads((root / entry["path"]).read_text())
        assert entry["path"] == f"aokvqa/aokvqa_v1p0_{split}.json" and items
        for item in items:
            assert set(item) == {"split", "image_id", "question_id", "question", "choices", "correct_choice_idx",
                                 "direct_answers", "difficult_direct_answer", "rationales"}
            assert item["split"] == split and isinstance(item["question_id"], str)
            assert len(item["choices"]) == 4 == len(set(item["choices"])) and 0 <= item["correct_choice_idx"] < 4
            assert item["direct_answers"] == [item["choices"][item["correct_choice_idx"]]] * 10
            assert (root / entry["image_root"] / "val2017" / f"{item['image_id']:012d}.jpg").is_file()
        rd = _entry(manifest, "shikra_rd", split)
        for line in (root / rd["path"]).read_text().splitlines():
            item = json.loads(line)
            assert set(item) == {"img_path", "boxes", "question", "question_boxes_seq", "answer", "answer_boxes_seq"}
            assert item["question"].count("<boxes>") == len(item["question_boxes_seq"])
            assert item["answer"].count("<boxes>") == len(item["answer_boxes_seq"])
            assert all(0 <= i < len(item["boxes"]) for seq in item["question_boxes_seq"] + item["answer_boxes_seq"] for i in seq)
            assert all(len(b) == 4 and 0 <= b[0] < b[2] <= 224 and 0 <= b[1] < b[3] <= 224 for b in item["boxes"])
            assert (root / rd["image_root"] / item["img_path"]).is_file()


def test_links_share_the_written_bytes(tiny_world):
    root, manifest = tiny_world
    img = manifest["images"][0]
    original = root / img["file_name"]
    linked = root / "images" / "train2014" / f"COCO_train2014_{img['image_id']:012d}.jpg"
    assert linked.read_bytes() == original.read_bytes()
    assert os.stat(linked).st_ino == os.stat(original).st_ino or linked.stat().st_size == original.stat().st_size


def test_one_image_per_split_still_writes_every_layout(tmp_path):
    manifest = generate_world(tmp_path / "w", seed=0, sizes={"train": 1, "val": 1, "test": 1, "zeroshot": 1})
    root = tmp_path / "w"
    assert all((root / f["path"]).is_file() for f in manifest["files"])
    for split in ("val", "test", "zeroshot"):
        for subtask in ("existence", "count", "position", "color"):
            assert (root / "mme" / split / subtask).is_dir()
    assert {f["format"] for f in manifest["files"]} >= {
        "coco_captions", "vqav2_questions", "vqav2_annotations", "refcoco_refs", "coco_instances",
        "pope_random", "pope_popular", "pope_adversarial", "pope_paraphrase", "aokvqa", "shikra_rd"}


def test_manifest_states_an_image_rule_for_every_format(tiny_world):
    _, manifest = tiny_world
    assert {f["format"] for f in manifest["files"]} <= set(manifest["image_rules"])
