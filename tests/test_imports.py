"""The package's layering, checked on the source: which modules may import which.

- `models/` (the model and its processor) imports nothing from `refiner/`: the refiner's backends
  load their checkpoints with `models/loading.py`, so the dependency runs one way only.
- `inference/streaming.py` imports nothing from the pipeline (the pipeline imports it), and the
  request errors and image decoding (`inference/inputs.py`) import neither the server's limits nor
  the pipeline.
Every import counts, also those inside functions and under `TYPE_CHECKING`.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lyrics"


def imported(path: Path) -> set[str]:
    """Every module `path` imports, absolute names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def offenders(files, forbidden: str) -> dict[str, list[str]]:
    out = {}
    for path in files:
        bad = sorted(n for n in imported(path) if n == forbidden or n.startswith(forbidden + "."))
        if bad:
            out[path.name if SRC not in path.parents else str(path.relative_to(SRC))] = bad
    return out


def test_models_import_nothing_from_the_refiner():
    assert offenders(sorted((SRC / "models").rglob("*.py")), "lyrics.refiner") == {}


def test_the_checker_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from lyrics.refiner.record import RefinerRecord\n")
    assert offenders([module], "lyrics.refiner") != {}


def test_streaming_and_inputs_sit_below_the_pipeline_and_the_server():
    inference = SRC / "inference"
    assert offenders([inference / "streaming.py"], "lyrics.inference.pipeline") == {}
    for above in ("lyrics.inference.pipeline", "lyrics.inference.limits", "lyrics.inference.server", "lyrics.inference.generation"):
        assert offenders([inference / "inputs.py", inference / "regions.py"], above) == {}
    assert offenders([inference / "generation.py"], "lyrics.inference.pipeline") == {}
