"""Errors and validated-JSON helpers shared by the official-format readers.

Every reader reports bad input the same way:

* `FormatError` (a `ValueError`) names the file, where in it (`questions[3]`, `line 7`, `ref_id=12`)
  and the field, e.g. `v2_..._questions.json: questions[3]: field 'question_id': missing`;
* `MissingFilesError` (a `FileNotFoundError`) is raised when a reader is given a folder and lists
  every expected file that is not there.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_MISSING = object()


class FormatError(ValueError):
    """Malformed official-format input. Attributes: `file`, `where`, `field` (each may be None)."""

    def __init__(self, file: str | os.PathLike | None, problem: str, where: str | None = None, field: str | None = None):
        self.file = None if file is None else str(file)
        self.where = where
        self.field = field
        self.problem = problem
        parts = [p for p in (self.file, where, None if field is None else f"field {field!r}") if p]
        super().__init__(": ".join(parts + [problem]))


class MissingFilesError(FileNotFoundError):
    """A folder given to a reader lacks expected files; `missing` lists them (relative names)."""

    def __init__(self, folder: str | os.PathLike, missing: Sequence[str], what: str):
        self.folder = str(folder)
        self.missing = list(missing)
        listing = "\n".join(f"  - {name}" for name in self.missing)
        super().__init__(f"{folder}: not a complete {what} folder; missing:\n{listing}")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a missing file raises FileNotFoundError, bad JSON a FormatError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise FormatError(path, f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise FormatError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """(line number, object) for each non-empty line of a JSON-lines file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise FormatError(path, f"not valid JSON ({exc.msg})", where=f"line {number}") from None
    return rows


def expect_type(value: Any, types: type | tuple[type, ...], file: Any, where: str | None, field: str | None = None) -> Any:
    """Return `value` if it has one of `types` (bool is never accepted as int), else FormatError."""
    types = types if isinstance(types, tuple) else (types,)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        names = " or ".join(t.__name__ if t is not type(None) else "null" for t in types)
        raise FormatError(file, f"expected {names}, got {type(value).__name__}", where, field)
    return value


def get(obj: Any, key: str, types: type | tuple[type, ...], file: Any, where: str | None, default: Any = _MISSING) -> Any:
    """`obj[key]` checked for presence (unless `default` is given) and type."""
    if not isinstance(obj, dict):
        raise FormatError(file, f"expected an object, got {type(obj).__name__}", where)
    if key not in obj:
        if default is _MISSING:
            raise FormatError(file, "missing", where, key)
        return default
    return expect_type(obj[key], types, file, where, key)


def get_str_list(obj: Any, key: str, file: Any, where: str | None, default: Any = _MISSING) -> list[str]:
    values = get(obj, key, list, file, where, default)
    if values is None:
        return values
    for i, value in enumerate(values):
        expect_type(value, str, file, where, f"{key}[{i}]")
    return list(values)


def find_files(folder: str | os.PathLike, expected: dict[str, Sequence[str]], what: str) -> dict[str, Path]:
    """Resolve named roles in `folder`; each role lists candidate names or glob patterns, first match wins.

    Raises `MissingFilesError` naming every role that matched nothing (listing its candidates).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, candidates in expected.items():
        for candidate in candidates:
            matches = sorted(glob.glob(glob.escape(str(folder)) + os.sep + candidate))
            if matches:
                found[role] = Path(matches[0])
                break
        else:
            missing.append(" or ".join(candidates))
    if missing:
        raise MissingFilesError(folder, missing, what)
    return found


def resolve(image_root: str | os.PathLike | None, *parts: str) -> Path:
    """`image_root / parts...` (or the relative path when no root is given)."""
    return Path(image_root if image_root is not None else "").joinpath(*parts)
