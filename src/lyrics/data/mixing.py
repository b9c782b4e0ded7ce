"""Mixing record sources with sampling weights (paper Table 6: several datasets per task, trained
simultaneously) as a deterministic, resumable, rank-sharded sampler.

Weights are a YAML-friendly mapping (or the same as a string)::

    mixture: {captioning: 0.3, vqa: 0.4, rec: 0.2, text: 0.1}      # or "captioning 0.3, vqa 0.4, ..."

The sampler defines ONE global stream shared by all ranks. Global draw `t` picks a source with the
weights (numpy, seeded by (seed, t // BLOCK)), then the next unused element of that source's
current pass; each pass over a source is a fresh seeded permutation. Rank `r` of `world_size` takes
draws `t = r, r + world_size, ...`, so ranks never see the same draw, and within a pass over a
source no element is drawn twice: no duplicates across ranks.

The whole state is the number of global draws consumed (`position`): per-source cursors are
recomputed from it by counting source choices block by block (vectorised, so a position of
millions restores in milliseconds). `state_dict()` / `load_state_dict()` therefore resume exactly,
even on a different number of DataLoader workers (the sampler runs in the main process).

Indices are flat indices into the sources concatenated in `names` order, i.e. a
`torch.utils.data.ConcatDataset` of the sources; `locate(i)` maps back to (name, local index).

Table 8's ablation ("w/o specific train split": a dataset's train split left out of stage 2 so its
benchmark is zero-shot) is `exclude_train`, applied to the records before the sampler is built, so
the excluded records are not in any source and can never be drawn.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from lyrics.data.io import stable_seed
from lyrics.data.sharding import distributed_rank_world

BLOCK = 4096


def parse_weights(spec: Mapping[str, float] | str) -> dict[str, float]:
    """`{"captioning": 0.3, ...}` or `"captioning 0.3, vqa 0.4"` (also `name=0.3` / `name: 0.3`)."""
    if isinstance(spec, str):
        items = [part.strip() for part in spec.split(",") if part.strip()]
        weights = {}
        for item in items:
            match = re.fullmatch(r"([^\s:=]+)\s*[:=]?\s*([0-9.eE+-]+)", item)
            if not match:
                raise ValueError(f"cannot read mixture weight {item!r}; write 'name 0.3'")
            weights[match.group(1)] = float(match.group(2))
        spec = weights
    weights = {str(k): float(v) for k, v in dict(spec).items()}
    if not weights:
        raise ValueError("the mixture has no sources")
    bad = {k: v for k, v in weights.items() if not np.isfinite(v) or v < 0}
    if bad:
        raise ValueError(f"mixture weights must be finite and >= 0, got {bad}")
    if sum(weights.values()) <= 0:
        raise ValueError("at least one mixture weight must be positive")
    return weights


class MixtureSampler(Sampler[int]):
    """Weighted, seeded, resumable sampler over named sources.

    Args:
        sizes: number of samples of each source, e.g. `{"captioning": len(cap), ...}`; the order of
            this mapping is the concatenation order of the flat indices.
        weights: sampling weight per source (`parse_weights` forms); sources absent or at 0 are
            never drawn. Weights are relative: they are normalised to probabilities.
        seed: seed of the whole stream.
        samples_per_epoch: global draws per epoch (all ranks together); default: total size. One
            `iter()` yields this rank's share of the current epoch, from the current position.
        rank, world_size: this process's place among the data-parallel ranks; default from
            torch.distributed when initialised, else 0 and 1.
    """

    def __init__(
        self,
        sizes: Mapping[str, int],
        weights: Mapping[str, float] | str,
        seed: int = 0,
        samples_per_epoch: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        self.names = list(sizes)
        self.sizes = np.array([int(sizes[n]) for n in self.names], dtype=np.int64)
        self.weights = parse_weights(weights)
        unknown = sorted(set(self.weights) - set(self.names))
        if unknown:
            raise ValueError(f"mixture weights name unknown sources {unknown}; sources: {self.names}")
        probs = np.array([self.weights.get(n, 0.0) for n in self.names], dtype=np.float64)
        empty = [n for n, size, p in zip(self.names, self.sizes, probs) if p > 0 and size <= 0]
        if empty:
            raise ValueError(f"sources {empty} have a positive weight but no samples")
        self.probs = probs / probs.sum()
        self.seed = int(seed)
        self.rank, self.world_size = distributed_rank_world(rank, world_size)
        total = int(self.sizes[self.probs > 0].sum())
        self.samples_per_epoch = int(samples_per_epoch) if samples_per_epoch is not None else total
        if self.samples_per_epoch < self.world_size:
            raise ValueError(f"samples_per_epoch={self.samples_per_epoch} is smaller than world_size={self.world_size}")
        # Every rank yields the same number of samples per epoch (DDP needs equal step counts).
        self.samples_per_epoch -= self.samples_per_epoch % self.world_size
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.position = 0  # global draws consumed (all ranks)

    # --- the global stream -------------------------------------------------------------------
    def _block(self, b: int) -> np.ndarray:
        rng = np.random.default_rng(stable_seed(self.seed, "mixture-block", b))
        return rng.choice(len(self.names), size=BLOCK, p=self.probs)

    def _permutation(self, source: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng(stable_seed(self.seed, "mixture-perm", self.names[source], epoch))
        return rng.permutation(int(self.sizes[source]))

    def _counts_before(self, t: int) -> np.ndarray:
        """How many of global draws [0, t) went to each source."""
        counts = np.zeros(len(self.names), dtype=np.int64)
        full, rest = divmod(t, BLOCK)
        for b in range(full):
            counts += np.bincount(self._block(b), minlength=len(self.names))
        if rest:
            counts += np.bincount(self._block(full)[:rest], minlength=len(self.names))
        return counts

    def global_stream(self, start: int, stop: int) -> Iterator[tuple[int, int]]:
        """(global draw t, flat index) for t in [start, stop)."""
        cursors = self._counts_before(start)
        perms: dict[tuple[int, int], np.ndarray] = {}
        block_id, block = -1, None
        for t in range(start, stop):
            if t // BLOCK != block_id:
                block_id = t // BLOCK
                block = self._block(block_id)
            s = int(block[t % BLOCK])
            epoch, offset = divmod(int(cursors[s]), int(self.sizes[s]))
            if (s, epoch) not in perms:
                perms = {k: v for k, v in perms.items() if k[0] != s}  # keep one pass per source
                perms[(s, epoch)] = self._permutation(s, epoch)
            cursors[s] += 1
            yield t, int(self.offsets[s] + perms[(s, epoch)][offset])

    # --- Sampler API ---------------------------------------------------------------------------
    def __len__(self) -> int:
        """Samples this rank yields per epoch."""
        return self.samples_per_epoch // self.world_size

    @property
    def epoch(self) -> int:
        return self.position // self.samples_per_epoch

    def __iter__(self) -> Iterator[int]:
        start = self.position
        stop = (start // self.samples_per_epoch + 1) * self.samples_per_epoch
        for t, index in self.global_stream(start, stop):
            if t % self.world_size == self.rank:
                self.position = t + self.world_size - self.rank  # the whole round of ranks is consumed
                yield index
        self.position = stop

    def locate(self, index: int) -> tuple[str, int]:
        """(source name, index inside the source) of a flat index."""
        s = bisect.bisect_right(self.offsets.tolist(), index) - 1
        if not 0 <= s < len(self.names) or index >= self.offsets[-1]:
            raise IndexError(f"flat index {index} is outside the {int(self.offsets[-1])} samples")
        return self.names[s], int(index - self.offsets[s])

    def state_dict(self, samples_consumed: int | None = None) -> dict[str, Any]:
        """The position to resume from.

        A DataLoader pulls indices ahead of the training loop (prefetching), so the sampler's own
        position can be ahead of what was trained on. Pass `samples_consumed` (samples this rank
        has trained on since position 0) to save exactly the trained position.
        """
        position = self.position if samples_consumed is None else int(samples_consumed) * self.world_size
        return {
            "position": position,
            "seed": self.seed,
            "names": list(self.names),
            "sizes": [int(s) for s in self.sizes],
            "weights": dict(self.weights),
            "world_size": self.world_size,
            "samples_per_epoch": self.samples_per_epoch,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at `state["position"]`; refuses a state saved for a different mixture."""
        mine = self.state_dict()
        for key in ("seed", "names", "sizes", "weights"):
            if state.get(key) != mine[key]:
                raise ValueError(f"sampler state was saved with {key}={state.get(key)!r}, this sampler has {mine[key]!r}")
        position = int(state["position"])
        if position % self.world_size:
            # A different world size: continue from the next whole round (never replay a draw).
            position += self.world_size - position % self.world_size
        self.position = position


