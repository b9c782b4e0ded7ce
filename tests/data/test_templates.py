import json

import pytest

from lyrics.data.templates import TASKS, TemplateBank, default_bank

# A few strings typed from the paper's Table 10, to catch any drift in the data file.
PAPER = {
    ("captioning", 0): "<Image>Write a short description for the image.",
    ("vqa", 5): "<Image>Based on the image, respond to this question with a short answer: {Question}. Answer:",
    ("text_vqa", 3): "<Image>Look at the text in the image provided and succinctly answer: {Question}.",
    ("grounded_captioning", 4): "<Image>Identify and describe the key object in this image, using a short and clear description.",
    ("rec", 3): "<Image>Confirm the presence of {Tag} in the bounding box {Bbox} in the image.",
    ("referential_dialogue", 0): "<Image>Focus on the object {Tag & Bbox} in the image, and answer the question: {Question}.",
    ("multiple_choice_vqa", 0): "<Image>Question: {Question} Options: {Option}. Answer:",
}


def test_table10_has_all_seven_tasks_with_the_paper_counts():
    bank = default_bank()
    assert bank.tasks == TASKS
    counts = {task: len(bank.templates(task)) for task in TASKS}
    assert counts == {"captioning": 9, "vqa": 9, "text_vqa": 6, "grounded_captioning": 5, "rec": 6,
                      "referential_dialogue": 6, "multiple_choice_vqa": 5}
    for (task, index), text in PAPER.items():
        assert bank.get(task, index).text == text


def test_templates_are_package_data_json():
    from importlib import resources

    data = json.loads(resources.files("lyrics.data.templates").joinpath("table10.json").read_text())
    assert set(data["tasks"]) == set(TASKS)


def test_fill_replaces_slots_once_and_the_image_mark():
    rec = default_bank().get("rec", 3)
    assert rec.slots == ("tag", "bbox")
    prompt = rec.fill(tag="the {Bbox} man", bbox="<box:0>")
    assert prompt == "<image>\nConfirm the presence of the {Bbox} man in the bounding box <box:0> in the image."
    rd = default_bank().get("referential_dialogue", 0)
    assert rd.slots == ("tag_bbox", "question")
    assert rd.fill(image=False, tag_bbox="<T>x</T><box:0>", question="Why?") == (
        "Focus on the object <T>x</T><box:0> in the image, and answer the question: Why?."
    )
    with pytest.raises(ValueError, match=r"needs \['question'\]"):
        rd.fill(tag_bbox="x")


def test_choice_is_deterministic_seeded_and_fixable():
    bank = default_bank()
    picks = [bank.choose("vqa", key, seed=0).index for key in range(200)]
    assert picks == [bank.choose("vqa", key, seed=0).index for key in range(200)]
    assert set(picks) == set(range(9))  # every template gets used
    assert picks != [bank.choose("vqa", key, seed=1).index for key in range(200)]
    assert {bank.choose("vqa", key, fixed=4).index for key in range(20)} == {4}
    plain = [t for t in bank.templates("rec") if "bbox" not in t.slots]
    assert {bank.choose("rec", k, candidates=plain).index for k in range(50)} == {0, 2, 4, 5}
    with pytest.raises(IndexError):
        bank.get("vqa", 9)


def test_user_template_files_json_and_yaml(tmp_path):
    (tmp_path / "t.yaml").write_text("vqa:\n  - 'Q: {Question}'\n")
    bank = TemplateBank.load(tmp_path / "t.yaml")
    assert bank.choose("vqa", 1).fill(question="why") == "<image>\nQ: why"
    (tmp_path / "t.json").write_text(json.dumps({"tasks": {"vqa": {"templates": []}}}))
    with pytest.raises(ValueError, match="non-empty list"):
        TemplateBank.load(tmp_path / "t.json")
    with pytest.raises(KeyError, match="no templates for task 'rec'"):
        bank.templates("rec")
