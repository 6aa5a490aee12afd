"""Where the holes come from: the paper's training holes and the seeded test-time masks.

Masks are float32 with 1 inside the hole and 0 elsewhere, shaped (H, W, 1). Boxes are int32
`[y, x, height, width]` (top-left corner first).

Training holes (paper, Training): one rectangle per 256x256 crop with each side uniform in
[96, 128]; the local discriminator's 128x128 box centred on it and moved inside the image; a
random 128x128 box for the real image. They are drawn with stateless TensorFlow ops from a
per-example seed, so a seed fixes them whatever the parallelism.

Free-form training holes (not the paper's; the authors' later released free-form model, DeepFill
v2 and LaMa train on such holes): random brush strokes, each a polyline of random vertices,
turns, lengths and width, drawn with stateless TensorFlow ops too, and drawn again (from the
next seed) until they cover a fraction of the crop inside the asked range.

Test-time masks are drawn with NumPy's PCG64 from `(seed, image index)` and drawn with
OpenCV's integer rasterisation, so the same seed gives the same masks on every machine.
"""

import dataclasses
import math
from typing import Callable, Dict, Tuple

import cv2
import numpy as np
import tensorflow as tf

from glcic_tf import models

# Paper: "a random rectangle whose sides are each in [96, 128]" on a 256x256 crop.
HOLE_SIDE_RANGE = (96, 128)
HOLE_SHAPES = ("rectangle", "free_form", "mixed")


@dataclasses.dataclass(frozen=True)
class FreeForm:
    """How free-form holes are drawn: brush strokes, in the manner of DeepFill v2's generator.

    Each of `strokes` strokes starts at a random point with a random heading and runs through
    `vertices` vertices; each segment turns by at most `max_turn_degrees` and is `length` long; the
    brush is `width` wide. Lengths and widths are fractions of the crop's side (the defaults are
    10-40 and 10-30 pixels on the paper's 256x256 crops), so one setting serves every crop size.
    A mask covering a fraction of the crop outside `coverage` is drawn again, up to `tries` times.
    """

    strokes: Tuple[int, int] = (1, 4)
    vertices: Tuple[int, int] = (4, 12)
    max_turn_degrees: float = 72.0
    length: Tuple[float, float] = (0.04, 0.16)
    width: Tuple[float, float] = (0.04, 0.12)
    coverage: Tuple[float, float] = (0.05, 0.35)
    tries: int = 16

    def __post_init__(self):
        for name in ("strokes", "vertices", "length", "width", "coverage"):
            pair = getattr(self, name)
            if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
                raise ValueError(f"free_form_{name} must be two positive numbers min,max with min <= max, not {pair}")
        if self.vertices[0] < 2:
            raise ValueError(f"free_form_vertices must start at 2 or more (a stroke needs two ends), not {self.vertices}")
        if self.coverage[1] > 1 or self.tries < 1:
            raise ValueError(f"free_form_coverage must lie in (0, 1] and tries be positive, not {self.coverage}, {self.tries}")


# --- Training holes (TensorFlow, inside tf.data) -------------------------------------------


def _uniform_int(seed, low, high):
    """One int32 uniform in [low, high] (both inclusive) from a stateless seed."""
    return tf.random.stateless_uniform([], seed, minval=low, maxval=high + 1, dtype=tf.int32)


def sample_hole(seed, image_size: int, hole_range: Tuple[int, int] = HOLE_SIDE_RANGE) -> tf.Tensor:
    """The paper's training hole: a box with sides uniform in `hole_range`, inside the image."""
    low, high = hole_range
    if not 0 < low <= high <= image_size:
        raise ValueError(f"hole sides {hole_range} must satisfy 0 < min <= max <= image size {image_size}")
    seeds = tf.random.experimental.stateless_split(seed, 4)
    height = _uniform_int(seeds[0], low, high)
    width = _uniform_int(seeds[1], low, high)
    y = _uniform_int(seeds[2], 0, image_size - height)
    x = _uniform_int(seeds[3], 0, image_size - width)
    return tf.stack([y, x, height, width])


