"""Completing images of any size with any holes, post-processing, loading runs, reading files."""

import io
import struct
import zlib
import logging

import cv2
import keras
import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from glcic_tf import completers, image_ops, images, inference, photos
from glcic_tf.errors import UserError


@pytest.fixture(scope="module")
def inpainter(trained_run):
    network, mean_pixel, step = completers.load_completion_network(str(trained_run))
    assert step == 3 and len(mean_pixel) == 3
    return inference.Inpainter(network, mean_pixel)


@pytest.fixture(scope="module")
def photo(sample_folder):
    image = cv2.cvtColor(cv2.imread(str(sample_folder / "test" / "chelsea.png")), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image[:97, :130])  # a size that is not a multiple of 4


def _holes(shape):
    """Two holes, one touching the left and top borders."""
    return photos.mask_from_boxes(shape, [(0, 0, 30, 20), (60, 40, 25, 30)])


def test_any_size_keeps_its_size_and_the_pixels_outside_the_holes(inpainter, photo):
    mask = _holes(photo.shape[:2])
    image = photo[None].astype(np.float32) / 255
    completed = inpainter(image, mask[None]).numpy()
    assert completed.shape == (1, 97, 130, 3)
    outside = mask[..., 0] == 0
    np.testing.assert_array_equal(completed[0][outside], image[0][outside])
    assert not np.array_equal(completed[0][~outside], image[0][~outside])


@pytest.mark.parametrize("post", [False, True])
def test_uint8_inpainting_with_and_without_postprocessing(inpainter, photo, post):
    mask = _holes(photo.shape[:2])
    result = photos.inpaint(inpainter, photo, mask, post=post)
    assert result.shape == photo.shape and result.dtype == np.uint8
    outside = mask[..., 0] == 0
    np.testing.assert_array_equal(result[outside], photo[outside])


def _seam_step(image, mask):
    """Mean absolute difference between each hole pixel and its 4-neighbours outside the hole:
    how visible the holes' edges are."""
    hole = mask[..., 0] > 0
    image = image.astype(np.float32)
    steps = []
    for axis in (0, 1):
        for shift in (1, -1):
            neighbour_outside = np.roll(~hole, shift, axis=axis)
            neighbour = np.roll(image, shift, axis=axis)
            edge = hole & neighbour_outside
            edge &= ~_wrapped(hole.shape, axis, shift)
            steps.append(np.abs(image - neighbour)[edge])
    return np.concatenate(steps).mean()


def _wrapped(shape, axis, shift):
    """The row or column np.roll filled from the other side."""
    wrapped = np.zeros(shape, bool)
    index = 0 if shift == 1 else -1
    if axis == 0:
        wrapped[index, :] = True
    else:
        wrapped[:, index] = True
    return wrapped


def _flat_gray(image, mask):
    """A completer that fills every hole with mid-gray: a seam as visible as it gets."""
    return tf.ones_like(image) * 0.5


def test_postprocessing_changes_only_the_holes_and_smooths_the_seam(photo):
    mask = _holes(photo.shape[:2])
    plain = photos.inpaint(_flat_gray, photo, mask)
    post = photos.inpaint(_flat_gray, photo, mask, post=True)
    outside = mask[..., 0] == 0
    np.testing.assert_array_equal(post[outside], photo[outside])
    assert _seam_step(post, mask) < 0.5 * _seam_step(plain, mask), (_seam_step(post, mask), _seam_step(plain, mask))


def test_postprocessing_handles_a_hole_covering_a_whole_border_and_a_corner(photo):
    mask = photos.mask_from_boxes(photo.shape[:2], [(0, 0, 130, 10), (120, 80, 10, 17)])
    completed = np.where(mask > 0, np.full_like(photo, 128), photo)
    result = photos.postprocess(photo, completed, mask)
    assert result.shape == photo.shape and result.dtype == np.uint8
    outside = mask[..., 0] == 0
    np.testing.assert_array_equal(result[outside], photo[outside])
    assert _seam_step(result, mask) < 0.5 * _seam_step(completed, mask), (_seam_step(result, mask), _seam_step(completed, mask))


