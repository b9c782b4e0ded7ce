"""`generate_world`: draw every split of the toy world and write it in the official layouts.

Directory layout (all paths in `world.json` are relative to the world's root)::

    world.json                                   manifest: seed, sizes, every file, ground truth
    images/toy<split>/COCO_toy<split>_{id:012d}.jpg   each image written once (VQAv2 / COCO naming)
    images/train2014/COCO_train2014_{id:012d}.jpg     links: the RefCOCO path rule
    images/val2017/{id:012d}.jpg                      links: the A-OKVQA path rule
    annotations/captions_toy<split>.json         COCO captions           (image root images/toy<split>)
    vqav2/v2_OpenEnded_mscoco_toy<split>_questions.json, v2_mscoco_toy<split>_annotations.json
                                                 VQAv2                   (image root images)
    refcoco/refs(unc).p, refcoco/instances.json  RefCOCO, splits train / val / test   (image root images)
    refcoco_zeroshot/refs(unc).p, instances.json RefCOCO-style, the zero-shot split as "test"
    pope/<split>/coco_pope_{random,popular,adversarial}.json   val, test, zeroshot (image root images/toy<split>)
    pope/<split>/coco_pope_paraphrase.json   the adversarial questions in held-out phrasings (toyworld/pope.py)
    mme/<split>/{existence,count,position,color}/<id>.jpg + .txt   val, test, zeroshot (layout b)
    aokvqa/aokvqa_v1p0_<split>.json              A-OKVQA multiple choice  (image root images)
    shikra_rd/GPT4GEN_RD_BoxCoT_<split>.jsonl    Shikra referential dialogue (image root images/toy<split>)

Image ids are unique across the world (1, 2, ... in split order), so one folder per path rule
serves every split. "Links" are hard links (a copy where the filesystem has none): the bytes are
written once.

The world is built in a temporary sibling directory and renamed into place, so a crash never
leaves a half-written world behind; `world.json` is the last file written. Generating again with
the same seed and sizes into a complete world returns its manifest without touching it; any other
existing content is refused with an error naming the directory.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from lyrics.atomic import ordinary_permissions
from lyrics.toyworld import layouts, spec
from lyrics.toyworld.annotate import ImageRecord, annotate, split_subtype
from lyrics.toyworld.pope import SAMPLINGS
from lyrics.toyworld.questions import MME_SUBTASKS
from lyrics.toyworld.scenes import SPLIT_CODES, SPLITS, split_scene

MANIFEST = "world.json"
FORMAT_NAME = "lyrics-toyworld"
# Bump when the drawing or the annotations change: a world on disk with another version is refused.
FORMAT_VERSION = 2  # 2: POPE's held-out paraphrase files
EVAL_SPLITS = ("val", "test", "zeroshot")
REFCOCO_SPLIT_NAMES = {"train": "train", "val": "val", "test": "test"}
# How each format's records name their image, relative to the `image_root` of its manifest entry
# (the official rules of /work/notes/layouts.md; written into world.json for readers and tests).
IMAGE_RULES = {
    "coco_captions": "<image_root>/<images[].file_name>",
    "vqav2_questions": "<image_root>/<data_subtype>/COCO_<data_subtype>_{image_id:012d}.jpg",
    "vqav2_annotations": "<image_root>/<data_subtype>/COCO_<data_subtype>_{image_id:012d}.jpg",
    "refcoco_refs": "<image_root>/train2014/COCO_train2014_{image_id:012d}.jpg",
    "coco_instances": "<image_root>/train2014/COCO_train2014_{image_id:012d}.jpg",
    **{f"pope_{sampling}": "<image_root>/<image>" for sampling in (*SAMPLINGS, "paraphrase")},
    "mme": "<subtask>/<name>.jpg beside <subtask>/<name>.txt",
    "aokvqa": "<image_root>/val2017/{image_id:012d}.jpg",
    "shikra_rd": "<image_root>/<img_path>",
}


@dataclass(frozen=True)
class WorldSizes:
    """Images per split. The defaults generate and write in a few seconds on one core."""

    train: int = 2000
    val: int = 200
    test: int = 300
    zeroshot: int = 200

    @classmethod
    def parse(cls, sizes: "WorldSizes | Mapping[str, int] | None") -> "WorldSizes":
        if sizes is None:
            return cls()
        if isinstance(sizes, WorldSizes):
            return sizes
        unknown = set(sizes) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)} in sizes; splits are {SPLITS}")
        values = {**asdict(cls()), **{k: int(v) for k, v in sizes.items()}}
        bad = {k: v for k, v in values.items() if v < 1}
        if bad:
            raise ValueError(f"every split needs at least one image, got {bad}")
        return cls(**values)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# Small enough for `lyrics quickstart --fast`.
FAST_SIZES = WorldSizes(train=400, val=60, test=100, zeroshot=60)


class WorldExistsError(FileExistsError):
    """The output directory holds something other than the requested world."""


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # no hard links on this filesystem: copy (the bytes are identical)
        shutil.copyfile(src, dst)


def generate_split(split: str, size: int, seed: int, first_image_id: int) -> list[ImageRecord]:
    """Draw and annotate `size` images of `split` in memory (ids from `first_image_id`)."""
    return [annotate(split_scene(seed, split, i), first_image_id + i, split, i, seed) for i in range(size)]


def _draw_chunk(job: tuple[str, int, int, int, int, str]) -> list[ImageRecord]:
    """Worker: draw, annotate and write the JPEGs of images `start:stop` of a split; return the
    records without their bytes (so only small objects cross the process boundary)."""
    split, start, stop, seed, first_image_id, image_dir = job
    records = []
    for index in range(start, stop):
        rec = annotate(split_scene(seed, split, index), first_image_id + index, split, index, seed)
        (Path(image_dir) / rec.file_name).write_bytes(rec.jpeg)
        rec.jpeg = b""
        records.append(rec)
    return records


# Images per worker job, and the smallest world worth starting processes for.
CHUNK = 100
PARALLEL_MIN_IMAGES = 600


class _Writer:
    """Writes files under a root and remembers each one for the manifest."""

    def __init__(self, root: Path):
        self.root = root
        self.files: list[dict] = []

    def json(self, rel: str, obj: Any, fmt: str, split: str, records: int, image_root: str) -> None:
        _write_json(self.root / rel, obj)
        self.files.append({"path": rel, "format": fmt, "split": split, "records": records, "image_root": image_root})

    def text(self, rel: str, text: str, fmt: str, split: str, records: int, image_root: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        self.files.append({"path": rel, "format": fmt, "split": split, "records": records, "image_root": image_root})

    def pickle(self, rel: str, obj: Any, fmt: str, split: str, records: int, image_root: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        # Protocol 2, as the public refs files; builtins only, so a restricted unpickler reads it.
        path.write_bytes(pickle.dumps(obj, protocol=2))
        self.files.append({"path": rel, "format": fmt, "split": split, "records": records, "image_root": image_root})


def _write_split(w: _Writer, split: str, records: list[ImageRecord], seed: int, directories: list[dict]) -> None:
    subtype = split_subtype(split)
    image_dir = f"images/{subtype}"
    for rec in records:
        path = w.root / image_dir / rec.file_name  # written by `_draw_chunk`
        _link(path, w.root / "images" / "train2014" / f"COCO_train2014_{rec.image_id:012d}.jpg")
        _link(path, w.root / "images" / "val2017" / f"{rec.image_id:012d}.jpg")
    directories.append({"path": image_dir, "files": len(records), "format": "images", "split": split})

    w.json(f"annotations/captions_{subtype}.json", layouts.coco_captions(records, split, seed), "coco_captions", split,
           sum(len(r.captions) for r in records), image_dir)
    n_vqa = sum(len(r.vqa) for r in records)
    w.json(f"vqav2/v2_OpenEnded_mscoco_{subtype}_questions.json", layouts.vqa_questions_file(records, split, seed),
           "vqav2_questions", split, n_vqa, "images")
    w.json(f"vqav2/v2_mscoco_{subtype}_annotations.json", layouts.vqa_annotations_file(records, split, seed),
           "vqav2_annotations", split, n_vqa, "images")
    mc = layouts.aokvqa(records, split)
    w.json(f"aokvqa/aokvqa_v1p0_{split}.json", mc, "aokvqa", split, len(mc), "images")
    rd = layouts.shikra_rd(records)
    w.text(f"shikra_rd/GPT4GEN_RD_BoxCoT_{split}.jsonl", layouts.json_lines(rd), "shikra_rd", split, len(rd), image_dir)

    if split in EVAL_SPLITS:
        for sampling in SAMPLINGS:
            rng = np.random.default_rng([seed, SPLIT_CODES[split], 2, SAMPLINGS.index(sampling)])
            lines = layouts.pope_lines(records, sampling, rng)
            w.text(f"pope/{split}/coco_pope_{sampling}.json", layouts.json_lines(lines), f"pope_{sampling}", split,
                   len(lines), image_dir)
        # the adversarial questions again (same generator state), worded as training never words them
        rng = np.random.default_rng([seed, SPLIT_CODES[split], 2, SAMPLINGS.index("adversarial")])
        lines = layouts.pope_lines(records, "adversarial", rng, paraphrase=True)
        w.text(f"pope/{split}/coco_pope_paraphrase.json", layouts.json_lines(lines), "pope_paraphrase", split,
               len(lines), image_dir)
        for subtask in MME_SUBTASKS:
            folder = f"mme/{split}/{subtask}"
            (w.root / folder).mkdir(parents=True, exist_ok=True)  # even when no image of a tiny split qualifies
            count = 0
            for rec in records:
                text = layouts.mme_text(rec, subtask)
                if text is None:
                    continue
                name = layouts.mme_name(rec)
                _link(w.root / image_dir / rec.file_name, w.root / folder / f"{name}.jpg")
                (w.root / folder / f"{name}.txt").write_text(text, encoding="utf-8")
                count += 1
            directories.append({"path": folder, "files": 2 * count, "format": "mme", "split": split, "images": count,
                                "questions": 2 * count, "image_root": f"mme/{split}"})


def _image_entry(rec: ImageRecord) -> dict:
    return {
        "image_id": rec.image_id,
        "split": rec.split,
        "index": rec.index,
        "file_name": f"images/{split_subtype(rec.split)}/{rec.file_name}",
        "width": rec.width,
        "height": rec.height,
        "objects": [o.to_dict(rec.width, rec.height) for o in rec.objects],
    }


def _draw_all(root: Path, seed: int, sizes: WorldSizes, workers: int) -> dict[str, list[ImageRecord]]:
    """Every split's records, their JPEGs written under `root`; images are independent, so the
    result does not depend on `workers`."""
    jobs, first = [], 1
    for split in SPLITS:
        size = getattr(sizes, split)
        image_dir = root / "images" / split_subtype(split)
        image_dir.mkdir(parents=True, exist_ok=True)
        jobs += [(split, a, min(a + CHUNK, size), seed, first, str(image_dir)) for a in range(0, size, CHUNK)]
        first += size
    if workers > 1 and sum(sizes.as_dict().values()) >= PARALLEL_MIN_IMAGES:
        # "spawn": the caller may hold torch's thread pools, which a forked child must not inherit.
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                chunks = list(pool.map(_draw_chunk, jobs))
        except BrokenProcessPool:
            # e.g. a caller whose __main__ cannot be re-imported (a script piped to stdin): draw here.
            # Images are deterministic, so anything a dead worker wrote is rewritten identically.
            chunks = [_draw_chunk(job) for job in jobs]
    else:
        chunks = [_draw_chunk(job) for job in jobs]
    out: dict[str, list[ImageRecord]] = {split: [] for split in SPLITS}
    for job, records in zip(jobs, chunks):
        out[job[0]].extend(records)
    return out


def _build(root: Path, seed: int, sizes: WorldSizes, workers: int) -> dict:
    w = _Writer(root)
    directories: list[dict] = []
    all_records = _draw_all(root, seed, sizes, workers)
    next_id = 1
    split_info = {}
    for split in SPLITS:
        size = getattr(sizes, split)
        records = all_records[split]
        split_info[split] = {
            "data_subtype": split_subtype(split),
            "image_dir": f"images/{split_subtype(split)}",
            "num_images": size,
            "first_image_id": next_id,
        }
        next_id += size
        _write_split(w, split, records, seed, directories)

    # RefCOCO: one dataset for train/val/test, another for the zero-shot split.
    seen = [r for s in ("train", "val", "test") for r in all_records[s]]
    refs, instances = layouts.refcoco(seen, REFCOCO_SPLIT_NAMES)
    w.pickle("refcoco/refs(unc).p", refs, "refcoco_refs", "train+val+test", len(refs), "images")
    w.json("refcoco/instances.json", instances, "coco_instances", "train+val+test", len(instances["annotations"]), "images")
    zs_refs, zs_instances = layouts.refcoco(all_records["zeroshot"], {"zeroshot": "test"},
                                           start_ids=(len(refs) + 1, sum(len(r["sentences"]) for r in refs) + 1))
    w.pickle("refcoco_zeroshot/refs(unc).p", zs_refs, "refcoco_refs", "zeroshot", len(zs_refs), "images")
    w.json("refcoco_zeroshot/instances.json", zs_instances, "coco_instances", "zeroshot", len(zs_instances["annotations"]), "images")
    total = sum(getattr(sizes, s) for s in SPLITS)
    directories += [
        {"path": "images/train2014", "files": total, "format": "images_refcoco_rule", "split": "all"},
        {"path": "images/val2017", "files": total, "format": "images_aokvqa_rule", "split": "all"},
    ]

    counts = Counter()
    for split, records in all_records.items():
        counts[f"{split}/images"] = len(records)
        counts[f"{split}/objects"] = sum(len(r.objects) for r in records)
        counts[f"{split}/refs"] = sum(len(r.refs) for r in records)
        for rec in records:
            for qa in rec.vqa:
                counts[f"{split}/vqa/{qa.question_type}"] += 1
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "seed": seed,
        "sizes": sizes.as_dict(),
        "image_size": spec.IMAGE_SIZE,
        "zero_shot_pairs": [list(p) for p in spec.ZERO_SHOT_PAIRS],
        "splits": split_info,
        "eval_splits": list(EVAL_SPLITS),
        "image_rules": IMAGE_RULES,
        "files": w.files,
        "directories": directories,
        "counts": dict(sorted(counts.items())),
        "images": [_image_entry(rec) for split in SPLITS for rec in all_records[split]],
    }
    _write_json(root / MANIFEST, manifest)
    return manifest


def load_manifest(world_dir: str | Path) -> dict:
    path = Path(world_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: {world_dir} is not a toy world (run generate_world)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: field 'format' must be {FORMAT_NAME!r}")
    return manifest


def _missing_files(root: Path, manifest: dict) -> list[str]:
    missing = [f["path"] for f in manifest.get("files", []) if not (root / f["path"]).is_file()]
    missing += [img["file_name"] for img in manifest.get("images", []) if not (root / img["file_name"]).is_file()]
    return missing


def _same_world(manifest: dict, seed: int, sizes: WorldSizes) -> bool:
    return (manifest.get("version"), manifest.get("seed"), manifest.get("sizes")) == (FORMAT_VERSION, seed, sizes.as_dict())


def _existing(out: Path, seed: int, sizes: WorldSizes) -> dict | None:
    """The manifest of an identical complete world at `out`, None if `out` is absent or empty; raises otherwise."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise WorldExistsError(f"{out} exists and is not a directory")
    if not any(out.iterdir()):
        return None
    if not (out / MANIFEST).is_file():
        raise WorldExistsError(f"{out} is not empty and holds no {MANIFEST}: refusing to write a toy world over it")
    manifest = load_manifest(out)
    if not _same_world(manifest, seed, sizes):
        raise WorldExistsError(
            f"{out} holds a different toy world (version {manifest.get('version')}, seed {manifest.get('seed')}, "
            f"sizes {manifest.get('sizes')}); requested version {FORMAT_VERSION}, seed {seed}, sizes {sizes.as_dict()}. "
            "Choose another directory or delete it."
        )
    missing = _missing_files(out, manifest)
    if missing:
        raise WorldExistsError(
            f"{out} holds an incomplete toy world ({len(missing)} listed files missing, e.g. {missing[0]}); delete it to regenerate"
        )
    return manifest


