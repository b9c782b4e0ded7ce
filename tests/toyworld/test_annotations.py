"""Every answer the toy world writes is checked against the ground truth by an independent oracle."""

import json
import re
from collections import Counter

import pytest

from lyrics.refiner.spatial import box_iou
from lyrics.toyworld.annotate import annotate
from lyrics.toyworld.scenes import split_scene

from . import oracle


def objects_by_id(manifest):
    return {img["image_id"]: img["objects"] for img in manifest["images"]}


@pytest.fixture(scope="module")
def records():
    """A broader in-memory sample than the tiny world: 150 scenes of every split."""
    out = []
    for split in ("train", "zeroshot"):
        for i in range(75):
            rec = annotate(split_scene(11, split, i), 1 + i, split, i, seed=11)
            out.append((rec, [o.to_dict() for o in rec.objects]))
    return out


def test_vqa_answers_are_correct(tiny_world, records):
    root, manifest = tiny_world
    objs = objects_by_id(manifest)
    kinds = Counter()
    for split in ("train", "val", "test", "zeroshot"):
        sub = f"toy{split}"
        questions = json.loads((root / f"vqav2/v2_OpenEnded_mscoco_{sub}_questions.json").read_text())["questions"]
        answers = {a["question_id"]: a for a in json.loads((root / f"vqav2/v2_mscoco_{sub}_annotations.json").read_text())["annotations"]}
        for q in questions:
            ann = answers[q["question_id"]]
            assert oracle.answer(objs[q["image_id"]], q["question"]) == ann["multiple_choice_answer"], q
            kinds[ann["question_type"]] += 1
    for rec, objects in records:
        for qa in rec.vqa:
            assert oracle.answer(objects, qa.question) == qa.answer, qa
            expected_type = {"yes": "yes/no", "no": "yes/no"}.get(qa.answer, "number" if qa.answer.isdigit() else "other")
            assert qa.answer_type == expected_type
            kinds[qa.question_type] += 1
    assert set(kinds) == {"color", "shape", "count", "existence", "position"}
    yes_no = Counter(qa.answer for rec, _ in records for qa in rec.vqa if qa.answer_type == "yes/no")
    assert yes_no["yes"] > 0.3 * sum(yes_no.values()) and yes_no["no"] > 0.3 * sum(yes_no.values())


def test_referring_expressions_name_exactly_their_object(tiny_world, records):
    root, manifest = tiny_world
    objs = objects_by_id(manifest)
    refs = oracle.load_refs(root / "refcoco" / "refs(unc).p")
    assert refs
    sides = 0
    for ref in refs:
        objects = objs[ref["image_id"]]
        target = ref["ann_id"] - ref["image_id"] * 100
        for sentence in ref["sentences"]:
            assert oracle.referent(objects, sentence["sent"]) == [target], sentence
    for rec, objects in records:
        for k, expressions in rec.refs:
            for ref in expressions:
                assert oracle.referent(objects, ref.text) == [k], ref.text
                sides += ref.side is not None
    assert sides > 0  # spatial expressions ("the circle on the left") do occur


def test_multiple_choice_answers_are_correct(tiny_world, records):
    root, manifest = tiny_world
    objs = objects_by_id(manifest)
    for split in ("train", "val", "test", "zeroshot"):
        for item in json.loads((root / f"aokvqa/aokvqa_v1p0_{split}.json").read_text()):
            truth = oracle.answer(objs[item["image_id"]], item["question"])
            assert item["choices"][item["correct_choice_idx"]] == truth
            assert sum(c == truth for c in item["choices"]) == 1
    for rec, objects in records:
        for mc in rec.multiple_choice:
            assert mc.choices[mc.correct] == oracle.answer(objects, mc.question)


def test_mme_pairs_are_one_true_one_false(tiny_world, records):
    root, manifest = tiny_world
    objs = objects_by_id(manifest)
    checked = Counter()
    for split in ("val", "test", "zeroshot"):
        for txt in (root / "mme" / split).rglob("*.txt"):
            objects = objs[int(txt.stem)]
            for line in txt.read_text().splitlines():
                question, label = line.split("\t")
                truth = oracle.mme_truth(objects, question.removesuffix(" Please answer yes or no."))
                assert truth == (label == "Yes"), line
                checked[txt.parent.name] += 1
    assert set(checked) == {"existence", "count", "position", "color"}
    for rec, objects in records:
        for pair in rec.mme:
            assert oracle.mme_truth(objects, pair.yes.removesuffix(" Please answer yes or no.")) is True
            assert oracle.mme_truth(objects, pair.no.removesuffix(" Please answer yes or no.")) is False


