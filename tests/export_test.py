"""The exported SavedModel against the Keras model, its signatures, and export.py's folder rules."""

import io
import os
import subprocess
import sys
from pathlib import Path

import cv2
import in_process
import PIL.Image
import PIL.ImageOps
import numpy as np
import pytest
import tensorflow as tf

from glcic_tf import completers, export_lib, image_ops, images, inference
from glcic_tf.errors import UserError


@pytest.fixture(scope="module")
def run_network(trained_run):
    return completers.load_completion_network(str(trained_run))


@pytest.fixture(scope="module")
def exported(run_network, tmp_path_factory):
    network, mean_pixel, _ = run_network
    base = tmp_path_factory.mktemp("export")
    return export_lib.export_saved_model(network, mean_pixel, str(base), 3)


def _inputs(height, width, seed):
    rng = np.random.default_rng(seed)
    image = rng.random((2, height, width, 3), dtype=np.float32)
    mask = np.zeros((2, height, width, 1), np.float32)
    mask[:, 5:25, 10:30] = 1
    return image, mask


@pytest.mark.parametrize("height,width", [(97, 130), (64, 48)])
def test_saved_model_matches_the_keras_model(run_network, exported, height, width):
    network, mean_pixel, _ = run_network
    image, mask = _inputs(height, width, seed=height)
    served = tf.saved_model.load(exported).signatures["serving_default"](image=tf.constant(image), mask=tf.constant(mask))
    eager = inference.Inpainter(network, mean_pixel, fold=False)(image, mask)  # the Keras network as trained
    np.testing.assert_allclose(served["inpainted"].numpy(), eager.numpy(), atol=1e-5)


def _op_types(signature):
    graph = signature.graph.as_graph_def()
    return {node.op for node in graph.node} | {node.op for function in graph.library.function for node in function.node_def}


@pytest.mark.slow
def test_an_export_carries_nothing_of_the_machine_that_made_it(run_network, tmp_path, monkeypatch):
    """Exported where TensorFlow runs oneDNN, where it runs Eigen (AVX2-only processors) and
    with a GPU visible: the same graph (sub-pixel upsampling, no transposed convolution) and
    the same image, to the bit."""
    network, mean_pixel, _ = run_network
    image, mask = _inputs(40, 36, seed=5)
    real_devices = tf.config.list_physical_devices
    made = {}
    for machine, onednn, gpu in (("oneDNN", True, False), ("Eigen", False, False), ("GPU", False, True)):
        monkeypatch.setattr(export_lib.Inpainter.__init__.__globals__["folded"].cpu, "onednn_on", lambda onednn=onednn: onednn)
        monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None, gpu=gpu: ["GPU:0"] if gpu and kind == "GPU" else real_devices(kind))
        path = export_lib.export_saved_model(network, mean_pixel, str(tmp_path / machine), 1)
        monkeypatch.undo()
        signature = tf.saved_model.load(path).signatures["serving_default"]
        made[machine] = (_op_types(signature), signature(image=tf.constant(image), mask=tf.constant(mask))["inpainted"].numpy())
    for machine, (ops, output) in made.items():
        assert "Conv2DBackpropInput" not in ops and "Conv2D" in ops, machine
        assert ops == made["oneDNN"][0], machine
        np.testing.assert_array_equal(output, made["oneDNN"][1])


def test_saved_model_holds_the_folded_weights_only(exported):
    # 17 rows of Table 1, a kernel and a bias each: no BatchNorm statistics, no second copy.
    saved = [shape for name, shape in tf.train.list_variables(os.path.join(exported, "variables", "variables")) if "VARIABLE_VALUE" in name]
    assert len(saved) == 2 * 17 and sum(len(shape) == 1 for shape in saved) == 17 and sum(len(shape) == 4 for shape in saved) == 17


