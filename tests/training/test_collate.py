import torch

import tiny
from lyrics.training.collate import PretrainingCollator, PretrainingExample


def examples(n=3):
    return [
        PretrainingExample(
            caption=f"a red circle left of {k} blue squares",
            record=tiny.refiner_record(f"img{k}", objects=k + 1, seed=k),
            image_embeds=torch.randn(17, 32),
            index=k,
        )
        for k in range(n)
    ]


def test_batch_layout_and_special_tokens():
    tok = tiny.mqformer_tokenizer()
    config = tiny.lyrics_config(tok)
    batch = PretrainingCollator(tok, config)(examples())
    mq = config.mqformer_config
    assert batch["image_embeds"].shape == (3, 17, 32)
    assert (batch["caption_ids"][:, 0] == mq.cls_token_id).all()
    assert (batch["spatial_ids"][:, 0] == mq.bos_token_id).all()
    assert (batch["msp_ids"][:, 0] == mq.mlm_token_id).all()
    assert batch["local_features"].shape == (3, 3, tiny.LOCAL_FEATURES)
    assert batch["local_attention_mask"].tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    text = tok.decode(batch["spatial_ids"][2])
    assert "<br>" in text and "<T>" in text and "</Box>" in text


def test_msp_masks_whole_objects_only():
    tok = tiny.mqformer_tokenizer()
    config = tiny.lyrics_config(tok, msp_probability=0.5)
    collator = PretrainingCollator(tok, config)
    record = tiny.refiner_record(objects=4)
    ids, units = collator.spatial_tokens(record)
    masked, labels = collator.mask_units(ids, units, index=7)
    mask_id = config.mqformer_config.mask_token_id
    chosen = {u for u, m in zip(units, masked) if m == mask_id}
    assert chosen and -1 not in chosen
    for u in chosen:  # every token of a chosen object is masked, and labelled with the original id
        positions = [i for i, v in enumerate(units) if v == u]
        assert all(masked[i] == mask_id and labels[i] == ids[i] for i in positions)
    markup = {tok.convert_tokens_to_ids(t) for t in ("<br>", "</br>", "<T>", "</T>", "<Bbox>", "</Box>")}
    assert not any(labels[i] != -100 for i, v in enumerate(ids) if v in markup)
    # same (seed, epoch, index) -> same mask; another epoch -> (almost surely) another mask
    assert collator.mask_units(ids, units, index=7) == (masked, labels)


def test_component_units_mask_tags_and_single_coordinates():
    tok = tiny.mqformer_tokenizer()
    collator = PretrainingCollator(tok, tiny.lyrics_config(tok, msp_unit="component"))
    ids, units = collator.spatial_tokens(tiny.refiner_record(objects=2))
    assert max(units) + 1 == 2 * 5  # per object: the tag and four coordinates


def test_spatial_text_keeps_whole_objects_within_budget():
    tok = tiny.mqformer_tokenizer()
    collator = PretrainingCollator(tok, tiny.lyrics_config(tok), max_spatial_tokens=40)
    ids, units = collator.spatial_tokens(tiny.refiner_record(objects=5))
    assert len(ids) <= 40
    assert tok.decode(ids).count("<br>") == tok.decode(ids).count("</br>") >= 1


def test_no_spatial_fields_without_spatial_text():
    tok = tiny.mqformer_tokenizer()
    batch = PretrainingCollator(tok, tiny.lyrics_config(tok, use_spatial_text=False))(examples())
    assert "spatial_ids" not in batch and "msp_ids" not in batch