def test_referential_dialogue_answers_are_correct(tiny_world):
    root, manifest = tiny_world
    by_file = {img["file_name"].rsplit("/", 1)[1]: img["objects"] for img in manifest["images"]}
    seen = Counter()
    for split in ("train", "val", "test", "zeroshot"):
        for line in (root / f"shikra_rd/GPT4GEN_RD_BoxCoT_{split}.jsonl").read_text().splitlines():
            item = json.loads(line)
            objects = by_file[item["img_path"]]
            boxed = [next(o for o in objects if o["box"] == box) for box in item["boxes"]]
            first = boxed[item["question_boxes_seq"][0][0]]
            q, a = item["question"], item["answer"]
            if q == "What color is the object <boxes>?":
                assert a == f"The object <boxes> is {first['colour']}."
            elif q == "What is the object <boxes>?":
                assert re.fullmatch(rf"It is an? {first['size']} {first['colour']} {first['shape']} <boxes>\.", a)
            elif m := re.fullmatch(r"What shape is the (\w+) object <boxes>\?", q):
                assert m.group(1) == first["colour"] and a.endswith(f" {first['shape']}.")
            elif m := re.fullmatch(r"What is next to the (\w+ \w+) <boxes>\?", q):
                other = boxed[item["answer_boxes_seq"][0][0]]
                assert m.group(1) == f"{first['colour']} {first['shape']}"
                assert a == f"The {other['colour']} {other['shape']} <boxes> is next to it."
                dist = lambda o: sum((oracle.centre(o, ax) - oracle.centre(first, ax)) ** 2 for ax in (0, 1))  # noqa: E731
                others = sorted(dist(o) for o in objects if o is not first)
                assert dist(other) == others[0] and (len(others) == 1 or others[1] ** 0.5 >= 1.3 * others[0] ** 0.5)
            else:
                raise AssertionError(q)
            seen[q.split()[2]] += 1
    assert len(seen) >= 3


def _count_words(text):
    return Counter({shape: n for n, shape in re.findall(r"(\w+) (\w+?)e?s\b", text)})


def test_captions_state_true_facts(tiny_world):
    root, manifest = tiny_world
    objs = objects_by_id(manifest)
    for split in ("train", "val", "test", "zeroshot"):
        data = json.loads((root / f"annotations/captions_toy{split}.json").read_text())
        captions = {}
        for ann in data["annotations"]:
            captions.setdefault(ann["image_id"], []).append(ann["caption"])
        for image_id, texts in captions.items():
            objects = objs[image_id]
            assert len(texts) == 5
            for text in texts:
                if m := re.fullmatch(r"(?:a single shape|(\w+) shapes) on a grey background: (.+)\.", text):
                    n = 1 if m.group(1) is None else oracle.WORDS[m.group(1)]
                    assert n == len(objects)
                    for shape in oracle.SHAPES:
                        k = sum(o["shape"] == shape for o in objects)
                        if k == 1:
                            assert re.search(rf"\ban? {shape}\b", m.group(2))
                        elif k > 1:
                            words = [w for w, v in oracle.WORDS.items() if v == k]
                            assert re.search(rf"\b{words[0]} {shape}", m.group(2))
                elif m := re.fullmatch(r"an? (\w+) (\w+) (\w+) (to the left of|to the right of|above|below) an? (\w+) (\w+) (\w+)\.", text):
                    size_a, col_a, shape_a, rel, size_b, col_b, shape_b = m.groups()
                    pick = lambda s, c, sh: [o for o in objects if (o["size"], o["colour"], o["shape"]) == (s, c, sh)]  # noqa: E731
                    assert any(oracle.rel_holds(rel, a, b) for a in pick(size_a, col_a, shape_a) for b in pick(size_b, col_b, shape_b) if a is not b)
                elif text.startswith("a picture with "):
                    for colour in oracle.COLOURS:
                        k = sum(o["colour"] == colour for o in objects)
                        assert (f"{colour} object" in text) == (k > 0)
                else:  # inventory or locations: every named object exists with those attributes
                    for size, colour, shape in re.findall(r"\b(small|large) (\w+) (circle|square|triangle|star|hexagon|diamond)", text):
                        assert any((o["size"], o["colour"], o["shape"]) == (size, colour, shape) for o in objects), text


def test_boxes_in_manifest_are_normalised_pixel_boxes(tiny_world):
    _, manifest = tiny_world
    for img in manifest["images"]:
        for o in img["objects"]:
            x1, y1, x2, y2 = o["box"]
            assert box_iou([v / 224 for v in o["box"]], o["box_norm"]) > 0.999
            assert 0 <= x1 < x2 <= 224 and 0 <= y1 < y2 <= 224
