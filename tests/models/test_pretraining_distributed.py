"""ITM hard negatives come from every rank's samples (BLIP-2 gathers them across GPUs): two gloo
processes holding one half of a batch each compute what one process holding the whole batch does."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import tiny
from lyrics.models.pretraining import LyricsForPretraining
from lyrics.training.collate import PretrainingCollator, PretrainingExample

CAPTIONS = ["a red circle", "two blue squares", "a green star left of a circle", "a small purple hexagon"]


def hardest(weights, num_samples):
    """Deterministic stand-in for `torch.multinomial`: the most probable negative."""
    return weights.argmax(dim=1, keepdim=True)


def setup():
    tok = tiny.mqformer_tokenizer()
    config = tiny.lyrics_config(tok, use_icg=False, use_msp=False)
    torch.manual_seed(0)
    model = LyricsForPretraining(config)
    examples = [
        PretrainingExample(caption=c, record=tiny.refiner_record(f"i{i}", objects=1 + i % 3, seed=i),
                           image_embeds=torch.randn(17, 32, generator=torch.Generator().manual_seed(i)), index=i)
        for i, c in enumerate(CAPTIONS)
    ]  # fmt: skip
    batch = PretrainingCollator(tok, config, seed=0)(examples)
    return model, batch


def run(model, batch):
    out = model(**batch)
    (out.loss_itm + out.loss_itc).backward()
    return {"itm": out.loss_itm.detach(), "itc": out.loss_itc.detach(), "itm_head": model.itm_head.weight.grad.clone()}


def worker(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.multinomial = hardest
    model, batch = setup()
    half = {k: v[2 * rank : 2 * rank + 2] for k, v in batch.items()}
    result = run(model, half)
    for value in result.values():  # what DDP does with gradients; the losses are averaged alike
        dist.all_reduce(value)
        value /= 2
    if rank == 0:
        torch.save(result, out)
    dist.barrier()
    dist.destroy_process_group()


def test_two_ranks_mine_itm_negatives_from_the_whole_batch(tmp_path, monkeypatch):
    out = tmp_path / "ranks.pt"
    mp.spawn(worker, args=(f"file://{tmp_path / 'init'}", str(out)), nprocs=2, join=True)
    ranks = torch.load(out, weights_only=True)

    monkeypatch.setattr(torch, "multinomial", hardest)
    model, batch = setup()
    whole = run(model, batch)
    for key in ("itm", "itc", "itm_head"):
        torch.testing.assert_close(ranks[key], whole[key], rtol=1e-5, atol=1e-6, msg=key)
