"""Toy scenes drawn with PIL for the refiner tests, independent of the toy-world generator.

Shapes use plain PIL primitives (ellipse, rectangle, `regular_polygon` inscribed in a circle, a
hand-made star), so the toy backend is checked against drawings it did not produce itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from lyrics.toyworld import spec


@dataclass
class Drawn:
    colour: str
    shape: str
    centre: tuple[int, int]
    radius: int

    @property
    def tag(self) -> str:
        return spec.tag(self.colour, self.shape)


def draw_shape(draw: ImageDraw.ImageDraw, obj: Drawn, fill) -> None:
    cx, cy = obj.centre
    r = obj.radius
    if obj.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif obj.shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif obj.shape == "triangle":
        draw.regular_polygon((cx, cy, r), 3, rotation=0, fill=fill)
    elif obj.shape == "hexagon":
        draw.regular_polygon((cx, cy, r), 6, rotation=0, fill=fill)
    elif obj.shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = math.radians(-90 + 36 * k)
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=fill)
    else:
        raise ValueError(obj.shape)


def scene(objects: list[Drawn], seed: int = 0, size: int = spec.IMAGE_SIZE) -> tuple[Image.Image, list[np.ndarray]]:
    """Draw `objects` in order (later ones on top) on a noisy background.

    Returns the image and each object's visible mask (what later objects leave of it).
    """
    rng = np.random.default_rng(seed)
    background = np.asarray(spec.BACKGROUND_RGB, dtype=np.float32)
    noise = rng.normal(0.0, spec.BACKGROUND_NOISE_STD, (size, size, 3))
    image = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8))
    ids = Image.new("L", (size, size), 0)
    draw, id_draw = ImageDraw.Draw(image), ImageDraw.Draw(ids)
    for index, obj in enumerate(objects, 1):
        draw_shape(draw, obj, spec.COLOURS[obj.colour])
        draw_shape(id_draw, obj, index)
    id_array = np.asarray(ids)
    return image, [id_array == i for i in range(1, len(objects) + 1)]


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def random_scene(seed: int, count: int = 4) -> tuple[Image.Image, list[Drawn], list[np.ndarray]]:
    """A scene of `count` non-overlapping random shapes (each colour-shape pair distinct)."""
    rng = np.random.default_rng(seed)
    objects: list[Drawn] = []
    pairs = [(c, s) for c in spec.COLOURS for s in spec.SHAPES]
    while len(objects) < count:
        colour, shape = pairs[rng.integers(len(pairs))]
        radius = int(rng.integers(*spec.SIZES["small" if rng.random() < 0.5 else "large"]))
        centre = (int(rng.integers(radius + 2, spec.IMAGE_SIZE - radius - 2)), int(rng.integers(radius + 2, spec.IMAGE_SIZE - radius - 2)))
        fresh = all(
            math.dist(centre, o.centre) > radius + o.radius + 4 and (colour, shape) != (o.colour, o.shape) for o in objects
        )
        if fresh:
            objects.append(Drawn(colour, shape, centre, radius))
    image, masks = scene(objects, seed=seed)
    return image, objects, masks
