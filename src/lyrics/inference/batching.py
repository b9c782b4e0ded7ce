"""Dynamic batching for the server: concurrent requests share one refiner batch and one `generate`.

    handler ──submit──> asyncio queue ──worker──> groups of up to `max_batch_size` jobs collected
                                                   within `window_ms` of the first one
                                                   └─> model thread: pipeline.prepare + generate

Why: on an accelerator (and even on CPU for small models) one forward over B rows costs far less
than B forwards, so throughput grows with load while a lone request waits at most `window_ms`.
Jobs in a group may differ in `max_new_tokens`, `stop` and streaming; rows are grouped by their
sampling settings (`GenerationSettings.batch_key`), and greedy answers equal single-request answers
because each row decodes independently (`RowStopper`, left padding).

A failure inside a batch (a bug, an out-of-memory error) is not blamed on every row: the rows are
run again one by one, so only the request that causes it fails. A streamed row that already sent
text cannot be replayed and fails with the batch's error.

Admission control: at most `max_pending` jobs queued or running; the next one gets `QueueFull` (429).
A closed batcher, or a job that waited longer than `queue_timeout_s`, gets `Unavailable` (503).
The model runs in one dedicated thread, so the event loop stays free to accept and reject requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from transformers.generation.streamers import BaseStreamer

from lyrics.inference.inputs import InputError
from lyrics.inference.pipeline import ChatRequest, LyricsPipeline, PipelineResult
from lyrics.inference.stopping import StopFilter

log = logging.getLogger("lyrics.serve")


class QueueFull(Exception):
    """Too many requests queued or running (HTTP 429)."""


class Unavailable(Exception):
    """The server is shutting down or overloaded (HTTP 503)."""


@dataclass
class Job:
    """One request waiting for the model. `on_text` (streaming) gets answer pieces from the model
    thread; `started` resolves when its batch begins generating (or fails with the row's error), so a
    streaming response can still answer 400 before sending its 200 headers."""

    request: ChatRequest
    result: asyncio.Future
    started: asyncio.Future
    on_text: Callable[[str], None] | None = None
    enqueued: float = field(default_factory=time.monotonic)
    streamed: bool = False  # text was already sent to the client (a retry would repeat it)

    def emit(self, text: str) -> None:
        self.streamed = True
        self.on_text(text)  # type: ignore[misc]


class BatchTextStreamer(BaseStreamer):
    """Streams a batched `generate` row by row (transformers' streamers take one row only).

    Each step, transformers hands `put` the new token of every row; a row's text so far is decoded in
    full and the new suffix is sent through the row's `StopFilter` to its callback. Text ending in an
    incomplete character (U+FFFD) waits for the next token."""

    def __init__(self, decode: Callable[[list[int]], str], callbacks: list[Callable[[str], None] | None], stops: list[tuple[str, ...]], eos_token_id: int | None):
        self.decode, self.callbacks, self.eos = decode, callbacks, eos_token_id
        self.filters = [StopFilter(stop) for stop in stops]
        self.tokens: list[list[int]] = [[] for _ in callbacks]
        self.sent = [0] * len(callbacks)
        self.done = [cb is None for cb in callbacks]
        self.prompt_seen = False

    def _emit(self, row: int, text: str) -> None:
        if text:
            self.callbacks[row](text)  # type: ignore[misc]

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt ids
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.done[row]:
                continue
            if token == self.eos:
                self.done[row] = True
                continue
            self.tokens[row].append(token)
            text = self.decode(self.tokens[row])
            if text.endswith("\ufffd"):
                continue
            self._emit(row, self.filters[row].feed(text[self.sent[row]:]))
            self.sent[row] = len(text)
            if self.filters[row].stopped:
                self.done[row] = True

    def end(self) -> None:
        for row, callback in enumerate(self.callbacks):
            if callback is None:
                continue
            text = self.decode(self.tokens[row])
            if not self.filters[row].stopped:
                self._emit(row, self.filters[row].feed(text[self.sent[row]:]) if len(text) > self.sent[row] else "")
            self._emit(row, self.filters[row].flush())


class DynamicBatcher:
    """Queue + worker that merges concurrent requests into batched pipeline calls.

    Args:
        pipeline: the `LyricsPipeline`.
        max_batch_size: rows per model call (1 disables batching).
        window_ms: after the first queued job, wait this long for more.
        max_pending: jobs queued or running at once.
        queue_timeout_s: a job queued longer than this fails with `Unavailable`.
    """

    def __init__(self, pipeline: LyricsPipeline, max_batch_size: int = 8, window_ms: float = 10.0, max_pending: int = 64, queue_timeout_s: float = 120.0):
        self.pipeline = pipeline
        self.max_batch_size, self.window_s = max(1, max_batch_size), max(0.0, window_ms) / 1000
        self.max_pending, self.queue_timeout_s = max_pending, queue_timeout_s
        self.queue: asyncio.Queue[Job | None] = asyncio.Queue()
        self.queued = 0
        self.in_flight = 0
        self.batches = 0
        self.closed = False
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lyrics-model")

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="lyrics-batcher")

    async def close(self, drain_timeout_s: float = 30.0) -> None:
        """Refuse new jobs, let queued and running ones finish (up to `drain_timeout_s`), stop."""
        self.closed = True
        if self._worker is not None:
            await self.queue.put(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), drain_timeout_s)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._worker.cancel()
        while not self.queue.empty():
            job = self.queue.get_nowait()
            if job is not None:
                self._fail(job, Unavailable("the server is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def healthy(self) -> bool:
        return self._worker is not None and not self._worker.done() and not self.closed

    # --- submitting -----------------------------------------------------------------------------
    def submit(self, request: ChatRequest, on_text: Callable[[str], None] | None = None) -> Job:
        """Queue a request; await `job.result` (a `PipelineResult`). Raises `QueueFull` or `Unavailable`."""
        if self.closed or self._worker is None or self._worker.done():
            raise Unavailable("the server is shutting down" if self.closed else "the model worker is not running")
        if self.queued + self.in_flight >= self.max_pending:
            raise QueueFull(f"server busy: {self.queued} queued and {self.in_flight} running requests (limit {self.max_pending}); retry later")
        loop = asyncio.get_running_loop()
        job = Job(request, loop.create_future(), loop.create_future(), on_text)
        self.queued += 1
        self.queue.put_nowait(job)
        return job

    # --- the worker ---------------------------------------------------------------------------------
    async def _collect(self, first: Job) -> tuple[list[Job], bool]:
        """The first job plus whatever else arrives within the window (up to the batch size)."""
        batch, stop = [first], False
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch_size:
            try:
                job = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if job is None:
                stop = True
                break
            batch.append(job)
        return batch, stop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            first = await self.queue.get()
            if first is None:
                break
            batch, stop = await self._collect(first)
            self.queued -= len(batch)
            live = []
            for job in batch:
                if job.result.done():  # the client went away while queued
                    continue
                if time.monotonic() - job.enqueued > self.queue_timeout_s:
                    self._fail(job, Unavailable(f"server overloaded: request waited over {self.queue_timeout_s:.0f} s in the queue"))
                    continue
                live.append(job)
            groups: dict[tuple, list[Job]] = {}
            for job in live:
                groups.setdefault(job.request.settings.batch_key(), []).append(job)
            for jobs in groups.values():
                self.in_flight += len(jobs)
                try:
                    outcomes = await loop.run_in_executor(self._executor, self._process, jobs, loop)
                except Exception as exc:  # noqa: BLE001 - a bug must fail these jobs, not the worker
                    outcomes = [exc] * len(jobs)
                finally:
                    self.in_flight -= len(jobs)
                self.batches += 1
                for job, outcome in zip(jobs, outcomes):
                    if isinstance(outcome, BaseException):
                        self._fail(job, outcome)
                    elif not job.result.done():
                        job.result.set_result(outcome)

    def _fail(self, job: Job, exc: BaseException) -> None:
        for future in (job.started, job.result):
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved: a client that left never awaits it

    def _process(self, jobs: list[Job], loop: asyncio.AbstractEventLoop) -> list[PipelineResult | BaseException]:
        """Model thread: the batch in one go; if it raises, each row again alone, so the error lands
        on the row that causes it and the others still get their answers."""
        try:
            return self._process_batch(jobs, loop)
        except Exception as exc:  # noqa: BLE001 - isolated below
            if len(jobs) == 1:
                return [exc]
            log.warning("a batch of %d requests failed (%s: %s); running them one by one", len(jobs), type(exc).__name__, exc)
            outcomes: list[PipelineResult | BaseException] = []
            for job in jobs:
                if job.streamed:  # its client already has part of the failed answer
                    outcomes.append(exc)
                    continue
                try:
                    outcomes.extend(self._process_batch([job], loop))
                except Exception as alone:  # noqa: BLE001 - this row's own failure
                    outcomes.append(alone)
            return outcomes

    def _process_batch(self, jobs: list[Job], loop: asyncio.AbstractEventLoop) -> list[PipelineResult | BaseException]:
        """Prepare every row (bad rows fail alone), then one generate for the rest."""
        prepared = self.pipeline.prepare([job.request for job in jobs])
        outcomes: list[PipelineResult | BaseException] = [item for item in prepared]  # type: ignore[misc]
        good = [i for i, item in enumerate(prepared) if not isinstance(item, InputError)]
        for i, job in enumerate(jobs):
            error = prepared[i] if isinstance(prepared[i], InputError) else None
            loop.call_soon_threadsafe(_resolve, job.started, error)
        if not good:
            return outcomes
        rows = [prepared[i] for i in good]
        streamer = None
        if any(jobs[i].on_text is not None for i in good):
            streamer = BatchTextStreamer(
                self.pipeline.decode, [jobs[i].emit if jobs[i].on_text else None for i in good], [jobs[i].request.settings.stop for i in good],
                self.pipeline.eos_token_id,
            )  # fmt: skip
        results = self.pipeline.generate(rows, streamer)  # type: ignore[arg-type]
        for i, result in zip(good, results):
            outcomes[i] = result
        return outcomes


def _resolve(future: asyncio.Future, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(True)
    else:
        future.set_exception(error)
        future.exception()


def batch_stats(batcher: DynamicBatcher) -> dict[str, Any]:
    return {"queue_depth": batcher.queued, "in_flight": batcher.in_flight, "batches": batcher.batches, "max_pending": batcher.max_pending}
