from data.layouts import write_aokvqa, write_gqa, write_ocrvqa, write_textvqa, write_vizwiz, write_vqav2
from lyrics.data.convert import convert
from lyrics.data.templates import default_bank


def prompts_match_templates(records, task):
    bank = default_bank()
    for r in records:
        template = bank.get(task, r.meta["template"])
        assert r.conversations[0]["value"].startswith("<image>\n")
        head = template.text.removeprefix("<Image>").split("{Question}")[0]
        assert r.conversations[0]["value"][len("<image>\n"):].startswith(head)


def test_vqav2_uses_multiple_choice_answer(tmp_path):
    files = write_vqav2(tmp_path, "toytrain")
    result = convert("vqav2", [files["questions"], files["annotations"]], images=tmp_path, template=2)
    answers = {r.meta["question_id"]: r.conversations[1]["value"] for r in result.records}
    assert answers == {420: "red", 421: "1", 70: "yes"}
    first = result.records[0]
    assert first.conversations[0]["value"] == "<image>\nQuestion: What color is the square? Answer:"
    assert first.image == "toytrain/COCO_toytrain_000000000042.jpg" and (tmp_path / first.image).is_file()
    assert first.task == "vqa" and len(first.meta["answers"]) == 10


def test_vqa_folder_input_and_okvqa(tmp_path):
    write_vqav2(tmp_path / "ok", "val2014", okvqa=True)
    result = convert("okvqa", [tmp_path / "ok"], images=tmp_path / "ok")
    assert len(result.records) == 3 and result.records[0].source == "okvqa"
    prompts_match_templates(result.records, "vqa")


def test_most_common_answers_and_text_oriented_tasks(tmp_path):
    aok = convert("aokvqa", [write_aokvqa(tmp_path / "a")["file"]], images=tmp_path / "a").records
    assert [r.conversations[1]["value"] for r in aok] == ["running", "snow"]
    assert aok[0].image == "val2017/000000000005.jpg"
    text = convert("textvqa", [write_textvqa(tmp_path / "t")["file"]], images=tmp_path / "t").records
    assert text[0].task == "text_vqa" and text[0].conversations[1]["value"] == "nokia"
    prompts_match_templates(text, "text_vqa")
    ocr = convert("ocrvqa", [write_ocrvqa(tmp_path / "o")["file"]], images=tmp_path / "o", split="train").records
    assert [r.conversations[1]["value"] for r in ocr] == ["Ann Lee", "Toy Stories"] and ocr[0].task == "text_vqa"
    gqa = convert("gqa", [write_gqa(tmp_path / "g")["file"]], images=tmp_path / "g").records
    assert [r.conversations[1]["value"] for r in gqa] == ["yes", "cup"] and gqa[0].image == "images/n100.jpg"
    viz = convert("vizwiz", [write_vizwiz(tmp_path / "v")["file"]], images=tmp_path / "v").records
    assert viz[0].conversations[1]["value"] == "soup" and viz[0].image == "val/VizWiz_val_00000000.jpg"


def test_questions_without_answers_are_skipped_and_listed(tmp_path):
    import json

    files = write_textvqa(tmp_path)
    data = json.loads(files["file"].read_text())
    data["data"][0]["answers"] = []
    files["file"].write_text(json.dumps(data))
    result = convert("textvqa", [files["file"]])
    assert result.records == [] and result.skipped == ["textvqa question 34602: no answer"]
