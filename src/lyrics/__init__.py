"""Lyrics: fine-grained language-vision alignment via semantic-aware visual objects.

Paper section -> module:
    3.1 MQ-Former                       lyrics.models.mqformer
    3.1 BLIP-2 initialisation           lyrics.models.blip2_weights
    3.1 image encoder (global features) lyrics.models.image_encoder
    4   configs and presets             lyrics.configuration, lyrics.presets
    4   parameter audit                 lyrics.audit
"""

__version__ = "0.1.0"

import logging as _logging

# torchao (the `quant` extra), imported by transformers whenever it is installed, warns at import
# that its CUDA-only kernels do not load, and torch warns about the enums it registers; on a CPU
# run both are noise printed by every command. Raise only those two loggers' thresholds.
for _name in ("torchao", "torch.utils._pytree"):
    if _logging.getLogger(_name).level == _logging.NOTSET:
        _logging.getLogger(_name).setLevel(_logging.ERROR)
