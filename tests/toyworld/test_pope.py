import json
from collections import Counter

import numpy as np
import pytest

from lyrics.toyworld.pope import SAMPLE_NUM, build_pope, object_statistics, pope_images


def test_hand_made_split_follows_the_pope_definitions():
    images = [
        ["red circle", "blue star", "green square"],
        ["red circle", "blue star", "yellow hexagon"],
        ["red circle", "orange diamond", "blue star", "red circle"],  # a repeated tag counts once
        ["purple star", "green square"],  # fewer than 3 objects: not used
        ["purple circle", "yellow star", "green circle"],
    ]
    assert pope_images(images) == [0, 1, 2, 4]
    rng = np.random.default_rng(0)
    # frequency over the used images: red circle 3, blue star 3, every other object 1 (ties by name)
    popular = build_pope(images, "popular", rng)
    assert [q.tag for q in popular if q.label == "no" and q.image_index == 0] == ["green circle", "orange diamond", "purple circle"]
    adversarial = build_pope(images, "adversarial", rng)
    image1 = [(q.tag, q.label) for q in adversarial if q.image_index == 1]
    assert [label for _, label in image1] == ["yes", "no"] * 3
    # red circle co-occurs most with blue star (present), then green square / orange diamond /
    # yellow hexagon once each; blue star's best allowed partner is then orange diamond
    assert image1[:4] == [("red circle", "yes"), ("green square", "no"), ("blue star", "yes"), ("orange diamond", "no")]
    # yellow hexagon co-occurs only with present objects: the builder falls back to a random absent one
    assert image1[5][0] not in {"red circle", "blue star", "yellow hexagon", "green square", "orange diamond"}
    random_negatives = [q.tag for q in build_pope(images, "random", rng) if q.label == "no"]
    assert len(random_negatives) == 12 and set(random_negatives) <= {t for tags in images for t in tags} - {"purple star"}
    with pytest.raises(ValueError, match="sampling"):
        build_pope(images, "unpopular", rng)
    with pytest.raises(ValueError, match="no absent object"):
        build_pope([["a x", "b y", "c z"]], "random", rng)
    # a split too small to supply negatives from its own images draws them from the split's pool
    tiny = build_pope([["a x", "b y", "c z"]], "popular", rng, pool=["a x", "b y", "c z", "d w", "e v", "f u"])
    assert sorted(q.tag for q in tiny if q.label == "no") == ["d w", "e v", "f u"]


def _world_objects(manifest, split):
    return [(img["file_name"].rsplit("/", 1)[1], [o["tag"] for o in img["objects"]]) for img in manifest["images"] if img["split"] == split]


@pytest.mark.parametrize("split", ["val", "test", "zeroshot"])
def test_written_pope_files_are_balanced_and_follow_the_definitions(tiny_world, split):
    root, manifest = tiny_world
    images = _world_objects(manifest, split)
    used = [(name, list(dict.fromkeys(tags))) for name, tags in images if len(set(tags)) >= SAMPLE_NUM]
    present = dict(used)
    frequency = Counter(t for _, tags in used for t in tags)
    cooccur = {a: Counter() for a in frequency}
    for _, tags in used:
        for a in tags:
            cooccur[a].update(b for b in tags if b != a)
    for sampling in ("random", "popular", "adversarial"):
        lines = [json.loads(line) for line in (root / f"pope/{split}/coco_pope_{sampling}.json").read_text().splitlines()]
        labels = Counter(item["label"] for item in lines)
        assert labels["yes"] == labels["no"] == SAMPLE_NUM * len(used)  # exactly balanced
        asked: dict[str, list[str]] = {}
        for n in range(0, len(lines), 2):
            yes, no = lines[n], lines[n + 1]
            assert (yes["label"], no["label"]) == ("yes", "no") and yes["image"] == no["image"]
            tag_yes = yes["text"].split(" ", 3)[3].removesuffix(" in the image?")
            tag_no = no["text"].split(" ", 3)[3].removesuffix(" in the image?")
            history = asked.setdefault(yes["image"], [])
            assert tag_yes == present[yes["image"]][len(history) // 2]  # positives: the first objects in order
            history.append(tag_yes)
            assert tag_no not in present[yes["image"]] and tag_no not in history and tag_no in frequency
            allowed = [t for t in frequency if t not in present[yes["image"]] and t not in history]
            if sampling == "popular":
                assert tag_no == min(allowed, key=lambda t: (-frequency[t], t))
            elif sampling == "adversarial":
                ranked = [t for t in sorted(cooccur[tag_yes], key=lambda t: (-cooccur[tag_yes][t], t)) if t in allowed]
                if ranked:
                    assert tag_no == ranked[0]
            history.append(tag_no)
        assert [item["text"].startswith(("Is there a ", "Is there an ")) for item in lines] == [True] * len(lines)


def test_statistics_count_images_not_objects():
    freq, co = object_statistics([["a x", "a x", "b y"], ["b y"]])
    assert freq == Counter({"b y": 2, "a x": 1})
    assert co["a x"]["b y"] == 1 and co["b y"]["a x"] == 1


@pytest.mark.parametrize("split", ["test", "zeroshot"])
def test_the_paraphrase_file_asks_the_adversarial_questions_in_held_out_phrasings(tiny_world, split):
    from lyrics.toyworld.language import article
    from lyrics.toyworld.pope import PARAPHRASES

    root, _ = tiny_world
    read = lambda name: [json.loads(line) for line in (root / f"pope/{split}/coco_pope_{name}.json").read_text().splitlines()]  # noqa: E731
    adversarial, paraphrased = read("adversarial"), read("paraphrase")
    assert len(PARAPHRASES) >= 5 and len(paraphrased) == len(adversarial) > len(PARAPHRASES)
    for n, (a, p) in enumerate(zip(adversarial, paraphrased)):
        assert (a["image"], a["label"], a["question_id"]) == (p["image"], p["label"], p["question_id"])
        tag = a["text"].split(" ", 3)[3].removesuffix(" in the image?")
        assert p["text"] == PARAPHRASES[n % len(PARAPHRASES)].format(a=article(tag))
