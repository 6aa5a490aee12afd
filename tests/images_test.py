"""Every decoder bounded beyond what a file's header announces: GIF frames, JPEG scans, on the
Python path (the page, inpaint.py) and in TensorFlow ops (the export's bytes signature, training)."""

import io
import struct

import crafted_files
import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from glcic_tf import data, image_ops, images
from glcic_tf.errors import ImageTooLarge, UserError

decode_in_graph = tf.function(lambda encoded: image_ops.decode_in_graph(encoded, 3, "the image", images.MAX_PIXELS))
first_gif_frame = tf.function(lambda encoded, pixels: image_ops.first_gif_frame(encoded, pixels))


def _gif(pictures, **options):
    encoded = io.BytesIO()
    pictures[0].save(encoded, format="GIF", save_all=len(pictures) > 1, append_images=pictures[1:], **options)
    return encoded.getvalue()


def _noise(height, width, seed=0):
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "name",
    ["noise", "frames with a comment, a loop and interlacing", "gray with transparency", "one bit", "local colour tables"],
)
def test_a_gif_cut_to_its_first_frame_decodes_to_the_same_picture(name):
    pictures = {
        "noise": lambda: _gif([_noise(300, 200).quantize(256)]),
        "frames with a comment, a loop and interlacing": lambda: _gif([_noise(37, 53, seed) for seed in range(3)], comment=b"hi", loop=0, duration=50, interlace=True),
        "gray with transparency": lambda: _gif([_noise(20, 30).convert("L")], transparency=0),
        "one bit": lambda: _gif([_noise(20, 30).convert("1")]),
        "local colour tables": lambda: _gif([_noise(16, 16, 0).quantize(4), _noise(16, 16, 1).quantize(8)], optimize=False),
    }[name]()
    whole = tf.io.decode_image(pictures, channels=3, expand_animations=False)
    cut, walked = first_gif_frame(tf.constant(pictures), tf.constant(whole.shape[0] * whole.shape[1], tf.int64))
    assert bool(walked)
    np.testing.assert_array_equal(tf.io.decode_image(cut, channels=3, expand_animations=False), whole)
    np.testing.assert_array_equal(decode_in_graph(tf.constant(pictures)), whole)


def test_a_gif_of_a_thousand_frames_is_decoded_from_its_first_frame_alone():
    animation = crafted_files.gif_of_frames(200, 150, 1000)
    cut, walked = first_gif_frame(tf.constant(animation), tf.constant(200 * 150, tf.int64))
    assert bool(walked)
    assert len(cut.numpy()) < len(animation) / 500  # one frame of the thousand is decoded
    first = decode_in_graph(tf.constant(animation)).numpy()
    assert first.shape == (150, 200, 3)
    np.testing.assert_array_equal(first, images.decode_image(animation))  # what OpenCV reads: the first frame


def test_a_gif_whose_first_frame_never_ends_is_refused_not_walked_to_its_end():
    # A 1000x1000 screen, then one extension of a million one-byte sub-blocks: no frame at all.
    hostile = b"GIF89a" + struct.pack("<HHBBB", 1000, 1000, 0, 0, 0) + b"\x21\xfe" + b"\x01x" * 1_000_000 + b"\x00\x3b"
    cut, walked = first_gif_frame(tf.constant(hostile), tf.constant(10**6, tf.int64))
    assert not bool(walked) and cut.numpy() == hostile
    with pytest.raises(tf.errors.InvalidArgumentError, match="the image is a GIF whose first frame is larger than its screen, or does not end where its size allows"):
        decode_in_graph(tf.constant(hostile))


