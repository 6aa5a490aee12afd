"""The tiling of a photograph: what the completion network runs on, all of it, crops around the
holes (tiled where large), or a downscaled copy (what IOPaint calls its "HD strategy").

The network is fully convolutional and one output pixel sees only `architecture.receptive_radius()`
(153) input pixels to each side. So a crop of a hole's neighbourhood grown by that margin, with
its corners on multiples of the network's stride (4), completes the hole exactly as the whole
image would: a 128x128 hole in a 12-megapixel photograph costs the network 436x436 pixels
instead of 12 million. Crops that overlap are merged. A crop larger than `max_network_pixels`
is split into tiles: square cores on the stride's grid, each run with the margin around it and
filling only its own core's holes, so the result is still the whole image's; only cores that
hold hole pixels run. A long thin hole (a power line across a photo) costs its neighbourhood,
not its bounding box. Where tiling would cost more than the crop itself (a hole too large for
cropping to pay), the crop is completed on a downscaled copy instead, and the completion is
scaled back up into the hole.

Tilings (`--tiling`): `auto` (crops, tiled or downscaled where too large: the default), `crop` (crops at
full resolution only, tiled where too large), `resize` (the whole image, downscaled to fit) and
`whole` (the whole image at full resolution). `crop` and `whole` refuse work over the limit
(`crop`: when not even one tile and its margin fit) instead of exhausting memory.
"""

import math
from typing import Callable, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np

from glcic_tf import architecture
from glcic_tf.errors import UserError

TILINGS = ("auto", "whole", "crop", "resize")
MARGIN = architecture.receptive_radius()

# Most pixels the network runs on at once: 4 megapixels (2048 x 2048). The paper-width network
# needs about 670 bytes per pixel it runs on (measured peak, docs/performance.md): 2.8 GB here.
MAX_NETWORK_PIXELS = 2048 * 2048

# (image (h, w, 3), mask (h, w, 1) float32, 1 = hole) -> completed (h, w, 3) of the image's dtype
# (uint8, or float32 in [0, 1]).
ArrayCompleter = Callable[[np.ndarray, np.ndarray], np.ndarray]


class Region(NamedTuple):
    """Rows [top, bottom) and columns [left, right) of the image, completed at `scale` (1 = native).
    `fills`: the (top, left, bottom, right) part of it whose holes it fills (a tile's core, whose
    completion its margin makes exact); None: all of it."""

    top: int
    left: int
    bottom: int
    right: int
    scale: float = 1.0
    fills: Optional[Tuple[int, int, int, int]] = None

    @property
    def pixels(self) -> int:
        return (self.bottom - self.top) * (self.right - self.left)


def hole_regions(mask: np.ndarray, margin: int = MARGIN, multiple: int = architecture.SIZE_MULTIPLE) -> List[Region]:
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


