"""`lyrics chat`: talk to a checkpoint in the terminal.

    lyrics chat --model runs/final --image cat.jpg --prompt "Where is the cat?" --save-vis cat.png
    lyrics chat --model runs/final --image cat.jpg          # interactive, multi-turn

One-shot mode (with `--prompt`) prints the answer, its boxes, and exits. Interactive mode reads
questions until `/quit` or end of input; the dialogue is kept between turns (multi-turn). Commands:
`/image PATH` (new image, new dialogue), `/region x1,y1,x2,y2` (a pixel box for the next question:
it fills the question's `<region>`, or is appended to it), `/reset`, `/quit`. Answers are streamed as
they are decoded. With `--save-vis` each answer's picture (refiner objects and the answer's boxes)
is written there (interactive turns get `-1`, `-2`, ... before the suffix).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lyrics.inference.inputs import InputError
from lyrics.inference.pipeline import LyricsPipeline, PipelineResult
from lyrics.inference.regions import parse_region

HELP = "commands: /image PATH, /region x1,y1,x2,y2, /reset, /quit"


def print_result(console: Console, result: PipelineResult) -> None:
    if result.boxes:
        table = Table(title="boxes in the answer (pixels)", title_justify="left")
        for column in ("#", "tag", "x1", "y1", "x2", "y2"):
            table.add_column(column)
        for i, box in enumerate(result.boxes, 1):
            table.add_row(str(i), box.tag or "-", *(f"{v:.0f}" for v in box.box))
        console.print(table)


def vis_path(base: Path, turn: int | None) -> Path:
    return base if turn is None else base.with_name(f"{base.stem}-{turn}{base.suffix or '.png'}")


class ChatSession:
    """The state of one terminal dialogue: pipeline, current image, history and pending regions."""

    def __init__(self, pipeline: LyricsPipeline, console: Console, save_vis: Path | None = None, region_format: str = "pixels", **generation: Any):
        self.pipeline, self.console, self.save_vis, self.generation = pipeline, console, save_vis, generation
        self.region_format = region_format
        self.image = None
        self.history: list[dict[str, str]] | None = None
        self.regions: list[Any] = []
        self.turn = 0

    def set_image(self, path: str | Path | None) -> None:
        self.image = self.pipeline.load_image(str(path)) if path else None
        self.history, self.regions = None, []

    def ask(self, prompt: str, turn: int | None = None) -> PipelineResult:
        """Stream one answer to the console, keep it in the history, save its picture."""
        stream = self.pipeline.stream(
            self.image, prompt, history=self.history, regions=self.regions or None, region_format=self.region_format, **self.generation
        )  # fmt: skip
        if turn is not None:
            self.console.print("[bold]lyrics:[/bold] ", end="")
        for piece in stream:
            self.console.print(piece, end="", markup=False, highlight=False, soft_wrap=True)
        self.console.print()
        result = stream.result
        assert result is not None
        self.history, self.regions = result.conversation, []
        print_result(self.console, result)
        if self.save_vis is not None and self.image is not None:
            from lyrics.inference.drawing import draw_result, save_picture

            path = save_picture(draw_result(self.image, result), vis_path(self.save_vis, turn))
            self.console.print(f"[dim]picture saved to {path}[/dim]")
        return result

    def command(self, line: str) -> bool:
        """Handle a /command; returns False to quit."""
        name, _, arg = line.partition(" ")
        if name in ("/quit", "/exit", "/q"):
            return False
        if name == "/reset":
            self.history, self.regions = None, []
            self.console.print("[dim]dialogue cleared[/dim]")
        elif name == "/image":
            self.set_image(arg.strip() or None)
            self.console.print(f"[dim]image: {arg.strip() or 'none'} (dialogue cleared)[/dim]")
        elif name == "/region":
            self.regions.append(parse_region(arg))
            self.console.print(f"[dim]region {self.regions[-1]} will go with the next question[/dim]")
        else:
            self.console.print(f"unknown command {name!r}; {HELP}")
        return True

    def loop(self, read: Callable[[], str]) -> None:
        self.console.print(f"[dim]{HELP}[/dim]")
        while True:
            try:
                line = read().strip()
            except (EOFError, KeyboardInterrupt):
                self.console.print()
                return
            if not line:
                continue
            try:
                if line.startswith("/"):
                    if not self.command(line):
                        return
                    continue
                self.turn += 1
                self.ask(line, turn=self.turn)
            except (InputError, ValueError, FileNotFoundError) as exc:
                self.console.print(f"[red]error:[/red] {exc}", highlight=False)


def run_chat(
    model: str | Path,
    image: str | Path | None = None,
    prompt: str | None = None,
    save_vis: str | Path | None = None,
    regions: list[str] | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    console: Console | None = None,
    refiner: dict[str, Any] | None = None,
    quantize: str = "none",
    region_format: str = "pixels",
    **generation: Any,
) -> PipelineResult | None:
    """Entry point of `lyrics chat`; returns the one-shot result (None in interactive mode).
    `refiner`: explicit `RefinerConfig` fields (`--refiner`), checked against the checkpoint's record;
    `quantize`: `--quantize` (`lyrics.inference.quantize`); `regions` in `region_format`
    (`lyrics.inference.regions`)."""
    from rich.prompt import Prompt

    console = console or Console()
    pipeline = LyricsPipeline.from_pretrained(model, device=device, dtype=dtype, refiner=refiner, quantize=quantize)
    session = ChatSession(pipeline, console, Path(save_vis) if save_vis else None, region_format=region_format, **generation)
    session.set_image(image)
    session.regions = [parse_region(r) for r in regions or []]
    if prompt is not None:
        return session.ask(prompt)
    session.loop(lambda: Prompt.ask("[bold]you[/bold]", console=console))
    return None
