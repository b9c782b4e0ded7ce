import random

import pytest
from torch.utils.data import BatchSampler

from lyrics.data.grouping import LengthGroupedSampler


def batches(sampler, size):
    return list(BatchSampler(sampler, size, drop_last=True))


def test_the_same_draws_in_batches_of_similar_length():
    rng = random.Random(0)
    lengths = [rng.randint(50, 400) for _ in range(1000)]
    stream = [rng.randrange(1000) for _ in range(640)]  # with repeats, like a weighted mixture
    grouped = list(LengthGroupedSampler(stream, lengths, batch_size=8, window_batches=16, seed=3))
    assert sorted(grouped) == sorted(stream)  # only the order changes
    for start in range(0, len(stream), 128):  # and only inside a window
        assert sorted(grouped[start : start + 128]) == sorted(stream[start : start + 128])

    def padded(order):
        return sum(8 * max(lengths[i] for i in b) for b in batches(order, 8))

    assert padded(grouped) < 0.8 * padded(stream)


def test_the_order_is_a_function_of_seed_and_epoch():
    lengths = list(range(200))
    stream = list(range(200))[::-1]
    one = list(LengthGroupedSampler(stream, lengths, 4, window_batches=5, seed=1, epoch=0))
    assert one == list(LengthGroupedSampler(stream, lengths, 4, window_batches=5, seed=1, epoch=0))
    assert one != list(LengthGroupedSampler(stream, lengths, 4, window_batches=5, seed=1, epoch=1))
    assert one != list(LengthGroupedSampler(stream, lengths, 4, window_batches=5, seed=2, epoch=0))
    first = batches(one, 4)[:5]  # the first window's batches: each of 4 consecutive lengths, shuffled
    assert all(max(b) - min(b) == 3 for b in first) and first != sorted(first, reverse=True)


def test_a_short_tail_stays_last_and_lengths_may_be_a_function():
    stream = list(range(10))
    grouped = list(LengthGroupedSampler(stream, lambda i: -i, batch_size=4, window_batches=2))
    assert sorted(grouped[:8]) == list(range(8)) and sorted(grouped[8:]) == [8, 9]
    with pytest.raises(ValueError, match="must be >= 1"):
        LengthGroupedSampler(stream, lambda i: i, batch_size=0)
