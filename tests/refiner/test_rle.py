import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lyrics.refiner import rle


def test_counts_are_column_major_and_start_with_zeros():
    mask = np.array([[0, 1], [1, 1]], dtype=bool)  # columns: [0, 1], [1, 1]
    assert rle.mask_to_counts(mask) == [1, 3]
    assert rle.mask_to_counts(np.ones((2, 2), bool)) == [0, 4]
    assert rle.mask_to_counts(np.zeros((3, 1), bool)) == [3]


def test_string_form_matches_hand_computed_coco_encoding():
    # 40 = 0b01000: low group 8 with the "more" bit -> 'X', then 1 -> '1'; the 4th count is written
    # as the difference to the 2nd (50 - 40 = 10 -> ':'); negative differences carry the sign bit.
    assert rle.counts_to_string([0, 40, 3, 50]) == "0X13:"
    assert rle.counts_to_string([1, 3]) == "13"
    assert rle.string_to_counts("0X13:") == [0, 40, 3, 50]
    assert rle.string_to_counts(rle.counts_to_string([5, 100, 7, 2, 9, 1])) == [5, 100, 7, 2, 9, 1]


@settings(max_examples=150, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 17), st.integers(1, 17))))
def test_round_trip(mask):
    encoded = rle.encode(mask)
    assert encoded["size"] == list(mask.shape)
    assert np.array_equal(rle.decode(encoded), mask)
    assert rle.area(encoded) == int(mask.sum())
    # the uncompressed form decodes the same way
    assert np.array_equal(rle.decode({"size": encoded["size"], "counts": rle.mask_to_counts(mask)}), mask)


def test_matches_pycocotools():
    coco = pytest.importorskip("pycocotools.mask")  # installed with the eval extra; not a runtime dependency
    rng = np.random.default_rng(0)
    for trial in range(50):
        height, width = rng.integers(1, 60, 2)
        mask = rng.random((height, width)) < rng.random()
        if trial % 2:
            mask = np.zeros((height, width), bool)
            mask[height // 4 : height // 2 + 1, width // 3 :] = True
        reference = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
        ours = rle.encode(mask)
        assert ours["counts"] == reference["counts"].decode("ascii")
        assert np.array_equal(rle.decode(ours), coco.decode(reference).astype(bool))


def test_bad_rle_is_a_clear_error():
    with pytest.raises(ValueError, match="expected 4"):
        rle.decode({"size": [2, 2], "counts": [1, 1]})
    with pytest.raises(ValueError, match="2-D"):
        rle.encode(np.zeros((2, 2, 2), bool))
