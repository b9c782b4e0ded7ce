from collections import Counter

import pytest
from torch.utils.data import ConcatDataset, DataLoader

from lyrics.data.mixing import MixtureSampler, parse_weights

SIZES = {"captioning": 300, "vqa": 500, "rec": 120, "text": 50}
WEIGHTS = "captioning 0.3, vqa 0.4, rec 0.2, text 0.1"


def take(sampler, n):
    out = []
    while len(out) < n:
        for i in sampler:
            out.append(i)
            if len(out) == n:
                break
    return out


def test_parse_weights_forms():
    assert parse_weights(WEIGHTS) == {"captioning": 0.3, "vqa": 0.4, "rec": 0.2, "text": 0.1}
    assert parse_weights("a=1, b: 2") == {"a": 1.0, "b": 2.0}
    assert parse_weights({"a": 1}) == {"a": 1.0}
    with pytest.raises(ValueError, match=">= 0"):
        parse_weights({"a": -1})
    with pytest.raises(ValueError, match="cannot read"):
        parse_weights("a b c")


def test_weights_are_followed_and_stream_is_seeded():
    sampler = MixtureSampler(SIZES, WEIGHTS, seed=0, samples_per_epoch=20_000)
    stream = list(sampler)
    counts = Counter(sampler.locate(i)[0] for i in stream)
    for name, weight in parse_weights(WEIGHTS).items():
        assert counts[name] / len(stream) == pytest.approx(weight, abs=0.015)
    assert stream[:500] == list(MixtureSampler(SIZES, WEIGHTS, seed=0, samples_per_epoch=500))
    assert stream[:500] != list(MixtureSampler(SIZES, WEIGHTS, seed=1, samples_per_epoch=500))


def test_each_pass_over_a_source_is_a_permutation():
    sampler = MixtureSampler({"a": 7, "b": 5}, {"a": 1, "b": 0}, seed=3, samples_per_epoch=21)
    locals_ = [sampler.locate(i)[1] for i in sampler]
    for k in range(3):
        assert sorted(locals_[7 * k: 7 * k + 7]) == list(range(7))
    assert locals_[:7] != locals_[7:14]  # a fresh order each pass


@pytest.mark.parametrize("cut", [1, 137, 999, 1000, 1801])
def test_resume_continues_exactly(cut):
    full = take(MixtureSampler(SIZES, WEIGHTS, seed=5, samples_per_epoch=1000), 2500)
    first = MixtureSampler(SIZES, WEIGHTS, seed=5, samples_per_epoch=1000)
    head = take(first, cut)
    state = first.state_dict()
    resumed = MixtureSampler(SIZES, WEIGHTS, seed=5, samples_per_epoch=1000)
    resumed.load_state_dict(state)
    assert head + take(resumed, 2500 - cut) == full


def test_state_for_trained_samples_when_the_loader_prefetched():
    sampler = MixtureSampler(SIZES, WEIGHTS, seed=2, world_size=2, rank=1, samples_per_epoch=400)
    stream = list(sampler)  # the loader ran ahead to the end of the epoch
    state = sampler.state_dict(samples_consumed=50)  # but training used 50 samples
    resumed = MixtureSampler(SIZES, WEIGHTS, seed=2, world_size=2, rank=1, samples_per_epoch=400)
    resumed.load_state_dict(state)
    assert list(resumed) == stream[50:]


