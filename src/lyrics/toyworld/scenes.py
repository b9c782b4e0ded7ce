"""Procedurally drawn toy scenes: 224 x 224 RGB images of 1-8 flat shapes with ground truth.

Why a toy world: no pretrained weights can be downloaded here, yet the whole Lyrics pipeline
(refiner -> MQ-Former -> LLM) must learn for real on a CPU in minutes. Flat shapes in six colours
on a noisy background carry exactly the information the paper's refiner extracts (tag, box, mask)
and that the benchmarks ask about (colour, count, position, existence).

A scene is drawn in `draw_order`: later objects cover earlier ones. Placement is rejection sampled
so that every object keeps at least `MIN_VISIBLE_FRACTION` of its own pixels (it stays answerable)
and objects of the same colour never touch (two touching red shapes would read as one blob, and a
question about "the red circle" would no longer have a visible answer). Ground truth is computed
from the drawn masks, after occlusion: the box of an object is the box of its *visible* pixels.

Everything is numpy + PIL and deterministic: the same `(seed, split, index)` gives the same pixels,
objects and JPEG bytes. Pixel boxes are `(x1, y1, x2, y2)` with exclusive `x2, y2` (so `x2 - x1` is
the width in pixels, as in a COCO `[x, y, w, h]` box); normalised boxes divide by the image size.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from lyrics.toyworld import spec

MIN_VISIBLE_FRACTION = 0.6
# Chance that a new object is placed next to an existing one (instead of anywhere), which is what
# produces occlusion; placement still rejects any position that hides too much of an earlier object.
OCCLUSION_PROBABILITY = 0.35
# Same-colour objects keep their (unoccluded) boxes this many pixels apart.
SAME_COLOUR_GAP = 3
PLACEMENT_TRIES = 60
JPEG_QUALITY = 95

SPLITS = ("train", "val", "test", "zeroshot")
# Stable integer codes so a split's random stream does not depend on the order of a dict.
SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "zeroshot": 3}

PixelBox = tuple[int, int, int, int]
NormBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class SceneObject:
    """One drawn object and its ground truth after occlusion.

    Args:
        colour, shape, size: vocabulary words from `spec` (`size` is "small" or "large").
        centre: drawing centre `(cx, cy)` in pixels (the shape's own centre, not the visible box's).
        radius: half the side of the unoccluded shape's bounding square, pixels.
        rotation: degrees, counter-clockwise.
        draw_order: 0 is drawn first (bottom-most).
        box: pixel `(x1, y1, x2, y2)` of the visible mask, exclusive `x2, y2`.
        area: visible pixels; `full_area`: pixels of the shape before anything covered it.
    """

    colour: str
    shape: str
    size: str
    centre: tuple[float, float]
    radius: float
    rotation: float
    draw_order: int
    box: PixelBox
    area: int
    full_area: int

    @property
    def tag(self) -> str:
        return spec.tag(self.colour, self.shape)

    @property
    def visible_fraction(self) -> float:
        return self.area / self.full_area

    def box_norm(self, width: int = spec.IMAGE_SIZE, height: int = spec.IMAGE_SIZE) -> NormBox:
        x1, y1, x2, y2 = self.box
        return (x1 / width, y1 / height, x2 / width, y2 / height)

    @property
    def box_centre(self) -> tuple[float, float]:
        """Centre of the visible box, pixels: the reference point of every spatial relation."""
        return self._box_centre

    def __post_init__(self) -> None:
        # Stored once: relations and referring expressions read it hundreds of times per scene.
        x1, y1, x2, y2 = self.box
        object.__setattr__(self, "_box_centre", ((x1 + x2) / 2.0, (y1 + y2) / 2.0))

    def to_dict(self, width: int = spec.IMAGE_SIZE, height: int = spec.IMAGE_SIZE) -> dict:
        return {
            "tag": self.tag,
            "colour": self.colour,
            "shape": self.shape,
            "size": self.size,
            "box": list(self.box),
            "box_norm": [round(v, 6) for v in self.box_norm(width, height)],
            "area": self.area,
            "visible_fraction": round(self.visible_fraction, 4),
            "draw_order": self.draw_order,
            "centre": [round(v, 3) for v in self.centre],
            "radius": round(self.radius, 3),
            "rotation": round(self.rotation, 3),
        }


@dataclass
class Scene:
    """A drawn image and its objects.

    Args:
        pixels: `(H, W, 3)` uint8 RGB.
        objects: in draw order.
        owner: `(H, W)` int8, index of the object whose pixel is visible there, -1 for background;
            object k's visible mask is `owner == k`.
    """

    pixels: np.ndarray
    objects: list[SceneObject]
    owner: np.ndarray = field(repr=False)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def mask(self, k: int) -> np.ndarray:
        """Visible mask of object k, `(H, W)` bool."""
        return self.owner == k

    def image(self) -> Image.Image:
        return Image.fromarray(self.pixels, "RGB")

    def jpeg_bytes(self) -> bytes:
        """JPEG at quality 95 without chroma subsampling (4:4:4), so colours stay flat up to the edges.

        JPEG because every official layout the toy world writes names `.jpg` files; the encoder is
        deterministic, so the same scene always gives the same bytes.
        """
        buffer = io.BytesIO()
        self.image().save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        return buffer.getvalue()


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one image; independent of every other image and of the split sizes."""
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])


