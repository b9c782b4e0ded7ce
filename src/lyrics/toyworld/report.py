"""The quickstart's HTML report: results beside baselines, loss curves, and example images with the
refiner's boxes, the predicted boxes and the answers. Pictures are PNG files drawn with PIL (no
plotting dependency) next to `report.html`."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

CURVE_SIZE = (560, 260)
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def draw_curves(series: dict[str, list[tuple[float, float]]], title: str, path: Path) -> Path:
    """A line chart of `name -> [(step, value)]` saved as PNG."""
    width, height = CURVE_SIZE
    left, right, top, bottom = 50, 150, 28, 30
    image = Image.new("RGB", CURVE_SIZE, "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 6), title, fill="black")
    points = [p for values in series.values() for p in values]
    if points:
        x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
        y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
        x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

        def at(x: float, y: float) -> tuple[float, float]:
            return (left + (x - x0) / (x1 - x0) * (width - left - right), height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom))

        draw.rectangle((left, top, width - right, height - bottom), outline=(180, 180, 180))
        for frac in (0.0, 0.5, 1.0):
            value = y0 + frac * (y1 - y0)
            draw.text((4, at(x0, value)[1] - 6), f"{value:.2f}", fill=(90, 90, 90))
        draw.text((left, height - bottom + 6), f"step {x0:.0f}", fill=(90, 90, 90))
        draw.text((width - right - 60, height - bottom + 6), f"step {x1:.0f}", fill=(90, 90, 90))
        for k, (name, values) in enumerate(series.items()):
            colour = PALETTE[k % len(PALETTE)]
            if len(values) > 1:
                draw.line([at(x, y) for x, y in values], fill=colour, width=2)
            draw.text((width - right + 10, top + 16 * k), name, fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def loss_curves(run: Path, fields: tuple[str, ...], title: str, path: Path) -> Path | None:
    log = read_log(run / "logs" / "train.jsonl")
    if not log:
        return None
    series = {f: [(r["step"], r[f]) for r in log if f in r] for f in fields}
    return draw_curves({k: v for k, v in series.items() if v}, title, path)


def draw_example(image: Image.Image, record, gt_box=None, predicted=None, caption: str = "") -> Image.Image:
    """Refiner objects (thin, per-tag colour), ground truth (green) and the predicted box (red)."""
    from lyrics.refiner.visualize import draw_record

    picture = draw_record(image, record) if record is not None else image.copy()
    draw = ImageDraw.Draw(picture)
    w, h = picture.size
    for box, colour in ((gt_box, (0, 170, 0)), (predicted, (220, 0, 0))):
        if box is not None:
            draw.rectangle((box[0] * w, box[1] * h, box[2] * w, box[3] * h), outline=colour, width=3)
    return picture


def _rec_examples(quickstart, checkpoint: Path, assets: Path, limit: int = 6) -> list[dict[str, str]]:
    from lyrics.eval.benchmarks import get_benchmark, load_samples
    from lyrics.eval.runner import read_predictions
    from lyrics.refiner.spatial import parse_first_box
    from lyrics.refiner.store import open_store

    world = quickstart.world
    run_dir = quickstart.out / "eval" / checkpoint.parent.name / "test" / "refcoco-test-0shot"
    predictions: dict[str, Any] = {}
    for path in sorted(run_dir.glob("predictions.seed0.*.jsonl")):
        predictions.update(read_predictions(path))
    store = open_store(quickstart.store_dir)
    samples = [s for s in load_samples(get_benchmark("refcoco"), world, "test", world / "images") if s.sample_id in predictions]
    rows = []
    fmt = quickstart.refiner_config().coordinate_format
    for sample in samples[:limit]:
        answer = predictions[sample.sample_id]["prediction"] or ""
        record = store.get(quickstart.keys(sample.image))
        picture = draw_example(Image.open(sample.image).convert("RGB"), record, sample.target["box"], parse_first_box(answer, fmt))
        name = f"rec_{sample.sample_id}.png"
        picture.save(assets / name)
        rows.append({"image": f"report/{name}", "prompt": sample.slots["tag"], "answer": answer, "tags": ", ".join(record.tags)})
    return rows


def _vqa_examples(quickstart, checkpoint: Path, limit: int = 8) -> list[dict[str, str]]:
    from lyrics.eval.runner import read_predictions

    run_dir = quickstart.out / "eval" / checkpoint.parent.name / "test" / "vqav2-toytest-0shot"
    rows = []
    predictions: dict[str, Any] = {}
    for path in sorted(run_dir.glob("predictions.seed0.*.jsonl")):
        predictions.update(read_predictions(path))
    annotations = {
        str(a["question_id"]): a
        for a in json.loads((quickstart.world / "vqav2" / "v2_mscoco_toytest_annotations.json").read_text())["annotations"]
    }
    for qid, record in list(predictions.items())[:limit]:
        ann = annotations.get(qid, {})
        rows.append({"question": record.get("prompt", ""), "answer": record.get("prediction", ""), "truth": ann.get("multiple_choice_answer", "")})
    return rows


def write_report(quickstart, checkpoint: Path, results: dict[str, dict[str, float]]) -> Path:
    """Write `OUT/report.html` (and `OUT/report/*.png`)."""
    from lyrics.atomic import atomic_write_text

    out = quickstart.out
    assets = out / "report"
    assets.mkdir(parents=True, exist_ok=True)
    curves = [
        loss_curves(out / "stage1", ("loss_itc", "loss_itm", "loss_icg", "loss_msp"), "stage 1 losses", assets / "stage1_losses.png"),
        loss_curves(out / "stage2", ("loss",), "stage 2 loss (responses)", assets / "stage2_loss.png"),
    ]
    rec = _rec_examples(quickstart, checkpoint, assets)
    vqa = _vqa_examples(quickstart, checkpoint)
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Lyrics quickstart</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}td.num{text-align:right}.pos{color:#080}.neg{color:#b00}"
        "figure{display:inline-block;margin:6px;width:250px;vertical-align:top}figure img{width:240px}</style></head><body>",
        "<h1>Lyrics quickstart on the toy world</h1>",
        f"<p>Checkpoint: <code>{esc(str(checkpoint))}</code>. Wall time: {quickstart.timings.get('total', 0):.0f} s "
        f"({', '.join(f'{k} {v:.0f}s' for k, v in quickstart.timings.items() if k != 'total')}).</p>",
        "<h2>Results (test and zero-shot splits; stage-1 retrieval on val) beside trivial baselines and chance</h2><table><tr><th>metric</th><th>Lyrics</th><th>baseline</th><th>difference</th></tr>",
    ]
    for name, entry in results.items():
        diff = entry["value"] - entry["baseline"]
        parts.append(
            f"<tr><td>{esc(name)}</td><td class=num>{entry['value']:.2f}</td><td class=num>{entry['baseline']:.2f}</td>"
            f"<td class='num {'pos' if diff > 0 else 'neg'}'>{diff:+.2f}</td></tr>"
        )
    parts.append("</table><p>Baselines: the most common training caption (CIDEr), the majority training answer per question type (VQA), always \"yes\" (POPE), the centre box (REC), chance (stage-1 retrieval and ITM).</p>")
    parts.append("<h2>Loss curves</h2>")
    parts += [f"<img src='report/{c.name}' alt='{c.stem}'>" for c in curves if c is not None]
    parts.append("<h2>Referring expressions (test split)</h2><p>Thin boxes: the refiner's objects; green: the ground truth; red: the box in Lyrics' answer.</p>")
    for row in rec:
        parts.append(
            f"<figure><img src='{row['image']}'><figcaption><b>{esc(row['prompt'])}</b><br>answer: {esc(row['answer'])}"
            f"<br><small>refiner tags: {esc(row['tags'])}</small></figcaption></figure>"
        )
    parts.append("<h2>Visual question answering (test split)</h2><table><tr><th>question</th><th>answer</th><th>ground truth</th></tr>")
    parts += [f"<tr><td>{esc(r['question'])}</td><td>{esc(r['answer'])}</td><td>{esc(r['truth'])}</td></tr>" for r in vqa]
    parts.append("</table></body></html>")
    path = out / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path
