"""The refiner's backend table: names to factories, plug-ins found through entry points."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lyrics
from lyrics.refiner import backends
from lyrics.refiner.stages import BackendError


@pytest.fixture
def table(monkeypatch):
    """A private copy of the table, so registrations made by a test do not leak into others."""
    monkeypatch.setattr(backends, "_FACTORIES", dict(backends._FACTORIES))
    return backends


def test_product_backends_are_in_the_table():
    assert {"clip", "ram", "given"} <= set(backends.registered("tagger"))
    assert "grounding_dino" in backends.registered("detector")
    assert {"sam_hq", "sam", "none"} <= set(backends.registered("segmenter"))


def test_unknown_backend_names_the_known_ones(table):
    with pytest.raises(BackendError, match=r"unknown detector backend 'nope'; known: grounding_dino, toy\b"):
        table.factory("detector", "nope")
    with pytest.raises(ValueError, match="refiner stage must be one of"):
        table.factory("captioner", "clip")


def test_a_taken_name_cannot_be_replaced(table):
    def mine(config, device, shared):
        return None

    table.register("detector", "mine", mine)
    table.register("detector", "mine", mine)  # the same factory again: a module imported twice
    assert table.factory("detector", "mine") is mine
    with pytest.raises(BackendError, match="'grounding_dino' is already registered"):
        table.register("detector", "grounding_dino", mine)


def test_toy_is_found_through_its_entry_point_without_the_refiner_importing_it():
    """A fresh interpreter: building a toy refiner loads the toy world only through the entry point."""
    script = """
import sys
from lyrics.refiner.job import load_refiner_config
from lyrics.refiner.pipeline import VisualRefiner
assert not [m for m in sys.modules if m.startswith("lyrics.toyworld")], "imported before use"
refiner = VisualRefiner.from_config(load_refiner_config("tiny"))
print(type(refiner.tagger).__module__, type(refiner.segmenter).__name__)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["lyrics.toyworld.refiner_backend", "ToySegmenter"]


def test_product_layers_import_nothing_from_the_toy_world():
    """Only the toy world itself and the CLI (its `toyworld`, `quickstart`, `ablate` commands) may."""
    root = Path(lyrics.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith("toyworld/") or relative == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{relative}:{node.lineno} {n}" for n in names if n.startswith("lyrics.toyworld")]
    assert offenders == []