def tiles(mask: np.ndarray, region: Region, margin: int = MARGIN, max_network_pixels: int = MAX_NETWORK_PIXELS, multiple: int = architecture.SIZE_MULTIPLE) -> Optional[List[Region]]:
    """`region` split into tiles that each fit `max_network_pixels`: square cores on the
    `multiple` grid, each grown by `margin` (rounded up to the grid, clipped to the image) and
    filling its core's holes only; only cores holding hole pixels. Of a few core sizes, the one
    whose tiles run the fewest pixels in all. None when not even a core of `multiple` pixels
    and its margin fit."""
    height, width = mask.shape[:2]
    grown = -(-margin // multiple) * multiple
    largest = (math.isqrt(max_network_pixels) - 2 * grown) // multiple * multiple
    if largest < multiple:
        return None
    # Which multiple x multiple cells of the region hold hole pixels, summed (a summed-area table
    # at 1/16 of the pixels, int32: small even for a 100-megapixel region).
    holes = mask.reshape(height, width)[region.top : region.bottom, region.left : region.right] > 0.5
    rows, cols = -(-holes.shape[0] // multiple), -(-holes.shape[1] // multiple)
    holes = np.pad(holes, ((0, rows * multiple - holes.shape[0]), (0, cols * multiple - holes.shape[1])))
    cells = holes.reshape(rows, multiple, cols, multiple).any(axis=(1, 3))
    counts = np.pad(cells.cumsum(0, dtype=np.int32).cumsum(1, dtype=np.int32), ((1, 0), (1, 0)))  # cells in [0, y) x [0, x)

    def tiles_of(side):
        found = []
        for top in range(region.top, region.bottom, side):
            for left in range(region.left, region.right, side):
                bottom, right = min(top + side, region.bottom), min(left + side, region.right)
                y0, x0 = (top - region.top) // multiple, (left - region.left) // multiple
                y1, x1 = -(-(bottom - region.top) // multiple), -(-(right - region.left) // multiple)
                if counts[y1, x1] - counts[y0, x1] - counts[y1, x0] + counts[y0, x0] == 0:
                    continue
                found.append(
                    Region(max(0, top - grown), max(0, left - grown), min(height, bottom + grown), min(width, right + grown), fills=(top, left, bottom, right))
                )
        return found

    sides = {largest} | {side for side in (64, 128, 256, 384, 512, 768, 1024, 1536) if side < largest and side % multiple == 0}
    return min((tiles_of(side) for side in sorted(sides)), key=lambda found: sum(tile.pixels for tile in found))


def plan(mask: np.ndarray, tiling: str = "auto", margin: int = MARGIN, max_network_pixels: int = MAX_NETWORK_PIXELS) -> List[Region]:
    """The regions `complete` runs the network on, each with the scale that keeps it within the limit."""
    if tiling not in TILINGS:
        raise UserError(f"unknown tiling {tiling!r}; choose one of {TILINGS}")
    if max_network_pixels < 1:
        raise UserError(f"--max_network_pixels must be a positive number of pixels, not {max_network_pixels}")
    height, width = mask.shape[:2]
    whole_image = tiling in ("whole", "resize")
    regions = [Region(0, 0, height, width)] if whole_image else hole_regions(mask, margin)
    planned = []
    for region in regions:
        if region.pixels > max_network_pixels:
            tiled = tiles(mask, region, margin, max_network_pixels) if tiling in ("auto", "crop") else None
            # crop: at full resolution whatever it costs; auto: where the tiles run fewer pixels than the crop
            if tiled is not None and (tiling == "crop" or sum(tile.pixels for tile in tiled) <= region.pixels):
                planned.extend(tiled)
                continue
            if tiling in ("whole", "crop"):
                raise UserError(
                    f"--tiling={tiling} would run the network on {region.right - region.left}x{region.bottom - region.top} "
                    f"pixels, over the limit of {max_network_pixels} (--max_network_pixels): use --tiling=auto or resize"
                )
            region = region._replace(scale=math.sqrt(max_network_pixels / region.pixels))
        planned.append(region)
    return planned


def complete(
    completer: ArrayCompleter,
    image: np.ndarray,
    mask: np.ndarray,
    tiling: str = "auto",
    margin: int = MARGIN,
    max_network_pixels: int = MAX_NETWORK_PIXELS,
) -> np.ndarray:
    """`image` (H, W, 3) with the holes of `mask` (H, W, 1) completed region by region.

    Pixels outside the holes are the input's own. Only the regions are converted or copied
    beyond the one copy of the image that is returned.
    """
    result = image.copy()
    holes = mask > 0.5
    for region in plan(mask, tiling, margin, max_network_pixels):
        rows, cols = slice(region.top, region.bottom), slice(region.left, region.right)
        crop, crop_mask = image[rows, cols], mask[rows, cols]
        if region.scale < 1.0:
            completed = _complete_downscaled(completer, crop, crop_mask, region.scale)
        else:
            completed = completer(crop, crop_mask)
        top, left, bottom, right = region.fills or region[:4]
        filled = completed[top - region.top : bottom - region.top, left - region.left : right - region.left]
        rows, cols = slice(top, bottom), slice(left, right)
        result[rows, cols] = np.where(holes[rows, cols], filled, result[rows, cols])
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
