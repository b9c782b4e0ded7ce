"""The visual refiner (paper section 3.1, Figure 2 right): tagger -> detector -> segmenter.

Modules, one concept each:

* `spatial`      - the textual spatial representation `<br><T>tag</T><Bbox>(x1,y1),(x2,y2)</Box></br>`
* `record`       - `RefinerRecord`, what the refiner says about one image
* `stages`       - the stage protocols and the `Detection` / `Segment` they exchange
* `tagging`      - CLIP zero-shot tagger, RAM++ adapter, given tags
* `detection`    - Grounding-DINO prompted by tags, prompt chunking, NMS, top-K
* `segmentation` - SAM / SAM-HQ prompted by boxes, pooled per-object features
* `backends`     - what a backend name means: (stage, name) -> factory; plug-ins via entry points
* `pipeline`     - `VisualRefiner`, the three stages turned into records
* `images`       - robust image loading for the batch job
* `rle`          - COCO RLE of masks
* `store`        - the sharded feature store (`open_store`) that training reads
* `job`          - `lyrics refine`, the resumable batch job
* `visualize`    - pictures of the refiner's output

The names below are imported lazily, so `import lyrics.refiner.spatial` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "VisualRefiner": "lyrics.refiner.pipeline",
    "RefinerRecord": "lyrics.refiner.record",
    "RefinedObject": "lyrics.refiner.record",
    "FeatureStore": "lyrics.refiner.store",
    "open_store": "lyrics.refiner.store",
    "run_job": "lyrics.refiner.job",
    "load_image": "lyrics.refiner.images",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lyrics.refiner' has no attribute {name!r}")
