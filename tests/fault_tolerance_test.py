"""Faults a long run and a serving deployment meet: kill -9, broken and hostile inputs."""

import os
import random
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import in_process
import numpy as np
import pytest
import tensorflow as tf

import crafted_files
import tiny
from glcic_tf import completers, export_lib

ROOT = Path(__file__).resolve().parent.parent

TRAIN_FLAGS = [
    *tiny.FLAGS,
    "--completion_steps=8",
    "--discriminator_steps=4",
    "--total_steps=24",
    "--checkpoint_every=3",
    "--deterministic",
    "--log_every=1",
]


def _model_variables(model_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir)))
    names = [name for name, _ in tf.train.list_variables(tf.train.latest_checkpoint(str(model_dir)))]
    return {name: reader.get_tensor(name) for name in names if not name.startswith("save_counter")}


def _train(args, model_dir):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args, f"--model_dir={model_dir}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _latest_step(model_dir):
    latest = tf.train.latest_checkpoint(str(model_dir))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@pytest.mark.slow
def test_kill_9_at_random_steps_of_every_phase_loses_at_most_one_interval_and_ends_with_the_same_weights(sample_folder, tmp_path):
    # Phase 1 is steps 0-7, phase 2 steps 8-11, phase 3 steps 12-23; a checkpoint every 3 steps.
    args = [f"--source=folder:{sample_folder}/train", *TRAIN_FLAGS]
    reference = _train(args, tmp_path / "uninterrupted")
    assert reference.wait(timeout=600) == 0

    rng = random.Random(3)
    model_dir = tmp_path / "killed"
    # Each kill comes once the run has finished step `target` (its progress line is printed),
    # within the time of one step after it: inside the next step or the save that follows (not
    # further on, where a fast machine would be after a fixed delay): a random step of each
    # phase and both phase boundaries (8 and 12; 12 is also a checkpoint step).
    targets = [rng.randint(2, 7), 8, rng.randint(9, 11), 12, rng.randint(14, 22)]
    killed_in_phases = set()
    for target in targets:
        process = _train(args, model_dir)
        finished = _latest_step(model_dir)
        assert finished < target
        printed = []  # when each progress line came
        for line in process.stdout:
            progress = re.search(r" step (\d+)/24 phase (\d)", line)
            if progress:
                printed.append(time.perf_counter())
                finished, phase = int(progress.group(1)), int(progress.group(2))
                if finished >= target:
                    break
        assert finished == target, (finished, target)  # not exited early: killed where the test says
        step_seconds = printed[-1] - printed[-2] if len(printed) > 1 else 0.3
        time.sleep(rng.uniform(0.0, min(0.3, 0.9 * step_seconds)))
        assert process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        killed_in_phases.add(phase)
        kept = _latest_step(model_dir)
        assert target - kept <= 3, (target, kept)  # at most one save interval lost
    assert killed_in_phases == {1, 2, 3}
    finishing = _train(args, model_dir)
    output, _ = finishing.communicate(timeout=600)
    assert finishing.returncode == 0, output[-3000:]
    killed, uninterrupted = _model_variables(model_dir), _model_variables(tmp_path / "uninterrupted")
    assert killed.keys() == uninterrupted.keys()
    for name in uninterrupted:
        np.testing.assert_array_equal(killed[name], uninterrupted[name], err_msg=name)


# --- Hostile files for the inpaint command and the exported signatures ---------------------


HOSTILE_FILES = {
    "random_bytes": (os.urandom(2000), "is not a readable image file"),
    "empty": (b"", "is not a readable image file"),
    "truncated_png": (cv2.imencode(".png", np.full((64, 64, 3), 7, np.uint8))[1].tobytes()[:60], "is not a readable image file"),
    "png_bomb": (crafted_files.png_header_only(100_000, 100_000), "is 100000x100000, over the limit"),
    "jpeg_bomb": (crafted_files.jpeg_claiming(60_000, 60_000), "is 60000x60000, over the limit"),
    # The JPEG marker, then garbage; a real JPEG cut in its first 200 bytes (TensorFlow's
    # extract_jpeg_shape raised on both, and the page answered 500 with TF's text).
    "jpeg_marker_then_garbage": (b"\xff\xd8\xff" + os.urandom(500), "is not a readable image file"),
    "jpeg_cut_at_200_bytes": (cv2.imencode(".jpg", np.full((64, 64, 3), 7, np.uint8))[1].tobytes()[:200], "is not a readable image file"),
    # Radiance HDR: OpenCV decodes it (as float32, before any size check), no header reader sizes it.
    "radiance_hdr": (cv2.imencode(".hdr", np.ones((30, 40, 3), np.float32))[1].tobytes(), "is not a readable image file"),
}


@pytest.fixture(scope="module")
def export_dir(trained_run, tmp_path_factory):
    network, mean_pixel, _ = completers.load_completion_network(str(trained_run))
    base = tmp_path_factory.mktemp("hostile_export")
    return export_lib.export_saved_model(network, mean_pixel, str(base), 1, max_request_pixels=1_000_000)


def _inpaint(*args):
    return in_process.run("inpaint", *args)


