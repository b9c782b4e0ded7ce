"""A streamed answer: generation runs in a thread, text pieces come out as they are decoded.

`TextStream` takes the work to run (a callable returning the finished result) rather than the
pipeline, so this module imports nothing from the pipeline: the pipeline imports it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from lyrics.inference.stopping import StopFilter


class TextStream:
    """Iterator of answer text pieces; `result` is set once the iteration ends. Errors raised by the
    generation thread are re-raised here.

    Args:
        work: runs the generation (feeding `streamer`) and returns its result (a `PipelineResult`).
        request: the request being answered; its `settings.stop` strings are held back from the
            pieces, and its `cancelled` event is set when the consumer stops iterating early.
        streamer: transformers' `TextIteratorStreamer` that `work` feeds.
    """

    def __init__(self, work: Callable[[], Any], request: Any, streamer: Any):
        self.result: Any = None
        self._error: BaseException | None = None
        self._streamer, self._request = streamer, request
        self._filter = StopFilter(request.settings.stop)
        self._thread = threading.Thread(target=self._work, args=(work,), daemon=True)
        self._thread.start()

    def _work(self, work: Callable[[], Any]) -> None:
        try:
            self.result = work()
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