def test_signatures_have_the_documented_names_types_and_shapes(exported):
    signatures = tf.saved_model.load(exported).signatures
    assert set(signatures) == {"serving_default", "inpaint_bytes"}
    _, inputs = signatures["serving_default"].structured_input_signature
    assert {name: (spec.dtype, spec.shape.as_list()) for name, spec in inputs.items()} == {
        "image": (tf.float32, [None, None, None, 3]),
        "mask": (tf.float32, [None, None, None, 1]),
    }
    outputs = signatures["serving_default"].structured_outputs
    assert {name: (spec.dtype, spec.shape.as_list()) for name, spec in outputs.items()} == {"inpainted": (tf.float32, [None, None, None, 3])}
    _, inputs = signatures["inpaint_bytes"].structured_input_signature
    assert {name: (spec.dtype, spec.shape.as_list()) for name, spec in inputs.items()} == {
        "image_bytes": (tf.string, [None]),
        "mask_bytes": (tf.string, [None]),
    }
    assert list(signatures["inpaint_bytes"].structured_outputs) == ["inpainted_bytes"]


def test_bytes_signature_round_trips_a_png(exported, sample_folder):
    photo = tf.io.decode_png(tf.io.read_file(str(sample_folder / "test" / "chelsea.png")), channels=3)[:97, :130]
    mask = np.zeros((97, 130, 1), np.uint8)
    mask[20:50, 30:70] = 255
    reply = tf.saved_model.load(exported).signatures["inpaint_bytes"](
        image_bytes=tf.stack([tf.io.encode_png(photo)]), mask_bytes=tf.stack([tf.io.encode_png(mask)])
    )["inpainted_bytes"]
    result = tf.io.decode_png(reply[0]).numpy()
    assert result.shape == (97, 130, 3)
    outside = mask[..., 0] == 0
    np.testing.assert_array_equal(result[outside], photo.numpy()[outside])
    assert not np.array_equal(result[~outside], photo.numpy()[~outside])


def test_saved_model_cli_shows_both_signatures(exported):
    cli = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run([str(cli), "show", "--dir", exported, "--all"], capture_output=True, text=True, check=True).stdout
    assert "signature_def['serving_default']" in shown and "signature_def['inpaint_bytes']" in shown
    assert "outputs['inpainted'] tensor_info" in shown and "outputs['inpainted_bytes'] tensor_info" in shown


@pytest.mark.slow
def test_a_version_is_never_replaced_without_overwrite_and_no_partial_folder_remains(run_network, tmp_path):
    network, mean_pixel, _ = run_network
    export_lib.export_saved_model(network, mean_pixel, str(tmp_path), 1)
    with pytest.raises(UserError, match="exists already"):
        export_lib.export_saved_model(network, mean_pixel, str(tmp_path), 1)
    export_lib.export_saved_model(network, mean_pixel, str(tmp_path), 1, overwrite=True)
    assert os.listdir(tmp_path) == ["1"]


def test_the_export_command_bounds_requests_by_max_request_pixels_and_its_old_name(trained_run, tmp_path):
    image, mask = tf.zeros((1, 50, 50, 3)), tf.ones((1, 50, 50, 1))
    for name, flag in (("new", "--max_request_pixels=1600"), ("old", "--max_pixels=1600")):  # the old name says its new one
        done = in_process.run("export", f"--model_dir={trained_run}", f"--export_dir={tmp_path / name}", flag)
        assert done.returncode == 0, done.stderr[-2000:]
        assert ("--max_pixels is deprecated, its new name is --max_request_pixels" in done.stderr) == flag.startswith("--max_pixels")
        signature = tf.saved_model.load(str(tmp_path / name / "3")).signatures["serving_default"]
        with pytest.raises(tf.errors.InvalidArgumentError, match="larger than 1600 pixels"):
            signature(image=image, mask=mask)


def test_export_command_versions_by_training_step(trained_run, tmp_path):
    done = in_process.run("export", f"--model_dir={trained_run}", f"--export_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "3" / "saved_model.pb").exists() and f"to {tmp_path / '3'}" in done.stdout
    again = in_process.run("export", f"--model_dir={trained_run}", f"--export_dir={tmp_path}")
    assert again.returncode == 1 and again.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / '3'} exists already: choose another --version or pass --overwrite"
    )