@pytest.mark.parametrize(
    "shape, boxes",
    [
        ((100, 100), [(50, 50, 1, 1)]),  # a tap of a one-pixel brush
        ((100, 100), [(50, 50, 2, 2)]),
        ((100, 100), [(50, 20, 1, 30)]),  # a thin line
        ((100, 100), [(20, 50, 40, 2)]),
        ((100, 100), [(0, 0, 1, 1), (99, 99, 1, 1)]),  # in the corners
        ((100, 100), [(0, 40, 100, 1)]),  # across the whole image
        ((1, 1), [(0, 0, 1, 1)]),  # a one-pixel image
        ((2, 7), [(3, 0, 1, 2)]),
    ],
)
def test_postprocessing_completes_holes_down_to_one_pixel(shape, boxes):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    mask = photos.mask_from_boxes(shape, boxes)
    completed = np.where(mask > 0, np.uint8(200), image)
    result = photos.postprocess(image, completed, mask)
    assert result.shape == image.shape and result.dtype == np.uint8
    np.testing.assert_array_equal(result[mask[..., 0] == 0], image[mask[..., 0] == 0])
    assert np.abs(result[mask[..., 0] > 0].astype(int) - image[mask[..., 0] > 0]).max() > 0  # the hole is blended in


def _gradients(image):
    gray = image.astype(np.float32).mean(axis=2)
    return np.diff(gray, axis=0)[:, :-1], np.diff(gray, axis=1)[:-1, :]


@pytest.mark.parametrize("hole", [(40, 30, 80, 60), (0, 50, 70, 40)], ids=["inside", "at_the_border"])
def test_postprocessing_keeps_the_completion_in_place(hole):
    # The completion has a sharp cross inside the hole; Poisson blending keeps its gradients, so
    # the cross must stay where the network put it, not a pixel off (OpenCV's seamlessClone
    # places its result by a centre whose convention has changed between versions).
    x, y, w, h = hole
    image = np.full((120, 160, 3), 90, np.uint8)
    image[:, :, 1] = np.linspace(40, 160, 160, dtype=np.uint8)  # a gentle ramp outside
    mask = photos.mask_from_boxes(image.shape[:2], [hole])
    completed = image.copy()
    completed[y : y + h, x : x + w] = 120
    completed[y + 2 * h // 5 : y + 3 * h // 5, x + 5 : x + w - 5] = 220
    completed[y + 5 : y + h - 5, x + 2 * w // 5 : x + 3 * w // 5] = 220
    result = photos.postprocess(image, completed, mask)
    np.testing.assert_array_equal(result[mask[..., 0] == 0], image[mask[..., 0] == 0])
    interior = (slice(y + 4, y + h - 4), slice(x + 4, x + w - 4))
    errors = {}
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            expected = _gradients(np.roll(completed, (dy, dx), axis=(0, 1)))
            errors[dy, dx] = sum(np.abs(r[interior] - e[interior]).mean() for r, e in zip(_gradients(result), expected))
    best = min(errors, key=errors.get)
    assert best == (0, 0), errors
    assert errors[0, 0] < 0.3 * min(value for shift, value in errors.items() if shift != (0, 0)), errors


@pytest.mark.parametrize("height,width", [(1, 1), (2, 3), (5, 4)])
def test_tiny_images_work(inpainter, height, width):
    image = np.random.default_rng(0).random((1, height, width, 3), dtype=np.float32)
    mask = np.zeros((1, height, width, 1), np.float32)
    mask[0, 0, 0] = 1
    completed = inpainter(image, mask).numpy()
    assert completed.shape == image.shape and np.isfinite(completed).all()
    np.testing.assert_array_equal(completed[mask[..., 0] == 0], image[mask[..., 0] == 0])


def test_a_new_size_does_not_retrace(inpainter):
    for height, width in [(64, 64), (50, 77), (128, 96)]:
        inpainter(tf.zeros((1, height, width, 3)), tf.zeros((1, height, width, 1)))
    assert inpainter.__call__.experimental_get_tracing_count() == 1


def test_an_empty_mask_returns_the_image_unchanged(inpainter, photo):
    result = photos.inpaint(inpainter, photo, np.zeros((*photo.shape[:2], 1), np.float32))
    np.testing.assert_array_equal(result, photo)


def test_loading_a_checkpoint_path_and_bad_paths(trained_run, tmp_path):
    network, _, step = completers.load_completion_network(str(trained_run / "ckpt-3"))
    assert step == 3 and network.output_shape == (None, None, None, 3)
    with pytest.raises(UserError, match="neither a run folder nor a checkpoint"):
        completers.load_completion_network(str(tmp_path / "nothing"))
    with pytest.raises(UserError, match="holds no checkpoint"):
        completers.load_completion_network(str(tmp_path))


def test_a_checkpoint_of_another_architecture_is_refused_not_loaded_half(trained_run, tmp_path):
    # Same variable shapes, one layer fewer: expect_partial() alone would load part of it silently.
    filters = completers.load_completion_network(str(trained_run))[0].get_layer("conv1").filters
    inputs = keras.Input((None, None, 4))
    other = keras.Model(inputs, keras.layers.Conv2D(filters, 5, padding="same", use_bias=False, name="conv1")(inputs))
    tf.train.Checkpoint(completion=other).write(str(tmp_path / "other" / "ckpt-1"))
    (tmp_path / "other" / "config.json").write_text((trained_run / "config.json").read_text())
    with pytest.raises(UserError, match="does not hold this completion network's weights"):
        completers.load_completion_network(str(tmp_path / "other" / "ckpt-1"))


def test_reading_masks_and_images(tmp_path, caplog):
    cv2.imwrite(str(tmp_path / "soft.png"), np.array([[0, 100], [200, 255]], np.uint8))
    with caplog.at_level(logging.WARNING):
        mask = images.read_mask(str(tmp_path / "soft.png"), (2, 2))
    np.testing.assert_array_equal(mask[..., 0], [[0, 0], [1, 1]])
    assert "not binary" in caplog.text
    with pytest.raises(UserError, match="is 2x2 but the image is 3x2"):
        images.read_mask(str(tmp_path / "soft.png"), (2, 3))
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(UserError, match="not a readable image"):
        images.read_image(str(tmp_path / "junk.png"))
    cv2.imwrite(str(tmp_path / "big.png"), np.zeros((300, 400, 3), np.uint8))
    with pytest.raises(UserError, match="is 400x300, over the limit of 100000 pixels"):
        images.read_image(str(tmp_path / "big.png"), max_pixels=100_000)
    gray = images.read_image(str(tmp_path / "soft.png"))
    assert gray.shape == (2, 2, 3)


def test_mask_from_boxes_uses_x_y_width_height_and_clips():
    mask = photos.mask_from_boxes((4, 5), [(3, 1, 4, 2)])[..., 0]
    expected = np.zeros((4, 5))
    expected[1:3, 3:5] = 1
    np.testing.assert_array_equal(mask, expected)


def _gif(image):
    buffer = io.BytesIO()
    PIL.Image.fromarray(image).save(buffer, format="GIF")
    return buffer.getvalue()


def _vp8x(width, height):
    """The start of an extended WebP file: RIFF header and a VP8X chunk with the canvas size."""
    chunk = b"VP8X" + (10).to_bytes(4, "little") + b"\0" * 4 + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + (4 + len(chunk)).to_bytes(4, "little") + b"WEBP" + chunk


@pytest.mark.parametrize(
    "name, encode",
    [
        ("png", lambda a: cv2.imencode(".png", a)[1].tobytes()),
        ("jpeg", lambda a: cv2.imencode(".jpg", a)[1].tobytes()),
        ("bmp", lambda a: cv2.imencode(".bmp", a)[1].tobytes()),
        ("gif", _gif),
        ("webp_lossy", lambda a: cv2.imencode(".webp", a, [cv2.IMWRITE_WEBP_QUALITY, 80])[1].tobytes()),
        ("webp_lossless", lambda a: cv2.imencode(".webp", a, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()),
    ],
)
def test_announced_size_reads_every_format_the_bytes_signature_decodes(name, encode):
    image = np.random.default_rng(1).integers(0, 256, (37, 301, 3), dtype=np.uint8)
    assert image_ops.announced_size(tf.constant(encode(image))).numpy().tolist() == [301, 37]


def test_announced_size_reads_an_extended_webp_header():
    assert image_ops.announced_size(tf.constant(_vp8x(70000, 3))).numpy().tolist() == [70000, 3]


def _top_down_bmp(image):
    """A 24-bit BMP whose rows are stored top-down (negative height), as some tools write them."""
    height, width = image.shape[:2]
    row = ((width * 3 + 3) // 4) * 4
    pixels = b"".join(image[y, :, ::-1].tobytes().ljust(row, b"\0") for y in range(height))
    info = struct.pack("<IiiHHIIiiII", 40, width, -height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info)) + info + pixels


def _os2_bmp(image):
    """A 24-bit OS/2 1.x BMP (a 12-byte BITMAPCOREHEADER: 16-bit width and height), bottom-up."""
    height, width = image.shape[:2]
    row = ((width * 3 + 3) // 4) * 4
    pixels = b"".join(image[y, :, ::-1].tobytes().ljust(row, b"\0") for y in reversed(range(height)))
    core = struct.pack("<IHHHH", 12, width, height, 1, 24)
    return b"BM" + struct.pack("<IHHI", 14 + len(core) + len(pixels), 0, 0, 14 + len(core)) + core + pixels


@pytest.mark.parametrize("encode", [_top_down_bmp, _os2_bmp], ids=["top_down", "os2"])
def test_top_down_and_os2_bmps_are_read_as_they_are(encode):
    image = np.random.default_rng(2).integers(0, 256, (5, 8, 3), dtype=np.uint8)
    assert image_ops.announced_size(tf.constant(encode(image))).numpy().tolist() == [8, 5]
    np.testing.assert_array_equal(images.decode_image(encode(image)), image)


def _hostile_files():
    """Files no path may decode or crash on, by name: other formats and broken allowed ones."""
    rng = np.random.default_rng(3)
    jpeg = cv2.imencode(".jpg", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))[1].tobytes()
    files = {
        "radiance_hdr": cv2.imencode(".hdr", np.ones((5, 8, 3), np.float32))[1].tobytes(),  # OpenCV decodes it; no header reader sizes it
        "ppm": cv2.imencode(".ppm", np.zeros((5, 8, 3), np.uint8))[1].tobytes(),
        "jpeg_marker_then_garbage": b"\xff\xd8\xff" + rng.bytes(500),
        "png_signature_then_zeros": b"\x89PNG\r\n\x1a\n" + bytes(50),
    }
    files.update({f"jpeg_cut_at_{cut}": jpeg[:cut] for cut in (3, 20, 100, 150, 200)})
    return files


@pytest.mark.parametrize("name", sorted(_hostile_files()))
def test_only_readable_files_of_the_allowed_formats_are_decoded(name):
    with pytest.raises(UserError, match=r"^photo.x is not a readable image file \(JPEG, PNG, WebP, GIF, BMP or TIFF\)$"):
        images.decode_image(_hostile_files()[name], "photo.x")
    with pytest.raises(UserError, match="not a readable image file"):
        images.decode_mask(_hostile_files()[name], (5, 8), "mask.x")


@pytest.mark.parametrize("failure", [AttributeError, NotImplementedError, struct.error, MemoryError])
def test_whatever_a_header_reader_raises_is_not_a_readable_image(monkeypatch, failure):
    # Pillow's readers raised AttributeError (SPIDER) and NotImplementedError (DDS) in a fuzz.
    def broken_reader(*args):
        raise failure("reader failed")

    images.header_size(io.BytesIO(b""))  # the plugins are registered before patching
    monkeypatch.setitem(PIL.Image.OPEN, "PNG", (broken_reader, PIL.Image.OPEN["PNG"][1]))
    with pytest.raises(UserError, match="photo.png is not a readable image file"):
        images.decode_image(cv2.imencode(".png", np.zeros((5, 8, 3), np.uint8))[1].tobytes(), "photo.png")


def _png_announcing(width, height):
    """A small PNG file whose header says it is width x height (its IHDR rewritten, CRC and all)."""
    png = bytearray(cv2.imencode(".png", np.zeros((2, 2, 3), np.uint8))[1].tobytes())
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def test_reading_a_header_leaves_pillows_global_bomb_limit_alone(monkeypatch):
    # The page decodes in several threads at once: switching the process-wide limit off and on
    # around each read left it off for everyone whenever two reads overlapped.
    seen = []
    png_reader, accept = PIL.Image.OPEN["PNG"]

    def watching_reader(*args):
        seen.append(PIL.Image.MAX_IMAGE_PIXELS)
        return png_reader(*args)

    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 12345)
    monkeypatch.setitem(PIL.Image.OPEN, "PNG", (watching_reader, accept))
    huge = _png_announcing(30000, 20000)
    assert images.header_size(io.BytesIO(huge)) == (30000, 20000)  # far over Pillow's own limit: the caller judges
    with pytest.raises(UserError, match="is 30000x20000, over the limit of 100000000 pixels"):
        images.decode_image(huge)
    assert seen == [12345, 12345] and PIL.Image.MAX_IMAGE_PIXELS == 12345


def test_a_run_folders_network_takes_what_max_network_pixels_says(trained_run):
    image, mask = tf.zeros((1, 40, 40, 3)), tf.ones((1, 40, 40, 1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="larger than 1000 pixels"):
        completers.load_completer(str(trained_run), "float32", max_network_pixels=1000)(image, mask)
    # Above the default too: a run folder's network takes what --max_network_pixels says, 2048 x 2048 or more.
    assert completers.load_completer(str(trained_run), "float32", max_network_pixels=5_000_000).max_network_pixels == 5_000_000
    assert completers.load_completer(str(trained_run), "float32")(image, mask).shape == (1, 40, 40, 3)


def _turned_sideways(file_format):
    """An 8x4 picture with a red top-left pixel, stored with EXIF orientation 6 (turn 90 degrees clockwise to show)."""
    image = np.zeros((4, 8, 3), np.uint8)
    image[0, 0] = (255, 0, 0)
    buffer, exif = io.BytesIO(), PIL.Image.Exif()
    exif[0x0112] = 6
    options = {"tiffinfo": {0x0112: 6}} if file_format == "TIFF" else {"exif": exif.tobytes(), "lossless": True} if file_format == "WEBP" else {"exif": exif.tobytes()}
    PIL.Image.fromarray(image).save(buffer, file_format, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("file_format, upright", [("JPEG", True), ("PNG", True), ("WEBP", False), ("TIFF", True)])
def test_exif_orientation_is_applied_as_the_browser_shows_the_photo(file_format, upright):
    # Chromium 150 shows a JPEG or PNG with orientation 6 as 4x8 and a WebP as 8x4 (stored);
    # it does not open TIFF, which is turned as TIFF viewers do. OpenCV alone turned the WebP.
    image = images.decode_image(_turned_sideways(file_format))
    mask = images.decode_mask(_turned_sideways(file_format), image.shape[:2])
    assert image.shape[:2] == ((8, 4) if upright else (4, 8)) and mask.shape[:2] == image.shape[:2]
    red = tuple(np.argwhere(image[..., 0] > 128)[0]) if file_format != "JPEG" else tuple(np.unravel_index(image[..., 0].argmax(), image.shape[:2]))
    assert red == ((0, 3) if upright else (0, 0)), red  # turned clockwise: the top-left corner goes top-right


def test_write_image_refuses_a_format_it_cannot_write_and_leaves_nothing(tmp_path):
    image = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(UserError, match="cannot write .*x.xyz: name it .png or .jpg"):
        images.write_image(str(tmp_path / "x.xyz"), image)
    images.write_image(str(tmp_path / "plain"), image)  # no extension: PNG
    assert sorted(path.name for path in tmp_path.iterdir()) == ["plain"]
    assert cv2.imread(str(tmp_path / "plain")).shape == (4, 5, 3)


@pytest.mark.parametrize(
    "message, expected",
    [
        ("assertion failed: [image is larger than 4 pixels] [Condition x <= y did not hold]", "image is larger than 4 pixels"),
        ("Graph execution error:\n\nDetected at node decode defined at (most recent call last):\n<stack traces unavailable>\n"
         "Invalid PNG data, size 57\n\t [[{{node DecodePng}}]] [Op:__inference_f_12]", "Invalid PNG data, size 57"),
        ("{{function_node __inference_signature_wrapper_3131}} input depth must be evenly divisible\n\t [[{{node Relu_1}}]]", "input depth must be evenly divisible"),
    ],
)
def test_a_tensorflow_error_is_told_by_what_failed_not_where(message, expected):
    assert photos.failed_check_message(message) == expected
