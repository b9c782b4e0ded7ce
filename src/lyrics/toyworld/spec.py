"""The vocabulary of the toy world, shared by the scene generator and the toy refiner backend.

Scenes are 224 x 224 images of 1-8 flat shapes on a noisy light background. An object's tag is
"<colour> <shape>" (e.g. "red circle"); its size word ("small"/"large") appears in captions and
questions. The zero-shot split uses colour-shape pairs that never occur in training scenes.
"""

from __future__ import annotations

IMAGE_SIZE = 224
MIN_OBJECTS, MAX_OBJECTS = 1, 8

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "diamond")

# Saturated colours, far apart in hue and far from the light-grey background, so a colour classifier
# on pixels (the toy refiner) can separate them even with noise and anti-aliased edges.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (230, 200, 30),
    "purple": (135, 55, 185),
    "orange": (240, 130, 25),
}

# Object "radius" in pixels (half the bounding-box side) per size word.
SIZES: dict[str, tuple[int, int]] = {"small": (12, 20), "large": (28, 42)}

# Background: light grey with per-pixel noise.
BACKGROUND_RGB = (225, 225, 220)
BACKGROUND_NOISE_STD = 8.0

# Colour-shape pairs held out of every training scene: the zero-shot split is made of them.
ZERO_SHOT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "star"),
    ("green", "hexagon"),
    ("blue", "triangle"),
    ("yellow", "diamond"),
    ("purple", "circle"),
    ("orange", "square"),
)


def tag(colour: str, shape: str) -> str:
    return f"{colour} {shape}"


def all_tags() -> list[str]:
    return [tag(c, s) for c in COLOURS for s in SHAPES]
