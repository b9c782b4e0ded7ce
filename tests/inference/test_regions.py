"""Regions in questions (`lyrics.inference.regions`): units, checks, placeholders, markup."""

import pytest

from lyrics.inference.inputs import InputError
from lyrics.inference.regions import expand_regions, parse_region, region_text, to_pixels, with_regions


def test_regions_are_rendered_in_the_paper_markup():
    assert region_text((0, 0, 48, 24), 96, 96) == "<Bbox>(0,0),(500,250)</Box>"
    assert region_text((0, 0, 48, 24), 96, 96, tag="red circle") == "<T>red circle</T><Bbox>(0,0),(500,250)</Box>"
    assert region_text((0, 0, 48, 24), 96, 96, fmt="unit3") == "<Bbox>(0.000,0.000),(0.500,0.250)</Box>"
    assert expand_regions("is <region> left of <region>?", [(0, 0, 10, 10), ("star", (10, 10, 20, 20))], 100, 100) == (
        "is <Bbox>(0,0),(100,100)</Box> left of <T>star</T><Bbox>(100,100),(200,200)</Box>?"
    )


def test_normalised_forms_give_the_same_pixels():
    assert to_pixels((0.25, 0.5, 0.75, 1.0), 200, 100, "0-1") == (50.0, 50.0, 150.0, 100.0)
    assert to_pixels((250, 500, 750, 1000), 200, 100, "0-1000") == (50.0, 50.0, 150.0, 100.0)
    assert region_text((0.25, 0.5, 0.75, 1.0), 200, 100, region_format="0-1") == region_text((50, 50, 150, 100), 200, 100)
    with pytest.raises(InputError, match="region_format must be one of"):
        to_pixels((0, 0, 1, 1), 10, 10, "percent")


@pytest.mark.parametrize(
    "box, fmt, message",
    [
        ((10, 10, 5, 20), "pixels", "no area"),
        ((10, 10, 10, 20), "pixels", "no area"),
        ((0, 0, 1), "pixels", "4 finite coordinates"),
        (("a", 1, 2, 3), "pixels", "4 finite coordinates"),
        ((0, 0, float("nan"), 3), "pixels", "4 finite coordinates"),
        ((200, 200, 300, 300), "pixels", "not inside the 96x96 image"),
        ((50, 50, 97, 90), "pixels", "not inside"),  # partly outside: refused, not clamped
        ((-1, 0, 10, 10), "pixels", "not inside"),
        ((0.5, 0.5, 1.2, 0.9), "0-1", "not inside"),
    ],
)
def test_bad_regions_are_refused_with_the_reason(box, fmt, message):
    with pytest.raises(InputError, match=message) as caught:
        to_pixels(box, 96, 96, fmt)
    assert caught.value.param == "regions"


def test_a_box_to_the_very_edge_is_inside():
    assert to_pixels((0, 0, 96, 96), 96, 96) == (0.0, 0.0, 96.0, 96.0)
    assert to_pixels((0, 0, 1, 1), 96, 96, "0-1") == (0.0, 0.0, 96.0, 96.0)


def test_placeholders_and_boxes_must_match():
    with pytest.raises(InputError, match="1 <region> placeholder"):
        expand_regions("what is <region>?", [], 96, 96)
    with pytest.raises(InputError, match=r"1 <region> placeholder\(s\) but 2 region"):
        expand_regions("what is <region>?", [(0, 0, 5, 5), (5, 5, 9, 9)], 96, 96)


def test_a_question_without_placeholders_gets_one_per_box():
    assert with_regions("What is this?", [(1, 2, 3, 4)]) == "What is this <region>?"
    assert with_regions("Describe", 2) == "Describe <region> <region>"
    assert with_regions("is <region> red?", [(1, 2, 3, 4), (1, 2, 3, 4)]) == "is <region> red?"  # left to expand_regions
    assert with_regions("what is this?", []) == "what is this?"


def test_parse_region():
    assert parse_region("1, 2 3,4") == (1, 2, 3, 4)
    with pytest.raises(InputError, match="expected four numbers"):
        parse_region("1,2,3")
