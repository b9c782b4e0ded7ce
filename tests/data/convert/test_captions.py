from data.layouts import write_coco_captions, write_karpathy
from lyrics.data.convert import convert
from lyrics.data.records import load_records, save_records
from lyrics.data.templates import default_bank


def test_coco_captions_one_record_per_caption_with_table10_prompts(tmp_path):
    files = write_coco_captions(tmp_path)
    result = convert("coco-captions", [files["annotations"]], images=files["images"], seed=3)
    assert [r.id for r in result.records] == ["coco_captions-1-0", "coco_captions-1-1", "coco_captions-2-0"]
    assert result.skipped == ["coco_captions image 3: no caption"]
    rec = result.records[0]
    assert rec.image == "000000000001.jpg" and (files["images"] / rec.image).is_file()
    assert rec.task == "captioning" and rec.conversations[1]["value"] == "A red square on the left."
    template = default_bank().get("captioning", rec.meta["template"])
    assert rec.conversations[0]["value"] == "<image>\n" + template.text.removeprefix("<Image>")
    save_records(result.records, tmp_path / "out.json")
    assert len(load_records(tmp_path / "out.json")) == 3  # converter output is valid record JSON


def test_template_choice_follows_the_seed_and_can_be_fixed(tmp_path):
    files = write_coco_captions(tmp_path)
    a = [r.meta["template"] for r in convert("coco-captions", [files["annotations"]], seed=0).records]
    assert a == [r.meta["template"] for r in convert("coco-captions", [files["annotations"]], seed=0).records]
    fixed = convert("coco-captions", [files["annotations"]], template=2).records
    assert {r.meta["template"] for r in fixed} == {2}
    assert fixed[0].conversations[0]["value"].endswith("Provide a description of what is presented in the photo.")


def test_karpathy_split(tmp_path):
    files = write_karpathy(tmp_path)
    result = convert("karpathy", [files["file"]], images=files["images"], split="test")
    assert [r.conversations[1]["value"] for r in result.records] == ["Two people.", "A couple walks."]
    assert result.records[0].source == "karpathy_flickr30k" and result.records[0].image == "1001.jpg"
