"""Files made to attack readers: headers that announce more than the file holds."""

import struct
import zlib

import cv2
import numpy as np


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