def _strokes(seed, image_size: int, settings: FreeForm) -> tf.Tensor:
    """One draw of brush strokes as a (size, size) bool mask."""
    most_strokes, most_vertices = settings.strokes[1], settings.vertices[1]
    seeds = tf.random.experimental.stateless_split(seed, 7)
    size = float(image_size)
    strokes = _uniform_int(seeds[0], *settings.strokes)
    vertices = tf.random.stateless_uniform([most_strokes], seeds[1], settings.vertices[0], settings.vertices[1] + 1, tf.int32)
    start = tf.random.stateless_uniform([most_strokes, 1, 2], seeds[2], 0.0, size)
    heading = tf.random.stateless_uniform([most_strokes, 1], seeds[3], 0.0, 2 * math.pi)
    turn = math.radians(settings.max_turn_degrees)
    headings = heading + tf.cumsum(tf.random.stateless_uniform([most_strokes, most_vertices - 1], seeds[4], -turn, turn), axis=1)
    lengths = tf.random.stateless_uniform([most_strokes, most_vertices - 1], seeds[5], settings.length[0] * size, settings.length[1] * size)
    steps = tf.stack([tf.sin(headings) * lengths, tf.cos(headings) * lengths], axis=-1)
    points = tf.clip_by_value(start + tf.cumsum(tf.pad(steps, [[0, 0], [1, 0], [0, 0]]), axis=1), 0.0, size - 1.0)
    radius = tf.random.stateless_uniform([most_strokes], seeds[6], settings.width[0] * size, settings.width[1] * size) / 2
    # Segment k of stroke s is drawn if s < strokes and k < vertices[s] - 1.
    drawn = (tf.range(most_strokes)[:, None] < strokes) & (tf.range(most_vertices - 1)[None, :] < vertices[:, None] - 1)
    start, end = points[:, :-1], points[:, 1:]  # (strokes, segments, 2) as (y, x)
    # Each segment's brush mark lies in a window of `side` pixels from its corner: only those
    # pixels are measured (a tenth of the image at the default sizes), then scattered into it.
    most_radius = settings.width[1] * size / 2
    side = int(math.ceil(settings.length[1] * size + 2 * most_radius)) + 2
    corner = tf.floor(tf.minimum(start, end) - most_radius)  # (strokes, segments, 2)
    window = tf.cast(tf.stack(tf.meshgrid(tf.range(side), tf.range(side), indexing="ij"), -1), tf.float32)
    pixels = corner[:, :, None, None, :] + window  # (strokes, segments, side, side, 2)
    a, direction = start[:, :, None, None, :], (end - start)[:, :, None, None, :]
    length2 = tf.maximum(tf.reduce_sum(direction * direction, -1), 1e-6)
    centres = pixels + 0.5
    along = tf.clip_by_value(tf.reduce_sum((centres - a) * direction, -1) / length2, 0.0, 1.0)
    offset = centres - a - along[..., None] * direction
    inside = tf.reduce_sum(offset * offset, -1) <= tf.square(radius)[:, None, None, None]
    inside &= drawn[:, :, None, None] & tf.reduce_all((pixels >= 0) & (pixels <= size - 1), -1)
    indices = tf.reshape(tf.cast(tf.clip_by_value(pixels, 0, size - 1), tf.int32), [-1, 2])
    hits = tf.scatter_nd(indices, tf.reshape(tf.cast(inside, tf.int32), [-1]), [image_size, image_size])
    return hits > 0


def free_form_mask(seed, image_size: int, settings: FreeForm = FreeForm()) -> tf.Tensor:
    """A (size, size, 1) float32 mask of random brush strokes covering a fraction in `settings.coverage`.

    Strokes are drawn again from the next seed (stateless_fold_in) while the coverage is outside
    the range, at most `settings.tries` times; the last draw is kept if none fits.
    """
    low, high = settings.coverage

    def fits(mask):
        fraction = tf.reduce_mean(tf.cast(mask, tf.float32))
        return (fraction >= low) & (fraction <= high)

    def again(attempt, mask):
        return attempt + 1, _strokes(tf.random.experimental.stateless_fold_in(seed, attempt + 1), image_size, settings)

    _, mask = tf.while_loop(
        lambda attempt, mask: (attempt < settings.tries - 1) & ~fits(mask),
        again,
        (tf.constant(0), _strokes(tf.random.experimental.stateless_fold_in(seed, 0), image_size, settings)),
    )
    return tf.cast(mask, tf.float32)[..., None]


def bounding_box(mask) -> tf.Tensor:
    """The int32 box [y, x, height, width] of a (H, W, 1) mask's hole pixels (all zeros if none)."""
    rows = tf.reduce_any(mask[..., 0] > 0.5, axis=1)
    cols = tf.reduce_any(mask[..., 0] > 0.5, axis=0)

    def extent(line):
        first = tf.argmax(tf.cast(line, tf.int32), output_type=tf.int32)
        last = tf.shape(line)[0] - tf.argmax(tf.cast(tf.reverse(line, [0]), tf.int32), output_type=tf.int32)
        return tf.where(tf.reduce_any(line), tf.stack([first, last - first]), tf.zeros([2], tf.int32))

    (y, height), (x, width) = tf.unstack(extent(rows)), tf.unstack(extent(cols))
    return tf.stack([y, x, height, width])


