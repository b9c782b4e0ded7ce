"""Classical vision for the toy world: which shapes a toy scene shows, from its pixels alone.

Toy scenes (`scenes`, vocabulary in `spec`) are flat shapes in six saturated colours on a noisy
light-grey background, later shapes drawn over earlier ones. That domain needs no neural network to
be refined, and a classical analysis makes the whole Lyrics pipeline run on a laptop CPU in seconds;
`refiner_backend` turns it into the refiner's "toy" tagger, detector and segmenter. It is real
analysis of the pixels, never a lookup of the generator's ground truth:

1. Colour segmentation. Each pixel goes to the nearest of the six `spec.COLOURS` or the background
   (`spec.BACKGROUND_RGB`) when it is within `MAX_COLOUR_DISTANCE`; anti-aliased blends stay unknown.
   A 3x3 opening removes the thin slivers where two colours blend into a third (red over yellow looks
   orange), then the components grow back inside their colour (morphological reconstruction).
2. Connected components per colour (`scipy.ndimage.label`, 8-connected) above `MIN_AREA` pixels.
3. Shape classification by template fitting. Each shape of `spec.SHAPES` is a family of templates:
   its polygon at a few small rotations (and "up"/"down" bases for triangles, hexagons and stars),
   each normalised to fill its bounding box, so it does not matter whether a generator inscribes
   polygons in a circle or stretches them to a square. The score of a template is the IoU between it
   and the component, where pixels covered by OTHER shapes (and unknown blend pixels and the area
   outside the image) are ignored: they may hide part of this shape. An unoccluded component is fitted
   in its own bounding box; a component touching other shapes or the border is partially hidden, so
   the template's box may also grow on those sides (coordinate descent over a few extensions per
   side, for the best few variants of each plausible shape). The search runs at half resolution for
   large shapes; the best template names the shape and its full-resolution IoU is the detection score.
   On 300 scenes of `lyrics.toyworld.scenes` (JPEG, rotated shapes, occlusion up to 40%) this names
   99% of objects correctly (98% of the partially hidden ones), at 30-50 ms per image on one core.

Outputs per object (`ToyObject`): the tag "<colour> <shape>", the visible-mask bounding box (pixel
xyxy, exclusive max, like the toy world's ground truth), the visible mask, and a detection-like
descriptor of 24 values: mean RGB (3), the fit score of each of the 6 shapes (6), extent = area / box
area, visible fraction = visible / fitted template area, scale = sqrt(area / image area), then the
decided class as one-hot colour (6) and one-hot shape (6) - what a detector's decoder state carries
about the class it matched (Grounding-DINO's hidden states are read out into phrase scores). The
refiner backend pads it to `detection_feature_size` and adds the mask descriptor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from lyrics.refiner.spatial import Box
from lyrics.toyworld import spec

COLOUR_NAMES: tuple[str, ...] = tuple(spec.COLOURS)
SHAPE_NAMES: tuple[str, ...] = tuple(spec.SHAPES)
MAX_COLOUR_DISTANCE = 70.0
MIN_AREA = 30
DETECTION_DESCRIPTOR_SIZE = 3 + len(SHAPE_NAMES) + 3 + len(COLOUR_NAMES) + len(SHAPE_NAMES)
# Extensions tried per hidden side, as fractions of the visible box size on that axis.
EXTENSIONS = (0.0, 0.1, 0.2, 0.35, 0.5, 0.75)
# Template pixels that fall on hidden area cost this much, so among equally good fits the one that
# hides least wins (an unoccluded shape is not "explained" as a bigger one mostly behind others).
HIDDEN_PENALTY = 0.05
# Fitting windows at least this many pixels on their short side are searched at half resolution.
COARSE_FROM = 36
# Template variants per shape that a partially hidden component tries to extend (see `fit_shapes`).
OCCLUDED_VARIANTS = 3
# ... and only for shapes whose visible-box fit is within this margin of the best shape's.
SEARCH_MARGIN = 0.3

_PALETTE = np.array([spec.COLOURS[c] for c in COLOUR_NAMES] + [spec.BACKGROUND_RGB], dtype=np.float32)
_BACKGROUND = len(COLOUR_NAMES)
_UNKNOWN = -1


# -------------------------------------------------------------------------------------- templates
def _fit_to_square(points: np.ndarray) -> np.ndarray:
    """Scale polygon vertices so their bounding box is exactly [-1, 1] x [-1, 1]."""
    low, high = points.min(0), points.max(0)
    return (points - low) / (high - low) * 2.0 - 1.0


def _ring(radii: Sequence[float], count: int, start_degrees: float) -> np.ndarray:
    """`count` vertices on circles of the given radii (cycled), from `start_degrees`, y pointing down."""
    angles = np.deg2rad(start_degrees + 360.0 / count * np.arange(count))
    radius = np.asarray([radii[i % len(radii)] for i in range(count)])
    return np.stack([radius * np.cos(angles), -radius * np.sin(angles)], -1)


def _rotated(points: np.ndarray, degrees: float) -> np.ndarray:
    theta = np.deg2rad(degrees)
    rotation = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    return points @ rotation.T


def _spread(limit: float, step: float) -> list[float]:
    return [float(v) for v in np.arange(-limit, limit + 1e-9, step)]


# Each shape is a family of polygons: base orientation(s) times small rotations, every variant
# normalised to fill its bounding box. Rotations cover how a generator may tilt shapes without making
# them ambiguous (a square tilted by 45 degrees would be a diamond); triangles, hexagons and stars get
# both "up" and "down" bases, whose rotation ranges together cover the shape's whole symmetry period.
_BASES: dict[str, list[tuple[np.ndarray, list[float]]]] = {
    "square": [(_ring([1.0], 4, 45.0), _spread(12, 4))],
    "diamond": [(np.array([[0.0, -1.0], [w, 0.0], [0.0, 1.0], [-w, 0.0]]), _spread(10, 5)) for w in (0.62, 1.0)],
    "triangle": [(_ring([1.0], 3, 90.0), _spread(15, 5)), (_ring([1.0], 3, -90.0), _spread(15, 5))],
    "hexagon": [(_ring([1.0], 6, 0.0), _spread(15, 5)), (_ring([1.0], 6, 30.0), _spread(15, 5))],
    "star": [(_ring([1.0, 0.45], 10, 90.0), _spread(18, 6)), (_ring([1.0, 0.45], 10, -90.0), _spread(18, 6))],
}
# (shape, polygon in [-1, 1]^2, or None for the ellipse)
TEMPLATES: tuple[tuple[str, np.ndarray | None], ...] = (("circle", None),) + tuple(
    (shape, _fit_to_square(_rotated(base, degrees))) for shape, bases in _BASES.items() for base, angles in bases for degrees in angles
)
assert {name for name, _ in TEMPLATES} == set(SHAPE_NAMES), "a toy-world shape has no template"


def polygon_edges(polygon: np.ndarray) -> tuple[np.ndarray, ...]:
    """Non-horizontal edges as `(ax, ay, by, dx/dy)`, each `(E, 1, 1)`, ready for `rasterize`."""
    a, b = polygon, np.roll(polygon, -1, axis=0)
    sloped = a[:, 1] != b[:, 1]
    a, b = a[sloped], b[sloped]
    return tuple(c[:, None, None] for c in (a[:, 0], a[:, 1], b[:, 1], (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])))


_EDGES = [None if polygon is None else polygon_edges(polygon) for _, polygon in TEMPLATES]


def stack_edges(edge_sets: Sequence[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """Polygons with the same number of edges, their `polygon_edges` stacked into one `(T, E, 1, 1)`
    set for `rasterize_many`."""
    return tuple(np.stack([edges[k] for edges in edge_sets]) for k in range(4))


def _batches_by_edge_count() -> list[tuple[list[int], tuple[np.ndarray, ...]]]:
    """The polygon templates (every one but the circle, index 0) grouped by edge count, each group
    with its stacked edges: one `rasterize_many` call per group in the shape search."""
    groups: dict[int, list[int]] = {}
    for index, edges in enumerate(_EDGES):
        if edges is not None:
            groups.setdefault(len(edges[0]), []).append(index)
    return [(group, stack_edges([_EDGES[index] for index in group])) for _, group in sorted(groups.items())]


_BATCHES = _batches_by_edge_count()


def rasterize(polygon: np.ndarray | tuple | None, box: Sequence[float], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Template filling the continuous box `(x1, y1, x2, y2)`, sampled at pixel centres.

    `polygon`: vertices in [-1, 1]^2, their `polygon_edges`, or None for the ellipse. Pixel (r, c)
    has its centre at (c, r); `rows`, `cols` are the pixel indices of the window. Returns a
    `(len(rows), len(cols))` boolean array (even-odd rule, all edges at once).
    """
    edges = None if polygon is None else polygon if isinstance(polygon, tuple) else polygon_edges(polygon)
    return rasterize_many(None if edges is None else tuple(c[None] for c in edges), np.asarray([box], dtype=np.float64), rows, cols)[0]


