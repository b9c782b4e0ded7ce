"""The evaluation benchmarks: one `BenchmarkSpec` per benchmark of the paper (Tables 1, 2, 3, 9).

A spec says where the official release's files are expected under `--data DIR` (the images under
`--images`, default the same folder), which Table 10 task and template prompt it, how long answers
may be, which metric scores it, and how its samples look as `EvalSample`s. Reading goes through the
official-format readers in `lyrics.data.official`; this module only picks the files and reshapes
the samples into one uniform form the runner, the few-shot sampler and the scorer share.

=================  =========================================  ===================  ======================
benchmark          files under DIR (split S)                  images (under IMG)   metric
=================  =========================================  ===================  ======================
coco-captions      dataset_coco.json (S = test/val, Karpathy)  <filepath>/<file>    CIDEr
                   or annotations/captions_S.json (S=val2017)  S/<file_name>
nocaps             nocaps_S_4500_captions.json (S = val)       val|validation|images/  CIDEr
flickr30k          dataset_flickr30k.json (S = test/val)       flickr30k-images/    CIDEr
vqav2              v2_OpenEnded_mscoco_S_questions.json        S/COCO_S_*.jpg       VQA accuracy
                   + v2_mscoco_S_annotations.json
okvqa              OpenEnded_mscoco_S_questions.json           S/COCO_S_*.jpg       VQA accuracy
                   + mscoco_S_annotations.json
vizwiz             S.json (S = val)                            S/<image>            VQA accuracy
textvqa            TextVQA_0.5.1_S.json (S = val)              train_images/        VQA accuracy
gqa                S_questions.json (S = testdev_balanced)     images/              exact match
ocrvqa             dataset.json (split field 1/2/3)            images/              exact match
scienceqa-img      problems.json + pid_splits.json             images/S/<pid>/      multiple choice
refcoco[+|g]       <name>/refs(unc|umd).p + instances.json     train2014/           Acc@0.5
pope               coco_pope_S.json (S = random/...)           val2014/<image>      POPE accuracy
mme                <subtask>/ for each of the 14 subtasks      inside each subtask  MME score
llava-bench        questions.jsonl, context.jsonl,             images/<image>       judged relative score
                   answers_gpt4.jsonl, rule.json (S = in-the-wild)
=================  =========================================  ===================  ======================

Splits marked unscored (VQAv2 test-dev, VizWiz and TextVQA test) need only the question file; the
runner then writes the official submission file instead of a score. POPE and MME have no template
in Table 10: they use the VQA task's template 0, `<Image>{Question}`, which keeps the official
question text ("Is there a dog in the image?", "... Please answer yes or no.") unchanged. So does
LLaVA-Bench (as LLaVA's model_vqa.py, with answers of up to 1024 tokens), which a judge LLM then
scores (`lyrics.eval.llava_bench`); `llava_bench` is accepted for its name.

Length: one spec per benchmark of the paper (fifteen of them) with the reshaping its files need.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lyrics.data.convert.common import format_options, most_common
from lyrics.data.official import (
    MissingFilesError,
    read_coco_captions,
    read_gqa,
    read_karpathy,
    read_mme,
    read_ocrvqa,
    read_pope,
    read_refcoco,
    read_scienceqa,
    read_textvqa,
    read_vizwiz,
    read_vqa,
)
from lyrics.data.official.common import find_files
from lyrics.data.official.llava_bench import FILES as LLAVA_BENCH_FILES
from lyrics.data.official.llava_bench import read_llava_bench
from lyrics.data.official.mme import COGNITION, PERCEPTION, SUBTASKS
from lyrics.data.records import placeholder, render_text


@dataclass
class EvalSample:
    """One scored item of a benchmark split.

    Args:
        sample_id: unique within the split (the official question / image / sentence id as text).
        image: the image file.
        slots: Table 10 slot values (`question`, `option`, `tag`) the prompt template is filled with.
        target: the gold data the metric needs, JSON-serialisable (e.g. `{"answers": [...]}`,
            `{"box": [x1, y1, x2, y2]}` normalised, `{"label": "yes"}`); empty on unscored splits.
        image_key: samples with the same key show the same image (few-shot exemplars never share
            the query's image; MME's acc+ pairs the two questions of an image).
        meta: extras kept in the per-sample predictions (answer type, subtask, ...).
    """

    sample_id: str
    image: Path
    slots: dict[str, str] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    image_key: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_key = self.image_key or str(self.image)


Files = dict[str, list[str]]
Reader = Callable[[dict[str, Path], Path, str], list[EvalSample]]


@dataclass(frozen=True)
class BenchmarkSpec:
    """Everything the harness needs to know about one benchmark.

    Args:
        name: the `--benchmark` value.
        title: display name (report columns, tables).
        task: the Table 10 task whose templates prompt it.
        metric: `cider`, `vqa_accuracy`, `exact_match`, `multiple_choice`, `rec_accuracy`, `pope`,
            `mme` (see `lyrics.eval.scoring`) or `llava_judge` (`lyrics.eval.llava_bench`).
        splits: the known splits; the first is the default, `--split all` runs all scored ones.
        files: split -> {role: candidate names relative to `--data`}; the first existing candidate
            of each role is used and every role without one is reported missing.
        read: (found files, image root, split) -> samples.
        default_template: index into the task's Table 10 templates (`--template` overrides).
        max_new_tokens: answer length limit (`--max-new-tokens` overrides).
        fewshot_split: eval split -> the split exemplars come from; a split without an entry draws
            exemplars from itself (never the query's image).
        unscored_splits: splits without public answers (predictions + submission file only).
        paper_split: the split the paper reports, for the leaderboard notes.
        image_subdir: optional folder under `--images` that the reader's image paths are relative to.
    """

    name: str
    title: str
    task: str
    metric: str
    splits: tuple[str, ...]
    files: Callable[[str, bool], Files]
    read: Reader
    default_template: int
    max_new_tokens: int
    fewshot_split: dict[str, str] = field(default_factory=dict)
    unscored_splits: tuple[str, ...] = ()
    paper_split: str = ""
    image_subdir: str = ""

    @property
    def default_split(self) -> str:
        return self.splits[0]

    def scored(self, split: str) -> bool:
        return split not in self.unscored_splits

    def expected_files(self, split: str | None = None) -> list[str]:
        """Human-readable expected files of a split (alternatives joined by ' or ')."""
        split = split or self.default_split
        return [" or ".join(c) for c in self.files(split, self.scored(split)).values()]


# --------------------------------------------------------------------------- sample builders
def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _caption_samples(samples) -> list[EvalSample]:
    """One sample per image. In a captioned split, images without any reference caption cannot be
    scored by CIDEr and are left out (the results' `count` shows how many images were scored)."""
    if any(s.captions for s in samples):
        samples = [s for s in samples if s.captions]
    return [EvalSample(str(s.image_id), Path(s.image_path), {}, {"captions": list(s.captions)} if s.captions else {}) for s in samples]


def _qa_samples(samples, scored: bool, keep: Sequence[str] = ()) -> list[EvalSample]:
    out = []
    for s in samples:
        target: dict[str, Any] = {}
        if scored:
            target = {"answers": list(s.answers)} | {k: s.meta.get(k) for k in keep if s.meta.get(k) is not None}
        meta = {k: s.meta.get(k) for k in ("answer_type", "question_type") if s.meta.get(k) is not None}
        out.append(EvalSample(str(s.question_id), Path(s.image_path), {"question": s.question.strip()}, target, str(s.image_path), meta))
    return out


# ------------------------------------------------------------------------------- readers
def _karpathy(filename: str) -> Reader:
    def read(found: dict[str, Path], images: Path, split: str) -> list[EvalSample]:
        return _caption_samples(read_karpathy(found["annotations"], images, split))

    return read


KARPATHY_SPLITS = ("test", "val", "train", "restval")


def _coco_files(split: str, scored: bool) -> Files:
    if split in KARPATHY_SPLITS:
        return {"annotations": ["dataset_coco.json"]}
    name = f"captions_{split}.json"
    return {"annotations": [f"annotations/{name}", name]}


def _coco_read(found: dict[str, Path], images: Path, split: str) -> list[EvalSample]:
    if split in KARPATHY_SPLITS:
        return _caption_samples(read_karpathy(found["annotations"], images, split))
    return _caption_samples(read_coco_captions(found["annotations"], images / split, split))


NOCAPS_IMAGE_FOLDERS = ("val", "validation", "images")


def _nocaps_read(found: dict[str, Path], images: Path, split: str) -> list[EvalSample]:
    folders = [images / name for name in NOCAPS_IMAGE_FOLDERS if (images / name).is_dir()]
    return _caption_samples(read_coco_captions(found["annotations"], folders[0] if folders else images / "val", split))


def _vqa_files(q_prefix: str, a_prefix: str) -> Callable[[str, bool], Files]:
    def files(split: str, scored: bool) -> Files:
        roles = {"questions": [f"{q_prefix}OpenEnded_mscoco_{split}_questions.json"]}
        return roles | ({"annotations": [f"{a_prefix}mscoco_{split}_annotations.json"]} if scored else {})

    return files


def _vqa_read(found: dict[str, Path], images: Path, split: str) -> list[EvalSample]:
    scored = "annotations" in found
    samples = read_vqa(found["questions"], found.get("annotations"), images)
    return _qa_samples(samples, scored, keep=("answer_type", "question_type", "multiple_choice_answer"))


def _single(reader: Callable, scored_keys: Sequence[str] = ()) -> Reader:
    def read(found: dict[str, Path], images: Path, split: str) -> list[EvalSample]:
        samples = reader(found["questions"], images, split)
        return _qa_samples(samples, any(s.answers for s in samples), scored_keys)

    return read


def _scienceqa_read(found: dict[str, Path], images: Path, split: str) -> list[EvalSample]:
    out = []
    for s in read_scienceqa(found["problems"], images, split, image_only=True, splits_file=found["splits"]):
        hint = (s.meta.get("hint") or "").strip()
        question = f"{s.question.strip()} Context: {hint}" if hint else s.question.strip()  # as the converter
        slots = {"question": question, "option": format_options(s.choices)}
        target = {"choices": list(s.choices), "answer_index": s.answer_index}
        out.append(EvalSample(str(s.question_id), Path(s.image_path), slots, target, str(s.image_path), {"subject": s.meta.get("subject")}))
    return out


def _refcoco_files(name: str, split_by: str) -> Callable[[str, bool], Files]:
    def files(split: str, scored: bool) -> Files:
        refs = f"refs({split_by}).p"
        return {"refs": [f"{name}/{refs}", refs], "instances": [f"{name}/instances.json", "instances.json"]}

    return files


def _refcoco_read(found: dict[str, Path], images: Path, split: str) -> list[EvalSample]:
    out = []
    for ref in read_refcoco(found["refs"], images, split, instances=found["instances"]):
        sent_ids = ref.meta.get("sent_ids") or []
        box = [round(v, 6) for v in ref.box_norm]
        for j, sentence in enumerate(ref.sentences):
            sid = str(sent_ids[j]) if len(sent_ids) == len(ref.sentences) else f"{ref.ref_id}-{j}"
            meta = {"ref_id": ref.ref_id, "ann_id": ref.ann_id, "image_size": [ref.width, ref.height]}
            out.append(EvalSample(sid, Path(ref.image_path), {"tag": sentence.strip()}, {"box": box}, str(ref.image_path), meta))
    return out


def _pope_read(found: dict[str, Path], images: Path, split: str) -> list[EvalSample]:
    return [
        EvalSample(str(s.question_id), Path(s.image_path), {"question": s.question.strip()}, {"label": s.label}, str(s.image_path))
        for s in read_pope(found["questions"], images, split)
    ]


MME_SPLITS = {"all": SUBTASKS, "perception": PERCEPTION, "cognition": COGNITION}


def _mme_files(split: str, scored: bool) -> Files:
    return {subtask: [f"{subtask}/"] for subtask in MME_SPLITS.get(split, (split,))}


def _mme_read(found: dict[str, Path], images: Path, split: str) -> list[EvalSample]:
    root = next(iter(found.values())).parent
    out, seen = [], {}
    for s in read_mme(root, MME_SPLITS.get(split, (split,))):
        key = f"{s.subtask}/{s.image_name}"
        k = seen[key] = seen.get(key, -1) + 1
        target = {"answer": s.answer, "subtask": s.subtask, "image": s.image_name}
        out.append(EvalSample(f"{key}#{k}", Path(s.image_path), {"question": s.question}, target, key, {"category": s.category}))
    return out


def _llava_bench_read(found: dict[str, Path], images: Path, split: str) -> list[EvalSample]:
    out = []
    for s in read_llava_bench(found["questions"], found["context"], found["answers"], found["rules"], images):
        target = {
            "question_id": s.question_id, "category": s.category, "caption": s.caption, "reference": s.reference,
            "reference_id": s.reference_id, "role": s.role, "rule": s.rule,
        }  # fmt: skip
        out.append(EvalSample(str(s.question_id), Path(s.image_path), {"question": s.question}, target, str(s.image_path), {"category": s.category}))
    return out


# ------------------------------------------------------------------------------- the specs
def _refcoco_spec(name: str, title: str, split_by: str, splits: tuple[str, ...], paper_split: str) -> BenchmarkSpec:
    return BenchmarkSpec(
        name, title, "rec", "rec_accuracy", splits, _refcoco_files(name, split_by), _refcoco_read,
        default_template=0, max_new_tokens=48, fewshot_split={s: "train" for s in splits}, paper_split=paper_split,
    )  # fmt: skip


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec(
            "coco-captions", "COCO", "captioning", "cider", ("test", "val", "val2014", "val2017"), _coco_files, _coco_read,
            default_template=0, max_new_tokens=40, fewshot_split={"test": "train", "val": "train", "val2014": "train2014", "val2017": "train2017"},
            paper_split="karpathy test",
        ),
        BenchmarkSpec(
            "nocaps", "NoCaps", "captioning", "cider", ("val",), lambda s, _: {"annotations": [f"nocaps_{s}_4500_captions.json", f"annotations/nocaps_{s}_4500_captions.json"]},
            _nocaps_read, default_template=0, max_new_tokens=40, paper_split="val",
        ),
        BenchmarkSpec(
            "flickr30k", "Flickr30K", "captioning", "cider", ("test", "val"), lambda s, _: {"annotations": ["dataset_flickr30k.json"]},
            _karpathy("dataset_flickr30k.json"), default_template=0, max_new_tokens=40, fewshot_split={"test": "train", "val": "train"},
            paper_split="karpathy test", image_subdir="flickr30k-images",
        ),
        BenchmarkSpec(
            "vqav2", "VQAv2", "vqa", "vqa_accuracy", ("val2014", "test-dev2015", "test2015"), _vqa_files("v2_", "v2_"), _vqa_read,
            default_template=2, max_new_tokens=16, fewshot_split={"val2014": "train2014", "test-dev2015": "train2014", "test2015": "train2014"},
            unscored_splits=("test-dev2015", "test2015"), paper_split="test-dev",
        ),
        BenchmarkSpec(
            "okvqa", "OKVQA", "vqa", "vqa_accuracy", ("val2014",), _vqa_files("", ""), _vqa_read,
            default_template=2, max_new_tokens=16, fewshot_split={"val2014": "train2014"}, paper_split="val",
        ),
        BenchmarkSpec(
            "vizwiz", "VizWiz", "vqa", "vqa_accuracy", ("val", "test"), lambda s, _: {"questions": [f"{s}.json"]},
            _single(read_vizwiz, ("answer_type",)), default_template=2, max_new_tokens=16, fewshot_split={"val": "train", "test": "train"},
            unscored_splits=("test",), paper_split="test-dev",
        ),
        BenchmarkSpec(
            "textvqa", "TextVQA", "text_vqa", "vqa_accuracy", ("val", "test"), lambda s, _: {"questions": [f"TextVQA_0.5.1_{s}.json"]},
            _single(read_textvqa), default_template=1, max_new_tokens=16, fewshot_split={"val": "train", "test": "train"},
            unscored_splits=("test",), paper_split="val",
        ),
        BenchmarkSpec(
            "gqa", "GQA", "vqa", "exact_match", ("testdev_balanced", "val_balanced"), lambda s, _: {"questions": [f"{s}_questions.json"]},
            _single(read_gqa), default_template=2, max_new_tokens=16,
            fewshot_split={"testdev_balanced": "train_balanced", "val_balanced": "train_balanced"}, paper_split="test-dev balanced",
        ),
        BenchmarkSpec(
            "ocrvqa", "OCR-VQA", "text_vqa", "exact_match", ("test", "val"), lambda s, _: {"questions": ["dataset.json"]},
            _single(read_ocrvqa), default_template=1, max_new_tokens=24, fewshot_split={"test": "train", "val": "train"}, paper_split="test",
        ),
        BenchmarkSpec(
            "scienceqa-img", "SciQA-Img", "multiple_choice_vqa", "multiple_choice", ("test", "val"),
            lambda s, _: {"problems": ["problems.json"], "splits": ["pid_splits.json"]}, _scienceqa_read,
            default_template=0, max_new_tokens=16, fewshot_split={"test": "train", "val": "train"}, paper_split="test",
        ),
        _refcoco_spec("refcoco", "RefCOCO", "unc", ("val", "testA", "testB"), "val / testA / testB"),
        _refcoco_spec("refcoco+", "RefCOCO+", "unc", ("val", "testA", "testB"), "val / testA / testB"),
        _refcoco_spec("refcocog", "RefCOCOg", "umd", ("val", "test"), "val / test (umd)"),
        BenchmarkSpec(
            "pope", "POPE", "vqa", "pope", ("random", "popular", "adversarial"), lambda s, _: {"questions": [f"coco_pope_{s}.json"]},
            _pope_read, default_template=0, max_new_tokens=10, paper_split="COCO val2014", image_subdir="val2014",
        ),
        BenchmarkSpec(
            "mme", "MME", "vqa", "mme", ("all", "perception", "cognition"), _mme_files, _mme_read,
            default_template=0, max_new_tokens=10, paper_split="all 14 subtasks",
        ),
        BenchmarkSpec(
            "llava-bench", "LLaVA-Bench", "vqa", "llava_judge", ("in-the-wild",), lambda s, _: dict(LLAVA_BENCH_FILES),
            _llava_bench_read, default_template=0, max_new_tokens=1024, paper_split="COCO (30 val images, 90 questions)",
            image_subdir="images",
        ),
    )
}


