"""A tiny stage-1 run driven by the real Trainer, used by the distributed and resume tests:
python tests/training/tiny_run.py OUT --steps N --save-every K [--resume] [--sleep S]"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tiny  # noqa: E402
from lyrics.models.pretraining import LyricsForPretraining  # noqa: E402
from lyrics.training.collate import PretrainingCollator, PretrainingExample  # noqa: E402
from lyrics.training.trainer import Trainer, TrainerConfig  # noqa: E402

CAPTIONS = ["a red circle", "two blue squares", "a green star left of a circle", "a small purple hexagon"]


class Pairs(torch.utils.data.Dataset):
    def __init__(self, n=24):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return PretrainingExample(
            caption=CAPTIONS[i % 4], record=tiny.refiner_record(f"img{i}", objects=1 + i % 3, seed=i),
            image_embeds=torch.randn(17, 32, generator=g), index=i,
        )  # fmt: skip


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--save-every", type=int, default=2)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tok = tiny.mqformer_tokenizer()
    config = tiny.lyrics_config(tok, **{"mqformer_config.hidden_dropout_prob": 0.1})  # dropout on: RNG matters
    torch.manual_seed(0)
    model = LyricsForPretraining(config)
    collator = PretrainingCollator(tok, config, seed=3)

    def step(m, batch):
        if args.sleep:
            time.sleep(args.sleep)
        return m(**batch)

    trainer = Trainer(
        TrainerConfig(output_dir=args.out, max_steps=args.steps, batch_size=4, save_every=args.save_every, log_every=1, progress=False, lr=1e-3),
        model, Pairs(), collator, step, log_fields=("loss_itc", "loss_itm", "loss_icg", "loss_msp"),
        on_epoch=lambda e: setattr(collator, "epoch", e),
    )  # fmt: skip
    trainer.train(resume=args.resume)
    from safetensors.torch import save_file

    final = {k: v.detach().clone().contiguous() for k, v in trainer.unwrapped_model().state_dict().items()}
    save_file(final, str(Path(args.out) / f"final-rank{trainer.accelerator.process_index}.safetensors"))
    trainer.cleanup()


if __name__ == "__main__":
    main()
