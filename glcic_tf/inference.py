"""Completing images with a trained completion network: any size, any holes, optional post-processing.

`Inpainter` runs the network compiled once for every size (pad to a multiple of 4, run, crop
back, put the valid pixels back). `postprocess` is the paper's: OpenCV fast marching (Telea)
then Poisson blending (seamlessClone) of the completed region, as the authors' inpaint.lua.
"""

import io
import json
import os
import re
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import PIL.Image
import tensorflow as tf
from absl import logging

from glcic_tf import checkpoints, folded, models, strategy as strategies
from glcic_tf.errors import ImageTooLarge, UserError

# Largest image `inpaint.py` and `read_image` accept by default: 100 megapixels (10000 x 10000).
# The network never runs on more than strategy.MAX_NETWORK_PIXELS at once (about 2.8 GB); the
# image, its mask and the result add about 25 bytes per pixel. Measured through inpaint.py with
# a 10000x10000 JPEG, a 9000x8000 hole and --postprocess: 4.6 GB peak, within 8 GB.
MAX_PIXELS = 10_000 * 10_000


def load_completion_network(path: str):
    """The completion network and mean pixel of a run folder (its latest checkpoint) or a checkpoint.

    A run folder is what train.py writes: checkpoints plus config.json, which gives the width and
    the mean pixel. A checkpoint path (`.../ckpt-1000`) reads config.json from its folder.
    Returns (keras model, mean_pixel, step).
    """
    checkpoint = checkpoints.resolve(path)
    config_path = os.path.join(os.path.dirname(checkpoint), "config.json")
    if not tf.io.gfile.exists(config_path):
        raise UserError(f"{config_path} is missing: the network's width and mean pixel are stored there by train.py")
    with tf.io.gfile.GFile(config_path) as file:
        config = json.load(file)
    network = models.completion_network(config.get("width", 1.0))
    step = tf.Variable(0, dtype=tf.int64)
    checkpoints.read_completion_network(network, checkpoint, step=step)
    return network, tuple(config.get("mean_pixel", models.PLACES2_MEAN_PIXEL)), int(step.numpy())


def load_completer(path: str, precision: str = "float32", max_network_pixels: Optional[int] = None):
    """A callable (image, mask) -> completed, float batches as `Inpainter`, from an export or a run.

    `path`: a SavedModel (export.py's version folder, or its base folder whose highest version
    is used), a train.py run folder, or a checkpoint (.../ckpt-N). A SavedModel runs as it was
    exported (float32, with the pixel limit it was exported with); `precision` and
    `max_network_pixels` (the most the network runs on at once: default
    strategy.MAX_NETWORK_PIXELS, set it to what --max_network_pixels sends) apply to runs and
    checkpoints (see Inpainter).
    """
    saved_model = path
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "saved_model.pb")):
        versions = [v for v in os.listdir(path) if v.isdigit() and os.path.exists(os.path.join(path, v, "saved_model.pb"))]
        saved_model = os.path.join(path, max(versions, key=int)) if versions else None
    if saved_model and os.path.exists(os.path.join(saved_model, "saved_model.pb")):
        if precision == "bfloat16":
            raise UserError(f"{saved_model} is a SavedModel, which runs as exported (float32); bfloat16 needs a run folder")
        signature = tf.saved_model.load(saved_model).signatures["serving_default"]
        return lambda image, mask: signature(image=image, mask=mask)["inpainted"]
    if os.path.isdir(path) and not tf.train.latest_checkpoint(path):
        raise UserError(f"{path} is neither a SavedModel (or a folder of versions) nor a train.py run folder")
    network, mean_pixel, _ = load_completion_network(path)
    return Inpainter(network, mean_pixel, max_network_pixels or strategies.MAX_NETWORK_PIXELS, precision=precision)


