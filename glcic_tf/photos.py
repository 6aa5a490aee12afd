"""Completing one photograph through any completer: its holes' regions, the paper's
post-processing, masks from boxes. numpy and OpenCV only, so that a LiteRT model completes
photographs where TensorFlow is not installed.

`inpaint` completes one photograph through any completer (glcic_tf.completers), on the regions
`glcic_tf.tiling` plans. `postprocess` is the paper's: OpenCV fast marching (Telea) then Poisson
blending (seamlessClone) of the completed region, as the authors' inpaint.lua. Image files are
`glcic_tf.images`' job; the network in TensorFlow is `glcic_tf.inference`'s.
"""

import re
import sys
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from glcic_tf import images, tiling as tilings
from glcic_tf.errors import ModelRefused, UserError

BLEND_GROWTH = np.ones((3, 3), np.uint8)  # one pixel each way


def postprocess(image: np.ndarray, completed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The paper's post-processing of one image (H, W, 3) uint8: fast marching, then Poisson blending.

    As the authors' inpaint.lua: `cv2.inpaint(completed, mask, 1, INPAINT_TELEA)` gives the
    boundary, then `cv2.seamlessClone` blends the network's completion into it over the holes.
    seamlessClone misbehaves when the mask touches the image border, so both images are padded
    (mirrored) first and cropped after; and it solves on the inside of the mask's bounding box,
    so a hole less than 3 pixels high or wide (a tap of a small brush, a thin line) is blended
    over the hole grown by one pixel (BLEND_GROWTH). Pixels outside the holes are returned
    unchanged, whatever the hole's shape.
    """
    hole = (mask.reshape(mask.shape[:2]) > 0.5).astype(np.uint8) * 255
    if not hole.any():
        return image.copy()
    telea = cv2.inpaint(completed, hole, 1, cv2.INPAINT_TELEA)
    pad = 16
    padded = [cv2.copyMakeBorder(a, pad, pad, pad, pad, cv2.BORDER_REFLECT) for a in (completed, telea)]
    padded_hole = cv2.copyMakeBorder(hole, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(padded_hole)
    if min(w, h) < 3:  # seamlessClone's solver has nothing inside a box thinner than 3 pixels
        padded_hole = cv2.dilate(padded_hole, BLEND_GROWTH)
        x, y, w, h = cv2.boundingRect(padded_hole)
    # seamlessClone puts the mask's bounding box at centre - size // 2: this centre keeps it in place.
    centre = (x + w // 2, y + h // 2)
    blended = cv2.seamlessClone(padded[0], padded[1], padded_hole, centre, cv2.NORMAL_CLONE)
    blended = blended[pad:-pad, pad:-pad]
    return np.where(hole[..., None] > 0, blended, image)


def mask_from_boxes(shape: Tuple[int, int], boxes: Sequence[Tuple[int, int, int, int]]) -> np.ndarray:
    """A (H, W, 1) mask with holes at boxes given as (x, y, width, height), clipped to the image."""
    mask = np.zeros((*shape, 1), np.float32)
    for x, y, w, h in boxes:
        if w <= 0 or h <= 0:
            raise UserError(f"box {x},{y},{w},{h} must have a positive width and height")
        mask[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = 1.0
    return mask


def inpaint(
    completer,
    image: np.ndarray,
    mask: np.ndarray,
    post: bool = False,
    tiling: str = "auto",
    max_network_pixels: int = tilings.MAX_NETWORK_PIXELS,
) -> np.ndarray:
    """One (H, W, 3) uint8 image and its (H, W, 1) mask -> the completed (H, W, 3) uint8 image.

    `completer` takes float batches (image (B, h, w, 3) in [0, 1], mask (B, h, w, 1)) and returns
    the completed batch: an `Inpainter`, or what `completers.load_completer` gives. `tiling` says how much
    of the image it sees (`glcic_tf.tiling`): by default crops around the holes, so a phone
    photograph with a small hole costs what the hole's neighbourhood costs. The post-processing
    runs on the same crops, after the network (so on a downscaled copy where the network ran on
    one, which keeps its memory bounded too).
    """
    if not mask.any():
        return image.copy()

    def complete_one(crop, crop_mask):
        try:
            completed = completer(crop[None].astype(np.float32) / 255.0, crop_mask[None].astype(np.float32))
        except Exception as error:  # noqa: BLE001 (a refusal is told in one line; anything else is raised)
            reason = _refusal(error)
            if reason is None:
                raise
            height, width = crop.shape[:2]
            raise UserError(f"the model refused a {width}x{height} region: {reason} (lower --max_network_pixels)") from None
        completed = images.to_uint8(np.asarray(completed)[0])
        completed = np.where(crop_mask > 0.5, completed, crop)  # exactly the input's pixels outside the holes
        return postprocess(crop, completed, crop_mask) if post else completed

    return tilings.complete(complete_one, image, mask, tiling, max_network_pixels=max_network_pixels)


def _refusal(error: Exception) -> Optional[str]:
    """What a completer refused, in one line, if `error` is a refusal of its input: a LiteRT
    model's ModelRefused, or TensorFlow's InvalidArgumentError (an export's own pixel limit, a
    failed check). TensorFlow is never imported here: if it is not loaded, the completer did not
    raise its error."""
    if isinstance(error, ModelRefused):
        return str(error)
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is not None and isinstance(error, tensorflow.errors.InvalidArgumentError):
        return failed_check_message(error.message)
    return None


# Lines of a TensorFlow error message that say where, not what: skipped for the message.
_WHERE = re.compile(r"^(Graph execution error:|Detected at node|<stack traces unavailable>|\[\[|File \")")
_FUNCTION = re.compile(r"^\{\{function_node [^}]*\}\}\s*")


def failed_check_message(message: str) -> str:
    """The failed check's own text out of a TensorFlow error message (a local one, or one TF
    Serving passes on), else its last line that says what failed (a decoder's "Invalid PNG
    data"), not where (the node, the stack)."""
    found = re.search(r"assertion failed: \[([^\]]*)\]", message)
    if found:
        return found.group(1)
    lines = [_FUNCTION.sub("", line.strip()) for line in message.strip().splitlines()]
    lines = [line for line in lines if line and not _WHERE.match(line)]
    return lines[-1] if lines else message.strip()


