"""A streamed answer: generation runs in a thread, text pieces come out as they are decoded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lyrics.inference.stopping import StopFilter

if TYPE_CHECKING:
    from lyrics.inference.pipeline import ChatRequest, LyricsPipeline, PipelineResult


class TextStream:
    """Iterator of answer text pieces; `result` is set once the iteration ends. Errors raised by the
    generation thread are re-raised here."""

    def __init__(self, pipeline: LyricsPipeline, request: ChatRequest, streamer: Any):
        self.result: PipelineResult | None = None
        self._error: BaseException | None = None
        self._streamer, self._request = streamer, request
        self._filter = StopFilter(request.settings.stop)
        self._thread = threading.Thread(target=self._work, args=(pipeline, request), daemon=True)
        self._thread.start()

    def _work(self, pipeline: LyricsPipeline, request: ChatRequest) -> None:
        try:
            self.result = pipeline.run([request], streamer=self._streamer)[0]
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._error = exc
            self._streamer.end()

    def __iter__(self) -> Iterator[str]:
        try:
            for piece in self._streamer:
                out = self._filter.feed(piece)
                if out:
                    yield out
        finally:
            if self._thread.is_alive():
                self._request.cancelled.set()  # the consumer left early: stop generating
        self._thread.join()
        if self._error is not None:
            raise self._error
        tail = self._filter.flush()
        if tail:
            yield tail