def get_benchmark(name: str) -> BenchmarkSpec:
    """The spec of `name`; underscores read as hyphens (`llava_bench` is `llava-bench`)."""
    name = name if name in BENCHMARKS else name.replace("_", "-")
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def expand_splits(spec: BenchmarkSpec, split: str | None) -> list[str]:
    """`None` -> the default split (all three REC / POPE splits); `"all"` -> every scored known split
    (MME's `all` is one split); `"a,b"` -> those."""
    if split is None:
        return [s for s in spec.splits if spec.scored(s)] if spec.metric in ("rec_accuracy", "pope") else [spec.default_split]
    if split == "all" and spec.metric != "mme":
        return [s for s in spec.splits if spec.scored(s)]
    return [s.strip() for s in split.split(",") if s.strip()]


# ------------------------------------------------------------------------------- loading
def load_samples(spec: BenchmarkSpec, data: str | os.PathLike, split: str, images: str | os.PathLike | None = None) -> list[EvalSample]:
    """Read a benchmark split from its official layout under `data` (images under `images`).

    Raises `MissingFilesError` listing every expected annotation file that is not there, and
    `ValueError` when the split holds no sample.
    """
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data}: folder not found (expected the {spec.title} release: {', '.join(spec.expected_files(split))})")
    image_root = Path(images) if images is not None else data
    if spec.image_subdir and (image_root / spec.image_subdir).is_dir():
        # the release's image folder under --images; --images may also name that folder itself
        image_root = image_root / spec.image_subdir
    found = find_files(data, spec.files(split, spec.scored(split)), f"{spec.title} ({split} split)")
    samples = spec.read(found, image_root, split)
    if not samples:
        names = ", ".join(p.name for p in found.values())
        raise ValueError(f"{spec.title}: no samples for split {split!r} in {data} ({names}); known splits: {', '.join(spec.splits)}")
    ids = [s.sample_id for s in samples]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{spec.title} {split}: sample ids are not unique")
    return samples