def _unit_coordinates(boxes: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in each box's [-1, 1]^2 frame: u `(K, 1, 1, W)`, v `(K, 1, H, 1)`."""
    x1, y1, x2, y2 = (boxes[:, k, None] for k in range(4))
    u = (cols[None, :] - x1) / np.maximum(x2 - x1, 1e-6) * 2.0 - 1.0
    v = (rows[None, :] - y1) / np.maximum(y2 - y1, 1e-6) * 2.0 - 1.0
    return u[:, None, None, :], v[:, None, :, None]


def rasterize_many(edges: tuple[np.ndarray, ...] | None, boxes: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """`rasterize` for T polygons (`stack_edges`, each `(T, E, 1, 1)`; None: the ellipse) in K boxes
    `(K, 4)`, with T and K equal or one of them 1: `(max(T, K), len(rows), len(cols))` booleans.
    One numpy expression instead of one call per template and box: the shape search of `fit_shapes`
    tries ~60 templates and ~20 boxes per object, and the per-call overhead was a large share of
    the toy refiner's time."""
    u, v = _unit_coordinates(boxes, rows, cols)
    if edges is None:
        return (u * u + v * v <= 1.0)[:, 0]
    ax, ay, by, slope = edges
    crosses = (ay > v) != (by > v)
    return np.logical_and(crosses, u < ax + (v - ay) * slope).sum(1) % 2 == 1


# ----------------------------------------------------------------------------------- segmentation
def _nearest_palette(pixels: np.ndarray) -> np.ndarray:
    """`(N, 3)` float RGB -> palette index (0..5 colours, 6 background) or -1 when too far from all."""
    # Squared distances as |p|^2 - 2 p.c + |c|^2: one small matmul instead of an (N, 7, 3) array.
    dist2 = (pixels * pixels).sum(-1, keepdims=True) - 2.0 * pixels @ _PALETTE.T + (_PALETTE * _PALETTE).sum(-1)
    nearest = dist2.argmin(-1)
    close = np.take_along_axis(dist2, nearest[:, None], -1)[:, 0] <= MAX_COLOUR_DISTANCE**2
    return np.where(close, nearest, _UNKNOWN).astype(np.int8)


# Nearest-colour answers for every RGB value quantised to 6 bits per channel (256 KiB, built once):
# classifying a 224x224 image becomes one table lookup. Quantisation moves a pixel by at most
# 2 levels per channel, far below the 70-level colour distance that separates the classes.
_LEVELS = 64
_STEP = 256 // _LEVELS
_centres = (np.arange(_LEVELS, dtype=np.float32) * _STEP + (_STEP - 1) / 2.0)
_grid = np.stack(np.meshgrid(_centres, _centres, _centres, indexing="ij"), -1).reshape(-1, 3)
_LOOKUP = _nearest_palette(_grid).reshape(_LEVELS, _LEVELS, _LEVELS)
del _centres, _grid


def classify_pixels(rgb: np.ndarray) -> np.ndarray:
    """`(H, W, 3)` uint8 -> `(H, W)` int8: colour index 0..5, 6 for background, -1 unknown."""
    q = rgb // _STEP
    return _LOOKUP[q[..., 0], q[..., 1], q[..., 2]]


def colour_components(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """`(colour index, mask)` per connected component of each colour, slivers removed."""
    eight = np.ones((3, 3), dtype=bool)
    found = []
    for colour in range(len(COLOUR_NAMES)):
        raw_all = labels == colour
        if np.count_nonzero(raw_all) < MIN_AREA:
            continue
        pieces, count = ndimage.label(raw_all, structure=eight)
        for index, where in enumerate(ndimage.find_objects(pieces), 1):
            # Work in the piece's box plus a margin, not on the whole image.
            window = tuple(slice(max(0, s.start - 2), s.stop + 2) for s in where)
            raw = pieces[window] == index
            if np.count_nonzero(raw) < MIN_AREA:
                continue
            seeds = ndimage.binary_opening(raw, structure=eight)
            # Grow the opened seeds back inside the raw piece (reconstruction by dilation), so thin
            # parts of real shapes (star tips) return while blend slivers, which have no seed, do not.
            grown = ndimage.binary_propagation(seeds, structure=eight, mask=raw)
            parts, part_count = ndimage.label(grown, structure=eight)
            for part in range(1, part_count + 1):
                local = parts == part
                if np.count_nonzero(local) >= MIN_AREA:
                    mask = np.zeros(labels.shape, dtype=bool)
                    mask[window] = local
                    found.append((colour, mask))
    return found


# -------------------------------------------------------------------------------------------- fit
@dataclass
class ShapeFit:
    shape: str
    score: float
    box: tuple[float, float, float, float]  # continuous xyxy of the fitted (amodal) template
    template_area: int


def _score(template: np.ndarray, visible: np.ndarray, hidden: np.ndarray, visible_count: int | None = None) -> float:
    """IoU of template and visible pixels, ignoring template pixels on hidden ones (each costs a
    small `HIDDEN_PENALTY`). `visible` and `hidden` are disjoint."""
    return float(_scores(template[None], visible, hidden, visible_count)[0])


def _scores(templates: np.ndarray, visible: np.ndarray, hidden: np.ndarray, visible_count: int | None = None) -> np.ndarray:
    """`_score` of each of `(N, H, W)` templates."""
    hit = np.count_nonzero(templates & visible, axis=(1, 2))
    hidden_count = np.count_nonzero(templates & hidden, axis=(1, 2))
    miss = np.count_nonzero(templates, axis=(1, 2)) - hit - hidden_count
    extra = (np.count_nonzero(visible) if visible_count is None else visible_count) - hit
    denominator = hit + miss + extra
    return np.where(denominator > 0, (hit - HIDDEN_PENALTY * hidden_count) / np.maximum(denominator, 1), 0.0)


def fit_shapes(mask: np.ndarray, hidden: np.ndarray) -> list[ShapeFit]:
    """Best fit of every shape to a visible component, hidden pixels ignored (module docstring).

    Args:
        mask: `(H, W)` visible pixels of the component.
        hidden: `(H, W)` pixels that may hide the shape (other shapes, unknown blends).

    Returns:
        One `ShapeFit` per shape of `spec.SHAPES`, in that order.
    """
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    visible_box = (xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5)
    size_x, size_y = visible_box[2] - visible_box[0], visible_box[3] - visible_box[1]
    # Sides along which the shape may continue out of sight: hidden pixels or the image border just
    # beyond the visible box edge, next to the component.
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
    near = np.zeros_like(mask)
    crop = (slice(max(0, y0 - 3), y1 + 4), slice(max(0, x0 - 3), x1 + 4))
    near[crop] = ndimage.binary_dilation(mask[crop], iterations=2) & hidden[crop]
    open_sides = [
        x0 == 0 or near[:, : x0 + 1].any(),
        y0 == 0 or near[: y0 + 1, :].any(),
        x1 == width - 1 or near[:, x1:].any(),
        y1 == height - 1 or near[y1:, :].any(),
    ]
    # Evaluation window: the visible box plus the largest extension on open sides.
    grow = max(EXTENSIONS)
    wx0 = max(0, int(math.floor(x0 - (grow * size_x if open_sides[0] else 1))))
    wy0 = max(0, int(math.floor(y0 - (grow * size_y if open_sides[1] else 1))))
    wx1 = min(width, int(math.ceil(x1 + (grow * size_x if open_sides[2] else 1))) + 1)
    wy1 = min(height, int(math.ceil(y1 + (grow * size_y if open_sides[3] else 1))) + 1)
    rows, cols = np.arange(wy0, wy1, dtype=np.float64), np.arange(wx0, wx1, dtype=np.float64)
    vis, hid = mask[wy0:wy1, wx0:wx1], hidden[wy0:wy1, wx0:wx1]
    # The search runs on every other pixel for larger shapes (4x less work); the chosen fits are then
    # scored at full resolution.
    step = 2 if min(len(rows), len(cols)) >= COARSE_FROM else 1
    c_rows, c_cols, c_vis, c_hid = rows[::step], cols[::step], vis[::step, ::step], hid[::step, ::step]

    def box_for(ext: list[float]) -> tuple[float, float, float, float]:
        return (visible_box[0] - ext[0] * size_x, visible_box[1] - ext[1] * size_y, visible_box[2] + ext[2] * size_x, visible_box[3] + ext[3] * size_y)

    c_count = int(np.count_nonzero(c_vis))

    def coarse(edges: tuple | None, exts: list[list[float]]) -> list[float]:
        boxes = np.asarray([box_for(ext) for ext in exts], dtype=np.float64)
        return _scores(rasterize_many(edges, boxes, c_rows, c_cols), c_vis, c_hid, c_count).tolist()

    # 1. Every template variant in the visible box (the polygons in one batch).
    ranked: dict[str, list[tuple[float, int]]] = {}
    first = {0: coarse(None, [[0.0] * 4])[0]}
    for group, stacked in _BATCHES:
        first.update(zip(group, coarse(stacked, [[0.0] * 4])))
    for index, (shape, _) in enumerate(TEMPLATES):
        ranked.setdefault(shape, []).append((first[index], index))
    # 2. If part of the shape may be hidden, let the box grow on the open sides (coordinate descent).
    # A hidden part distorts the visible box, so the best variant there may not stay the best: the
    # top few variants of each shape are searched, except for shapes far behind the leader.
    keep = OCCLUDED_VARIANTS if any(open_sides) else 1
    leader = max(score for cands in ranked.values() for score, _ in cands)
    best: dict[str, ShapeFit] = {}
    for shape, (score, index) in ((shape, c) for shape, cands in ranked.items() for c in sorted(cands, key=lambda c: (-c[0], c[1]))[:keep]):
        polygon = _EDGES[index]
        ext = [0.0, 0.0, 0.0, 0.0]
        searched = any(open_sides) and score >= leader - SEARCH_MARGIN
        edges = None if polygon is None else tuple(c[None] for c in polygon)
        for _ in range(2 if searched else 0):
            improved = False
            for side in (s for s in range(4) if open_sides[s]):
                # The trials of one side differ only in that side, so they are scored in one batch
                # and then accepted in order, as a one-at-a-time search would.
                trials = [ext[:side] + [value] + ext[side + 1 :] for value in EXTENSIONS if value != ext[side]]
                for trial, trial_score in zip(trials, coarse(edges, trials)):
                    if trial_score > score + 1e-9:
                        ext, score, improved = trial, trial_score, True
            if not improved:
                break
        template = rasterize(polygon, box_for(ext), rows, cols)
        fit = ShapeFit(shape, max(0.0, float(_score(template, vis, hid))), box_for(ext), int(template.sum()))
        if shape not in best or fit.score > best[shape].score:
            best[shape] = fit
    return [best[s] for s in SHAPE_NAMES]


# ------------------------------------------------------------------------------------- descriptors
def detection_descriptor(rgb: np.ndarray, mask: np.ndarray, fits: Sequence[ShapeFit], box: Box, colour: int) -> torch.Tensor:
    """The 24-value detection-like descriptor of the module docstring (`colour`: palette index)."""
    area = float(mask.sum())
    height, width = mask.shape
    mean_rgb = rgb[mask].mean(0) / 255.0 if area else np.zeros(3)
    box_area = max((box[2] - box[0]) * (box[3] - box[1]), 1.0)
    best = max(fits, key=lambda f: f.score)
    values = [
        *mean_rgb.tolist(),
        *[f.score for f in fits],
        area / box_area,
        min(1.0, area / max(best.template_area, 1)),
        math.sqrt(area / (height * width)),
        *[float(k == colour) for k in range(len(COLOUR_NAMES))],
        *[float(f is best) for f in fits],
    ]
    return torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------------------------------- analysis
@dataclass
class ToyObject:
    """One shape found in a toy scene."""

    colour: str
    shape: str
    score: float
    box: Box  # pixel xyxy of the visible mask, max exclusive
    mask: np.ndarray
    descriptor: torch.Tensor

    @property
    def tag(self) -> str:
        return spec.tag(self.colour, self.shape)


def analyse(image: Image.Image) -> list[ToyObject]:
    """All shapes in a toy scene, best score first (ties: top-to-bottom, left-to-right)."""
    rgb = np.asarray(image.convert("RGB"))
    labels = classify_pixels(rgb)
    components = colour_components(labels)
    foreground = labels != _BACKGROUND  # colour pixels and unknown blends
    objects = []
    for colour, mask in components:
        fits = fit_shapes(mask, foreground & ~mask)
        best = max(fits, key=lambda f: f.score)
        ys, xs = np.nonzero(mask)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        objects.append(ToyObject(COLOUR_NAMES[colour], best.shape, best.score, box, mask, detection_descriptor(rgb, mask, fits, box, colour)))
    objects.sort(key=lambda o: (-o.score, o.box[1], o.box[0]))
    return objects


def dominant_colour_mask(labels: np.ndarray, box: Box) -> np.ndarray:
    """Pixels of the most frequent shape colour inside `box` (all False if the box has none)."""
    mask = np.zeros(labels.shape, dtype=bool)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1 = max(0, x1), max(0, y1)
    inside = labels[y1:y2, x1:x2]
    colours = inside[(inside >= 0) & (inside < _BACKGROUND)]
    if colours.size:
        mask[y1:y2, x1:x2] = inside == np.bincount(colours).argmax()
    return mask