def mixture_from_config(
    sources: Mapping[str, Mapping[str, Any]],
    image_root: str | None = None,
    seed: int = 0,
    samples_per_epoch: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    **dataset_kwargs: Any,
):
    """Build `(ConcatDataset of InstructionDatasets, MixtureSampler)` from a YAML-style mapping::

        captioning: {records: coco_captions.json, weight: 0.3}
        vqa: {records: [vqav2.json, gqa.json], weight: 0.4, image_root: /data/vqa}
        rec: {records: refcoco.json, weight: 0.2}
        text: {records: alpaca.json, weight: 0.1}

    `image_root` is the default for sources without their own; `dataset_kwargs` (refiner_store,
    transform) go to every `InstructionDataset`.
    """
    from torch.utils.data import ConcatDataset

    from lyrics.data.dataset import InstructionDataset

    datasets, sizes, weights = [], {}, {}
    for name, spec in sources.items():
        if not isinstance(spec, Mapping) or "records" not in spec:
            raise ValueError(f"mixture source {name!r} needs a 'records' path (and a 'weight')")
        unknown = set(spec) - {"records", "weight", "image_root"}
        if unknown:
            raise ValueError(f"mixture source {name!r} has unknown keys {sorted(unknown)}")
        dataset = InstructionDataset(spec["records"], spec.get("image_root", image_root), seed=seed, **dataset_kwargs)
        datasets.append(dataset)
        sizes[name] = len(dataset)
        weights[name] = float(spec.get("weight", 1.0))
    sampler = MixtureSampler(sizes, weights, seed, samples_per_epoch, rank, world_size)
    return ConcatDataset(datasets), sampler


