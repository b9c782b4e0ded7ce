"""The batch job behind `lyrics refine`: refine a dataset into a feature store, resumably.

INPUT is one of
* a folder: every file with an image extension below it (recursively), ids = relative paths;
* a text file list: one image path per line (blank lines and `#` comments skipped), ids = the lines;
* a manifest, `.jsonl` (one object per line) or `.json` (a list, or `{"images": [...]}`): objects
  with "image" (or "file_name" / "path"), optional "id", optional "tags" (a list of strings, used
  by tagger "given").
Relative paths resolve against `image_root` (default: the list's or manifest's folder).

The listing is cut into shards of `shard_size` items in input order; shard `s` belongs to rank
`s % n` of `--shard i/n`, so ranks and machines split a dataset without talking to each other and can
share one output directory. Each shard is refined in batches and written atomically (see
`store.py`); a restart skips shards whose index exists and redoes the rest, so nothing is lost or
duplicated. Bad images (unreadable, too large, ...) and images the refiner fails on are recorded in
the errors file with the reason and never stop the job; setup errors (a missing model, a wrong
feature size) do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lyrics.configuration import RefinerConfig
from lyrics.refiner.images import IMAGE_EXTENSIONS, LoadedImage, load_image
from lyrics.refiner.provenance import REFINER_FIELDS, apply_overrides, refiner_fields
from lyrics.refiner.record import RefinerRecord
from lyrics.refiner.stages import BackendError
from lyrics.refiner.store import StoreLayout, prepare_store, write_errors_summary, write_shard

# Fields that change how fast the job runs, not what it writes: a restart may change them.
RUNTIME_FIELDS = ("batch_size", "transformers_version")
_IMAGE_KEYS = ("image", "file_name", "path")


@dataclass
class InputItem:
    """One entry of the input listing: an image to refine, or an entry already known to be bad."""

    image_id: str
    path: Path | None
    tags: list[str] | None = None
    error: str | None = None


# -------------------------------------------------------------------------------------- listing
def list_inputs(source: str | Path, image_root: str | Path | None = None) -> list[InputItem]:
    """The ordered listing of a folder, file list or manifest (module docstring)."""
    source = Path(source)
    if source.is_dir():
        root = Path(image_root) if image_root else source
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        items = [InputItem(p.relative_to(source).as_posix(), root / p.relative_to(source)) for p in files]
    elif not source.is_file():
        raise FileNotFoundError(f"input {source} does not exist (a folder, a file list or a manifest)")
    elif source.suffix.lower() in (".jsonl", ".json"):
        items = _read_manifest(source, Path(image_root) if image_root else source.parent)
    else:
        items = _read_list(source, Path(image_root) if image_root else source.parent)
    return _mark_duplicates(items)


def _read_list(path: Path, root: Path) -> list[InputItem]:
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            items.append(InputItem(entry, _resolve(entry, root)))
    return items


def _resolve(entry: str, root: Path) -> Path:
    candidate = Path(entry)
    return candidate if candidate.is_absolute() else root / candidate


def _read_manifest(path: Path, root: Path) -> list[InputItem]:
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON ({exc})") from exc
        entries = data.get("images") if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a list of image objects or {{'images': [...]}}")
        numbered = [(f"{path.name}[{i}]", entry) for i, entry in enumerate(entries)]
    else:
        numbered = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                numbered.append((f"{path.name}:{number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                numbered.append((f"{path.name}:{number}", ValueError(f"invalid JSON ({exc.msg})")))
    return [_manifest_item(where, entry, root) for where, entry in numbered]


def _manifest_item(where: str, entry: Any, root: Path) -> InputItem:
    def bad(reason: str) -> InputItem:
        return InputItem(where, None, error=f"manifest entry {where}: {reason}")

    if isinstance(entry, Exception):
        return bad(str(entry))
    if not isinstance(entry, dict):
        return bad(f"expected an object, got {type(entry).__name__}")
    image = next((entry[k] for k in _IMAGE_KEYS if k in entry), None)
    if not isinstance(image, str) or not image:
        return bad(f"no image path (one of {', '.join(_IMAGE_KEYS)})")
    image_id = str(entry.get("id", image))
    tags = entry.get("tags")
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
        return InputItem(image_id, None, error=f"manifest entry {where}: 'tags' must be a list of strings")
    return InputItem(image_id, _resolve(image, root), tags)


def _mark_duplicates(items: list[InputItem]) -> list[InputItem]:
    """The store is keyed by image id: a repeated id is an error entry, not a second record."""
    first: dict[str, int] = {}
    out = []
    for position, item in enumerate(items):
        if item.image_id in first and item.error is None:
            item = InputItem(item.image_id + f"#{position}", None, error=f"duplicate image id {item.image_id!r} (first at entry {first[item.image_id]})")
        first.setdefault(item.image_id, position)
        out.append(item)
    return out


def fingerprint(items: Sequence[InputItem]) -> str:
    """Identity of a listing (ids, tags, known errors; not absolute paths, so the same dataset
    resumed from another working directory still matches)."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([item.image_id, item.tags, item.error], ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


