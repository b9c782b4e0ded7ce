import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lyrics.cli import app
from lyrics.refiner.job import list_inputs, load_refiner_config, run_job
from lyrics.refiner.stages import BackendError
from lyrics.refiner.store import StoreError, open_store

from .toyscenes import random_scene

TOY = ["--preset", "tiny", "--backend", "toy"]


def toy_config(**overrides):
    return load_refiner_config("tiny", None, [f"{k}={v}" for k, v in overrides.items()], ["toy"])


def write_dataset(folder, good: int = 6):
    """`good` toy scenes plus images that need normalising (still good) and four bad files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nested").mkdir(exist_ok=True)
    for i in range(good):
        random_scene(i, count=1 + i % 4)[0].save(folder / ("nested" if i % 3 == 0 else ".") / f"scene{i:02d}.png")
    scene = random_scene(100, count=2)[0]
    scene.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    scene.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.new("RGB", (1, 1), (225, 225, 220)).save(folder / "dot.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    scene.save(folder / "rotated.jpg", exif=exif.tobytes(), quality=95)
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a picture\n")
    data = (folder / "scene01.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (400, 400)).save(folder / "huge.png")
    (folder / "notes.txt").write_text("not an image extension: not listed\n")
    return {"zero.png", "text.jpg", "truncated.png", "huge.png"}


# ------------------------------------------------------------------------------------- listing
def test_folder_listing_is_recursive_sorted_and_skips_other_files(tmp_path):
    write_dataset(tmp_path / "in", good=4)
    ids = [item.image_id for item in list_inputs(tmp_path / "in")]
    assert ids == sorted(ids) and "nested/scene00.png" in ids and "notes.txt" not in ids
    assert len(ids) == 4 + 4 + 4


def test_file_list_and_manifests(tmp_path):
    (tmp_path / "list.txt").write_text("# comment\nimgs/a.jpg\n\n/abs/b.png\n")
    items = list_inputs(tmp_path / "list.txt")
    assert [(i.image_id, str(i.path)) for i in items] == [("imgs/a.jpg", str(tmp_path / "imgs/a.jpg")), ("/abs/b.png", "/abs/b.png")]
    assert list_inputs(tmp_path / "list.txt", image_root="/data")[0].path.as_posix() == "/data/imgs/a.jpg"

    lines = [{"image": "a.jpg", "tags": ["cat", "dog"]}, {"file_name": "b.jpg", "id": "B"}, "[1, 2", {"tags": ["x"]},
             {"image": "c.jpg", "tags": "cat"}, {"image": "a.jpg"}]
    (tmp_path / "m.jsonl").write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    items = list_inputs(tmp_path / "m.jsonl")
    assert [(i.image_id, i.tags) for i in items[:2]] == [("a.jpg", ["cat", "dog"]), ("B", None)]
    assert items[2].error.startswith("manifest entry m.jsonl:3: invalid JSON")
    assert items[3].error == "manifest entry m.jsonl:4: no image path (one of image, file_name, path)"
    assert items[4].error == "manifest entry m.jsonl:5: 'tags' must be a list of strings"
    assert items[5].error == "duplicate image id 'a.jpg' (first at entry 0)" and items[5].image_id == "a.jpg#5"

    (tmp_path / "m.json").write_text(json.dumps({"images": [{"image": "x.png", "tags": []}]}))
    assert [(i.image_id, i.tags) for i in list_inputs(tmp_path / "m.json")] == [("x.png", [])]
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json: invalid JSON"):
        list_inputs(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_inputs(tmp_path / "nowhere")


def test_config_loading(tmp_path):
    cfg = load_refiner_config("paper", None, ["box_threshold=0.4", "refiner_config.nms_iou=0.5"], ["tagger=clip", "segmenter=none"])
    assert (cfg.box_threshold, cfg.nms_iou, cfg.tagger, cfg.segmenter, cfg.local_feature_size) == (0.4, 0.5, "clip", "none", 260)
    (tmp_path / "r.yaml").write_text("max_objects: 7\nrefiner_config:\n  detector: toy\n")
    cfg = load_refiner_config("tiny", tmp_path / "r.yaml", None, None)
    assert (cfg.max_objects, cfg.detector) == (7, "toy")
    # fields whose default is None (the vocabulary) are settable too
    assert load_refiner_config("paper", None, ["tag_vocabulary=/data/tags.txt"]).tag_vocabulary == "/data/tags.txt"
    with pytest.raises(ValueError, match="unknown refiner_config field 'box_treshold'"):
        load_refiner_config("tiny", None, ["refiner_config.box_treshold=0.3"])
    with pytest.raises(ValueError, match="--backend must be STAGE=NAME"):
        load_refiner_config("tiny", None, None, ["detector"])


# ----------------------------------------------------------------------------------------- runs
def read_store(path):
    store = open_store(path)
    return [(r.metadata(), r.local_features) for r in store], store.errors()


def assert_same_store(a, b):
    records_a, errors_a = read_store(a)
    records_b, errors_b = read_store(b)
    assert [m for m, _ in records_a] == [m for m, _ in records_b]
    for (_, fa), (_, fb) in zip(records_a, records_b):
        assert fa.dtype == fb.dtype and torch.equal(fa.view(torch.int16), fb.view(torch.int16))  # bitwise
    assert errors_a == errors_b


def test_ranks_split_the_work_and_together_equal_one_run(tmp_path):
    write_dataset(tmp_path / "in", good=5)
    cfg = toy_config(shard_size=3, max_image_pixels=100_000)
    whole = run_job(tmp_path / "in", tmp_path / "whole", cfg, progress=False)
    assert (whole.shards_total, whole.shards_written) == (5, 5)
    parts = [run_job(tmp_path / "in", tmp_path / "split", cfg, rank=r, world=2, progress=False) for r in (0, 1)]
    assert [p.shards_total for p in parts] == [3, 2]
    assert_same_store(tmp_path / "whole", tmp_path / "split")
    again = run_job(tmp_path / "in", tmp_path / "whole", cfg, progress=False)  # everything done: nothing to do
    assert (again.shards_skipped, again.shards_written) == (5, 0)


def test_store_of_another_config_is_not_resumed(tmp_path):
    write_dataset(tmp_path / "in", good=2)
    run_job(tmp_path / "in", tmp_path / "out", toy_config(), progress=False)
    with pytest.raises(StoreError, match="refiner_config"):
        run_job(tmp_path / "in", tmp_path / "out", toy_config(box_threshold=0.5), progress=False)
    run_job(tmp_path / "in", tmp_path / "out", toy_config(batch_size=3), progress=False)  # runtime-only: fine


def test_webdataset_store(tmp_path):
    write_dataset(tmp_path / "in", good=3)
    run_job(tmp_path / "in", tmp_path / "st", toy_config(max_image_pixels=100_000), progress=False)
    run_job(tmp_path / "in", tmp_path / "wds", toy_config(max_image_pixels=100_000, store_format="webdataset"), progress=False)
    assert sorted(p.suffix for p in (tmp_path / "wds" / "shards").iterdir() if p.name.startswith("00000.") and "errors" not in p.name) == [".jsonl", ".tar"]
    assert_same_store(tmp_path / "st", tmp_path / "wds")


def test_given_tags_from_a_manifest(tmp_path):
    image, objects, _ = random_scene(3, count=3)
    image.save(tmp_path / "a.png")
    image.save(tmp_path / "b.png")
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.png", "tags": [objects[0].tag]}) + "\n" + json.dumps({"image": "b.png"}) + "\n")
    cfg = load_refiner_config("tiny", None, ["tagger=given"], None)  # tags from the manifest, toy detector
    summary = run_job(tmp_path / "m.jsonl", tmp_path / "out", cfg, progress=False)
    store = open_store(tmp_path / "out")
    assert store.ids() == ["a.png"] and [o.tag for o in store.get("a.png").objects] == [objects[0].tag]
    assert store.errors() == [{"image": "b.png", "reason": "tagger='given' but the manifest gives no 'tags' for this image"}]
    assert summary.records == 1 and summary.errors == 1
    with pytest.raises(ValueError, match="needs a manifest"):
        run_job(tmp_path, tmp_path / "out2", cfg, progress=False)


def test_a_failing_image_is_recorded_and_the_rest_survive(tmp_path):
    write_dataset(tmp_path / "in", good=3)
    cfg = toy_config(max_image_pixels=100_000, batch_size=4)
    from lyrics.refiner.pipeline import VisualRefiner

    real = VisualRefiner.from_config(cfg)

    def flaky(images, ids, tags):
        if "scene01.png" in ids:
            raise RuntimeError("out of memory")
        return real(images, ids, tags)

    run_job(tmp_path / "in", tmp_path / "out", cfg, progress=False, refiner=flaky)
    store = open_store(tmp_path / "out")
    assert "scene01.png" not in store and "scene02.png" in store and "cmyk.jpg" in store
    assert {"image": "scene01.png", "reason": "refiner failed: RuntimeError: out of memory"} in store.errors()

    def broken_setup(images, ids, tags):
        raise BackendError("model missing")

    with pytest.raises(BackendError):
        run_job(tmp_path / "in", tmp_path / "out3", cfg, progress=False, refiner=broken_setup)


def test_a_resumed_job_counts_the_errors_of_earlier_runs(tmp_path):
    bad = write_dataset(tmp_path / "in", good=2)  # 12 entries: 4 bad files
    cfg = toy_config(max_image_pixels=100_000, shard_size=3)
    first = run_job(tmp_path / "in", tmp_path / "out", cfg, progress=False)
    assert (first.errors, first.errors_earlier, first.shards_written) == (len(bad), 0, 4)

    again = run_job(tmp_path / "in", tmp_path / "out", cfg, progress=False)  # everything already done
    assert (again.records, again.shards_written, again.errors, again.errors_earlier, again.error_lines) == (0, 0, 4, 4, 4)
    assert "0 records and 0 errors in 0 new shards (4 of 4 already done); 4 errors recorded (4 from earlier runs)" in again.describe()

    # one shard redone: its errors are new, the other shards' come from the first run
    shards = tmp_path / "out" / "shards"
    per_shard = {int(p.name[:5]): len(p.read_text().splitlines()) for p in shards.glob("*.errors.jsonl")}
    redo = max(s for s, n in per_shard.items() if n)
    (shards / f"{redo:05d}.jsonl").unlink()
    partly = run_job(tmp_path / "in", tmp_path / "out", cfg, progress=False)
    assert partly.shards_written == 1 and partly.errors == 4 and partly.errors_earlier == 4 - per_shard[redo]


def test_visualize_during_the_job(tmp_path):
    write_dataset(tmp_path / "in", good=2)
    run_job(tmp_path / "in", tmp_path / "out", toy_config(max_image_pixels=100_000), progress=False, visualize=tmp_path / "vis")
    names = sorted(p.name for p in (tmp_path / "vis").iterdir())
    assert "nested__scene00.png.png" in names and "zero.png.png" not in names
    assert len(names) == len(open_store(tmp_path / "out"))


# ----------------------------------------------------------------------------- the real command
def test_sigkill_and_resume_give_the_uninterrupted_output(tmp_path):
    bad = write_dataset(tmp_path / "in", good=24)
    args = ["--shard-size", "2", "--set", "max_image_pixels=100000", "--no-progress"]
    # uninterrupted reference run, in-process, same config path as the command
    cfg = load_refiner_config("tiny", None, ["max_image_pixels=100000", "shard_size=2"], ["toy"])
    run_job(tmp_path / "in", tmp_path / "reference", cfg, progress=False)

    command = [sys.executable, "-m", "lyrics", "refine", str(tmp_path / "in"), "--out", str(tmp_path / "resumed"), *TOY, *args]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = tmp_path / "resumed" / "shards" / "00000.jsonl"
    deadline = time.monotonic() + 120
    while not first.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    total = 16  # 24 scenes + 4 images to normalise + 4 bad files = 32 entries, 2 per shard
    finished = len(list((tmp_path / "resumed" / "shards").glob("?????.jsonl")))
    assert 1 <= finished < total, "the job must be interrupted midway"

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"({finished} of {total} already done)" in done.stdout
    assert not list((tmp_path / "resumed").rglob("*.tmp.*"))

    store = open_store(tmp_path / "resumed")
    good = {p.relative_to(tmp_path / "in").as_posix() for p in (tmp_path / "in").rglob("*") if p.suffix in (".png", ".jpg")} - bad
    assert len(store) == len(good) == 28 and sorted(store.ids()) == sorted(good)  # one record per good image
    errors = [json.loads(line) for line in (tmp_path / "resumed" / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["image"] for e in errors) == sorted(bad)  # one error line per bad image
    reasons = {e["image"]: e["reason"] for e in errors}
    assert reasons["zero.png"] == "empty file (0 bytes)" and "exceeds max_image_pixels=100000" in reasons["huge.png"]
    assert_same_store(tmp_path / "reference", tmp_path / "resumed")
    assert json.loads((tmp_path / "reference" / "store.json").read_text()) == json.loads((tmp_path / "resumed" / "store.json").read_text())
    assert (tmp_path / "reference" / "errors.jsonl").read_text() == (tmp_path / "resumed" / "errors.jsonl").read_text()
    notes = store.get("rotated.jpg").meta["normalised"]
    assert notes == ["EXIF orientation 8 applied"] and store.get("dot.png").objects == []


def test_help_documents_every_option():
    result = CliRunner().invoke(app, ["refine", "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--out", "--preset", "--config", "--set", "--backend", "--vocabulary", "--batch-size", "--shard ",
                   "--shard-size", "--format", "--visualize", "--max-objects", "--box-threshold", "--text-threshold",
                   "--tag-threshold", "--nms-iou", "--image-root", "--device", "--workers", "--progress"):
        assert option in result.output, option


def test_command_reports_bad_arguments(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ram", None)  # the paper preset's RAM++ tagger is unavailable
    result = CliRunner().invoke(app, ["refine", str(tmp_path), "--out", str(tmp_path / "o"), *TOY, "--shard", "2/2"])
    assert result.exit_code == 2 and "need 0 <= i < n" in result.output
    result = CliRunner().invoke(app, ["refine", str(tmp_path), "--out", str(tmp_path / "o"), *TOY, "--no-progress"])
    assert result.exit_code == 2 and "no images" in result.output
    random_scene(0, 1)[0].save(tmp_path / "a.png")
    result = CliRunner().invoke(app, ["refine", str(tmp_path), "--out", str(tmp_path / "o"), "--preset", "paper", "--no-progress"])
    assert result.exit_code == 2 and "needs the path of a RAM++ checkpoint file" in result.output
    assert "tagger_model=/path/to/ram_plus_swin_large_14m.pth" in result.output and not (tmp_path / "o" / "store.json").exists()
