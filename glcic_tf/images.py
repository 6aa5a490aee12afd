"""Image files, for every path that reads or writes them: which formats are read, how their
headers state their sizes, the limits, decoding and writing.

Two readers share the rules. Python's, here (the page, `inpaint.py`, evaluation): Pillow's
header readers size a file before OpenCV decodes it; it needs no TensorFlow. TensorFlow's, in
glcic_tf.image_ops (the export's `inpaint_bytes` signature, training's input pipeline), reads the
same headers in TensorFlow ops. A file is decoded only if its header states a size within the
limit, what its format can repeat is bounded, and the decoded size is checked again.
"""

import io
import os
import secrets
import struct
import zlib
from typing import Optional, Tuple

import cv2
import numpy as np
import PIL.Image
from absl import logging

from glcic_tf.errors import ImageTooLarge, UserError

# Largest image `inpaint.py` and `read_image` accept by default: 100 megapixels (10000 x 10000).
# The network never runs on more than tiling.MAX_NETWORK_PIXELS at once (about 2.8 GB); the
# image, its mask and the result add about 25 bytes per pixel. Measured through inpaint.py with
# a 10000x10000 JPEG, a 9000x8000 hole and --postprocess: 4.6 GB peak, within 8 GB.
MAX_PIXELS = 10_000 * 10_000

# The formats every path reads (the page, inpaint.py and, but TIFF, the export's inpaint_bytes),
# by Pillow's names for their header readers. MPO is the JPEG of cameras that store several
# pictures (phones' portrait mode); its first picture is read. Nothing else is decoded, however
# capable OpenCV is: a format whose size no header states before decoding (Radiance HDR, which
# OpenCV decodes into float32 first) could cost gigabytes before any size check.
FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP", "GIF": "GIF", "BMP": "BMP", "TIFF": "TIFF"}
# EXIF orientation follows the browser the page runs in, so a mask painted on the page fits the
# photo the server reads: Chromium (150) turns JPEGs and PNGs (eXIf) upright and shows WebPs as
# stored; OpenCV 5 would turn all of them. TIFF, which browsers do not open, is turned as TIFF
# viewers do.
AS_STORED = {"WebP"}
_HEADER_BYTES = 16  # enough for every allowed format's signature

# File name extensions of the FORMATS, for folders of images.
EXTENSIONS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WebP", ".gif": "GIF", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
# What TensorFlow's decoders (tf.io.decode_image) read: every format but TIFF. The export's bytes
# signature and training read these.
TENSORFLOW_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WebP")


def _listed(names) -> str:
    """"A, B or C", for messages."""
    names = list(dict.fromkeys(names))
    return ", ".join(names[:-1]) + " or " + names[-1]


FORMAT_NAMES = _listed(FORMATS.values())  # "JPEG, PNG, WebP, GIF, BMP or TIFF"
TENSORFLOW_FORMAT_NAMES = _listed(TENSORFLOW_FORMATS)  # "PNG, JPEG, GIF, BMP or WebP"


def extensions(formats=tuple(EXTENSIONS.values())) -> Tuple[str, ...]:
    """The file name extensions of `formats` (default: all FORMATS), for `str.endswith`."""
    return tuple(extension for extension, name in EXTENSIONS.items() if name in formats)


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
        width, height = _announced_size(encoded[:24])
        if width * height > max_pixels:
            raise ImageTooLarge(f"{what} is {width}x{height}, over the limit of {max_pixels} pixels (--max_pixels)")
        raise UserError(unreadable)
    file_format, width, height = found
    if width * height > max_pixels:
        raise ImageTooLarge(f"{what} is {width}x{height}, over the limit of {max_pixels} pixels (--max_pixels)")
    scans = jpeg_scans(encoded) if file_format == "JPEG" else 0
    if scans > MAX_JPEG_SCANS:
        raise UserError(_too_many_scans(what, scans))
    if file_format == "PNG" and _png_holds_more_than_its_picture(encoded):
        raise UserError(f"{what} is a {width}x{height} PNG holding more image data than its picture")
    if file_format == "TIFF":
        tile_width, tile_height = _tiff_tile(encoded)
        if tile_width * tile_height > max(width * height, TIFF_TILE_ALLOWANCE):
            raise UserError(f"{what} is a {width}x{height} TIFF of {tile_width}x{tile_height} tiles, larger than the picture")
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