# ------------------------------------------------------------------------------------ config


def load_refiner_config(
    preset: str = "paper",
    config_file: str | Path | None = None,
    overrides: Sequence[str] | None = None,
    backends: Sequence[str] | None = None,
) -> RefinerConfig:
    """The `RefinerConfig` of a preset (or saved config directory), then a YAML file, dotted
    overrides and backend choices, in that order. YAML keys and overrides may name refiner fields
    directly (`box_threshold=0.3`) or through the full config (`refiner_config.box_threshold=0.3`);
    other LyricsConfig keys are checked by `load_config` and otherwise ignored (they do not change
    the refiner).

    `backends`: `STAGE=NAME` items (`tagger=clip`, `detector=toy`, `segmenter=none`), or `toy` for all
    three toy stages. A stage whose backend changes loads that backend's default model
    (`provenance.DEFAULT_MODELS`: `tagger=clip` -> openai/clip-vit-large-patch14) unless
    `<stage>_model` is given too (`--set tagger_model=...`); the preset's model of another backend
    (the paper's RAM++ name) is never carried over.
    """
    import yaml

    from lyrics.presets import load_config, parse_dotted

    def split(values: dict[str, Any], origin: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(refiner fields, other LyricsConfig fields) of a nested override mapping."""
        values = dict(values)
        refiner = {k: values.pop(k) for k in list(values) if k in REFINER_FIELDS}
        nested = values.pop("refiner_config", None) or {}
        if not isinstance(nested, dict):
            raise ValueError(f"{origin}: refiner_config must be a mapping")
        for key in nested:
            if key not in REFINER_FIELDS:
                raise ValueError(f"{origin}: unknown refiner_config field {key!r}")
        return {**refiner, **nested}, values

    layers: list[tuple[dict[str, Any], dict[str, Any]]] = []
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of config fields")
        layers.append(split(data, str(path)))
    if overrides:
        layers.append(split(parse_dotted(list(overrides)), "command-line override"))
    chosen: dict[str, Any] = {}
    for item in backends or []:
        if item.strip() == "toy":
            chosen.update(tagger="toy", detector="toy", segmenter="toy")
            continue
        stage, _, name = (part.strip() for part in item.partition("="))
        if stage not in ("tagger", "detector", "segmenter") or not name:
            raise ValueError(f"--backend must be STAGE=NAME with STAGE in tagger/detector/segmenter, or 'toy'; got {item!r}")
        chosen[stage] = name
    others: dict[str, Any] = {}
    explicit: dict[str, Any] = {}
    for refiner, rest in layers:
        others.update(rest)
        explicit.update(refiner)
    explicit.update(chosen)
    base = refiner_fields(load_config(preset, others or None).refiner_config)
    return RefinerConfig(**apply_overrides(base, explicit))


def store_info(config: RefinerConfig, items: Sequence[InputItem]) -> dict[str, Any]:
    """What `store.json` records: the refiner config that makes the store (every `RefinerConfig` field
    but the runtime ones: backends, model ids or paths, thresholds, layout, text format), and the
    store's layout and inputs. A resumed job must give the same (`store.prepare_store`)."""
    values = {k: v for k, v in refiner_fields(config).items() if k not in RUNTIME_FIELDS}
    return {
        "refiner_config": values,
        "feature_dim": config.local_feature_size,
        "feature_dtype": config.feature_dtype,
        "store_format": config.store_format,
        "shard_size": config.shard_size,
        "num_items": len(items),
        "num_shards": -(-len(items) // config.shard_size),
        "inputs_sha256": fingerprint(items),
    }


def _with_legacy_keys(root: str | Path, info: dict[str, Any]) -> dict[str, Any]:
    """Stores started before the record was cut to `RefinerConfig` fields also hold transformers'
    generic config keys (`id2label`, `return_dict`, ...) under `refiner_config`; carry them over so
    such a store still resumes, while the refiner's own fields are compared."""
    manifest = StoreLayout(Path(root)).manifest
    try:
        old = json.loads(manifest.read_text(encoding="utf-8")).get("refiner_config") or {}
    except (OSError, ValueError, AttributeError):
        return info  # no store yet, or a damaged one that prepare_store reports
    extra = {k: v for k, v in old.items() if k not in REFINER_FIELDS and k not in RUNTIME_FIELDS}
    return {**info, "refiner_config": {**extra, **info["refiner_config"]}} if extra else info


# ------------------------------------------------------------------------------------------ run
@dataclass
class JobSummary:
    """What one run of the job did (this rank only).

    `errors` counts every error recorded for this rank's shards: those this run wrote and those an
    earlier run wrote into the shards this one found done (`errors_earlier`), so a resumed job does
    not report "0 errors" beside an errors.jsonl full of them. `error_lines` is the length of the
    store's errors.jsonl (every rank's finished shards)."""

    store: Path
    shards_total: int = 0
    shards_skipped: int = 0
    shards_written: int = 0
    records: int = 0
    errors: int = 0
    errors_earlier: int = 0
    error_lines: int = 0

    def describe(self) -> str:
        """The one-line report of a run."""
        earlier = f" ({self.errors_earlier} from earlier runs)" if self.errors_earlier else ""
        return (
            f"{self.records} records and {self.errors - self.errors_earlier} errors in {self.shards_written} new shards "
            f"({self.shards_skipped} of {self.shards_total} already done); {self.errors} errors recorded{earlier} -> "
            f"{self.store} (errors: {self.store / 'errors.jsonl'}, {self.error_lines} lines)"
        )


def run_job(
    source: str | Path,
    out: str | Path,
    config: RefinerConfig,
    *,
    rank: int = 0,
    world: int = 1,
    device: str = "cpu",
    image_root: str | Path | None = None,
    visualize: str | Path | None = None,
    progress: bool = True,
    workers: int = 2,
    refiner: Any = None,
) -> JobSummary:
    """Refine `source` into the store `out` (module docstring). `refiner` overrides the
    `VisualRefiner` built from `config` (tests and callers with custom stages)."""
    items = list_inputs(source, image_root)
    if not items:
        raise ValueError(f"{source}: no images found (image extensions: {', '.join(IMAGE_EXTENSIONS)})")
    if config.tagger == "given":
        missing = [item for item in items if item.error is None and item.tags is None]
        if len(missing) == len(items) and items:
            raise ValueError("tagger='given' needs a manifest with per-image 'tags'; use --backend tagger=... for other inputs")
        for item in missing:
            item.error = "tagger='given' but the manifest gives no 'tags' for this image"
    from lyrics.refiner.pipeline import VisualRefiner

    layout = StoreLayout(Path(out))
    if refiner is None and not layout.manifest.exists():
        # A new store records its refiner only once that refiner loads, so a setup error (a missing
        # checkpoint) does not leave a store that refuses the corrected command.
        refiner = VisualRefiner.from_config(config, device)
    prepare_store(out, _with_legacy_keys(out, store_info(config, items)))
    num_shards = -(-len(items) // config.shard_size)
    mine = [s for s in range(num_shards) if s % world == rank]
    summary = JobSummary(Path(out), shards_total=len(mine))
    todo = [s for s in mine if not layout.done(s)]
    summary.shards_skipped = len(mine) - len(todo)
    summary.errors = summary.errors_earlier = sum(_line_count(layout.shard_errors(s)) for s in mine if s not in todo)
    if todo and refiner is None:
        refiner = VisualRefiner.from_config(config, device)

    def shard_items(shard: int) -> list[InputItem]:
        return items[shard * config.shard_size : (shard + 1) * config.shard_size]

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("refine"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar, ThreadPoolExecutor(max(1, workers)) as pool:
        task = bar.add_task("refine", total=sum(len(shard_items(s)) for s in mine))
        bar.advance(task, sum(len(shard_items(s)) for s in mine if s not in todo))
        for shard in todo:
            layout.clean_partial(shard)
            records, errors = [], []
            for batch, loaded in _prefetch(shard_items(shard), config, pool):
                done_records, done_errors = _refine_batch(refiner, config, batch, loaded, visualize)
                records.extend(done_records)
                errors.extend(done_errors)
                bar.advance(task, len(batch))
            write_shard(out, shard, records, errors, config.store_format, config.feature_dtype, config.local_feature_size)
            summary.shards_written += 1
            summary.records += len(records)
            summary.errors += len(errors)
    summary.error_lines = write_errors_summary(out)
    return summary


def _line_count(path: Path) -> int:
    """Non-blank lines of a shard's errors file (0 when it has none)."""
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()) if path.is_file() else 0


def _prefetch(
    items: list[InputItem], config: RefinerConfig, pool: ThreadPoolExecutor
) -> Iterator[tuple[list[InputItem], list[LoadedImage]]]:
    """Batches of items with their decoded images; the next batch loads while this one runs."""
    batches = [items[i : i + config.batch_size] for i in range(0, len(items), config.batch_size)]

    def submit(batch: list[InputItem]) -> list[Future[LoadedImage] | None]:
        return [pool.submit(load_image, item.path, config.max_image_pixels) if item.error is None else None for item in batch]

    pending = submit(batches[0]) if batches else []
    for index, batch in enumerate(batches):
        current = pending
        if index + 1 < len(batches):
            pending = submit(batches[index + 1])
        loaded = [f.result() if f is not None else LoadedImage(None, item.error) for f, item in zip(current, batch)]
        yield batch, loaded


def _refine_batch(
    refiner: Any, config: RefinerConfig, batch: list[InputItem], loaded: list[LoadedImage], visualize: str | Path | None
) -> tuple[list[RefinerRecord], list[dict[str, str]]]:
    """Records for the good images of a batch and error rows for the rest, both in input order."""
    outcome: dict[int, RefinerRecord | str] = {}
    good = []
    for position, (item, image) in enumerate(zip(batch, loaded)):
        if image.ok:
            good.append(position)
        else:
            outcome[position] = image.reason or "unreadable image"
    if good:
        try:
            records = _call(refiner, [batch[p] for p in good], [loaded[p] for p in good])
            outcome.update(zip(good, records))
        except BackendError:
            raise
        except Exception:  # noqa: BLE001 - one bad image must not sink its batch: retry one by one
            for p in good:
                try:
                    outcome[p] = _call(refiner, [batch[p]], [loaded[p]])[0]
                except BackendError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    outcome[p] = f"refiner failed: {type(exc).__name__}: {exc}"
    records, errors = [], []
    for position, item in enumerate(batch):
        result = outcome[position]
        if isinstance(result, str):
            errors.append({"image": item.image_id, "reason": result})
            continue
        if loaded[position].notes:
            result.meta["normalised"] = list(loaded[position].notes)
        records.append(result)
        if visualize is not None:
            from lyrics.refiner.visualize import save_visualization

            save_visualization(loaded[position].image, result, visualize)
    return records, errors


def _call(refiner: Any, items: list[InputItem], loaded: list[LoadedImage]) -> list[RefinerRecord]:
    return refiner([x.image for x in loaded], [i.image_id for i in items], [i.tags for i in items])