@pytest.mark.slow
def test_hostile_files_get_a_clear_error_from_the_inpaint_command_and_no_output(export_dir, tmp_path):
    for name, (content, expected) in HOSTILE_FILES.items():
        (tmp_path / f"{name}.png").write_bytes(content)
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((20, 30, 3), 100, np.uint8))
    cases = [[f"--image={tmp_path / f'{name}.png'}", "--box=1,1,4,4"] for name in HOSTILE_FILES]
    cases += [[f"--image={good}", f"--mask={tmp_path / f'{name}.png'}"] for name in HOSTILE_FILES]  # as masks
    expectations = [expected for _, expected in HOSTILE_FILES.values()] * 2
    for args, expected in zip(cases, expectations):
        done = _inpaint(f"--model={export_dir}", *args, f"--output={tmp_path / 'out.png'}")
        assert done.returncode == 1, (args, done.stderr[-1500:])
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and expected in last, (args, last)
        assert not (tmp_path / "out.png").exists() and not list(tmp_path.glob(".*partial"))


def test_a_1x1_image_and_an_rgba_mask_work(export_dir, tmp_path):
    cv2.imwrite(str(tmp_path / "dot.png"), np.full((1, 1, 3), 200, np.uint8))
    rgba = np.zeros((1, 1, 4), np.uint8)
    rgba[..., :] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), rgba)
    done = _inpaint(f"--model={export_dir}", f"--image={tmp_path / 'dot.png'}", f"--mask={tmp_path / 'mask.png'}", f"--output={tmp_path / 'out.png'}")
    assert done.returncode == 0, done.stderr[-1500:]
    assert cv2.imread(str(tmp_path / "out.png")).shape == (1, 1, 3)


def test_hostile_requests_to_the_signatures_fail_cleanly_and_the_model_keeps_serving(export_dir):
    loaded = tf.saved_model.load(export_dir)
    by_bytes, by_floats = loaded.signatures["inpaint_bytes"], loaded.signatures["serving_default"]
    good_png = tf.io.encode_png(tf.fill([9, 7, 3], tf.constant(90, tf.uint8))).numpy()
    mask_png = tf.io.encode_png(tf.fill([9, 7, 1], tf.constant(255, tf.uint8))).numpy()
    hostile = {name: (content, mask_png) for name, (content, _) in HOSTILE_FILES.items()}
    hostile["mask_of_another_size"] = (good_png, tf.io.encode_png(tf.zeros([5, 5, 1], tf.uint8)).numpy())
    hostile["mask_bomb"] = (good_png, crafted_files.png_header_only(100_000, 100_000))
    messages = {}
    for name, (image, mask) in hostile.items():
        with pytest.raises(tf.errors.InvalidArgumentError) as raised:
            by_bytes(image_bytes=tf.constant([image]), mask_bytes=tf.constant([mask]))
        messages[name] = raised.value.message
    assert "larger than 1000000 pixels" in messages["png_bomb"] and "larger than 1000000 pixels" in messages["jpeg_bomb"]
    assert "larger than 1000000 pixels" in messages["mask_bomb"]
    assert "mask and image sizes differ" in messages["mask_of_another_size"]
    # WebP, which tf.io.decode_image reads too: real files over the limit (lossy, lossless) and a
    # small one whose header claims 16383 x 16383; one under the limit completes.
    big = np.random.default_rng(0).integers(0, 256, (1000, 1100, 3), dtype=np.uint8)
    webp_bomb = bytearray(cv2.imencode(".webp", np.zeros((16, 16, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 80])[1].tobytes())
    assert webp_bomb[12:16] == b"VP8 "
    webp_bomb[26:30] = struct.pack("<HH", 16383, 16383)
    webps = {
        "lossy": cv2.imencode(".webp", big, [cv2.IMWRITE_WEBP_QUALITY, 80])[1].tobytes(),
        "lossless": cv2.imencode(".webp", big, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes(),
        "bomb": bytes(webp_bomb),
    }
    for name, content in webps.items():
        with pytest.raises(tf.errors.InvalidArgumentError, match="image is larger than 1000000 pixels"):
            by_bytes(image_bytes=tf.constant([content]), mask_bytes=tf.constant([mask_png]))
    small_webp = cv2.imencode(".webp", np.full((9, 7, 3), 90, np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    assert by_bytes(image_bytes=tf.constant([small_webp]), mask_bytes=tf.constant([mask_png]))["inpainted_bytes"].shape == (1,)
    image = np.full((1, 8, 8, 3), 0.5, np.float32)
    image[0, 2, 2, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or infinite"):
        by_floats(image=tf.constant(image), mask=tf.ones((1, 8, 8, 1)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="mask and image sizes differ"):
        by_floats(image=tf.zeros((1, 8, 8, 3)), mask=tf.ones((1, 8, 4, 1)))
    # After all that, a good request still works.
    reply = by_bytes(image_bytes=tf.constant([good_png]), mask_bytes=tf.constant([mask_png]))
    assert tf.io.decode_png(reply["inpainted_bytes"][0]).shape == (9, 7, 3)


@pytest.mark.parametrize("case", ["inside_a_file", "read_only"])
def test_a_model_dir_that_cannot_be_written_fails_before_any_compute(tmp_path, case):
    if case == "read_only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders; the inside_a_file case covers the check")
        (tmp_path / "locked").mkdir(mode=0o500)
        model_dir = tmp_path / "locked" / "run"
    else:
        (tmp_path / "a_file").write_text("")
        model_dir = tmp_path / "a_file" / "run"
    start = time.time()
    done = in_process.run("train", "--source=sample:train", f"--model_dir={model_dir}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --model_dir {model_dir} cannot be written: ")
    assert "found" not in done.stderr  # failed before even listing the images
    assert time.time() - start < 60
