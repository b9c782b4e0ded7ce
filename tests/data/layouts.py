"""Tiny datasets written in the official layouts of /work/notes/layouts.md, for the data tests.

Each `write_*` function writes annotation files and small real images under `root` and returns a
dict of the paths (and facts) the tests check against.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from PIL import Image, ImageDraw


def write_image(path: Path, size=(64, 48), colour=(200, 30, 30), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (230, 230, 230))
    ImageDraw.Draw(image).rectangle([4, 4, size[0] // 2, size[1] // 2], fill=colour)
    image.save(path, format=fmt)
    return path


def dump(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def write_coco_captions(root: Path) -> dict:
    images = [
        {"id": 1, "file_name": "000000000001.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "000000000002.jpg", "width": 64, "height": 48},
        {"id": 3, "file_name": "000000000003.jpg", "width": 64, "height": 48},
    ]
    annotations = [
        {"id": 10, "image_id": 1, "caption": "A red square on the left. "},
        {"id": 11, "image_id": 1, "caption": "a small red box"},
        {"id": 12, "image_id": 2, "caption": "a blue circle"},
    ]
    ann = dump(root / "annotations" / "captions_toyval.json", {"info": {}, "licenses": [], "images": images, "annotations": annotations})
    for image in images:
        write_image(root / "toyval" / image["file_name"])
    return {"annotations": ann, "images": root / "toyval"}


def write_karpathy(root: Path) -> dict:
    def entry(imgid, split, sents):
        return {
            "filename": f"{1000 + imgid}.jpg",
            "imgid": imgid,
            "split": split,
            "sentences": [{"raw": s, "tokens": s.lower().split(), "imgid": imgid, "sentid": imgid * 10 + k} for k, s in enumerate(sents)],
            "sentids": [imgid * 10 + k for k in range(len(sents))],
        }

    data = {"dataset": "flickr30k", "images": [entry(0, "train", ["A dog runs."]), entry(1, "test", ["Two people.", "A couple walks."])]}
    path = dump(root / "dataset_flickr30k.json", data)
    for image in data["images"]:
        write_image(root / "flickr30k-images" / image["filename"])
    return {"file": path, "images": root / "flickr30k-images"}


def vqa_answers(answers: list[str]) -> list[dict]:
    return [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]


def write_vqav2(root: Path, subtype: str = "toyval", okvqa: bool = False) -> dict:
    questions = [
        {"image_id": 42, "question": "What color is the square?", "question_id": 420},
        {"image_id": 42, "question": "How many squares?", "question_id": 421},
        {"image_id": 7, "question": "Is it sunny?", "question_id": 70},
    ]
    annotations = [
        {"question_type": "what color", "multiple_choice_answer": "red", "answers": vqa_answers(["red"] * 8 + ["pink"] * 2),
         "image_id": 42, "answer_type": "other", "question_id": 420},
        {"question_type": "how many", "multiple_choice_answer": "1", "answers": vqa_answers(["1"] * 6 + ["one"] * 4),
         "image_id": 42, "answer_type": "number", "question_id": 421},
        {"question_type": "is it", "multiple_choice_answer": "yes", "answers": vqa_answers(["yes"] * 10),
         "image_id": 7, "answer_type": "yes/no", "question_id": 70},
    ]
    prefix = "" if okvqa else "v2_"
    q = dump(root / f"{prefix}OpenEnded_mscoco_{subtype}_questions.json",
             {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": subtype, "questions": questions})
    a = dump(root / f"{prefix}mscoco_{subtype}_annotations.json", {"annotations": annotations})
    for image_id in (42, 7):
        write_image(root / subtype / f"COCO_{subtype}_{image_id:012d}.jpg")
    return {"questions": q, "annotations": a, "root": root}


def write_aokvqa(root: Path) -> dict:
    data = [
        {"split": "val", "image_id": 5, "question_id": "q5a", "question": "What is the animal doing?",
         "choices": ["sleeping", "eating", "running", "flying"], "correct_choice_idx": 2,
         "direct_answers": ["running"] * 6 + ["jogging"] * 4, "difficult_direct_answer": False, "rationales": ["it moves"]},
        {"split": "val", "image_id": 6, "question_id": "q6a", "question": "Which season?",
         "choices": ["winter", "summer", "spring", "fall"], "correct_choice_idx": 0,
         "direct_answers": ["winter"] * 3 + ["snow"] * 7, "difficult_direct_answer": True, "rationales": []},
    ]
    path = dump(root / "aokvqa_v1p0_val.json", data)
    for image_id in (5, 6):
        write_image(root / "val2017" / f"{image_id:012d}.jpg")
    return {"file": path, "root": root}


def write_gqa(root: Path) -> dict:
    data = {
        "201": {"imageId": "n100", "question": "Is the cup red?", "answer": "yes", "fullAnswer": "Yes, the cup is red.", "types": {"structural": "verify"}},
        "202": {"imageId": "n101", "question": "What is on the table?", "answer": "cup", "fullAnswer": "A cup.", "types": {}},
    }
    path = dump(root / "testdev_balanced_questions.json", data)
    for image_id in ("n100", "n101"):
        write_image(root / "images" / f"{image_id}.jpg")
    return {"file": path, "root": root}


def write_textvqa(root: Path) -> dict:
    data = {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": [
        {"question_id": 34602, "image_id": "abc123", "question": "what brand is this?", "answers": ["nokia"] * 7 + ["noka"] * 3,
         "image_classes": ["phone"]},
    ]}
    path = dump(root / "TextVQA_0.5.1_val.json", data)
    write_image(root / "train_images" / "abc123.jpg")
    return {"file": path, "root": root}


def write_vizwiz(root: Path) -> dict:
    data = [
        {"image": "VizWiz_val_00000000.jpg", "question": "What is this?",
         "answers": [{"answer": "soup", "answer_confidence": "yes"}] * 6 + [{"answer": "can", "answer_confidence": "maybe"}] * 4,
         "answer_type": "other", "answerable": 1},
    ]
    path = dump(root / "val.json", data)
    write_image(root / "val" / "VizWiz_val_00000000.jpg")
    return {"file": path, "root": root}


def write_ocrvqa(root: Path) -> dict:
    data = {
        "111": {"imageURL": "http://x/images/111.jpg", "questions": ["Who wrote this book?", "What is the title?"],
                "answers": ["Ann Lee", "Toy Stories"], "title": "Toy Stories", "authorName": "Ann Lee", "genre": "Kids", "split": 1},
        "222": {"imageURL": "http://x/images/222.png", "questions": ["Is this a cookbook?"], "answers": ["No"],
                "title": "T", "authorName": "B", "genre": "Travel", "split": 3},
    }
    path = dump(root / "dataset.json", data)
    write_image(root / "images" / "111.jpg")
    write_image(root / "images" / "222.png")
    return {"file": path, "root": root}


def write_scienceqa(root: Path) -> dict:
    problems = {
        "1": {"question": "Which color is the square?", "choices": ["blue", "red"], "answer": 1, "hint": "Look closely.",
              "image": "image.png", "task": "closed choice", "subject": "natural science", "split": "test", "grade": "grade2", "lecture": ""},
        "2": {"question": "Which word rhymes with cat?", "choices": ["hat", "dog", "sun"], "answer": 0, "hint": "",
              "image": None, "task": "closed choice", "subject": "language science", "split": "test", "grade": "grade1", "lecture": ""},
        "3": {"question": "Which is a mammal?", "choices": ["frog", "cow"], "answer": 1, "hint": "", "image": "image.png",
              "task": "closed choice", "subject": "natural science", "split": "train", "grade": "grade3", "lecture": ""},
    }
    dump(root / "problems.json", problems)
    dump(root / "pid_splits.json", {"train": ["3"], "val": [], "test": ["1", "2"]})
    write_image(root / "images" / "test" / "1" / "image.png")
    write_image(root / "images" / "train" / "3" / "image.png")
    return {"folder": root, "root": root}


REFCOCO_IMAGE = (100, 80)  # width, height


def write_refcoco(root: Path, name: str = "refcoco", split_by: str = "unc", lone: bool = False) -> dict:
    """Image 9 holds objects 900 (target, left), 901 (right, no overlap); image 10 holds only object 1000."""
    w, h = REFCOCO_IMAGE
    instances = {
        "images": [
            {"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "width": w, "height": h},
            {"id": 10, "file_name": "COCO_train2014_000000000010.jpg", "width": w, "height": h},
        ],
        "annotations": [
            {"id": 900, "image_id": 9, "bbox": [10, 20, 30, 40], "category_id": 1, "area": 1200, "iscrowd": 0, "segmentation": []},
            {"id": 901, "image_id": 9, "bbox": [60, 10, 30, 30], "category_id": 2, "area": 900, "iscrowd": 0, "segmentation": []},
            {"id": 1000, "image_id": 10, "bbox": [0, 0, 50, 40], "category_id": 1, "area": 2000, "iscrowd": 0, "segmentation": []},
        ],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}, {"id": 2, "name": "dog", "supercategory": "animal"}],
    }
    refs = [
        {"ref_id": 1, "ann_id": 900, "image_id": 9, "split": "train", "category_id": 1, "file_name": "COCO_train2014_000000000009_900.jpg",
         "sentences": [{"sent": "man on the left", "raw": "Man on the left", "tokens": ["man", "on", "the", "left"], "sent_id": 11},
                       {"sent": "person in red", "raw": "person in red", "tokens": ["person", "in", "red"], "sent_id": 12}],
         "sent_ids": [11, 12]},
        {"ref_id": 2, "ann_id": 901, "image_id": 9, "split": "val", "category_id": 2, "file_name": "COCO_train2014_000000000009_901.jpg",
         "sentences": [{"sent": "dog", "raw": "dog", "tokens": ["dog"], "sent_id": 21}], "sent_ids": [21]},
        {"ref_id": 3, "ann_id": 1000, "image_id": 10, "split": "train", "category_id": 1, "file_name": "COCO_train2014_000000000010_1000.jpg",
         "sentences": [{"sent": "the only person", "raw": "the only person", "tokens": ["the", "only", "person"], "sent_id": 31}],
         "sent_ids": [31]},
    ]
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"refs({split_by}).p").write_bytes(pickle.dumps(refs, protocol=2))
    dump(folder / "instances.json", instances)
    for image in instances["images"]:
        write_image(root / "coco" / "train2014" / image["file_name"], size=REFCOCO_IMAGE)
    return {"folder": folder, "images": root / "coco", "refs": refs, "instances": instances}


def write_pope(root: Path) -> dict:
    files = {}
    for k, variant in enumerate(("random", "popular", "adversarial")):
        rows = [
            {"question_id": 1, "image": "COCO_val2014_000000000042.jpg", "text": "Is there a dog in the image?", "label": "yes"},
            {"question_id": 2, "image": "COCO_val2014_000000000042.jpg", "text": f"Is there a {variant} cat in the image?", "label": "no"},
        ]
        path = root / f"coco_pope_{variant}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        files[variant] = path
    write_image(root / "val2014" / "COCO_val2014_000000000042.jpg")
    return {"files": files, "folder": root, "images": root / "val2014"}


MME_LAYOUT_A = ("artwork", "celebrity", "landmark", "posters", "scene")


def write_mme(root: Path, subtasks=None) -> dict:
    from lyrics.data.official.mme import SUBTASKS

    for subtask in subtasks or SUBTASKS:
        folder = root / subtask
        lines = f"Is this a {subtask}? Please answer yes or no.\tYes\nIs this a cat? Please answer yes or no.\tNo\n"
        if subtask in MME_LAYOUT_A:
            write_image(folder / "images" / "0001.jpg")
            (folder / "questions_answers_YN").mkdir(parents=True, exist_ok=True)
            (folder / "questions_answers_YN" / "0001.txt").write_text(lines)
        else:
            write_image(folder / "0001.png", fmt="PNG")
            (folder / "0001.txt").write_text(lines)
    return {"root": root}


LLAVA_BENCH_QUESTIONS = [  # (question_id, image, category, question, GPT-4 reference answer)
    (0, "001.jpg", "conv", "What colour is the square?", "The square is red."),
    (1, "001.jpg", "detail", "Describe this photo in detail.", "A red square on a grey background."),
    (2, "001.jpg", "complex", "Why might someone draw this?", "As a simple test pattern."),
    (3, "002.jpg", "conv", "How many shapes are there?", "There is one shape."),
    (4, "002.jpg", "detail", "Describe the picture in detail.", "A single blue square near the top left."),
    (5, "002.jpg", "complex", "What could the shape stand for?", "It could mark a button."),
]


def write_llava_bench(root: Path, with_rules: bool = True, caption_as_list: bool = False) -> dict:
    """The In-the-Wild layout: questions.jsonl, context.jsonl, answers_gpt4.jsonl, rule.json, images/.
    Rule prompts here are short stand-ins written for the tests (the real ones come with LLaVA)."""
    root.mkdir(parents=True, exist_ok=True)

    def jsonl(name, rows):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    jsonl("questions.jsonl", [{"question_id": q, "image": im, "text": text, "category": c} for q, im, c, text, _ in LLAVA_BENCH_QUESTIONS])
    captions = {"001.jpg": "A red square.", "002.jpg": "A blue square."}
    jsonl("context.jsonl", [{"id": k[:3], "image": k, "caption": [v] if caption_as_list else v} for k, v in captions.items()])
    jsonl("answers_gpt4.jsonl", [{"question_id": q, "prompt": text, "text": ref, "answer_id": f"ref{q}", "model_id": "gpt-4-0314", "metadata": {}}
                                 for q, _, _, text, ref in LLAVA_BENCH_QUESTIONS])  # fmt: skip
    if with_rules:
        rules = {f"llava_bench_{c}": {"role": "Assistant", "prompt": f"Rate both answers ({c}); first line: two scores."} for c in ("conv", "detail", "complex")}
        dump(root / "rule.json", rules | {"default": {"role": "Assistant", "prompt": "unused"}})
    write_image(root / "images" / "001.jpg")
    write_image(root / "images" / "002.jpg", colour=(30, 30, 200))
    return {"root": root, "captions": captions}


def write_alpaca(root: Path) -> dict:
    data = [
        {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well, sleep, move."},
        {"instruction": "Translate to French.", "input": "Hello", "output": "Bonjour"},
    ]
    return {"file": dump(root / "alpaca_data.json", data)}


SHIKRA_IMAGE = (200, 100)


def write_shikra(root: Path, release_style: bool = False) -> dict:
    if release_style:
        rows = [{
            "img_path": "1.jpg", "boxes": [[20, 10, 60, 90], [120, 20, 180, 80]],
            "question": "What is <ph_st>the man<ph_ed> holding?", "question_boxes_seq": [[0]],
            "answer": "A leash.", "answer_boxes_seq": [[0], [1]],
            "cot_with_ans": "<ph_st>The man<ph_ed> holds a leash tied to <ph_st>the dog<ph_ed> on the right. So the answer is a leash.",
        }]
    else:
        rows = [
            {"img_path": "1.jpg", "boxes": [[20, 10, 60, 90], [120, 20, 180, 80]],
             "question": "What is the object <boxes> next to?", "question_boxes_seq": [[0]],
             "answer": "It is next to the blue square <boxes> on the right.", "answer_boxes_seq": [[1]]},
            {"img_path": "1.jpg", "boxes": [[20, 10, 60, 90], [120, 20, 180, 80]],
             "question": "Describe the image.", "question_boxes_seq": [],
             "answer": "Two shapes <boxes>.", "answer_boxes_seq": [[0, 1]]},
            {"img_path": "missing.jpg", "boxes": [[0, 0, 10, 10]], "question": "What is <boxes>?", "question_boxes_seq": [[0]],
             "answer": "A dot.", "answer_boxes_seq": []},
        ]
    path = root / "rd.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_image(root / "images" / "1.jpg", size=SHIKRA_IMAGE)
    return {"file": path, "images": root / "images"}