def test_bfloat16_is_refused_for_a_saved_model_with_a_one_line_error(exported):
    with pytest.raises(UserError, match="runs as exported"):
        completers.load_completer(exported, "bfloat16")
    assert completers.load_completer(exported, "auto") is not None  # auto: the export's float32


def test_bytes_signature_reads_a_top_down_bmp_and_refuses_files_whose_size_no_header_states(exported, sample_folder):
    from inference_test import _top_down_bmp  # noqa: PLC0415

    photo = tf.io.decode_png(tf.io.read_file(str(sample_folder / "test" / "chelsea.png")), channels=3)[:40, :56].numpy()
    mask = np.zeros((40, 56, 1), np.uint8)
    mask[10:20, 15:30] = 255
    signature = tf.saved_model.load(exported).signatures["inpaint_bytes"]
    reply = signature(image_bytes=tf.constant([_top_down_bmp(photo)]), mask_bytes=tf.constant([tf.io.encode_png(mask).numpy()]))
    result = tf.io.decode_png(reply["inpainted_bytes"][0]).numpy()
    np.testing.assert_array_equal(result[mask[..., 0] == 0], photo[mask[..., 0] == 0])  # read the right way up
    hdr = cv2.imencode(".hdr", np.ones((40, 56, 3), np.float32))[1].tobytes()
    with pytest.raises(tf.errors.InvalidArgumentError, match="image is not a PNG, JPEG, GIF, BMP or WebP file"):
        signature(image_bytes=tf.constant([hdr]), mask_bytes=tf.constant([tf.io.encode_png(mask).numpy()]))


@pytest.mark.slow
def test_both_signatures_bound_the_pixels_of_a_request_not_of_each_image(run_network, tmp_path):
    network, mean_pixel, _ = run_network
    signatures = tf.saved_model.load(export_lib.export_saved_model(network, mean_pixel, str(tmp_path), 1, max_request_pixels=3 * 40 * 40)).signatures
    image, mask = np.full((4, 40, 40, 3), 0.5, np.float32), np.ones((4, 40, 40, 1), np.float32)
    assert signatures["serving_default"](image=tf.constant(image[:3]), mask=tf.constant(mask[:3]))["inpainted"].shape == (3, 40, 40, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"the batch is larger than 4800 pixels in all"):
        signatures["serving_default"](image=tf.constant(image), mask=tf.constant(mask))  # four images of 1600 pixels
    photo_png = tf.io.encode_png(tf.fill([40, 40, 3], tf.constant(128, tf.uint8))).numpy()
    mask_png = tf.io.encode_png(tf.fill([40, 40, 1], tf.constant(255, tf.uint8))).numpy()
    by_bytes = signatures["inpaint_bytes"]
    assert by_bytes(image_bytes=tf.constant([photo_png] * 3), mask_bytes=tf.constant([mask_png] * 3))["inpainted_bytes"].shape == (3,)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image is larger than 4800 pixels \(counting every image of the request\)"):
        by_bytes(image_bytes=tf.constant([photo_png] * 4), mask_bytes=tf.constant([mask_png] * 4))
    small_png = tf.io.encode_png(tf.fill([4, 4, 3], tf.constant(128, tf.uint8))).numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"mask is larger than 4800 pixels \(counting every mask of the request\)"):
        by_bytes(image_bytes=tf.constant([small_png] * 4), mask_bytes=tf.constant([mask_png] * 4))  # each mask's size is refused later; the sum first
    with pytest.raises(tf.errors.InvalidArgumentError, match="one mask per image"):
        by_bytes(image_bytes=tf.constant([photo_png] * 2), mask_bytes=tf.constant([mask_png]))


