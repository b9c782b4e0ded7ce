"""Pure-text instructions: Alpaca `alpaca_data.json`::

    [{"instruction": str, "input": str, "output": str}]

(`input` may be empty or absent).
"""

from __future__ import annotations

import os
from pathlib import Path

from lyrics.data.official.common import FormatError, find_files, get, read_json
from lyrics.data.official.samples import TextSample


def read_alpaca(path: str | os.PathLike) -> list[TextSample]:
    path = Path(path)
    if path.is_dir():
        path = find_files(path, {"data": ["alpaca_data*.json", "*.json"]}, "Alpaca")["data"]
    data = read_json(path)
    if not isinstance(data, list):
        raise FormatError(path, f"expected a list of instructions, got {type(data).__name__}")
    return [
        TextSample(
            index=i,
            instruction=get(row, "instruction", str, path, f"[{i}]"),
            input=get(row, "input", str, path, f"[{i}]", default=""),
            output=get(row, "output", str, path, f"[{i}]"),
        )
        for i, row in enumerate(data)
    ]
