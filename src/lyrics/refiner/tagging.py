"""Image tagging, the refiner's first stage: which things are in the image (paper section 3.1).

Backends:

* `ClipTagger` - zero-shot CLIP (`CLIPModel`) over a tag vocabulary file. Each tag is embedded once
  through a prompt ("a photo of a {}."); an image gets every tag whose cosine similarity with the
  image embedding reaches that tag's threshold, best first, at most `max_tags`. CLIP is trained with
  a softmax over a batch, so its similarities are not calibrated probabilities; a per-tag threshold on
  the raw cosine (typically 0.2-0.3 for ViT-L/14) is what the vocabulary file tunes.
* `RamTagger` - RAM / RAM++ (xinyu1205/recognize-anything), the paper's tagger. It is not on PyPI and
  breaks on recent transformers (docs/design.md, "Refiner components in transformers"), so it is used only where `import ram` works, and
  only from a downloaded `.pth` checkpoint file (`ram_checkpoint`; docs/refiner.md).
* `GivenTagger` - tags from the annotations (a manifest's per-image "tags"), for datasets that
  already name their objects.

Vocabulary file: one tag per line, optionally `tag<TAB>threshold`; blank lines and `#` comments are
skipped (the format of RAM's `ram_tag_list.txt` plus an optional threshold column).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from lyrics.models.loading import load_pretrained
from lyrics.refiner.stages import BackendError


def read_vocabulary(path: str | Path, default_threshold: float) -> list[tuple[str, float]]:
    """`[(tag, threshold), ...]` from a vocabulary file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise BackendError(f"tag vocabulary {path} does not exist (RefinerConfig.tag_vocabulary)")
    entries: list[tuple[str, float]] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        tag, _, raw = text.partition("\t")
        tag = " ".join(tag.split())
        threshold = default_threshold
        if raw.strip():
            try:
                threshold = float(raw)
            except ValueError:
                raise BackendError(f"{path}:{number}: threshold {raw.strip()!r} of tag {tag!r} is not a number") from None
        if tag in seen:
            continue
        seen.add(tag)
        entries.append((tag, threshold))
    if not entries:
        raise BackendError(f"tag vocabulary {path} has no tags")
    return entries


def rank_tags(scores: torch.Tensor, tags: Sequence[str], thresholds: torch.Tensor, max_tags: int) -> list[tuple[str, float]]:
    """Tags whose score reaches their threshold, best first (ties in vocabulary order), at most `max_tags`."""
    order = torch.sort(scores, descending=True, stable=True).indices
    chosen = [(tags[i], float(scores[i])) for i in order.tolist() if scores[i] >= thresholds[i]]
    return chosen[:max_tags]


