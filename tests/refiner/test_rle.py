import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lyrics.refiner import rle


def test_string_form_matches_hand_computed_coco_encoding():
    # column-major runs [0, 1, 3]... : a 2 x 2 mask whose columns are [0, 1] and [1, 1] has runs 1, 3;
    # COCO writes each run in 5-bit groups as chr(48 + group): "13"
    mask = np.array([[0, 1], [1, 1]], dtype=bool)
    assert rle.encode(mask) == {"size": [2, 2], "counts": "13"}
    assert np.array_equal(rle.decode({"size": [2, 2], "counts": "13"}), mask)


@settings(max_examples=150, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 17), st.integers(1, 17))))
def test_round_trip(mask):
    encoded = rle.encode(mask)
    assert encoded["size"] == list(mask.shape) and isinstance(encoded["counts"], str)
    assert np.array_equal(rle.decode(encoded), mask)
    assert rle.area(encoded) == int(mask.sum())


def test_uncompressed_counts_decode_too():
    # COCO crowd annotations: run lengths in column-major order, starting with background
    assert np.array_equal(rle.decode({"size": [2, 2], "counts": [1, 3]}), np.array([[0, 1], [1, 1]], bool))
    assert rle.area({"size": [3, 1], "counts": [3]}) == 0


def test_bad_rle_is_a_clear_error():
    with pytest.raises(ValueError, match="expected 4"):
        rle.decode({"size": [2, 2], "counts": [1, 1]})
    with pytest.raises(ValueError, match="2-D"):
        rle.encode(np.zeros((2, 2, 2), bool))
