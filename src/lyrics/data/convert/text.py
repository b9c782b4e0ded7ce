"""Pure text (Alpaca) -> text records: no image; the human turn is the instruction, then the input
on a new line when there is one; the reply is the output."""

from __future__ import annotations

from pathlib import Path

from lyrics.data.convert.common import Conversion, ConvertOptions, single_turn
from lyrics.data.official.text import read_alpaca
from lyrics.data.records import load_records

TASK = "text"


def convert_alpaca(inputs: list[Path], opts: ConvertOptions) -> Conversion:
    out = Conversion()
    for path in inputs:
        prefix = "alpaca" if len(inputs) == 1 else f"alpaca-{Path(path).stem}"
        for sample in read_alpaca(path):
            prompt = sample.instruction.strip() + (f"\n{sample.input.strip()}" if sample.input.strip() else "")
            out.records.append(single_turn(f"{prefix}-{sample.index}", None, TASK, prompt, sample.output, "alpaca", {}))
    return out


def convert_llava(inputs: list[Path], opts: ConvertOptions) -> Conversion:
    """LLaVA-style (or our own) record files: validated; bad records are skipped and listed."""
    out = Conversion()
    for path in inputs:
        loaded = load_records(path, skip_invalid=True)
        out.records.extend(loaded.records)
        out.skipped.extend(s.error for s in loaded.skipped)
    return out
