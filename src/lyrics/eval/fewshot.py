"""Prompts for zero- and few-shot evaluation (paper section 5.6, Figure 5).

A K-shot prompt is K exemplar turns (image + filled template as the human turn, the exemplar's
answer as the assistant turn) before the query's own turn; each turn's `<image>` placeholder takes
that turn's image, in order (`LyricsProcessor` expands them, the model fills them in order).

Exemplars are drawn by "naive random sampling" (the paper's words), independently for every query:
the generator is seeded with `(seed, benchmark, split, query id)` through SHA-256 (`stable_rng`), so
the exemplars of a query are the same whatever the batch size, shard or sample order, and a run with
seed s can be resumed or split across machines. The pool is the benchmark's train split when it has
one (`BenchmarkSpec.fewshot_split`), otherwise the evaluation split itself; an exemplar never shows
the query's image (which also excludes the query), so no answer leaks into its own prompt. The paper
reports the mean over five seeds; the runner scores each seed and averages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from lyrics.data.io import stable_rng
from lyrics.data.templates import Template
from lyrics.eval.benchmarks import BenchmarkSpec, EvalSample, exemplar_answer

DEFAULT_SEEDS = (0, 1, 2, 3, 4)


class ExemplarPool:
    """The samples exemplars are drawn from (those with an answer), indexed for fast draws.

    Args:
        samples: the pool split's samples.
        salt: extra seed material, e.g. `"vqav2/val2014"`, so benchmarks draw independently.
    """

    def __init__(self, samples: Sequence[EvalSample], salt: str = ""):
        self.samples = [s for s in samples if s.target]
        self.salt = salt
        self._per_image = Counter(s.image_key for s in self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def draw(self, query: EvalSample, k: int, seed: int) -> list[EvalSample]:
        """`k` distinct exemplars for `query` (none showing its image), the same on every call."""
        if k <= 0:
            return []
        available = len(self.samples) - self._per_image.get(query.image_key, 0)
        if available < k:
            raise ValueError(
                f"{k}-shot prompts need {k} exemplars with another image than the query; the pool has {available}"
            )
        rng = stable_rng(seed, self.salt, query.sample_id)
        chosen: list[EvalSample] = []
        tried: set[int] = set()
        # Rejection sampling over indices: O(k) per query however large the pool (VQAv2 train has
        # 443k questions), where filtering the pool per query would be O(pool).
        while len(chosen) < k:
            index = rng.randrange(len(self.samples))
            if index in tried:
                continue
            tried.add(index)
            if self.samples[index].image_key != query.image_key:
                chosen.append(self.samples[index])
        return chosen


def build_turns(
    spec: BenchmarkSpec, template: Template, query: EvalSample, exemplars: Sequence[EvalSample] = (), coordinate_format: str = "int1000"
) -> list[dict[str, str]]:
    """The conversation for `query` with `exemplars` before it; ends with the query's human turn."""
    turns: list[dict[str, str]] = []
    for exemplar in exemplars:
        turns.append({"from": "human", "value": template.fill(image=True, **exemplar.slots)})
        turns.append({"from": "gpt", "value": exemplar_answer(spec, exemplar, coordinate_format)})
    turns.append({"from": "human", "value": template.fill(image=True, **query.slots)})
    return turns
