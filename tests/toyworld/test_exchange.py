from lyrics.toyworld.exchange import pick_image, questions_for

IMAGE = {
    "split": "test", "file_name": "images/toytest/x.jpg",
    "objects": [
        {"tag": "red circle", "colour": "red", "shape": "circle", "box_norm": [0.1, 0.2, 0.3, 0.4]},
        {"tag": "blue circle", "colour": "blue", "shape": "circle", "box_norm": [0.5, 0.5, 0.6, 0.6]},
        {"tag": "green star", "colour": "green", "shape": "star", "box_norm": [0.05, 0.5, 0.25, 0.75]},
    ],
}  # fmt: skip


def test_the_questions_have_one_right_answer_each():
    asked = dict(questions_for(IMAGE, ["red", "green", "blue"]))
    assert asked["What color is the star?"] == "green"  # the star is the shape seen once
    assert asked["Is there a green star in the image?"] == "yes"
    assert asked["Is there a red star in the image?"] == "no"
    assert asked["How many objects are there?"] == "3"
    assert asked["Where is the green star? Give its coordinates."] == "(50,500),(250,750)"


def test_the_image_is_the_first_with_three_objects_and_a_shape_seen_once(tmp_path):
    import json

    two = {**IMAGE, "file_name": "two.jpg", "objects": IMAGE["objects"][:2]}
    same = {**IMAGE, "file_name": "same.jpg", "objects": [IMAGE["objects"][0]] * 3}
    (tmp_path / "world.json").write_text(json.dumps({"images": [two, same, {**IMAGE, "split": "train"}, IMAGE]}))
    assert pick_image(tmp_path)["file_name"] == "images/toytest/x.jpg"
