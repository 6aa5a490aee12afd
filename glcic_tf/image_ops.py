"""Image files in TensorFlow ops, for the paths that decode in a graph: the export's
`inpaint_bytes` signature (TF Serving runs no Python) and training's input pipeline.

The rules are glcic_tf.images': the same formats, the header's size checked before decoding and
after, EXIF orientation as the browser shows it, and what a format can repeat bounded (a GIF's
first frame only, a JPEG's scans counted). Apart from images.py so that reading photographs in
Python (inpaint.py with a LiteRT model, the page) needs no TensorFlow.
"""

import tensorflow as tf

from glcic_tf.images import _SOS, MAX_JPEG_SCANS, TENSORFLOW_FORMAT_NAMES

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


# --- GIF: the first frame only. TensorFlow's decoder (giflib's DGifSlurp) unpacks every frame
# of a file, whatever it returns, so a 1.7 MB GIF of 1000 frames of 1000x1000 costs a thousand
# frames' time and memory (21.6 s, +850 MB); no header states the frame count. The file is cut
# after its first frame, walking its blocks (an extension or image descriptor, then sub-blocks
# of at most 255 bytes each) for a bounded number of steps.
_GIF_EXTENSION, _GIF_IMAGE, _GIF_TRAILER = 0x21, 0x2C, b"\x3b"


def _gif_steps(pixels) -> tf.Tensor:
    """The most blocks walked to the end of the first frame of a GIF of `pixels` (its screen):
    its LZW data takes at most 12 bits per pixel (1.5 bytes), in sub-blocks of 255 bytes, so
    pixels / 170, plus room for the extensions before it. A walk of 23 microseconds a step:
    0.25 s at most for a megapixel."""
    return tf.cast(pixels, tf.int64) // 170 + 4096


def first_gif_frame(encoded, pixels):
    """(bytes, walked): a GIF file's bytes cut after its first frame, with a trailer (the same
    first picture, in one frame's time and memory), and False if its first frame is larger than
    `pixels` (its screen: giflib would allocate and decode a frame of any size the descriptor
    states) or did not end within the steps that a GIF of `pixels` needs (refuse it then). Bytes
    that are no GIF, or no whole one, come back unchanged, with True: the decoder refuses them as
    it would."""
    data = tf.concat([tf.cast(tf.io.decode_raw(encoded, tf.uint8), tf.int64), tf.zeros([16], tf.int64)], 0)
    length = tf.cast(tf.strings.length(encoded), tf.int64)
    zero = tf.constant(0, tf.int64)

    def byte(position):
        return data[tf.minimum(tf.cast(position, tf.int64), length)]  # past the end: a 0

    def colour_table(flags):  # bytes of the colour table that a flags byte announces
        return tf.where(flags >= 128, 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), flags % 8), zero)

    def step(position, in_blocks, in_image, end, frame):
        value = byte(position)
        # In an extension's or image's sub-blocks: a size byte, then that many bytes; 0 ends them.
        blocks_end = in_blocks & tf.equal(value, 0)
        # At a block: an extension (introducer, label), an image (descriptor, colour table, LZW
        # code size) or anything else (the trailer, or garbage): stop there, without a cut.
        extension, image = tf.equal(value, _GIF_EXTENSION), tf.equal(value, _GIF_IMAGE)
        stopped = ~in_blocks & ~extension & ~image
        at_block = tf.where(extension, position + 2, position + 11 + colour_table(byte(position + 9)))
        end = tf.where(blocks_end & in_image, position + 1, tf.where(stopped, zero, end))
        # An image descriptor: separator, left, top, width, height (16-bit, little-endian), flags.
        frame_pixels = (byte(position + 5) + 256 * byte(position + 6)) * (byte(position + 7) + 256 * byte(position + 8))
        return (
            tf.where(in_blocks, position + 1 + value, at_block),
            tf.where(in_blocks, ~blocks_end, ~stopped),
            tf.where(in_blocks, in_image, image),
            end,
            tf.where(~in_blocks & image, frame_pixels, frame),
        )

    most = _gif_steps(pixels)
    start = tf.constant(13, tf.int64) + colour_table(byte(10))  # header, screen descriptor, global colour table
    position, _, _, end, frame = tf.while_loop(
        lambda position, in_blocks, in_image, end, frame: (end < 0) & (position < length),
        step,
        (start, tf.constant(False), tf.constant(False), tf.constant(-1, tf.int64), zero),
        maximum_iterations=tf.cast(tf.minimum(most, 2**31 - 1), tf.int32),
    )
    is_gif = tf.equal(tf.strings.substr(encoded, 0, 3), b"GIF")
    cut = tf.cond(is_gif & (end > 0), lambda: tf.strings.join([tf.strings.substr(encoded, zero, end), _GIF_TRAILER]), lambda: encoded)
    return cut, ~is_gif | (((end >= 0) | (position >= length)) & (frame <= tf.cast(pixels, tf.int64)))