def test_a_jpeg_of_thousands_of_scans_is_refused_on_every_path_and_a_progressive_one_decodes():
    hostile = crafted_files.jpeg_of_repeated_scans(400, 300, 1000)
    assert images.jpeg_scans(hostile) > images.MAX_JPEG_SCANS
    with pytest.raises(UserError, match=f"^the image is a JPEG of {images.jpeg_scans(hostile)} scans, more than the 100 any encoder writes$"):
        images.decode_image(hostile)
    with pytest.raises(tf.errors.InvalidArgumentError, match="the image is a JPEG of more than 100 scans"):
        decode_in_graph(tf.constant(hostile))
    with pytest.raises(tf.errors.InvalidArgumentError, match="the training image is a JPEG of more than 100 scans"):
        data.decode_for_training(tf.constant(hostile), 64)
    progressive = crafted_files.jpeg_of_repeated_scans(400, 300, 1)  # as the encoder wrote it
    assert 5 <= images.jpeg_scans(progressive) <= images.MAX_JPEG_SCANS
    assert images.decode_image(progressive).shape == (300, 400, 3)
    assert decode_in_graph(tf.constant(progressive)).shape == (300, 400, 3)
    assert data.decode_for_training(tf.constant(progressive), 64).shape[2] == 3


def test_a_tiff_of_tiles_larger_than_its_picture_is_refused_before_decoding():
    assert (images.decode_image(crafted_files.tiled_tiff(100, 70, 32)) == 200).all()  # tiles as encoders write them
    assert images.decode_image(crafted_files.tiled_tiff(8, 8, 256)).shape == (8, 8, 3)  # a small picture in one usual tile
    with pytest.raises(UserError, match="^the image is a 100x100 TIFF of 4096x4096 tiles, larger than the picture$"):
        images.decode_image(crafted_files.tiled_tiff(100, 100, 4096))  # OpenCV would fill a 64 MB tile buffer (up to 1 GB)


@pytest.mark.parametrize("size", [(1, 1), (7, 13), (33, 17), (3, 100)])
def test_a_png_holding_more_image_data_than_its_picture_is_refused_and_interlaced_ones_are_read(size):
    picture = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    np.testing.assert_array_equal(images.decode_image(crafted_files.interlaced_png(picture)), picture)  # every Adam7 pass counted
    for mode in ("1", "L", "P", "LA", "RGBA", "I;16"):  # what encoders write is never refused
        encoded = io.BytesIO()
        PIL.Image.fromarray(picture).convert(mode).save(encoded, format="PNG")
        assert images.decode_image(encoded.getvalue()).shape == (*size, 3), mode
    with pytest.raises(UserError, match=f"^the image is a {size[1]}x{size[0]} PNG holding more image data than its picture$"):
        images.decode_image(crafted_files.png_inflating_to(size[1], size[0], 100))  # 100 MB of zeros libpng would inflate


def test_a_gif_whose_first_frame_is_larger_than_its_screen_is_refused_before_decoding():
    hostile = crafted_files.gif_of_a_frame_larger_than_its_screen(10, 3000)  # giflib would allocate 9 megapixels
    cut, walked = first_gif_frame(tf.constant(hostile), tf.constant(100, tf.int64))
    assert not bool(walked)
    with pytest.raises(tf.errors.InvalidArgumentError, match="the image is a GIF whose first frame is larger than its screen"):
        decode_in_graph(tf.constant(hostile))
    with pytest.raises(UserError):
        images.decode_image(hostile)  # OpenCV's reader refuses it too


def test_masks_decoded_in_tensorflow_ops_have_the_holes_opencv_finds_in_a_bmp():
    colours = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    colours[0, :2] = [[0, 168, 255], [255, 168, 0]]  # grays of 127.7 and 174.8: rounding decides the first
    encoded = io.BytesIO()
    PIL.Image.fromarray(colours).save(encoded, format="BMP")
    opencv = images.decode_mask(encoded.getvalue(), colours.shape[:2])[..., 0] > 0
    tensorflow = image_ops.gray(tf.io.decode_image(encoded.getvalue(), channels=3)).numpy()[..., 0] >= 128
    np.testing.assert_array_equal(tensorflow, opencv)


def test_a_file_larger_than_any_image_of_the_limit_is_refused_before_it_is_read(tmp_path):
    video = tmp_path / "video.jpg"
    with open(video, "wb") as file:
        file.truncate(images.max_file_bytes(1000) + 1)  # sparse: nothing is written, a read would take it all
    with pytest.raises(ImageTooLarge, match=f"^image {video} is 64 MB, more than an image of 1000 pixels takes"):
        images.read_image(str(video), max_pixels=1000)
