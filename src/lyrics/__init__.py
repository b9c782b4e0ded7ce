"""Lyrics: fine-grained language-vision alignment via semantic-aware visual objects.

Paper section -> module:
    3.1 MQ-Former                       lyrics.models.mqformer
    3.1 BLIP-2 initialisation           lyrics.models.blip2_weights
    3.1 image encoder (global features) lyrics.models.image_encoder
    4   configs and presets             lyrics.configuration, lyrics.presets
    4   parameter audit                 lyrics.audit
"""

__version__ = "0.1.0"