class ClipTagger:
    """Zero-shot CLIP tagger.

    Args:
        model_id: hub id or local directory (`openai/clip-vit-large-patch14`).
        vocabulary: path of the vocabulary file.
        default_threshold: threshold for tags without their own (`RefinerConfig.tag_threshold`).
        max_tags: at most this many tags per image.
        prompt: template with `{}` for the tag.
        batch_size: images per forward pass; device: torch device.
    """

    def __init__(
        self,
        model_id: str,
        vocabulary: str | Path | None,
        default_threshold: float = 0.25,
        max_tags: int = 32,
        prompt: str = "a photo of a {}.",
        batch_size: int = 8,
        device: str | torch.device = "cpu",
    ) -> None:
        from transformers import AutoProcessor, CLIPModel

        if vocabulary is None:
            raise BackendError(
                "the CLIP tagger needs a tag vocabulary: set RefinerConfig.tag_vocabulary "
                "(`lyrics refine --vocabulary FILE`), one tag per line, optional <TAB>threshold"
            )
        entries = read_vocabulary(vocabulary, default_threshold)
        try:
            self.processor = AutoProcessor.from_pretrained(model_id)
            self.model = load_pretrained(CLIPModel, model_id).to(device).eval()
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load CLIP from {model_id!r}: {exc}") from exc
        self.device = torch.device(device)
        self.tags = [tag for tag, _ in entries]
        self.thresholds = torch.tensor([t for _, t in entries], dtype=torch.float32)
        self.max_tags = max_tags
        self.batch_size = batch_size
        self.text_embeddings = self._embed_texts([prompt.format(tag) for tag in self.tags])

    @torch.no_grad()
    def _embed_texts(self, prompts: list[str], chunk: int = 256) -> torch.Tensor:
        """`(N_tags, P)` L2-normalised prompt embeddings, computed once per vocabulary."""
        rows = []
        for start in range(0, len(prompts), chunk):
            text = self.processor.tokenizer(prompts[start : start + chunk], padding=True, truncation=True, return_tensors="pt")
            out = self.model.get_text_features(**{k: v.to(self.device) for k, v in text.items()})
            rows.append(torch.nn.functional.normalize(out.pooler_output.float(), dim=-1).cpu())
        return torch.cat(rows)

    @torch.no_grad()
    def similarities(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """`(B, N_tags)` cosine similarity between each image and each tag prompt."""
        pixels = self.processor.image_processor(list(images), return_tensors="pt")["pixel_values"]
        out = self.model.get_image_features(pixel_values=pixels.to(self.device))
        image = torch.nn.functional.normalize(out.pooler_output.float(), dim=-1).cpu()
        return image @ self.text_embeddings.T

    def tag(self, images: Sequence[Image.Image], given: Sequence[Sequence[str] | None] | None = None) -> list[list[tuple[str, float]]]:
        results = []
        for start in range(0, len(images), self.batch_size):
            for scores in self.similarities(images[start : start + self.batch_size]):
                results.append(rank_tags(scores, self.tags, self.thresholds, self.max_tags))
        return results


class GivenTagger:
    """Tags from the annotations: the manifest's per-image "tags", de-duplicated, in given order."""

    def __init__(self, max_tags: int = 32) -> None:
        self.max_tags = max_tags

    def tag(self, images: Sequence[Image.Image], given: Sequence[Sequence[str] | None] | None = None) -> list[list[tuple[str, float]]]:
        if given is None or len(given) != len(images):
            raise ValueError("tagger='given' needs a tag list for every image (a manifest with per-image 'tags')")
        results = []
        for tags in given:
            if tags is None:
                raise ValueError("tagger='given' but this image has no 'tags' in the manifest")
            unique = list(dict.fromkeys(" ".join(str(t).split()) for t in tags if str(t).strip()))
            results.append([(t, 1.0) for t in unique[: self.max_tags]])
        return results


RAM_PLUS_FILE = "ram_plus_swin_large_14m.pth"


def ram_checkpoint(value: str | None) -> Path:
    """The RAM / RAM++ checkpoint file named by `RefinerConfig.tagger_model`, or a `BackendError` that
    says how to give one. RAM++ is not on the hub in a transformers format: a model name such as the
    paper preset's `ram_plus_swin_b` is not loadable, only a downloaded `.pth` file is."""
    if value and Path(str(value)).is_file():
        return Path(str(value))
    what = "is not set" if not value else f"is {value!r}, which is not a file"
    raise BackendError(
        f"tagger='ram' (RAM++) needs the path of a RAM++ checkpoint file, but RefinerConfig.tagger_model {what}. "
        f"Download {RAM_PLUS_FILE} (https://huggingface.co/xinyu1205/recognize-anything-plus-model, see docs/refiner.md) "
        f"and give its path: `lyrics refine --set tagger_model=/path/to/{RAM_PLUS_FILE}` (at inference: "
        f"`--refiner tagger_model=/path/to/{RAM_PLUS_FILE}`); or tag with CLIP instead: `--backend tagger=clip --vocabulary FILE`"
    )


class RamTagger:
    """RAM / RAM++ through the `ram` package (xinyu1205/recognize-anything), when it is importable.

    `checkpoint` is the path of a RAM(++) `.pth` file; its name picks the model (`ram_plus*` ->
    RAM++, else RAM) and the backbone (`swin_b`/`base` -> Swin-B, else Swin-L). The checkpoint is
    loaded by the `ram` package's own code, so only use files from a trusted source.
    """

    def __init__(self, checkpoint: str | None, max_tags: int = 32, image_size: int = 384, device: str | torch.device = "cpu") -> None:
        path = ram_checkpoint(checkpoint)
        try:
            from ram import get_transform
            from ram.models import ram as build_ram
            from ram.models import ram_plus as build_ram_plus
        except ImportError as exc:
            raise BackendError(
                "tagger='ram' needs the RAM++ package (`pip install git+https://github.com/xinyu1205/recognize-anything`), "
                f"which cannot be imported here ({exc}); use `--backend tagger=clip --vocabulary FILE` or tagger=given"
            ) from exc
        name = path.name.lower()
        vit = "swin_b" if ("swin_b" in name or "base" in name) else "swin_l"
        builder = build_ram_plus if "ram_plus" in name else build_ram
        self.model = builder(pretrained=str(path), image_size=image_size, vit=vit).to(device).eval()
        self.transform = get_transform(image_size=image_size)
        self.device = torch.device(device)
        self.max_tags = max_tags

    @torch.no_grad()
    def tag(self, images: Sequence[Image.Image], given: Sequence[Sequence[str] | None] | None = None) -> list[list[tuple[str, float]]]:
        batch = torch.stack([self.transform(image) for image in images]).to(self.device)
        english = self.model.generate_tag(batch)[0]
        results = []
        for line in english:
            tags = [t.strip() for t in str(line).split("|") if t.strip()]
            # RAM applies its per-class thresholds internally and returns no scores.
            results.append([(t, 1.0) for t in tags[: self.max_tags]])
        return results
