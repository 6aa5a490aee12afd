"""Completing images with a trained completion network: any size, any holes, optional post-processing.

`Inpainter` runs the network compiled once for every size (pad to a multiple of 4, run, crop
back, put the valid pixels back). `inpaint` completes one photograph through any completer
(glcic_tf.completers), on the regions `glcic_tf.tiling` plans. `postprocess` is the paper's:
OpenCV fast marching (Telea) then Poisson blending (seamlessClone) of the completed region, as
the authors' inpaint.lua. Image files are `glcic_tf.images`' job.
"""

import re
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import tensorflow as tf

from glcic_tf import folded, images, models, tiling as tilings
from glcic_tf.errors import UserError


class Inpainter(tf.Module):
    """image (B, H, W, 3) in [0, 1] and mask (B, H, W, 1), 1 = hole -> completed image, any H and W.

    Compiled once with unknown batch, height and width, so a new size does not retrace. The
    image is padded to a multiple of 4 (its last row and column repeated), the network runs in
    inference mode, the result is cropped back and the input's pixels are put back outside the
    holes. A batch of more than `max_network_pixels` pixels in all (batch x height x width) is refused
    (InvalidArgumentError) before the network runs: it runs on the whole batch at once and needs
    about 670 bytes per pixel, so the bound is on the request, not on each image. The network runs with its BatchNorms folded
    into its convolutions (`glcic_tf.folded`: the same outputs, faster); `fold=False` runs the
    Keras network as it is (for comparisons). `precision` is one of folded.PRECISIONS: "auto"
    computes in bfloat16 where that is faster (processors with AMX), float32 elsewhere;
    `upsampling` one of folded.UPSAMPLINGS (default: the faster where this runs).
    """

    def __init__(
        self,
        network,
        mean_pixel: Sequence[float] = models.PLACES2_MEAN_PIXEL,
        max_network_pixels: int = tilings.MAX_NETWORK_PIXELS,
        fold: bool = True,
        precision: str = "float32",
        upsampling: Optional[str] = None,
    ):
        super().__init__()
        dtype = folded.compute_dtype(precision)
        self.network = folded.FoldedCompletionNetwork(network, upsampling=upsampling, dtype=dtype) if fold else network
        self.mean_pixel = tf.constant(mean_pixel, tf.float32)
        self.max_network_pixels = max_network_pixels

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32, name="image"),
            tf.TensorSpec([None, None, None, 1], tf.float32, name="mask"),
        ]
    )
    def __call__(self, image, mask):
        checks = [
            tf.debugging.assert_equal(tf.shape(mask)[:3], tf.shape(image)[:3], message="mask and image sizes differ"),
            tf.debugging.assert_all_finite(image, "the image holds NaN or infinite values"),
            tf.debugging.assert_less_equal(
                tf.reduce_prod(tf.shape(image, out_type=tf.int64)[:3]),
                tf.constant(self.max_network_pixels, tf.int64),
                message=f"the batch is larger than {self.max_network_pixels} pixels in all (images x height x width), the most the network runs on at once",
            ),
        ]
        with tf.control_dependencies(checks):  # nothing runs on inputs that failed a check
            image, mask = tf.identity(image), tf.cast(mask > 0.5, tf.float32)
        # An empty batch, or images of no pixels, is answered as it came: there is nothing to complete.
        return tf.cond(tf.equal(tf.size(image), 0), lambda: image, lambda: self._complete(image, mask))

    def _complete(self, image, mask):
        height, width = tf.shape(image)[1], tf.shape(image)[2]
        # Pad by repeating the last row and column (works for any size, 1x1 included).
        rows = tf.minimum(tf.range(height + (-height) % models.SIZE_MULTIPLE), height - 1)
        cols = tf.minimum(tf.range(width + (-width) % models.SIZE_MULTIPLE), width - 1)
        padded_image = tf.gather(tf.gather(image, rows, axis=1), cols, axis=2)
        padded_mask = tf.gather(tf.gather(mask, rows, axis=1), cols, axis=2)
        completed = self.network(models.completion_input(padded_image, padded_mask, self.mean_pixel), training=False)
        return models.composite(completed[:, :height, :width, :], image, mask)


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
            completed = completer(tf.constant(crop[None], tf.float32) / 255.0, tf.constant(crop_mask[None]))
        except tf.errors.InvalidArgumentError as error:  # e.g. an export's own pixel limit
            height, width = crop.shape[:2]
            raise UserError(
                f"the model refused a {width}x{height} region: {failed_check_message(error.message)} (lower --max_network_pixels)"
            ) from None
        completed = images.to_uint8(completed[0])
        completed = np.where(crop_mask > 0.5, completed, crop)  # exactly the input's pixels outside the holes
        return postprocess(crop, completed, crop_mask) if post else completed

    return tilings.complete(complete_one, image, mask, tiling, max_network_pixels=max_network_pixels)


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


