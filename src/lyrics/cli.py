"""`lyrics` command line. Each command is a thin typed function that dispatches into the library;
heavy imports (torch, transformers) happen inside the commands so `lyrics --help` stays fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="lyrics",
    help="Lyrics: fine-grained vision-language alignment with semantic-aware visual objects.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PresetOption = Annotated[
    str, typer.Option("--preset", "-p", help="Model preset: paper, released or tiny; or a saved config directory.")
]
ConfigOption = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="YAML file overriding any config field.")
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Dotted override, e.g. mqformer_config.num_grounding_query_tokens=0 (repeatable)."),
]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _load(preset: str, config: Path | None, overrides: list[str] | None):
    from lyrics.presets import load_config

    try:
        return load_config(preset, config, overrides)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))


@app.command()
def config(
    preset: PresetOption = "paper",
    config: ConfigOption = None,
    overrides: SetOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Directory to save config.json into.")] = None,
) -> None:
    """Print (or save) the full configuration of a preset after overrides."""
    cfg = _load(preset, config, overrides)
    if out is not None:
        cfg.save_pretrained(str(out))
        typer.echo(f"saved {out / 'config.json'}")
    else:
        typer.echo(cfg.to_json_string())


@app.command()
def audit(
    preset: PresetOption = "paper",
    config: ConfigOption = None,
    overrides: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Count the parameters of a full-size model on the meta device and compare with the paper."""
    from lyrics.audit import PAPER_FIGURES, TOLERANCE, audit as run_audit, audit_json

    cfg = _load(preset, config, overrides)
    rows = run_audit(cfg, PAPER_FIGURES if preset == "paper" else None)
    if as_json:
        typer.echo(json.dumps(audit_json(rows), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Lyrics parameter audit ({preset})")
    for column in ("component", "parameters", "trainable", "paper", "rel. diff", "note"):
        table.add_column(column, justify="left" if column in ("component", "note") else "right")
    for row in rows:
        diff = row.relative_difference
        mark = "" if diff is None else ("[green]" if abs(diff) <= TOLERANCE else "[yellow]") + f"{diff:+.2%}"
        table.add_row(
            row.component,
            f"{row.parameters:,}",
            f"{row.trainable:,}",
            "-" if row.paper is None else f"{row.paper / 1e6:,.0f}M",
            mark,
            row.note,
        )
    Console().print(table)


@app.command("import-blip2")
def import_blip2(
    checkpoint: Annotated[Path, typer.Argument(help="transformers BLIP-2/InstructBLIP directory, or a LAVIS / released-code state-dict file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the initialised MQ-Former.")],
    preset: PresetOption = "paper",
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Initialise an MQ-Former from BLIP-2 weights, save it, and print the load report."""
    from lyrics.models.blip2_weights import CheckpointError, load_mqformer_from_blip2
    from lyrics.models.mqformer import MQFormerModel

    cfg = _load(preset, config, overrides)
    model = MQFormerModel(cfg.mqformer_config)
    try:
        report = load_mqformer_from_blip2(model, checkpoint)
    except CheckpointError as exc:
        _fail(str(exc))
    model.save_pretrained(str(out))
    (out / "load_report.json").write_text(json.dumps(report.to_dict(), indent=2))
    typer.echo(report.summary())
    typer.echo(f"saved MQ-Former to {out} (full report in {out / 'load_report.json'})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