@pytest.mark.parametrize("file_format", ["JPEG", "PNG", "WEBP"])
def test_bytes_signature_turns_photographs_by_their_exif_orientation_as_the_page_does(exported, file_format):
    # One rule for every path, the browser's (images.AS_STORED): a JPEG or PNG with EXIF
    # orientation 6 is completed upright (8x4 -> 4 wide, 8 high), a WebP as stored.
    from inference_test import _turned_sideways  # noqa: PLC0415

    photo = _turned_sideways(file_format)
    local = images.decode_image(photo)  # what inpaint.py and the page complete
    mask = np.zeros((*local.shape[:2], 1), np.uint8)
    mask[0, 0] = 255
    signature = tf.saved_model.load(exported).signatures["inpaint_bytes"]
    reply = signature(image_bytes=tf.constant([photo]), mask_bytes=tf.constant([tf.io.encode_png(mask).numpy()]))
    result = tf.io.decode_png(reply["inpainted_bytes"][0]).numpy()
    assert result.shape == local.shape
    outside = mask[..., 0] == 0
    assert np.abs(result[outside].astype(int) - local[outside].astype(int)).max() <= (8 if file_format == "JPEG" else 0)


def test_exif_orientation_in_tensorflow_ops_turns_as_pillow_does():
    picture = np.random.default_rng(0).integers(0, 255, (3, 5, 3), dtype=np.uint8)
    for orientation in range(1, 9):
        for file_format in ("PNG", "JPEG"):
            buffer, exif = io.BytesIO(), PIL.Image.Exif()
            exif[0x0112] = orientation
            PIL.Image.fromarray(picture).save(buffer, file_format, exif=exif.tobytes(), **({"quality": 100} if file_format == "JPEG" else {}))
            encoded = buffer.getvalue()
            assert int(image_ops.exif_orientation(tf.constant(encoded))) == orientation, (file_format, orientation)
            want = np.asarray(PIL.ImageOps.exif_transpose(PIL.Image.open(io.BytesIO(encoded))))
            got = image_ops.turn_upright(tf.io.decode_image(encoded, channels=3), orientation).numpy()
            assert got.shape == want.shape and np.abs(got.astype(int) - want.astype(int)).max() <= (12 if file_format == "JPEG" else 0)
    plain = tf.io.encode_png(tf.constant(picture)).numpy()
    assert int(image_ops.exif_orientation(tf.constant(plain))) == 1 and int(image_ops.exif_orientation(tf.constant(b""))) == 1


def _jpeg_with_segment(marker, payload):
    """A small real JPEG with one more segment (`marker`, e.g. b"\xff\xe1" for APP1) right after its start."""
    jpeg = cv2.imencode(".jpg", np.zeros((8, 16, 3), np.uint8))[1].tobytes()
    return jpeg[:2] + marker + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def _exif(entries, little_endian=True):
    """EXIF data (b"Exif\0\0" + TIFF) with IFD0 holding `entries`: (tag, type, count, value) each."""
    order = "little" if little_endian else "big"
    ifd = len(entries).to_bytes(2, order) + b"".join(
        tag.to_bytes(2, order) + kind.to_bytes(2, order) + count.to_bytes(4, order) + value.to_bytes(2, order) + b"\0\0" for tag, kind, count, value in entries
    )
    header = (b"II*\0" if little_endian else b"MM\0*") + (8).to_bytes(4, order)
    return b"Exif\0\0" + header + ifd + b"\0\0\0\0"


def test_exif_orientation_is_read_as_opencv_and_pillow_read_it():
    orientation = lambda encoded: int(image_ops.exif_orientation(tf.constant(encoded)))  # noqa: E731
    app1 = b"\xff\xe1"
    assert orientation(_jpeg_with_segment(app1, _exif([(0x0112, 3, 1, 6)], little_endian=True))) == 6  # as many cameras write it
    assert orientation(_jpeg_with_segment(app1, _exif([(0x0112, 3, 1, 8)], little_endian=False))) == 8
    # Not an orientation OpenCV or Pillow would turn by: an Exif block in a comment, a second
    # orientation entry after the first, an entry of count 0 or of another type.
    assert orientation(_jpeg_with_segment(b"\xff\xfe", _exif([(0x0112, 3, 1, 6)]))) == 1
    assert orientation(_jpeg_with_segment(app1, _exif([(0x0112, 3, 1, 1), (0x0112, 3, 1, 6)]))) == 1
    assert orientation(_jpeg_with_segment(app1, _exif([(0x0112, 3, 0, 6)]))) == 1
    assert orientation(_jpeg_with_segment(app1, _exif([(0x0112, 4, 1, 6)]))) == 1
    for broken in (b"Exif\0\0", b"\xff\xd8\xff", _jpeg_with_segment(app1, b"Exif\0\0II*\0\xff\xff\xff\xff")):
        assert orientation(broken) == 1


