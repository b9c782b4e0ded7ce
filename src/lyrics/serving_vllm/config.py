"""The configuration class vLLM reads a merged Lyrics folder's config.json with.

`LyricsConfig` (`lyrics.configuration`) with the architecture vLLM looks the model up by: the
project's `save_merged` writes no `architectures` field, and vLLM picks its model class from it.
"""

from __future__ import annotations

from lyrics.serving_vllm.folder import ARCHITECTURE

from lyrics.configuration import LyricsConfig as _LyricsConfig  # noqa: E402


class LyricsVllmConfig(_LyricsConfig):
    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # vLLM picks the model class from `architectures`; a merged folder may carry its stage-1
        # ancestor's ("LyricsForPretraining"), so this config always names the plugin's class.
        self.architectures = [ARCHITECTURE]