def test_ranks_partition_the_global_stream_without_duplicates():
    world = 3
    global_stream = list(MixtureSampler(SIZES, WEIGHTS, seed=9, samples_per_epoch=900))
    per_rank = [list(MixtureSampler(SIZES, WEIGHTS, seed=9, samples_per_epoch=900, rank=r, world_size=world)) for r in range(world)]
    assert [len(p) for p in per_rank] == [300, 300, 300]
    interleaved = [per_rank[t % world][t // world] for t in range(900)]
    assert interleaved == global_stream
    # Sources larger than the draws they get: one pass each, so no index may repeat across ranks.
    big = {name: 1000 for name in SIZES}
    ranks = [list(MixtureSampler(big, WEIGHTS, seed=9, samples_per_epoch=900, rank=r, world_size=world)) for r in range(world)]
    union = [i for p in ranks for i in p]
    assert len(union) == len(set(union)) == 900


def test_state_is_checked_against_the_mixture():
    state = MixtureSampler(SIZES, WEIGHTS).state_dict()
    other = MixtureSampler(SIZES, "captioning 1")
    with pytest.raises(ValueError, match="weights"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="unknown sources"):
        MixtureSampler(SIZES, {"nope": 1})
    with pytest.raises(ValueError, match="no samples"):
        MixtureSampler({"a": 0, "b": 3}, {"a": 1, "b": 1})


def test_with_a_dataloader_over_concatenated_sources():
    sources = {name: [f"{name}-{i}" for i in range(size)] for name, size in SIZES.items()}
    dataset = ConcatDataset(list(sources.values()))
    sampler = MixtureSampler(SIZES, WEIGHTS, seed=0, samples_per_epoch=64)
    loader = DataLoader(dataset, batch_size=8, sampler=sampler, collate_fn=list)
    items = [x for batch in loader for x in batch]
    expected = [f"{name}-{local}" for name, local in (sampler.locate(i) for i in MixtureSampler(SIZES, WEIGHTS, seed=0, samples_per_epoch=64))]
    assert items == expected


def test_mixture_from_a_yaml_config(tmp_path):
    import yaml

    from lyrics.data.mixing import mixture_from_config
    from lyrics.data.records import InstructionRecord, save_records

    def text_records(prefix, n):
        turns = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
        return [InstructionRecord(f"{prefix}-{i}", None, "text", turns) for i in range(n)]

    save_records(text_records("x", 30), tmp_path / "x.json")
    save_records(text_records("y", 10), tmp_path / "y.json")
    config = yaml.safe_load(f"""
    mixture:
      first: {{records: {tmp_path / 'x.json'}, weight: 0.75}}
      second: {{records: [{tmp_path / 'y.json'}], weight: 0.25}}
    """)
    dataset, sampler = mixture_from_config(config["mixture"], seed=0, samples_per_epoch=400)
    ids = [dataset[i].id for i in sampler]
    share = sum(i.startswith("x-") for i in ids) / len(ids)
    assert len(dataset) == 40 and share == pytest.approx(0.75, abs=0.07)
    with pytest.raises(ValueError, match="unknown keys"):
        mixture_from_config({"a": {"records": str(tmp_path / "x.json"), "wieght": 1}})


# ------------------------------------------------------------------ Table 8: exclude a train split
def _records(source, n, start=0):
    from lyrics.data.records import InstructionRecord

    conv = [{"from": "human", "value": "<image>\nq?"}, {"from": "gpt", "value": "a"}]
    return [InstructionRecord(f"{source}-{i}", f"{source}/{i}.jpg", "vqa", conv, source=source) for i in range(start, start + n)]


def test_exclude_train_drops_a_dataset_by_record_source_alias_or_mixture_name():
    from lyrics.data.mixing import exclude_train, parse_exclude

    parts = {"vqa": _records("vqav2", 5) + _records("gqa", 4), "captioning": _records("karpathy_flickr30k", 3), "gqa_extra": _records("x", 2)}
    kept, removed = exclude_train(parts, ["gqa"])
    assert removed == {"gqa": 4} and [r.source for r in kept["vqa"]] == ["vqav2"] * 5 and len(kept["captioning"]) == 3
    kept, removed = exclude_train(parts, parse_exclude("Flickr30K, gqa_extra"))  # Table 8's column name; a mixture source
    assert removed == {"flickr30k": 3, "gqa_extra": 2} and set(kept) == {"vqa"}
    with pytest.raises(ValueError, match=r"no record or mixture source is \['okvqa'\]; sources here: \['captioning', 'gqa', .*'vqav2', 'x'\]"):
        exclude_train(parts, ["okvqa"])
    with pytest.raises(ValueError, match="removes every training record"):
        exclude_train({"vqa": _records("gqa", 2)}, ["gqa"])
    with pytest.raises(ValueError, match="NoCaps has no train split"):
        parse_exclude(["nocaps"])
    assert parse_exclude(None) == [] and parse_exclude(["gqa", "GQA"]) == ["gqa"]


def test_stage2_mixture_without_gqa_never_draws_gqa_and_records_it(tmp_path):
    """The recipe's data setup (model stubbed: only its config is read) with the override a command
    line gives (`--set data.exclude_train=gqa`)."""
    import json
    from types import SimpleNamespace

    from lyrics.data.records import save_records
    from lyrics.presets import load_config
    from lyrics.recipes import load_recipe_config
    from lyrics.recipes.stage2 import DATA_RECORD, Stage2Recipe, write_data_record

    save_records(_records("vqav2", 30), tmp_path / "vqav2.json")
    save_records(_records("gqa", 30) + _records("vqav2", 5, start=30), tmp_path / "gqa.json")  # a mixed file
    save_records(_records("karpathy_flickr30k", 20), tmp_path / "flickr.json")
    mixture = {"vqa": {"records": [str(tmp_path / "vqav2.json"), str(tmp_path / "gqa.json")], "weight": 0.6},
               "captioning": {"records": str(tmp_path / "flickr.json"), "weight": 0.4}}  # fmt: skip
    base = {"recipe": "stage2", "trainer": {"output_dir": str(tmp_path / "run")}, "data": {"mixture": mixture, "samples_per_epoch": 400}}
    config = load_recipe_config(base, ["data.exclude_train=gqa"])
    recipe = Stage2Recipe(config)
    recipe.model = SimpleNamespace(config=load_config("tiny"))
    recipe.processor = SimpleNamespace(image_processor=None)
    recipe._setup_data()

    sampler = recipe.sampler_fn(0, 0, 1)
    concat = recipe.dataset.samples  # the ConcatDataset the sampler's flat indices point into
    sources = []
    for index in sampler:
        part, local = sampler.locate(index)
        sources.append(concat.datasets[sampler.names.index(part)].records[local].source)
    assert len(sources) == 400 and "gqa" not in sources
    assert Counter(sources).keys() == {"vqav2", "karpathy_flickr30k"}
    assert recipe.data_record == {"ablation": "w/o specific train split", "exclude_train": ["gqa"], "removed_records": {"gqa": 30},
                                  "records": {"vqa": 35, "captioning": 20}}  # fmt: skip
    written = json.loads(write_data_record(tmp_path / "run", recipe.data_record).read_text())
    assert (tmp_path / "run" / DATA_RECORD).is_file() and written["exclude_train"] == ["gqa"]