def generate_world(
    out_dir: str | Path, seed: int = 0, sizes: WorldSizes | Mapping[str, int] | None = None, workers: int | None = None
) -> dict:
    """Generate the toy world into `out_dir` and return its manifest (the parsed `world.json`).

    Args:
        out_dir: target directory; must not exist, be empty, or hold the same world (then no-op).
        seed: the world's seed; the same seed and sizes give byte-identical files.
        sizes: images per split (`WorldSizes` or a dict with any of train/val/test/zeroshot).
        workers: processes drawing images (default 1: one core draws hundreds of images per second,
            and extra processes only pay off for large worlds on idle machines); the output is the
            same for any value.
    """
    sizes = WorldSizes.parse(sizes)
    workers = max(1, int(workers or 1))
    out = Path(out_dir)
    existing = _existing(out, seed, sizes)
    if existing is not None:
        return existing
    out.parent.mkdir(parents=True, exist_ok=True)
    # Not `lyrics.atomic.atomic_directory`: two processes may build the same world at once, and the
    # second one to finish keeps the first one's world (if it is the same) instead of replacing it.
    tmp = ordinary_permissions(Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent)))
    try:
        manifest = _build(tmp, seed, sizes, workers)
        if out.exists() and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        try:
            os.replace(tmp, out)
        except OSError:
            # Someone else finished first: accept their world if it is the same one.
            existing = _existing(out, seed, sizes)
            if existing is None:
                raise
            manifest = existing
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest
