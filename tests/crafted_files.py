"""Files made to attack readers: headers that announce more than the file holds."""

import io
import struct
import zlib

import cv2
import numpy as np
import PIL.Image


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR chunk announcing width x height, and no pixel data."""
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A tiny real JPEG whose frame header is rewritten to announce width x height."""
    data = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_of_frames(width: int, height: int, frames: int) -> bytes:
    """An animated GIF of `frames` one-colour frames of width x height: small on disk (each frame
    compresses to a few hundred bytes), `frames` times the screen's pixels once decoded."""
    palette = PIL.Image.new("P", (width, height))
    pictures = [palette.copy() for _ in range(frames)]
    for index, picture in enumerate(pictures):
        picture.paste(index % 2, (0, 0, width, height))
    encoded = io.BytesIO()
    pictures[0].save(encoded, format="GIF", save_all=True, append_images=pictures[1:], duration=10, optimize=False, disposal=0)
    return encoded.getvalue()


def jpeg_of_repeated_scans(width: int, height: int, repeats: int) -> bytes:
    """A progressive JPEG whose last scan (its SOS header and data) is repeated `repeats` times:
    small on disk, and a decoder runs over the whole image once per scan."""
    picture = PIL.Image.new("RGB", (width, height), (120, 90, 60))
    encoded = io.BytesIO()
    picture.save(encoded, format="JPEG", progressive=True, quality=90)
    data = encoded.getvalue()
    last_scan = data.rindex(b"\xff\xda")
    return data[:last_scan] + data[last_scan:-2] * repeats + data[-2:]


def tiled_tiff(width: int, height: int, tile: int, value: int = 200) -> bytes:
    """A grayscale, uncompressed TIFF of width x height in tile x tile tiles, all `value`; a tile
    larger than the picture makes a small file that a decoder unpacks into a buffer of a tile."""
    across, down = -(-width // tile), -(-height // tile)
    tiles = across * down
    tile_bytes = tile * tile if tile * tile * tiles <= 2**22 else 16  # a huge tile is declared, not stored
    tags = {256: (4, width), 257: (4, height), 258: (3, 8), 259: (3, 1), 262: (3, 1), 277: (3, 1), 322: (4, tile), 323: (4, tile)}
    entries = len(tags) + 2
    arrays = 8 + 2 + 12 * entries + 4  # the offsets, then the byte counts, then the tiles
    offsets = [arrays + 8 * tiles + index * tile_bytes for index in range(tiles)]
    tags[324] = (4, offsets)
    tags[325] = (4, [tile_bytes] * tiles)
    ifd = struct.pack("<H", entries)
    for tag, (kind, value_or_values) in sorted(tags.items()):
        if isinstance(value_or_values, list):
            where = arrays if tag == 324 else arrays + 4 * tiles
            ifd += struct.pack("<HHII", tag, kind, len(value_or_values), value_or_values[0] if tiles == 1 else where)
        else:
            ifd += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value_or_values, 0) if kind == 3 else struct.pack("<I", value_or_values))
    pixels = bytes([value]) * (tile_bytes * tiles)
    return b"II*\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + struct.pack(f"<{tiles}I", *offsets) + struct.pack(f"<{tiles}I", *([tile_bytes] * tiles)) + pixels


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width: int, height: int, interlaced: bool, data: bytes) -> bytes:
    """An 8-bit RGB PNG of width x height whose image data (IDAT) is `data`, compressed already."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, int(interlaced))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def png_of_rows(image: np.ndarray, rows: bytes, interlaced: bool) -> bytes:
    """An 8-bit RGB PNG of `image`'s size whose image data is `rows` (filter bytes included), compressed."""
    compressor = zlib.compressobj(9)
    return _png(image.shape[1], image.shape[0], interlaced, compressor.compress(rows) + compressor.flush())


def interlaced_png(image: np.ndarray) -> bytes:
    """`image` (H, W, 3) uint8 as an Adam7-interlaced PNG (which Pillow and OpenCV do not write)."""
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    rows = b"".join(b"\0" + image[y, x::x_step].tobytes() for x, y, x_step, y_step in passes for y in range(y, image.shape[0], y_step) if x < image.shape[1])
    return png_of_rows(image, rows, interlaced=True)


def png_inflating_to(width: int, height: int, extra_megabytes: int) -> bytes:
    """A width x height PNG whose image data inflates to `extra_megabytes` more than its rows:
    zeros, which zlib packs about 1000 to 1, so the file stays small."""
    compressor = zlib.compressobj(9)
    rows = b"".join(b"\0" + b"\x80" * (3 * width) for _ in range(height))
    data = compressor.compress(rows) + b"".join(compressor.compress(b"\0" * 2**20) for _ in range(extra_megabytes)) + compressor.flush()
    return _png(width, height, False, data)


def gif_of_a_frame_larger_than_its_screen(screen: int, frame: int) -> bytes:
    """A GIF whose header announces a screen x screen picture and whose one frame is frame x frame:
    the header's size says nothing of what a decoder allocates for the frame."""
    encoded = io.BytesIO()
    PIL.Image.new("P", (frame, frame)).save(encoded, format="GIF")
    data = encoded.getvalue()
    return data[:6] + struct.pack("<HH", screen, screen) + data[10:]
