from data.layouts import write_aokvqa, write_scienceqa
from lyrics.data.convert import convert


def test_aokvqa_mc_options_and_answer_text(tmp_path):
    files = write_aokvqa(tmp_path)
    records = convert("aokvqa-mc", [files["file"]], images=tmp_path, template=0).records
    assert records[0].task == "multiple_choice_vqa"
    assert records[0].conversations[0]["value"] == (
        "<image>\nQuestion: What is the animal doing? Options: (a) sleeping (b) eating (c) running (d) flying. Answer:"
    )
    assert records[0].conversations[1]["value"] == "running"
    assert records[1].conversations[1]["value"] == "winter"


def test_scienceqa_hint_and_text_only_problems(tmp_path):
    write_scienceqa(tmp_path)
    records = convert("scienceqa", [tmp_path], images=tmp_path, split="test", template=1).records
    assert [r.id for r in records] == ["scienceqa-1", "scienceqa-2"]
    assert records[0].conversations[0]["value"] == (
        "<image>\nFor the question: Which color is the square? Context: Look closely., "
        "choose the most suitable answer from options: (a) blue (b) red."
    )
    assert records[0].conversations[1]["value"] == "red" and records[0].image == "images/test/1/image.png"
    assert records[1].image is None and "<image>" not in records[1].conversations[0]["value"]
    assert records[1].conversations[0]["value"].endswith("options: (a) hat (b) dog (c) sun.")
