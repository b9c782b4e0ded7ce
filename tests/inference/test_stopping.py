"""Per-row stopping decodes only the tail that can hold a stop string ending in the newest token."""

import torch

from lyrics.inference.stopping import TAIL_MARGIN, RowStopper, cut_at_stop


def test_row_stopper_finds_stops_from_the_tail_only():
    alphabet = "abcdefghij"
    seen = []

    def decode(ids):
        seen.append(len(ids))
        return "".join(alphabet[i] for i in ids)

    stopper = RowStopper([100, 100, 3], [("fg",), (), ()], [None, None, None], decode)
    ids = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5, 6]])
    done = stopper(ids, None)
    assert done.tolist() == [True, False, True]  # row 0 ends with "fg"; row 2 reached its 3 tokens
    assert seen == [min(7, len("fg") + TAIL_MARGIN)]  # one tail decoded, not the whole answer
    assert stopper(ids[:, :5], None).tolist() == [False, False, True]  # "abcde" holds no "fg"


def test_cut_at_stop_is_the_earliest_stop():
    assert cut_at_stop("yes. ###\nUSER: no", ["USER:", "###"]) == ("yes. ", True)
    assert cut_at_stop("yes", ["###"]) == ("yes", False)