# ------------------------------------------------------------------------- Table 8 ablation
TABLE8_ROW = "w/o specific train split"  # the ablation row of the paper's Table 8
# Table 8's columns -> the record `source` of their train split (what `lyrics convert` writes);
# any other name is matched literally against record sources and mixture source names.
TRAIN_SOURCE_ALIASES = {"flickr30k": ("karpathy_flickr30k",), "coco": ("coco_captions", "karpathy_coco")}
NO_TRAIN_SPLIT = {"nocaps": "NoCaps has no train split in the instruction data (Table 6), so its Table 8 cell needs no exclusion"}


def parse_exclude(value: str | Sequence[str] | None) -> list[str]:
    """`"gqa"`, `"gqa, textvqa"` (what `--set data.exclude_train=gqa` gives) or a list -> names."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    refused = [f"{n}: {NO_TRAIN_SPLIT[n]}" for n in names if n in NO_TRAIN_SPLIT]
    if refused:
        raise ValueError("; ".join(refused))
    return list(dict.fromkeys(names))


def exclude_train(parts: Mapping[str, Sequence[Any]], names: Sequence[str]) -> tuple[dict[str, list[Any]], dict[str, int]]:
    """Drop the train splits of the datasets `names` from the stage-2 data (Table 8's ablation).

    A record goes when its `source` (the dataset `lyrics convert` made it from: `gqa`, `vqav2`,
    `okvqa`, `textvqa`, `refcocog`, `karpathy_flickr30k`, ...) is named, directly or through
    `TRAIN_SOURCE_ALIASES`; a mixture source whose own name is named goes whole.

    Args:
        parts: mixture source name -> its records (anything with a `.source`).
        names: the datasets to drop.

    Returns:
        (the kept records per mixture source, without sources left empty; how many records each
        name removed). A name that removes nothing is an error listing the sources there are: an
        ablation that silently trains on everything would be reported as zero-shot.
    """
    wanted = {name: {name, *TRAIN_SOURCE_ALIASES.get(name, ())} for name in names}
    kept: dict[str, list[Any]] = {}
    removed = dict.fromkeys(names, 0)
    for part, records in parts.items():
        whole = next((n for n in names if n == part.lower()), None)
        if whole is not None:
            removed[whole] += len(records)
            continue
        keep = []
        for record in records:
            hit = next((n for n, sources in wanted.items() if str(record.source).lower() in sources), None)
            if hit is None:
                keep.append(record)
            else:
                removed[hit] += 1
        if keep:
            kept[part] = keep
    unused = [n for n, count in removed.items() if not count]
    if unused:
        present = sorted({str(r.source) for records in parts.values() for r in records} | set(parts))
        raise ValueError(f"data.exclude_train: no record or mixture source is {unused}; sources here: {present}")
    if not kept:
        raise ValueError(f"data.exclude_train {list(names)} removes every training record")
    return kept, removed
