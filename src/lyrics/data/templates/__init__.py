"""Instruction templates (paper appendix C, Table 10) loaded from data files, and a deterministic chooser.

The strings live in `table10.json` beside this module, copied exactly from the paper; code never
spells a template. Slots: `{Question}`, `{Option}`, `{Tag}`, `{Bbox}`, `{Tag & Bbox}`. `<Image>` marks
the image; filled prompts use the LLaVA image token instead (`"<image>\\n"` at the front, the form
`lyrics.data.records` expects), or drop it for text-only samples.

Choice is deterministic per sample: `TemplateBank.choose(task, key, seed)` hashes (seed, task, key)
with SHA-256, so a converter run on any machine picks the same template for the same sample; pass
`fixed=i` to use template i everywhere (evaluation records which template produced which number).

Users can supply their own templates: a JSON or YAML file either in this file's schema
(`{"tasks": {task: {"templates": [...]}}}`) or a plain `{task: [templates]}` mapping.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from lyrics.data.io import stable_seed

TASKS = (
    "captioning",
    "vqa",
    "text_vqa",
    "grounded_captioning",
    "rec",
    "referential_dialogue",
    "multiple_choice_vqa",
)
IMAGE_MARK = "<Image>"
# Slot name in the template -> keyword argument of `Template.fill`.
SLOTS = {"Question": "question", "Option": "option", "Tag": "tag", "Bbox": "bbox", "Tag & Bbox": "tag_bbox"}
_SLOT = re.compile(r"\{(" + "|".join(re.escape(s) for s in sorted(SLOTS, key=len, reverse=True)) + r")\}")


@dataclass(frozen=True)
class Template:
    """One instruction template: `task`, its `index` in the task's list, and the exact `text`."""

    task: str
    index: int
    text: str

    @property
    def slots(self) -> tuple[str, ...]:
        """Keyword names of the slots this template uses, in order (e.g. `("tag", "bbox")`)."""
        return tuple(SLOTS[m.group(1)] for m in _SLOT.finditer(self.text))

    def fill(self, image: bool = True, image_token: str = "<image>", **values: str) -> str:
        """The prompt with every slot replaced in one pass (slot text inside values is left alone).

        `image=True` turns `<Image>` into `image_token + "\\n"`; `image=False` removes it.
        Raises ValueError naming a slot the template needs but `values` lacks.
        """
        missing = [name for name in self.slots if values.get(name) is None]
        if missing:
            raise ValueError(f"template {self.task}[{self.index}] needs {missing}: {self.text!r}")
        text = _SLOT.sub(lambda m: str(values[SLOTS[m.group(1)]]), self.text)
        head = f"{image_token}\n" if image else ""
        if text.startswith(IMAGE_MARK):
            return head + text[len(IMAGE_MARK):]
        return head + text.replace(IMAGE_MARK, "")


class TemplateBank:
    """Templates per task with deterministic per-sample choice."""

    def __init__(self, tasks: dict[str, list[str]], source: str = "<memory>"):
        self.source = source
        self._templates: dict[str, list[Template]] = {}
        for task, texts in tasks.items():
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
                raise ValueError(f"{source}: task {task!r} needs a non-empty list of template strings")
            self._templates[task] = [Template(task, i, text) for i, text in enumerate(texts)]

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "TemplateBank":
        """Table 10 (default), or a user JSON/YAML template file."""
        if path is None:
            text = resources.files(__name__).joinpath("table10.json").read_text(encoding="utf-8")
            return cls._from_data(json.loads(text), "lyrics/data/templates/table10.json")
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
        return cls._from_data(data, str(path))

    @classmethod
    def _from_data(cls, data: Any, source: str) -> "TemplateBank":
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping of tasks to templates")
        tasks = data.get("tasks", data)
        return cls({task: (v["templates"] if isinstance(v, dict) else v) for task, v in tasks.items()}, source)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self._templates)

    def templates(self, task: str) -> list[Template]:
        if task not in self._templates:
            raise KeyError(f"no templates for task {task!r} in {self.source}; tasks: {list(self._templates)}")
        return list(self._templates[task])

    def get(self, task: str, index: int) -> Template:
        templates = self.templates(task)
        if not 0 <= index < len(templates):
            raise IndexError(f"task {task!r} has {len(templates)} templates, no index {index}")
        return templates[index]

    def choose(
        self,
        task: str,
        key: Any,
        seed: int = 0,
        fixed: int | None = None,
        candidates: list[Template] | None = None,
    ) -> Template:
        """The template for sample `key`: `fixed` if given, else a stable hash of (seed, task, key).

        `candidates` restricts the choice to a subset of the task's templates (e.g. those without a
        `{Bbox}` slot); `fixed` still indexes the task's full list.
        """
        if fixed is not None:
            return self.get(task, fixed)
        pool = candidates if candidates is not None else self.templates(task)
        if not pool:
            raise ValueError(f"no candidate templates for task {task!r}")
        return pool[stable_seed(seed, task, key) % len(pool)]


_DEFAULT: TemplateBank | None = None


def default_bank() -> TemplateBank:
    """The paper's Table 10 (loaded once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = TemplateBank.load()
    return _DEFAULT


__all__ = ["TASKS", "SLOTS", "Template", "TemplateBank", "default_bank"]