def allowed_pairs(zero_shot: bool = False) -> list[tuple[str, str]]:
    """Colour-shape pairs a scene may contain: training scenes never contain a zero-shot pair."""
    pairs = [(c, s) for c in spec.COLOURS for s in spec.SHAPES]
    if zero_shot:
        return pairs
    held_out = set(spec.ZERO_SHOT_PAIRS)
    return [p for p in pairs if p not in held_out]


def shape_vertices(shape: str, cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    """Polygon of a shape inscribed in the circle of radius `r` (empty for the circle)."""

    def ring(count: int, radii: list[float], offset: float) -> list[tuple[float, float]]:
        points = []
        for i in range(count):
            angle = math.radians(offset + rotation + 360.0 * i / count)
            rad = radii[i % len(radii)]
            points.append((cx + rad * math.cos(angle), cy - rad * math.sin(angle)))  # image y grows down
        return points

    if shape == "circle":
        return []
    if shape == "square":
        return ring(4, [r], 45.0)
    if shape == "triangle":
        return ring(3, [r], 90.0)
    if shape == "star":
        return ring(10, [r, 0.45 * r], 90.0)
    if shape == "hexagon":
        return ring(6, [r], 0.0)
    if shape == "diamond":
        # A rhombus narrower than tall, so it never looks like a rotated square.
        theta = math.radians(rotation)
        base = [(0.0, -r), (0.62 * r, 0.0), (0.0, r), (-0.62 * r, 0.0)]
        return [(cx + x * math.cos(theta) + y * math.sin(theta), cy - x * math.sin(theta) + y * math.cos(theta)) for x, y in base]
    raise ValueError(f"unknown shape {shape!r}; known shapes: {spec.SHAPES}")


def shape_window(cx: float, cy: float, r: float, size: int = spec.IMAGE_SIZE) -> tuple[int, int, int, int]:
    """Pixel window `(x0, y0, x1, y1)` (exclusive ends, clipped to the image) that holds the shape."""
    return (max(0, int(math.floor(cx - r)) - 1), max(0, int(math.floor(cy - r)) - 1),
            min(size, int(math.ceil(cx + r)) + 2), min(size, int(math.ceil(cy + r)) + 2))


def draw_local_mask(shape: str, cx: float, cy: float, r: float, rotation: float, window: tuple[int, int, int, int]) -> np.ndarray:
    """Bool mask of one unoccluded shape inside `window` (`(y1 - y0, x1 - x0)`); drawing only the
    window keeps placement cheap (a shape covers a few percent of the image)."""
    x0, y0, x1, y1 = window
    canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(canvas)
    lx, ly = cx - x0, cy - y0
    if shape == "circle":
        draw.ellipse((lx - r, ly - r, lx + r, ly + r), fill=255)
    else:
        draw.polygon(shape_vertices(shape, lx, ly, r, rotation), fill=255)
    return np.asarray(canvas) > 127


def draw_mask(shape: str, cx: float, cy: float, r: float, rotation: float, size: int = spec.IMAGE_SIZE) -> np.ndarray:
    """`(size, size)` bool mask of one unoccluded shape."""
    window = shape_window(cx, cy, r, size)
    mask = np.zeros((size, size), dtype=bool)
    x0, y0, x1, y1 = window
    mask[y0:y1, x0:x1] = draw_local_mask(shape, cx, cy, r, rotation, window)
    return mask


# Rotations are kept small so shapes stay recognisable (a square at 45 degrees is a diamond).
_ROTATION_RANGE = {"circle": 0.0, "square": 12.0, "triangle": 15.0, "star": 18.0, "hexagon": 15.0, "diamond": 10.0}


def _sample_attributes(rng: np.random.Generator, pairs: list[tuple[str, str]]) -> tuple[str, str, str]:
    colour, shape = pairs[int(rng.integers(len(pairs)))]
    size = ("small", "large")[int(rng.integers(2))]
    return colour, shape, size


def generate_scene(
    rng: np.random.Generator,
    num_objects: int | None = None,
    pairs: list[tuple[str, str]] | None = None,
    required_pair: tuple[str, str] | None = None,
    image_size: int = spec.IMAGE_SIZE,
) -> Scene:
    """Draw one scene.

    Args:
        rng: the image's random stream (see `scene_rng`).
        num_objects: how many objects to try to place (default: uniform in spec.MIN/MAX_OBJECTS). An
            object that finds no valid position after `PLACEMENT_TRIES` is dropped, so the scene may
            hold fewer; the ground truth always describes what was drawn.
        pairs: colour-shape pairs to sample from (default: every non-zero-shot pair).
        required_pair: a pair the scene must contain; it is drawn first and always placed.
    """
    size = image_size
    pairs = pairs if pairs is not None else allowed_pairs()
    if num_objects is None:
        num_objects = int(rng.integers(spec.MIN_OBJECTS, spec.MAX_OBJECTS + 1))
    owner = np.full((size, size), -1, dtype=np.int8)
    placed: list[dict] = []  # colour, shape, size, centre, radius, rotation, full_area, area, outer box

    for n in range(num_objects):
        k = len(placed)  # dropped objects leave no gap in the indices
        if n == 0 and required_pair is not None:
            colour, shape = required_pair
            size_word = ("small", "large")[int(rng.integers(2))]
        else:
            colour, shape, size_word = _sample_attributes(rng, pairs)
        for attempt in range(PLACEMENT_TRIES):
            if attempt == PLACEMENT_TRIES // 2:
                size_word = "small"  # a crowded scene may only have room for a small one
            lo, hi = spec.SIZES[size_word]
            r = float(rng.uniform(lo, hi))
            spread = _ROTATION_RANGE[shape]
            rotation = float(rng.uniform(-spread, spread)) if spread else 0.0
            if placed and rng.random() < OCCLUSION_PROBABILITY:
                other = placed[int(rng.integers(len(placed)))]
                angle = rng.uniform(0, 2 * math.pi)
                dist = (r + other["radius"]) * rng.uniform(0.55, 1.05)
                cx = other["centre"][0] + dist * math.cos(angle)
                cy = other["centre"][1] + dist * math.sin(angle)
            else:
                cx, cy = rng.uniform(r + 2, size - r - 2, size=2)
            if not (r + 1 <= cx <= size - r - 1 and r + 1 <= cy <= size - r - 1):
                continue
            gap = r + SAME_COLOUR_GAP
            outer = (cx - gap, cy - gap, cx + gap, cy + gap)
            if any(p["colour"] == colour and _boxes_overlap(outer, p["outer"]) for p in placed):
                continue
            window = shape_window(cx, cy, r, size)
            x0, y0, x1, y1 = window
            mask = draw_local_mask(shape, cx, cy, r, rotation, window)
            full_area = int(mask.sum())
            if full_area == 0:
                continue
            region = owner[y0:y1, x0:x1]  # a view: writing to it writes `owner`
            covered = region[mask]
            lost = np.bincount(covered[covered >= 0], minlength=k)
            if any(p["area"] - int(lost[j]) < MIN_VISIBLE_FRACTION * p["full_area"] for j, p in enumerate(placed)):
                continue
            for j, p in enumerate(placed):
                p["area"] -= int(lost[j])
            region[mask] = k
            placed.append(
                dict(colour=colour, shape=shape, size=size_word, centre=(float(cx), float(cy)), radius=r,
                     rotation=rotation, full_area=full_area, area=full_area, outer=outer, window=window)
            )
            break
        else:
            if n == 0 and required_pair is not None:  # cannot happen on an empty canvas; be loud if it does
                raise RuntimeError(f"could not place the required pair {required_pair}")
    return _render(rng, owner, placed, size)


def _boxes_overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# A fixed noise texture, cut at a random offset per image. Drawing fresh Gaussian noise for every
# image cost 10x more than the rest of the rendering; a shifted crop of a large texture looks the same
# to every consumer (the refiner, CLIP) and keeps generation at hundreds of images per second.
_NOISE_MARGIN = 128
_NOISE_TEXTURE: np.ndarray | None = None


def _noise_texture(size: int) -> np.ndarray:
    global _NOISE_TEXTURE
    side = size + _NOISE_MARGIN
    if _NOISE_TEXTURE is None or _NOISE_TEXTURE.shape[0] < side:
        texture = np.random.default_rng(20240229).standard_normal((side, side, 3)) * spec.BACKGROUND_NOISE_STD
        _NOISE_TEXTURE = np.round(texture).astype(np.int16)
    return _NOISE_TEXTURE


def _render(rng: np.random.Generator, owner: np.ndarray, placed: list[dict], size: int) -> Scene:
    """Paint the background noise and the objects' visible pixels, and measure the ground truth."""
    palette = np.array([spec.BACKGROUND_RGB] + [spec.COLOURS[p["colour"]] for p in placed], dtype=np.int16)
    ox, oy = (int(v) for v in rng.integers(0, _NOISE_MARGIN + 1, size=2))
    noise = _noise_texture(size)[oy : oy + size, ox : ox + size]
    # owner -1 -> palette row 0 (background); object k -> row k + 1. Noise covers objects too (sensor
    # noise), so no colour is perfectly flat, but it is far smaller than the distance between colours.
    base = np.take(palette, owner.astype(np.intp) + 1, axis=0)
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    objects = []
    for k, p in enumerate(placed):
        x0, y0, x1, y1 = p["window"]
        mask = owner[y0:y1, x0:x1] == k  # an object's pixels never leave its drawing window
        xs, ys = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
        box = (x0 + int(xs[0]), y0 + int(ys[0]), x0 + int(xs[-1]) + 1, y0 + int(ys[-1]) + 1)
        objects.append(
            SceneObject(
                colour=p["colour"], shape=p["shape"], size=p["size"], centre=p["centre"], radius=p["radius"],
                rotation=p["rotation"], draw_order=k, box=box, area=int(mask.sum()), full_area=p["full_area"],
            )
        )
    return Scene(pixels=pixels, objects=objects, owner=owner)


def split_scene(seed: int, split: str, index: int) -> Scene:
    """The scene at `index` of `split` in the world of `seed` (what `generate_world` draws)."""
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; splits are {SPLITS}")
    rng = scene_rng(seed, split, index)
    if split == "zeroshot":
        required = spec.ZERO_SHOT_PAIRS[int(rng.integers(len(spec.ZERO_SHOT_PAIRS)))]
        return generate_scene(rng, pairs=allowed_pairs(zero_shot=True), required_pair=required)
    return generate_scene(rng, pairs=allowed_pairs())