def check_images(samples: Sequence[EvalSample], root: str | os.PathLike, what: str, show: int = 20) -> None:
    """Raise `MissingFilesError` naming the image files (relative to `root`) that do not exist."""
    root = Path(root)
    missing = sorted({_rel(s.image, root) for s in samples if not s.image.is_file()})
    if missing:
        listed = missing[:show] + ([f"... and {len(missing) - show} more"] if len(missing) > show else [])
        raise MissingFilesError(root, listed, f"{what} images ({len(missing)} missing)")


def apply_limit(samples: Sequence[EvalSample], limit: int | None, whole_images: bool = False) -> list[EvalSample]:
    """The first `limit` samples in file order; with `whole_images` the last image's other samples
    come along (MME scores questions in pairs per image)."""
    if limit is None or limit >= len(samples):
        return list(samples)
    if limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    kept = list(samples[:limit])
    if whole_images:
        keys = {s.image_key for s in kept}
        kept += [s for s in samples[limit:] if s.image_key in keys]
    return kept


def exemplar_answer(spec: BenchmarkSpec, sample: EvalSample, coordinate_format: str = "int1000") -> str:
    """The answer an in-context exemplar shows, in the form the instruction data trains (the
    converters in `lyrics.data.convert`): a reference caption, the most common human answer, the
    correct option's text, the box in the paper's markup, or the yes/no label."""
    t = sample.target
    if not t:
        raise ValueError(f"{spec.title} sample {sample.sample_id} has no answer and cannot be an exemplar")
    if spec.metric == "cider":
        return t["captions"][0]
    if spec.metric in ("vqa_accuracy", "exact_match"):
        return t.get("multiple_choice_answer") or most_common(t["answers"]) or ""
    if spec.metric == "multiple_choice":
        return t["choices"][t["answer_index"]]
    if spec.metric == "rec_accuracy":
        return render_text(placeholder(0), [t["box"]], coordinate_format)
    if spec.metric == "pope":
        return t["label"]
    if spec.metric == "llava_judge":
        return t["reference"]
    return t["answer"]
