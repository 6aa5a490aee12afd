"""Files made to attack readers: headers that announce more than the file holds."""

import io
import struct
import zlib

import cv2
import numpy as np
import PIL.Image


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR chunk announcing width x height, and no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


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
