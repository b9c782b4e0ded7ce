"""Length-grouped batches: each batch holds samples of similar length, so little of a step is padding.

Stage 2's prompts vary a lot in length (the refiner's spatial text grows with the number of
objects: about 34 LLM tokens each), and a right-padded batch costs as much as its longest row times
its size. HF Trainer's `group_by_length` and LLaVA's `group_by_modality_length` solve this the same
way: take a window of several batches from the shuffled stream, sort it by length, cut it into
batches, and shuffle the order of those batches. `LengthGroupedSampler` does that over any index
sampler (`MixtureSampler`, `DistributedSampler`), so the draws, their weights and every rank's share
are the base sampler's; only their order inside a window changes.

The order is a function of (seed, epoch, window) and of the base sampler's stream, so a resumed run
(which rebuilds the epoch's sampler and skips the batches already trained) sees the same batches
as an uninterrupted one; windows are whole batches long, so batch boundaries fall where
`BatchSampler` cuts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class LengthGroupedSampler(Sampler[int]):
    """Reorder `sampler`'s indices into batches of similar `lengths`.

    Args:
        sampler: the base index sampler (one epoch of one rank).
        lengths: a length (or cost) per dataset index, as a sequence or a function.
        batch_size: the batch size the trainer cuts the stream into.
        window_batches: batches per sorted window (more: less padding, less randomness).
        seed, epoch: seed the order of the batches inside each window.
    """

    def __init__(
        self,
        sampler: Iterable[int],
        lengths: Sequence[int] | Callable[[int], int],
        batch_size: int,
        window_batches: int = 16,
        seed: int = 0,
        epoch: int = 0,
    ):
        if batch_size < 1 or window_batches < 1:
            raise ValueError(f"batch_size and window_batches must be >= 1, got {batch_size} and {window_batches}")
        self.sampler = sampler
        self.length = lengths if callable(lengths) else lengths.__getitem__
        self.batch_size, self.window = batch_size, batch_size * window_batches
        self.seed, self.epoch = int(seed), int(epoch)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def _arrange(self, window: list[int], number: int) -> list[int]:
        # Longest first inside the window (a stable sort: equal lengths keep the stream's order), then
        # the full batches shuffled; a short last batch (the end of the epoch) stays last, where
        # `BatchSampler(drop_last=True)` drops it as it would have without grouping.
        ordered = sorted(window, key=self.length, reverse=True)
        full = len(ordered) // self.batch_size
        batches = [ordered[b * self.batch_size : (b + 1) * self.batch_size] for b in range(full)]
        rng = np.random.default_rng([self.seed, self.epoch, number])
        out = [i for b in rng.permutation(full) for i in batches[b]]
        return out + ordered[full * self.batch_size :]

    def __iter__(self) -> Iterator[int]:
        window: list[int] = []
        number = 0
        for index in self.sampler:
            window.append(int(index))
            if len(window) == self.window:
                yield from self._arrange(window, number)
                window, number = [], number + 1
        if window:
            yield from self._arrange(window, number)
