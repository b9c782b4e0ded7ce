"""Training and evaluation data: official formats, instruction records, templates, mixing, datasets.

Paper concept -> module:
    Table 10 instruction templates           lyrics.data.templates (+ table10.json)
    instruction record format (LLaVA + boxes) lyrics.data.records
    official dataset formats (readers)       lyrics.data.official
    official -> instruction converters       lyrics.data.convert   (`lyrics convert`)
    Table 6 dataset mixing                   lyrics.data.mixing
    stage-2 dataset                          lyrics.data.dataset
    section 4 augmentation (crop, flip)      lyrics.data.augment
    stage-1 pairs: COCO / webdataset shards  lyrics.data.pairs, lyrics.data.webdata

Imports are kept light here: import the submodule you need.
"""

from lyrics.data.official.common import FormatError, MissingFilesError

__all__ = ["FormatError", "MissingFilesError"]