# A PNG's image data is one zlib stream, which libpng inflates to its end, whatever the header's
# size needs ("Too much image data" is a warning): 400 KB of compressed zeros behind a 10x10
# picture took 0.7 s, and zlib's ratio (1032:1) makes a 50 MB upload a minute. The stream is
# inflated here first, to the size the header states and one byte more, which costs at most the
# picture's own bytes.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))  # x, y, x step, y step


def _png_holds_more_than_its_picture(encoded: bytes) -> bool:
    """Whether a PNG's image data (its IDAT chunks) inflates to more than its header's size needs."""
    width, height, bit_depth, colour_type, _, _, interlaced = struct.unpack(">IIBBBBB", encoded[16:29])
    bits = bit_depth * _PNG_CHANNELS.get(colour_type, 4)
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    needed = 0
    for x, y, x_step, y_step in passes:
        columns, rows = -(-(width - x) // x_step), -(-(height - y) // y_step)
        if columns > 0 and rows > 0:
            needed += rows * (1 + -(-columns * bits // 8))  # a filter byte, then the row
    data, position = [], 8
    while position + 8 <= len(encoded):
        length, kind = struct.unpack(">I4s", encoded[position : position + 8])
        if kind == b"IDAT":
            data.append(encoded[position + 8 : position + 8 + length])
        elif kind == b"IEND":
            break
        position += 12 + length
    inflater = zlib.decompressobj()
    try:
        inflater.decompress(b"".join(data), needed)
        return bool(inflater.decompress(inflater.unconsumed_tail, 1))
    except zlib.error:
        return False  # broken data: the decoder refuses it as it would


# OpenCV decodes a tiled TIFF tile by tile, into a buffer of a whole tile (up to 1 GB): a 100x100
# TIFF declaring 16000x16000 tiles cost 1 GB. Tiles are at most the picture's size (rounded up to
# a multiple of 16) in any file an encoder writes; a megapixel is allowed whatever the picture.
TIFF_TILE_ALLOWANCE = 1024 * 1024


def _tiff_tile(encoded: bytes) -> Tuple[int, int]:
    """(tile width, tile height) of a tiled TIFF's first picture, (0, 0) for one in strips."""
    from PIL import TiffImagePlugin  # noqa: PLC0415

    try:
        with TiffImagePlugin.TiffImageFile(io.BytesIO(encoded)) as image:
            tags = image.tag_v2
            return int(tags.get(322, 0) or 0), int(tags.get(323, 0) or 0)  # TileWidth, TileLength
    except Exception:  # noqa: BLE001 (the header was read once already; a failure here: no tiles known)
        return 0, 0


def max_file_bytes(max_pixels: int) -> int:
    """The largest image file read for a picture of at most `max_pixels`: 8 bytes a pixel (16-bit
    RGBA, stored uncompressed) and 64 MB of metadata. A larger file (a video named .jpg, a disk
    image) is refused before it is read: reading costs its size in memory."""
    return max_pixels * 8 + 64 * 2**20


def _announced_size(prefix: bytes) -> Tuple[int, int]:
    """The size a PNG's IHDR announces even when no reader opens the file (a PNG of nothing but its
    header), so that such a file is named by its size; (0, 0) for anything else. (Pillow's readers
    size the other formats from their headers alone.)"""
    if len(prefix) == 24 and prefix[:8] == b"\x89PNG\r\n\x1a\n" and prefix[12:16] == b"IHDR":
        width, height = struct.unpack(">II", prefix[16:24])
        return width, height
    return 0, 0


def _read_file(path: str, what: str, max_pixels: int) -> bytes:
    """A regular file's bytes: not a device (/dev/zero never ends), a FIFO or a folder, and not
    larger than max_file_bytes."""
    if not os.path.exists(path):
        raise UserError(f"{what} {path} does not exist")
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} is not a file")
    size = os.path.getsize(path)
    if size > max_file_bytes(max_pixels):
        raise ImageTooLarge(f"{what} {path} is {size / 2**20:.0f} MB, more than an image of {max_pixels} pixels takes (--max_pixels)")
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise UserError(f"cannot read {what} {path}: {error.strerror or error}") from None

# A JPEG's scans: a progressive decoder runs over the whole image once per scan, so a small file
# repeating one scan thousands of times takes seconds per megapixel (5000 scans of 4000x4000 in
# 113 KB: 8-45 s instead of 0.4 s). Encoders write one scan per colour component (baseline) or
# about ten (progressive: libjpeg 10, mozjpeg up to 13 per pass); 100 leaves room for odd ones.
# Each scan starts with an SOS marker, FF DA, which cannot occur inside entropy-coded data
# (an FF byte there is followed by 00), so counting the marker bounds the scans.
MAX_JPEG_SCANS = 100
_SOS = b"\xff\xda"


def jpeg_scans(encoded: bytes) -> int:
    """How many scans (SOS markers) a JPEG's bytes hold; an upper bound (an embedded thumbnail's
    scans count too)."""
    return encoded.count(_SOS)


def _too_many_scans(what: str, scans: int) -> str:
    return f"{what} is a JPEG of {scans} scans, more than the {MAX_JPEG_SCANS} any encoder writes"


def read_image(path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB; grayscale and RGBA become RGB. UserError if unreadable."""
    return decode_image(_read_file(path, "image", max_pixels), f"image {path}", max_pixels)


def decode_image(encoded: bytes, what: str = "the image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file's bytes as (H, W, 3) uint8 RGB, as read_image; `what` names it in errors."""
    return cv2.cvtColor(_decode(encoded, what, cv2.IMREAD_COLOR, max_pixels), cv2.COLOR_BGR2RGB)


def read_mask(path: str, shape: Tuple[int, int], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A mask image (white = hole) as (H, W, 1) float32 in {0, 1}; must have the image's size."""
    return decode_mask(_read_file(path, "mask", max_pixels), shape, f"mask {path}", max_pixels)


def decode_mask(encoded: bytes, shape: Tuple[int, int], what: str = "the mask", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A mask file's bytes (white = hole) as read_mask; `what` names it in errors."""
    mask = _decode(encoded, what, cv2.IMREAD_GRAYSCALE, max_pixels)
    if mask.shape != tuple(shape):
        raise UserError(f"{what} is {mask.shape[1]}x{mask.shape[0]} but the image is {shape[1]}x{shape[0]}")
    if not np.isin(mask, (0, 255)).all():
        logging.warning("%s is not binary: pixels of 128 or more are taken as hole", what)
    return (mask >= 128).astype(np.float32)[..., None]


def to_uint8(image) -> np.ndarray:
    return np.clip(np.round(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)


def output_extension(path: str) -> str:
    """The format `write_image` writes `path` in (its extension, PNG without one); UserError for
    an extension OpenCV writes no files of. Callers check it before any work."""
    extension = os.path.splitext(path)[1] or ".png"
    if not cv2.haveImageWriter("x" + extension):
        raise UserError(f"cannot write {path}: name it .png or .jpg")
    return extension


def write_image(path: str, image: np.ndarray) -> None:
    """Write atomically: a new temporary file in the target folder, renamed into place, so no
    half-written output remains and nothing planted under a temporary name (a symbolic link to
    another file) is written through.

    The temporary file is made as `tempfile.mkstemp` makes one (a random name, O_CREAT | O_EXCL,
    so an existing name or link fails), but with the mode any new file of the user's gets (the
    umask's), not mkstemp's owner-only mode: the output is the user's file like any other.
    """
    folder = os.path.dirname(os.path.abspath(path))
    encoded = cv2.imencode(output_extension(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1]
    temporary = None
    try:
        os.makedirs(folder, exist_ok=True)
        if os.path.isdir(path):
            raise UserError(f"cannot write {path}: it is a folder")
        for _ in range(100):  # as tempfile does: a new random name if one is taken
            candidate = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(8)}.partial")
            try:
                descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0), 0o666)
            except FileExistsError:
                continue
            temporary = candidate
            break
        else:
            raise FileExistsError(f"no free temporary name in {folder}")
        with os.fdopen(descriptor, "wb") as file:
            file.write(encoded.tobytes())
        os.replace(temporary, path)
        temporary = None
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        if temporary is not None:
            os.remove(temporary)


def mask_limit_bytes(max_pixels: int, max_file_bytes: int) -> int:
    """The largest mask file to accept: a mask holds one bit per pixel, so max_pixels / 8 bytes
    (plus 64 KB for small limits) is more than any PNG of painted strokes needs, and never more
    than a photo's own limit `max_file_bytes`."""
    return min(max_file_bytes, max_pixels // 8 + 64 * 1024)