def bounded_in_graph(encoded, what: str, announced_pixels=None):
    """(encoded, checks) to decode an image file's bytes in TensorFlow ops within the time and
    memory its header announces: a GIF cut to its first frame, a JPEG of more than
    MAX_JPEG_SCANS scans refused (the checks fail with InvalidArgumentError naming `what`)."""
    is_jpeg = tf.equal(tf.strings.substr(encoded, 0, 3), b"\xff\xd8\xff")
    scans = tf.size(tf.strings.split(tf.reshape(encoded, [1]), sep=_SOS).values, out_type=tf.int64) - 1
    if announced_pixels is None:  # the caller's own reading of the header, where it has one
        announced_pixels = tf.reduce_prod(announced_size(encoded))
    cut, walked = first_gif_frame(encoded, announced_pixels)
    checks = [
        tf.debugging.assert_less_equal(
            tf.where(is_jpeg, scans, 0), tf.constant(MAX_JPEG_SCANS, tf.int64), message=f"{what} is a JPEG of more than {MAX_JPEG_SCANS} scans, more than any encoder writes"
        ),
        tf.debugging.Assert(walked, [f"{what} is a GIF whose first frame is larger than its screen, or does not end where its size allows"]),
    ]
    return cut, checks


def decode_in_graph(encoded, channels: int, what: str, max_pixels: int):
    """An image file's bytes decoded in TensorFlow ops (H, W, channels) uint8, turned upright by
    its EXIF orientation as `decode_image` turns it, checked against `max_pixels` from the header
    before decoding and after (InvalidArgumentError naming `what`).

    Only files whose header states their size are decoded: the TENSORFLOW_FORMATS (what
    `announced_size` reads); anything else is refused before `tf.io.decode_image` sees it.
    """
    limit, message = tf.constant(max_pixels, tf.int64), f"{what} is larger than {max_pixels} pixels"
    announced = tf.reduce_prod(announced_size(encoded))
    checks = [
        tf.debugging.assert_positive(announced, message=f"{what} is not a {TENSORFLOW_FORMAT_NAMES} file"),
        tf.debugging.assert_less_equal(announced, limit, message=message),
    ]
    with tf.control_dependencies(checks):  # decode only after the header's checks passed
        bounded, bounds = bounded_in_graph(encoded, what, announced)
    with tf.control_dependencies(bounds):
        decoded = tf.io.decode_image(tf.identity(bounded), channels=channels, expand_animations=False)
    decoded = turn_upright(decoded, exif_orientation(encoded))  # as the page and inpaint.py read it
    shape = tf.shape(decoded, out_type=tf.int64)
    with tf.control_dependencies([tf.debugging.assert_less_equal(shape[0] * shape[1], limit, message=message)]):
        return tf.identity(decoded)


def gray(rgb) -> tf.Tensor:
    """(H, W, 3) uint8 RGB -> (H, W, 1) uint8 gray with OpenCV's weights and rounding
    (cv2.cvtColor), so that a mask decoded in TensorFlow ops has the holes `decode_mask` finds.
    A colour mask's grays near the threshold may still differ: OpenCV reads a PNG's gray through
    libpng's own conversion. Masks are black and white."""
    rgb = tf.cast(rgb, tf.int32)
    return tf.cast((rgb[..., :1] * 4899 + rgb[..., 1:2] * 9617 + rgb[..., 2:] * 1868 + 8192) // 16384, tf.uint8)
