import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lyrics.refiner.spatial import (
    box_from_pixels,
    box_iou,
    box_to_pixels,
    format_box,
    format_coordinate,
    format_spatial,
    parse_boxes,
    parse_first_box,
    parse_spatial,
    quantize_box,
)

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
boxes = st.tuples(unit, unit, unit, unit).map(lambda b: (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])))
tags = st.text(alphabet=st.characters(codec="ascii", categories=("L", "N", "Zs", "Pd")), min_size=1, max_size=20).filter(
    lambda t: t.strip()
)
fmts = st.sampled_from(["int1000", "unit3"])


def test_paper_format_matches_the_paper():
    text = format_spatial([("red circle", (0.1, 0.2, 0.5, 0.75))])
    assert text == "<br><T>red circle</T><Bbox>(100,200),(500,750)</Box></br>"
    assert format_box((0.1, 0.2, 0.5, 0.75), "unit3") == "(0.100,0.200),(0.500,0.750)"
    assert format_coordinate(1.0) == "999" and format_coordinate(-3) == "0"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(tags, boxes), max_size=6), fmts)
def test_round_trip(objects, fmt):
    text = format_spatial(objects, fmt)
    parsed = parse_spatial(text, fmt)
    assert len(parsed) == len(objects)
    for (tag, box), (ptag, pbox) in zip(objects, parsed):
        assert ptag == " ".join(tag.split())
        assert pbox == quantize_box(box, fmt)
        assert all(abs(a - b) <= 1e-3 + 1e-9 for a, b in zip(pbox, box))
    # writing what was read gives the same text: quantisation is idempotent
    assert format_spatial(parsed, fmt) == text


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(tags, boxes), min_size=1, max_size=4))
def test_released_style_round_trip(objects):
    text = format_spatial(objects, "unit3", style="released")
    assert "[SEP]" in text or len(objects) == 1
    parsed = parse_spatial(text, "unit3", style="released")
    assert [box for _, box in parsed] == [quantize_box(box, "unit3") for _, box in objects]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), fmts)
def test_parsing_garbage_never_raises(text, fmt):
    assert isinstance(parse_boxes(text, fmt), list)
    assert isinstance(parse_spatial(text, fmt), list)
    parse_first_box(text, fmt)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The cat is at (100,200),(300,400).", (0.1, 0.2, 0.3, 0.4)),
        ("<Bbox>( 100 , 200 ),( 300 , 400 )</Box>", (0.1, 0.2, 0.3, 0.4)),
        ("corners reversed (300,400),(100,200)", (0.1, 0.2, 0.3, 0.4)),
        ("as a list [100, 200, 300, 400]", (0.1, 0.2, 0.3, 0.4)),
        ("clipped (100,200),(300,1500)", (0.1, 0.2, 0.3, 1.0)),
        ("no box (100,200) here", None),
        ("(a,b),(c,d)", None),
        ("", None),
    ],
)
def test_parse_first_box(text, expected):
    box = parse_first_box(text)
    if expected is None:
        assert box is None
    else:
        assert box == pytest.approx(expected)


def test_garbage_object_is_skipped_not_fatal():
    text = "<br><T>dog</T><Bbox>(1,2),(3,4)</Box></br><br><T>cat</T><Bbox>(x,y)</Box></br><T></T><Bbox>(1,1),(2,2)</Box>"
    assert parse_spatial(text) == [("dog", (0.001, 0.002, 0.003, 0.004))]
    assert parse_spatial(None) == [] and parse_boxes("(1,2),(3,4)", fmt="bogus") == []


def test_tags_cannot_break_the_markup():
    text = format_spatial([("a</T>b<br>", (0, 0, 1, 1))])
    assert parse_spatial(text) == [("a /T b br", (0.0, 0.0, 0.999, 0.999))]


def test_pixels_and_iou():
    box = box_from_pixels((10, 20, 110, 220), 200, 400)
    assert box == (0.05, 0.05, 0.55, 0.55)
    assert box_to_pixels(box, 200, 400) == pytest.approx((10, 20, 110, 220))
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