class Inpainter(tf.Module):
    """image (B, H, W, 3) in [0, 1] and mask (B, H, W, 1), 1 = hole -> completed image, any H and W.

    Compiled once with unknown batch, height and width, so a new size does not retrace. The
    image is padded to a multiple of 4 (its last row and column repeated), the network runs in
    inference mode, the result is cropped back and the input's pixels are put back outside the
    holes. A batch of more than `max_pixels` pixels in all (batch x height x width) is refused
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
        max_pixels: int = strategies.MAX_NETWORK_PIXELS,
        fold: bool = True,
        precision: str = "float32",
        upsampling: Optional[str] = None,
    ):
        super().__init__()
        dtype = folded.compute_dtype(precision)
        self.network = folded.FoldedCompletionNetwork(network, upsampling=upsampling, dtype=dtype) if fold else network
        self.mean_pixel = tf.constant(mean_pixel, tf.float32)
        self.max_pixels = max_pixels

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
                tf.constant(self.max_pixels, tf.int64),
                message=f"the batch is larger than {self.max_pixels} pixels in all (images x height x width), the most the network runs on at once",
            ),
        ]
        with tf.control_dependencies(checks):  # nothing runs on inputs that failed a check
            image, mask = tf.identity(image), tf.cast(mask > 0.5, tf.float32)
        height, width = tf.shape(image)[1], tf.shape(image)[2]
        # Pad by repeating the last row and column (works for any size, 1x1 included).
        rows = tf.minimum(tf.range(height + (-height) % models.SIZE_MULTIPLE), height - 1)
        cols = tf.minimum(tf.range(width + (-width) % models.SIZE_MULTIPLE), width - 1)
        padded_image = tf.gather(tf.gather(image, rows, axis=1), cols, axis=2)
        padded_mask = tf.gather(tf.gather(mask, rows, axis=1), cols, axis=2)
        completed = self.network(models.completion_input(padded_image, padded_mask, self.mean_pixel), training=False)
        return models.composite(completed[:, :height, :width, :], image, mask)


def postprocess(image: np.ndarray, completed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The paper's post-processing of one image (H, W, 3) uint8: fast marching, then Poisson blending.

    As the authors' inpaint.lua: `cv2.inpaint(completed, mask, 1, INPAINT_TELEA)` gives the
    boundary, then `cv2.seamlessClone` blends the network's completion into it over the holes.
    seamlessClone misbehaves when the mask touches the image border, so both images are padded
    (mirrored) first and cropped after. Pixels outside the holes are returned unchanged.
    """
    hole = (mask.reshape(mask.shape[:2]) > 0.5).astype(np.uint8) * 255
    if not hole.any():
        return image.copy()
    telea = cv2.inpaint(completed, hole, 1, cv2.INPAINT_TELEA)
    pad = 16
    padded = [cv2.copyMakeBorder(a, pad, pad, pad, pad, cv2.BORDER_REFLECT) for a in (completed, telea)]
    padded_hole = cv2.copyMakeBorder(hole, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(padded_hole)
    # seamlessClone puts the mask's bounding box at centre - size // 2: this centre keeps it in place.
    centre = (x + w // 2, y + h // 2)
    blended = cv2.seamlessClone(padded[0], padded[1], padded_hole, centre, cv2.NORMAL_CLONE)
    blended = blended[pad:-pad, pad:-pad]
    return np.where(hole[..., None] > 0, blended, image)


def to_uint8(image) -> np.ndarray:
    return np.clip(np.round(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)


# The formats every path reads (the page, inpaint.py and, but TIFF, the export's inpaint_bytes),
# by Pillow's names for their header readers. MPO is the JPEG of cameras that store several
# pictures (phones' portrait mode); its first picture is read. Nothing else is decoded, however
# capable OpenCV is: a format whose size no header states before decoding (Radiance HDR, which
# OpenCV decodes into float32 first) could cost gigabytes before any size check.
FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP", "GIF": "GIF", "BMP": "BMP", "TIFF": "TIFF"}
FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP or TIFF"
# EXIF orientation follows the browser the page runs in, so a mask painted on the page fits the
# photo the server reads: Chromium (150) turns JPEGs and PNGs (eXIf) upright and shows WebPs as
# stored; OpenCV 5 would turn all of them. TIFF, which browsers do not open, is turned as TIFF
# viewers do.
AS_STORED = {"WebP"}
_HEADER_BYTES = 16  # enough for every allowed format's signature


def _header_readers():
    """Pillow's (factory, accept) for each allowed format, its plugins imported on first use."""
    from PIL import BmpImagePlugin, GifImagePlugin, JpegImagePlugin, MpoImagePlugin, PngImagePlugin, TiffImagePlugin, WebPImagePlugin  # noqa: F401, PLC0415

    return [(name, *PIL.Image.OPEN[name]) for name in FORMATS if name != "MPO"]  # JPEG's factory returns MPO itself


def header_format_and_size(source) -> Optional[Tuple[str, int, int]]:
    """(format, width, height) as the file's header states it, for the allowed FORMATS only, read
    by Pillow's header readers without decoding the pixels; None for any other file, and for
    one whose header no reader makes sense of (whatever the reader raised: Pillow's readers
    raise SyntaxError, OSError, struct.error, but also AttributeError or NotImplementedError on
    odd files). `source` is a path or a file object.

    Pillow's own `Image.open` is not used: it checks its global decompression-bomb limit, and
    switching that off and on around the call would race between threads (the page decodes in
    several); calling the format's reader directly leaves the global alone. The caller judges
    the size.
    """
    close = isinstance(source, (str, os.PathLike))
    file = open(source, "rb") if close else source
    try:
        prefix = file.read(_HEADER_BYTES)
        for name, factory, accept in _header_readers():
            accepted = accept is None or accept(prefix)
            if accepted and not isinstance(accepted, str):  # a str is Pillow's "support not installed"
                file.seek(0)
                try:
                    with factory(file, "") as image:
                        width, height = (int(side) for side in image.size)
                        if not (0 < width < 2**31 and 0 < height < 2**31):  # e.g. a BMP's negative width, read unsigned
                            return None
                        return FORMATS.get(image.format, image.format), width, height
                except Exception:  # noqa: BLE001 (any reader failure means: not a readable file)
                    return None
        return None
    finally:
        if close:
            file.close()


def header_size(source) -> Optional[Tuple[int, int]]:
    """(width, height) as the header of a file in one of the allowed FORMATS states it; None if it
    is not one of them or its header cannot be read (see header_format_and_size)."""
    found = header_format_and_size(source)
    return found[1:] if found else None


def _decode(encoded: bytes, what: str, mode: int, max_pixels: int) -> np.ndarray:
    """Decode an image file's bytes with OpenCV; UserError if they are no image in one of the
    allowed FORMATS (or a broken one), ImageTooLarge if it is over `max_pixels`. `what` names the
    file in messages ("image photo.jpg").

    The size is checked twice: from the header before decoding (a small file announcing a huge
    image must not be decoded at all; a file whose header states no size is not decoded), and
    on the decoded pixels. A file no reader makes sense of is refused either way; its message
    says "over the limit" if its first bytes still announce a size over it (`announced_size`,
    which is lenient: a PNG of nothing but its header), as that is what a user should know.
    """
    unreadable = f"{what} is not a readable image file ({FORMAT_NAMES})"
    found = header_format_and_size(io.BytesIO(encoded))
    if found is None:  # never decoded; but a broken file that still announces a bomb is named as one
        try:
            width, height = (int(side) for side in announced_size(tf.constant(encoded)))
        except tf.errors.OpError:  # extract_jpeg_shape on a broken JPEG
            width = height = 0
        if width * height > max_pixels:
            raise ImageTooLarge(f"{what} is {width}x{height}, over the limit of {max_pixels} pixels (--max_pixels)")
        raise UserError(unreadable)
    file_format, width, height = found
    if width * height > max_pixels:
        raise ImageTooLarge(f"{what} is {width}x{height}, over the limit of {max_pixels} pixels (--max_pixels)")
    if file_format in AS_STORED:
        mode |= cv2.IMREAD_IGNORE_ORIENTATION
    try:
        decoded = cv2.imdecode(np.frombuffer(encoded, np.uint8), mode)
    except cv2.error:  # OpenCV raises on some broken files rather than returning None
        decoded = None
    if decoded is None:
        raise UserError(unreadable)
    height, width = decoded.shape[:2]
    if width * height > max_pixels:
        raise ImageTooLarge(f"{what} is {width}x{height}, over the limit of {max_pixels} pixels (--max_pixels)")
    return decoded


def _read_file(path: str, what: str) -> bytes:
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist")
    with open(path, "rb") as file:
        return file.read()


def _header_integer(encoded, offset: int, size: int, little_endian: bool) -> tf.Tensor:
    """The unsigned `size`-byte integer at `offset` of `encoded`, as int64."""
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(encoded, offset, size), tf.uint8), tf.int64)
    weights = tf.constant([256**index for index in range(size)], tf.int64)
    return tf.reduce_sum(raw * (weights if little_endian else tf.reverse(weights, [0])))


def _signed_32(value: tf.Tensor) -> tf.Tensor:
    """An unsigned 32-bit integer (int64) read as two's complement."""
    return tf.where(value >= 2**31, value - 2**32, value)


_EXIF_SEARCH_BYTES = 65536  # a JPEG's APP1 or a PNG's eXIf chunk comes before the pixels
_IFD_ENTRIES = 64  # the first IFD's entries searched for the orientation tag


def exif_orientation(encoded) -> tf.Tensor:
    """The EXIF orientation (1-8) that a JPEG (APP1 "Exif") or a PNG (eXIf chunk) states, 1 for
    none and for any other format: the browser's rule (AS_STORED), in TensorFlow ops, so that
    the export's bytes signature turns photographs as the page and inpaint.py do."""
    magic = tf.strings.substr(encoded, 0, 8)
    is_jpeg = tf.equal(tf.strings.substr(encoded, 0, 3), b"\xff\xd8\xff")
    is_png = tf.equal(magic, b"\x89PNG\r\n\x1a\n")
    head = tf.strings.substr(encoded, 0, _EXIF_SEARCH_BYTES)
    marker = tf.where(is_jpeg, b"Exif\x00\x00", b"eXIf")
    parts = tf.strings.split(head, sep=marker, maxsplit=1)
    found = (is_jpeg | is_png) & tf.equal(tf.size(parts), 2)
    # In a JPEG, only an APP1 segment's (FF E1, then its length): not an "Exif" in a comment.
    app1 = tf.equal(tf.strings.substr(tf.strings.join([b"\0" * 4, head]), tf.strings.length(parts[0]), 2), b"\xff\xe1")
    found &= is_png | app1
    start = tf.where(found, tf.strings.length(parts[0]) + tf.strings.length(marker), 0)  # inside the file
    # Some writers start a PNG's eXIf data with JPEG's "Exif\0\0" too.
    prefixed = is_png & tf.equal(tf.strings.substr(tf.strings.join([encoded, b"\0" * 8]), start, 6), b"Exif\x00\x00")
    start += tf.where(prefixed, 6, 0)
    size = 8 + 12 * _IFD_ENTRIES + 4096
    tiff = tf.strings.substr(tf.strings.join([tf.strings.substr(encoded, start, size), b"\0" * size]), 0, size)
    raw = tf.cast(tf.io.decode_raw(tiff, tf.uint8), tf.int64)
    little = tf.equal(raw[0], ord("I"))

    def number(offsets, length):  # unsigned integers of `length` bytes at `offsets`, in the TIFF's byte order
        digits = tf.gather(raw, tf.clip_by_value(offsets[..., None] + tf.range(length, dtype=tf.int64), 0, size - 1))
        weights = 256 ** tf.range(length, dtype=tf.int64)
        return tf.reduce_sum(digits * tf.where(little, weights, tf.reverse(weights, [0])), axis=-1)

    ifd = number(tf.constant(4, tf.int64), 4)
    entries = ifd + 2 + 12 * tf.range(_IFD_ENTRIES, dtype=tf.int64)
    valid = (tf.range(_IFD_ENTRIES, dtype=tf.int64) < number(ifd, 2)) & (entries + 12 <= size)
    # The first orientation entry that is one SHORT (type 3, count 1), as OpenCV and Pillow read it.
    matches = valid & tf.equal(number(entries, 2), 0x0112) & tf.equal(number(entries + 2, 2), 3) & tf.equal(number(entries + 4, 4), 1)
    first = tf.argmax(tf.cast(matches, tf.int32))
    orientation = tf.where(tf.reduce_any(matches), number(entries[first] + 8, 2), 0)
    return tf.where(found & (orientation >= 1) & (orientation <= 8), orientation, 1)


def turn_upright(image, orientation) -> tf.Tensor:
    """`image` (H, W, C) turned as EXIF `orientation` (1-8) says it is shown (Pillow's exif_transpose)."""
    transposed = lambda: tf.transpose(image, [1, 0, 2])  # noqa: E731
    turns = [
        lambda: image,
        lambda: tf.reverse(image, [1]),  # 2: mirrored left-right
        lambda: tf.image.rot90(image, 2),  # 3: upside down
        lambda: tf.reverse(image, [0]),  # 4: mirrored top-bottom
        transposed,  # 5
        lambda: tf.image.rot90(image, 3),  # 6: turned 90 degrees clockwise to show
        lambda: tf.image.rot90(transposed(), 2),  # 7: transverse
        lambda: tf.image.rot90(image, 1),  # 8: turned 90 degrees counter-clockwise to show
    ]
    return tf.switch_case(tf.cast(orientation - 1, tf.int32), turns)


def announced_size(encoded) -> tf.Tensor:
    """[width, height] as a PNG, JPEG, GIF, BMP or WebP header states it, read without decoding:
    the guard against a small file announcing a huge image (a decompression bomb), in TensorFlow
    ops for the export's bytes signature. These are all the formats `tf.io.decode_image` reads;
    [0, 0] for anything else, which it refuses.
    """
    encoded = tf.strings.join([encoded, tf.strings.reduce_join(tf.fill([32], "\0"))])  # no out-of-range reads
    magic = tf.strings.substr(encoded, 0, 4)

    def png():
        return tf.stack([_header_integer(encoded, 16, 4, False), _header_integer(encoded, 20, 4, False)])

    def gif():
        return tf.stack([_header_integer(encoded, 6, 2, True), _header_integer(encoded, 8, 2, True)])

    def bmp():
        # BITMAPINFOHEADER and later (header size 40+ at 14): signed 32-bit width and height at
        # 18 and 22, the height negative for rows stored top-down. OS/2 1.x (BITMAPCOREHEADER,
        # header size 12): unsigned 16-bit width and height at 18 and 20.
        def core():
            return tf.stack([_header_integer(encoded, 18, 2, True), _header_integer(encoded, 20, 2, True)])

        def info():
            width, height = _header_integer(encoded, 18, 4, True), _header_integer(encoded, 22, 4, True)
            size = tf.stack([_signed_32(width), tf.abs(_signed_32(height))])
            return tf.where(size[0] > 0, size, tf.zeros_like(size))  # a negative width is no BMP: [0, 0], refused

        return tf.cond(tf.equal(_header_integer(encoded, 14, 4, True), 12), core, info)

    def jpeg():
        return tf.reverse(tf.cast(tf.io.extract_jpeg_shape(encoded)[:2], tf.int64), [0])

    def webp():
        # RIFF....WEBP, then the first chunk: VP8X (extended: 24-bit width - 1 and height - 1 at
        # 24 and 27), VP8L (lossless: 14-bit width - 1 and height - 1 packed from byte 21) or
        # "VP8 " (lossy: 14-bit width and height at 26 and 28).
        chunk = tf.strings.substr(encoded, 12, 4)

        def extended():
            return tf.stack([_header_integer(encoded, 24, 3, True) + 1, _header_integer(encoded, 27, 3, True) + 1])

        def lossless():
            bits = _header_integer(encoded, 21, 4, True)
            return tf.stack([bits % 2**14 + 1, bits // 2**14 % 2**14 + 1])

        def lossy():
            return tf.stack([_header_integer(encoded, 26, 2, True) % 2**14, _header_integer(encoded, 28, 2, True) % 2**14])

        return tf.case([(tf.equal(chunk, b"VP8X"), extended), (tf.equal(chunk, b"VP8L"), lossless)], default=lossy)

    return tf.case(
        [
            (tf.equal(magic, b"\x89PNG"), png),
            (tf.equal(tf.strings.substr(magic, 0, 3), b"GIF"), gif),
            (tf.equal(tf.strings.substr(magic, 0, 2), b"BM"), bmp),
            (tf.equal(tf.strings.substr(magic, 0, 3), b"\xff\xd8\xff"), jpeg),
            (tf.logical_and(tf.equal(magic, b"RIFF"), tf.equal(tf.strings.substr(encoded, 8, 4), b"WEBP")), webp),
        ],
        default=lambda: tf.zeros([2], tf.int64),
    )


def read_image(path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB; grayscale and RGBA become RGB. UserError if unreadable."""
    return decode_image(_read_file(path, "image"), f"image {path}", max_pixels)


def decode_image(encoded: bytes, what: str = "the image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file's bytes as (H, W, 3) uint8 RGB, as read_image; `what` names it in errors."""
    return cv2.cvtColor(_decode(encoded, what, cv2.IMREAD_COLOR, max_pixels), cv2.COLOR_BGR2RGB)


def read_mask(path: str, shape: Tuple[int, int], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A mask image (white = hole) as (H, W, 1) float32 in {0, 1}; must have the image's size."""
    return decode_mask(_read_file(path, "mask"), shape, f"mask {path}", max_pixels)


def decode_mask(encoded: bytes, shape: Tuple[int, int], what: str = "the mask", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A mask file's bytes (white = hole) as read_mask; `what` names it in errors."""
    mask = _decode(encoded, what, cv2.IMREAD_GRAYSCALE, max_pixels)
    if mask.shape != tuple(shape):
        raise UserError(f"{what} is {mask.shape[1]}x{mask.shape[0]} but the image is {shape[1]}x{shape[0]}")
    if not np.isin(mask, (0, 255)).all():
        logging.warning("%s is not binary: pixels of 128 or more are taken as hole", what)
    return (mask >= 128).astype(np.float32)[..., None]


def box_mask(shape: Tuple[int, int], boxes: Sequence[Tuple[int, int, int, int]]) -> np.ndarray:
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
    strategy: str = "auto",
    max_network_pixels: int = strategies.MAX_NETWORK_PIXELS,
) -> np.ndarray:
    """One (H, W, 3) uint8 image and its (H, W, 1) mask -> the completed (H, W, 3) uint8 image.

    `completer` takes float batches (image (B, h, w, 3) in [0, 1], mask (B, h, w, 1)) and returns
    the completed batch: an `Inpainter`, or what `load_completer` gives. `strategy` says how much
    of the image it sees (`glcic_tf.strategy`): by default crops around the holes, so a phone
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
        completed = to_uint8(completed[0])
        completed = np.where(crop_mask > 0.5, completed, crop)  # exactly the input's pixels outside the holes
        return postprocess(crop, completed, crop_mask) if post else completed

    return strategies.complete(complete_one, image, mask, strategy, max_network_pixels=max_network_pixels)


def failed_check_message(message: str) -> str:
    """The failed check's own text out of a TensorFlow error message (a local one, or one TF
    Serving passes on), else its last line."""
    found = re.search(r"assertion failed: \[([^\]]*)\]", message)
    lines = message.strip().splitlines()
    return found.group(1) if found else (lines[-1] if lines else message)


def write_image(path: str, image: np.ndarray) -> None:
    """Write atomically: a temporary file renamed into place, so no half-written output remains."""
    folder = os.path.dirname(os.path.abspath(path))
    extension = os.path.splitext(path)[1] or ".png"
    try:
        ok, encoded = cv2.imencode(extension, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    except cv2.error:  # OpenCV raises for an extension it has no writer for
        ok = False
    if not ok:
        raise UserError(f"cannot write {path}: name it .png or .jpg")
    try:
        os.makedirs(folder, exist_ok=True)
        temporary = os.path.join(folder, f".{os.path.basename(path)}.partial")
        encoded.tofile(temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