def local_box_around(hole_box, image_size: int, local_size: int) -> tf.Tensor:
    """The local discriminator's square box centred on the hole, moved (if needed) inside the image.

    `hole_box` is the hole's bounding box (a free-form hole's too). The box always lies inside the
    image and contains the hole box's centre; a hole box no larger than `local_size` stays wholly
    inside it. A larger one (a long free-form stroke) is covered around its centre.
    """
    y, x, height, width = tf.unstack(hole_box)
    top = tf.clip_by_value(y + height // 2 - local_size // 2, 0, image_size - local_size)
    left = tf.clip_by_value(x + width // 2 - local_size // 2, 0, image_size - local_size)
    return tf.stack([top, left, local_size, local_size])


def random_local_box(seed, image_size: int, local_size: int) -> tf.Tensor:
    """A random square box inside the image: the real image's local patch."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    top = _uniform_int(seeds[0], 0, image_size - local_size)
    left = _uniform_int(seeds[1], 0, image_size - local_size)
    return tf.stack([top, left, local_size, local_size])


def box_to_mask(box, height: int, width: int) -> tf.Tensor:
    """A (height, width, 1) float32 mask that is 1 inside `box`."""
    y, x, box_height, box_width = tf.unstack(box)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = (rows >= y) & (rows < y + box_height) & (cols >= x) & (cols < x + box_width)
    return tf.cast(inside, tf.float32)[..., None]


# --- Test-time masks (NumPy + OpenCV, seeded) ----------------------------------------------


def _rectangles(rng: np.random.Generator, height: int, width: int, count, side) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    for _ in range(rng.integers(count[0], count[1], endpoint=True)):
        box_h = min(int(rng.integers(side[0], side[1], endpoint=True)), height)
        box_w = min(int(rng.integers(side[0], side[1], endpoint=True)), width)
        y = int(rng.integers(0, height - box_h, endpoint=True))
        x = int(rng.integers(0, width - box_w, endpoint=True))
        mask[y : y + box_h, x : x + box_w] = 1
    return mask


def paper_hole_mask(rng, height, width, side=None) -> np.ndarray:
    """One rectangle: the paper's training hole, used for evaluation.

    Sides in [96, 128] on the paper's 256x256 pictures; on other pictures the same fraction of
    the shorter side (3/8 to 1/2; 48-64 at 128x128, the demo's scale), unless `side` is given.
    """
    if side is None:
        short = min(height, width)
        side = tuple(max(1, round(s * short / models.GLOBAL_SIZE)) for s in HOLE_SIDE_RANGE)
    return _rectangles(rng, height, width, (1, 1), side)[..., None].astype(np.float32)


def rectangles_mask(rng, height, width, count=(2, 4), side=(32, 128)) -> np.ndarray:
    """Several rectangles that may overlap; the defaults are those of the authors' inpaint.lua."""
    return _rectangles(rng, height, width, count, side)[..., None].astype(np.float32)


def strokes_mask(rng, height, width, coverage=(0.1, 0.3), brush=(0.02, 0.06)) -> np.ndarray:
    """Irregular brush strokes covering a fraction of the image drawn uniformly from `coverage`.

    Strokes are chains of thick line segments; `brush` is the brush width as a fraction of the
    shorter side. A segment that would push the coverage above the range is redrawn, so the
    result always lies inside `coverage`.
    """
    low, high = coverage
    if not 0 < low <= high < 1:
        raise ValueError(f"coverage {coverage} must satisfy 0 < min <= max < 1")
    target = rng.uniform(low, high)
    short_side = min(height, width)
    mask = np.zeros((height, width), np.uint8)
    point = (int(rng.integers(width)), int(rng.integers(height)))
    covered = 0.0
    for _ in range(100_000):
        if covered >= target:
            break
        if rng.random() < 0.1:  # start a new stroke elsewhere
            point = (int(rng.integers(width)), int(rng.integers(height)))
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.05, 0.25) * short_side
        thickness = max(1, int(round(rng.uniform(*brush) * short_side)))
        end = (
            int(np.clip(point[0] + length * np.cos(angle), 0, width - 1)),
            int(np.clip(point[1] + length * np.sin(angle), 0, height - 1)),
        )
        candidate = cv2.line(mask.copy(), point, end, 1, thickness)
        candidate_covered = float(candidate.mean())
        if candidate_covered <= high:
            mask, covered, point = candidate, candidate_covered, end
    return mask[..., None].astype(np.float32)


def centre_square_mask(rng, height, width, fraction=0.5) -> np.ndarray:
    """A centred square whose side is `fraction` of the shorter side (`rng` is unused)."""
    del rng
    side = int(round(min(height, width) * fraction))
    mask = np.zeros((height, width, 1), np.float32)
    top, left = (height - side) // 2, (width - side) // 2
    mask[top : top + side, left : left + side] = 1.0
    return mask


# Test-time mask protocols by name, as chosen by `--mask_protocol`.
MASK_PROTOCOLS: Dict[str, Callable[..., np.ndarray]] = {
    "paper": paper_hole_mask,
    "rectangles": rectangles_mask,
    "strokes": strokes_mask,
    "centre": centre_square_mask,
}


def protocol_mask(protocol: str, seed: int, index: int, height: int, width: int, **options) -> np.ndarray:
    """The mask of image number `index` under a named protocol: a pure function of its arguments."""
    if protocol not in MASK_PROTOCOLS:
        raise ValueError(f"unknown mask protocol {protocol!r}; choose one of {sorted(MASK_PROTOCOLS)}")
    rng = np.random.default_rng([seed, index])
    return MASK_PROTOCOLS[protocol](rng, height, width, **options)
