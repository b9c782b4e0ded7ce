"""DynamicBatcher: concurrent jobs merge into batches, answers equal single ones, admission control."""

import asyncio

import pytest

from lyrics.inference.batching import DynamicBatcher, QueueFull, Unavailable
from lyrics.inference.generation import GenerationSettings
from lyrics.inference.inputs import InputError
from lyrics.inference.pipeline import ChatRequest

Q = ["what color is the circle?", "how many objects are there?", "is there a red square?"]


def request(scenes, i, **settings):
    return ChatRequest(scenes[i % len(scenes)], Q[i % 3], settings=GenerationSettings(**{"max_new_tokens": 6, **settings}))


def test_concurrent_jobs_are_batched_and_answers_equal_single_ones(pipe, scenes):
    singles = [pipe.run([request(scenes, i)])[0].text for i in range(6)]

    async def main():
        batcher = DynamicBatcher(pipe, max_batch_size=4, window_ms=200)
        batcher.start()
        jobs = [batcher.submit(request(scenes, i)) for i in range(6)]
        assert batcher.queued == 6
        results = await asyncio.gather(*(job.result for job in jobs))
        await batcher.close()
        return results, batcher.batches

    results, batches = asyncio.run(main())
    assert [r.text for r in results] == singles
    assert batches == 2  # 6 jobs, at most 4 per batch, all queued within the window


def test_streaming_rows_get_their_own_pieces(pipe, scenes):
    singles = [pipe.run([request(scenes, i, stop=(" 9999",))])[0].text for i in range(3)]

    async def main():
        batcher = DynamicBatcher(pipe, max_batch_size=3, window_ms=200)
        batcher.start()
        pieces = {0: [], 2: []}
        jobs = [batcher.submit(request(scenes, i, stop=(" 9999",)), on_text=pieces[i].append if i in pieces else None) for i in range(3)]
        results = await asyncio.gather(*(job.result for job in jobs))
        await batcher.close()
        return results, pieces, batcher.batches

    results, pieces, batches = asyncio.run(main())
    assert batches == 1 and [r.text for r in results] == singles
    assert "".join(pieces[0]) == singles[0] and "".join(pieces[2]) == singles[2] and len(pieces[0]) > 1


def test_a_bad_row_fails_alone(pipe, scenes):
    async def main():
        batcher = DynamicBatcher(pipe, max_batch_size=4, window_ms=200)
        batcher.start()
        good = batcher.submit(request(scenes, 0))
        bad = batcher.submit(ChatRequest(scenes[1], "what is <region>?", settings=GenerationSettings(max_new_tokens=4)))
        await good.started
        with pytest.raises(InputError, match="placeholder"):
            await bad.started
        outcome = await asyncio.gather(good.result, bad.result, return_exceptions=True)
        await batcher.close()
        return outcome

    good, bad = asyncio.run(main())
    assert good.text == pipe.run([request(scenes, 0)])[0].text
    assert isinstance(bad, InputError) and bad.param == "regions"


def test_admission_control(pipe, scenes):
    async def main():
        batcher = DynamicBatcher(pipe, max_batch_size=1, window_ms=0, max_pending=2, queue_timeout_s=0.0)
        with pytest.raises(Unavailable, match="not running"):
            batcher.submit(request(scenes, 0))
        batcher.start()
        first, second = batcher.submit(request(scenes, 0)), batcher.submit(request(scenes, 1))
        with pytest.raises(QueueFull, match=r"limit 2"):
            batcher.submit(request(scenes, 2))
        outcome = await asyncio.gather(first.result, second.result, return_exceptions=True)
        await batcher.close()
        with pytest.raises(Unavailable, match="shutting down"):
            batcher.submit(request(scenes, 0))
        return outcome

    outcome = asyncio.run(main())
    # queue_timeout 0: whatever waited in the queue is refused as overloaded
    assert all(isinstance(o, Unavailable) and "overloaded" in str(o) for o in outcome)


def test_cancelled_jobs_are_skipped(pipe, scenes, monkeypatch):
    rows = []
    original = pipe.generate
    monkeypatch.setattr(pipe, "generate", lambda prepared, streamer=None: rows.append(len(prepared)) or original(prepared, streamer))

    async def main():
        batcher = DynamicBatcher(pipe, max_batch_size=4, window_ms=100)
        batcher.start()
        gone, kept = batcher.submit(request(scenes, 0)), batcher.submit(request(scenes, 1))
        gone.result.cancel()
        result = await kept.result
        await batcher.close()
        return result, batcher

    result, batcher = asyncio.run(main())
    assert result.text and batcher.in_flight == 0 and batcher.queued == 0
    assert rows == [1]  # the cancelled job never reached the model
