"""RefCOCO / RefCOCO+ / RefCOCOg -> referring expression comprehension and grounded captioning records.

Both tasks are built from every (object, expression) pair, the duality the paper trains on:

* REC (Table 10, "Referring Expression Comprehension"). Templates that ask for coordinates get the
  answer `<box:0>`. Templates with `{Bbox}` in the prompt ("Confirm the presence of {Tag} in the
  bounding box {Bbox}") are verification questions: each gives one record answered "Yes" with the
  object's own box and one answered "No" with the box of another object of the same image
  (IoU < 0.5 with the target, picked by the seed), so yes and no are exactly balanced. When the image
  has no such other object, a template without `{Bbox}` is used instead (or, with a fixed `{Bbox}`
  template, the pair is skipped and listed).
* Grounded captioning (Table 10, "Grounded Captioning"). Its templates have no `{Bbox}` slot, so the
  region is appended to the prompt as `" <box:0>"` (rendered ` <Bbox>(x1,y1),(x2,y2)</Box>`); the
  answer is the expression.

`{Tag}` is the expression (`sent`). Boxes are normalised by the image size from `instances.json`.
"""

from __future__ import annotations

from pathlib import Path

from lyrics.data.convert.common import Conversion, ConvertOptions, relative_image, single_turn
from lyrics.data.io import stable_rng
from lyrics.data.official.refcoco import read_coco_instances, read_refcoco, refcoco_files
from lyrics.data.records import placeholder
from lyrics.refiner.spatial import box_from_pixels, box_iou

REC, GC = "rec", "grounded_captioning"
NEGATIVE_MAX_IOU = 0.5


def _source_name(path: Path) -> str:
    name = path.parent.name.lower()
    return name if name.startswith("ref") else "refcoco"


def convert_refcoco(inputs: list[Path], opts: ConvertOptions, tasks: tuple[str, ...] = (REC, GC)) -> Conversion:
    """INPUT: a dataset folder (`refs(*).p` + `instances.json`), or the refs file then instances.json."""
    if len(inputs) == 2 and not inputs[0].is_dir() and inputs[1].suffix == ".json":
        pairs = [(Path(inputs[0]), Path(inputs[1]))]
    else:
        pairs = [(Path(p), Path(p) / "instances.json" if Path(p).is_dir() else Path(p).parent / "instances.json") for p in inputs]
    batches = []
    for path, instances_path in pairs:
        if path.is_dir():
            files = refcoco_files(path)
            path, instances_path = files["refs"], files["instances"]
        instances = read_coco_instances(instances_path)
        batches.append((path, read_refcoco(path, opts.images, opts.split, instances=instances), instances))
    out = Conversion()
    for path, refs, instances in batches:
        source = _source_name(Path(path))
        rec_templates = opts.bank.templates(REC)
        plain = [t for t in rec_templates if "bbox" not in t.slots]
        for ref in refs:
            box = ref.box_norm
            image = relative_image(ref.image_path, opts.images)
            others = []
            for ann_id in instances.by_image.get(ref.image_id, []) if instances else []:
                other = box_from_pixels(instances.boxes[ann_id][1], ref.width, ref.height)
                if ann_id != ref.ann_id and box_iou(other, box) < NEGATIVE_MAX_IOU:
                    others.append(other)
            for j, sentence in enumerate(ref.sentences):
                key = f"{ref.ref_id}-{j}"
                base = {"ref_id": ref.ref_id, "ann_id": ref.ann_id, "image_id": ref.image_id, "split": ref.split}
                if REC in tasks:
                    template = opts.bank.choose(REC, key, opts.seed, opts.template)
                    if "bbox" in template.slots and not others:
                        if opts.template is not None:
                            out.skipped.append(f"{source} ref {ref.ref_id} sentence {j}: no other object for the 'No' sample")
                            template = None
                        else:
                            template = opts.bank.choose(REC, key, opts.seed, candidates=plain)
                    if template is not None and "bbox" in template.slots:
                        negative = others[stable_rng(opts.seed, "negative", source, key).randrange(len(others))]
                        prompt = template.fill(tag=sentence, bbox=placeholder(0))
                        for answer, target in (("Yes", box), ("No", negative)):
                            meta = base | {"template": template.index, "verification": answer.lower()}
                            rid = f"{source}-rec-{key}-{answer.lower()}"
                            out.records.append(single_turn(rid, image, REC, prompt, answer, source, meta, [target]))
                    elif template is not None:
                        meta = base | {"template": template.index}
                        prompt = template.fill(tag=sentence)
                        out.records.append(single_turn(f"{source}-rec-{key}", image, REC, prompt, placeholder(0), source, meta, [box]))
                if GC in tasks:
                    template = opts.bank.choose(GC, key, opts.seed, opts.template)
                    prompt = f"{template.fill()} {placeholder(0)}"
                    meta = base | {"template": template.index}
                    out.records.append(single_turn(f"{source}-gc-{key}", image, GC, prompt, sentence, source, meta, [box]))
    return out


def convert_refcoco_rec(inputs: list[Path], opts: ConvertOptions) -> Conversion:
    return convert_refcoco(inputs, opts, (REC,))


def convert_refcoco_gc(inputs: list[Path], opts: ConvertOptions) -> Conversion:
    return convert_refcoco(inputs, opts, (GC,))