def test_a_bmp_of_negative_width_announces_no_size_and_cannot_lower_a_requests_sum():
    header = bytearray(cv2.imencode(".bmp", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    header[18:22], header[22:26] = (-1).to_bytes(4, "little", signed=True), (2**31 - 1).to_bytes(4, "little")
    # Before: [-1, 2147483647], a product of -2147483647 pixels that cancelled the rest of a batch.
    assert image_ops.announced_size(tf.constant(bytes(header))).numpy().tolist() == [0, 0]
    with pytest.raises(UserError, match="not a readable image file"):
        images.decode_image(bytes(header))  # the local path: Pillow read the width as 4294967295


def _encoded(array, file_format):
    encoded = io.BytesIO()
    PIL.Image.fromarray(array).save(encoded, format=file_format, **({"lossless": True} if file_format == "WEBP" else {}))
    return encoded.getvalue()


@pytest.mark.parametrize("file_format", ["PNG", "JPEG", "BMP", "GIF", "WEBP"])
def test_bytes_signature_reads_masks_in_every_format_it_reads_images_in(exported, sample_folder, file_format):
    photo = tf.io.decode_png(tf.io.read_file(str(sample_folder / "test" / "chelsea.png")), channels=3)[:40, :56].numpy()
    mask = np.zeros((40, 56), np.uint8)
    mask[10:20, 15:30] = 255
    signature = tf.saved_model.load(exported).signatures["inpaint_bytes"]
    reply = signature(image_bytes=tf.constant([_encoded(photo, "PNG")]), mask_bytes=tf.constant([_encoded(mask, file_format)]))
    result = tf.io.decode_png(reply["inpainted_bytes"][0]).numpy()
    np.testing.assert_array_equal(result[mask == 0], photo[mask == 0])
    assert not np.array_equal(result[mask > 0], photo[mask > 0])


def test_an_empty_batch_or_an_image_of_no_pixels_is_answered_as_it_came(exported):
    loaded = tf.saved_model.load(exported)
    for shape in [(0, 8, 8), (1, 0, 8), (1, 8, 0), (0, 0, 0)]:
        reply = loaded.signatures["serving_default"](image=tf.zeros((*shape, 3)), mask=tf.ones((*shape, 1)))["inpainted"]
        assert reply.shape == (*shape, 3)
    empty = tf.constant([], tf.string)
    assert loaded.signatures["inpaint_bytes"](image_bytes=empty, mask_bytes=empty)["inpainted_bytes"].shape == (0,)


def test_bytes_signature_refuses_a_jpeg_of_thousands_of_scans_and_completes_an_animated_gifs_first_frame(exported):
    # (That only the first frame is decoded, which is what bounds its cost, is images_test.py's.)
    import crafted_files  # noqa: PLC0415

    signature = tf.saved_model.load(exported).signatures["inpaint_bytes"]
    mask = np.zeros((150, 200), np.uint8)
    mask[10:20, 15:30] = 255
    with pytest.raises(tf.errors.InvalidArgumentError, match="image is a JPEG of more than 100 scans"):
        signature(image_bytes=tf.constant([crafted_files.jpeg_of_repeated_scans(200, 150, 1000)]), mask_bytes=tf.constant([_encoded(mask, "PNG")]))
    animation = crafted_files.gif_of_frames(200, 150, 300)
    reply = signature(image_bytes=tf.constant([animation]), mask_bytes=tf.constant([_encoded(mask, "PNG")]))
    result = tf.io.decode_png(reply["inpainted_bytes"][0]).numpy()
    first = images.decode_image(animation)
    np.testing.assert_array_equal(result[mask == 0], first[mask == 0])
