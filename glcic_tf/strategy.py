"""How much of a photograph the completion network runs on: all of it, crops around the holes, or
a downscaled copy (what IOPaint calls its "HD strategy").

The network is fully convolutional and one output pixel sees only `models.receptive_radius()`
(153) input pixels to each side. So a crop of a hole's neighbourhood grown by that margin, with
its corners on multiples of the network's stride (4), completes the hole exactly as the whole
image would: a 128x128 hole in a 12-megapixel photograph costs the network 436x436 pixels
instead of 12 million. Crops that overlap are merged. A crop larger than `max_network_pixels`
(a hole too large for cropping to pay) is completed on a downscaled copy, and the completion is
scaled back up into the hole.

Strategies: `auto` (crops, downscaled where too large: the default), `crop` (crops at full
resolution only), `resize` (the whole image, downscaled to fit) and `whole` (the whole image at
full resolution). `crop` and `whole` refuse work over the limit instead of exhausting memory.
"""

import math
from typing import Callable, List, NamedTuple

import cv2
import numpy as np

from glcic_tf import models
from glcic_tf.errors import UserError

STRATEGIES = ("auto", "whole", "crop", "resize")
MARGIN = models.receptive_radius()

# Most pixels the network runs on at once: 4 megapixels (2048 x 2048). The paper-width network
# needs about 670 bytes per pixel it runs on (measured peak, BUILD.md): 2.7 GB here.
MAX_NETWORK_PIXELS = 2048 * 2048

# (image (h, w, 3), mask (h, w, 1) float32, 1 = hole) -> completed (h, w, 3) of the image's dtype
# (uint8, or float32 in [0, 1]).
ArrayCompleter = Callable[[np.ndarray, np.ndarray], np.ndarray]


class Region(NamedTuple):
    """Rows [top, bottom) and columns [left, right) of the image, completed at `scale` (1 = native)."""

    top: int
    left: int
    bottom: int
    right: int
    scale: float = 1.0

    @property
    def pixels(self) -> int:
        return (self.bottom - self.top) * (self.right - self.left)


def hole_regions(mask: np.ndarray, margin: int = MARGIN, multiple: int = models.SIZE_MULTIPLE) -> List[Region]:
    """The holes' bounding boxes grown by `margin`, corners on multiples of `multiple` (or the
    image's edge), and merged wherever they overlap or touch. (H, W, 1) mask, 1 = hole."""
    height, width = mask.shape[:2]
    holes = (mask.reshape(height, width) > 0.5).astype(np.uint8)
    # Boxes are drawn on a grid of multiple x multiple cells, where connected boxes are merged
    # into their bounding box until no two touch: exact, as every grown box lies on that grid.
    rows, cols = -(-height // multiple), -(-width // multiple)
    cells = np.zeros((rows, cols), np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(holes, connectivity=8)
    for x, y, w, h, _ in stats[1:]:
        top, left = max(0, (y - margin) // multiple), max(0, (x - margin) // multiple)
        bottom, right = -(-(y + h + margin) // multiple), -(-(x + w + margin) // multiple)
        cells[top:bottom, left:right] = 1
    while True:
        count, _, stats, _ = cv2.connectedComponentsWithStats(cells, connectivity=4)
        merged = np.zeros_like(cells)
        for x, y, w, h, _ in stats[1:]:
            merged[y : y + h, x : x + w] = 1
        if np.array_equal(merged, cells):
            break
        cells = merged
    return sorted(
        Region(y * multiple, x * multiple, min(height, (y + h) * multiple), min(width, (x + w) * multiple))
        for x, y, w, h, _ in stats[1:count]
    )


def plan(mask: np.ndarray, strategy: str = "auto", margin: int = MARGIN, max_network_pixels: int = MAX_NETWORK_PIXELS) -> List[Region]:
    """The regions `complete` runs the network on, each with the scale that keeps it within the limit."""
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    if max_network_pixels < 1:
        raise UserError(f"--max_network_pixels must be a positive number of pixels, not {max_network_pixels}")
    height, width = mask.shape[:2]
    whole_image = strategy in ("whole", "resize")
    regions = [Region(0, 0, height, width)] if whole_image else hole_regions(mask, margin)
    planned = []
    for region in regions:
        if region.pixels > max_network_pixels:
            if strategy in ("whole", "crop"):
                raise UserError(
                    f"--strategy={strategy} would run the network on {region.right - region.left}x{region.bottom - region.top} "
                    f"pixels, over the limit of {max_network_pixels} (--max_network_pixels): use --strategy=auto or resize"
                )
            region = region._replace(scale=math.sqrt(max_network_pixels / region.pixels))
        planned.append(region)
    return planned


def complete(
    completer: ArrayCompleter,
    image: np.ndarray,
    mask: np.ndarray,
    strategy: str = "auto",
    margin: int = MARGIN,
    max_network_pixels: int = MAX_NETWORK_PIXELS,
) -> np.ndarray:
    """`image` (H, W, 3) with the holes of `mask` (H, W, 1) completed region by region.

    Pixels outside the holes are the input's own. Only the regions are converted or copied
    beyond the one copy of the image that is returned.
    """
    result = image.copy()
    holes = mask > 0.5
    for region in plan(mask, strategy, margin, max_network_pixels):
        rows, cols = slice(region.top, region.bottom), slice(region.left, region.right)
        crop, crop_mask = image[rows, cols], mask[rows, cols]
        if region.scale < 1.0:
            completed = _complete_downscaled(completer, crop, crop_mask, region.scale)
        else:
            completed = completer(crop, crop_mask)
        result[rows, cols] = np.where(holes[rows, cols], completed, result[rows, cols])
    return result


def _complete_downscaled(completer: ArrayCompleter, image: np.ndarray, mask: np.ndarray, scale: float) -> np.ndarray:
    """The completion of a copy scaled by `scale` (< 1), scaled back up to the input's size."""
    height, width = image.shape[:2]
    size = (max(1, int(width * scale)), max(1, int(height * scale)))  # (w, h), within the limit
    small_image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    # A small pixel is hole if any part of it is: the hole grows a little rather than shrinking.
    small_mask = (cv2.resize(mask.reshape(height, width), size, interpolation=cv2.INTER_AREA) > 0).astype(np.float32)
    small = completer(small_image, small_mask[..., None])
    return cv2.resize(np.asarray(small, image.dtype), (width, height), interpolation=cv2.INTER_LINEAR)
