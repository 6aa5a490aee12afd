"""The LiteRT export against the SavedModel, and completing with it where TensorFlow is not installed."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import in_process
import numpy as np
import pytest
import tensorflow as tf

import glcic_tf
from glcic_tf import completers, export_lib, photos
from glcic_tf.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.xdist_group("litert")  # one export for the module


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """export.py --formats=savedmodel,litert of the trained run: (base folder, SavedModel, LiteRT folder)."""
    base = tmp_path_factory.mktemp("export")
    done = in_process.run("export", f"--model_dir={trained_run}", f"--export_dir={base}", "--formats=savedmodel,litert")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"exported the completion network of step 3 to {base / '3'} and {base / 'litert' / '3'}"
    return base, base / "3", base / "litert" / "3"


def _inputs(height, width):
    rng = np.random.default_rng(height * 1000 + width)
    image = rng.random((1, height, width, 3), dtype=np.float32)
    mask = np.zeros((1, height, width, 1), np.float32)
    mask[:, height // 4 : height // 2 + 1, width // 5 : width // 2 + 1] = 1
    return image, mask


@pytest.mark.parametrize("precision, tolerance", [("float32", 2e-3), ("float16", 2e-3)])
def test_the_litert_model_is_the_saved_models_serving_default_at_any_size(exported, precision, tolerance):
    _, saved_model, litert = exported
    serving_default = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    completer = completers.open_completer(model=str(litert / export_lib.LITERT_FILES[precision]))
    differences = {}
    for height, width in [(256, 256), (192, 320), (97, 130), (33, 7), (1, 1), (257, 255)]:
        image, mask = _inputs(height, width)
        expected = serving_default(image=tf.constant(image), mask=tf.constant(mask))["inpainted"].numpy()
        completed = completer(image, mask)
        hole = mask[0, ..., 0] > 0
        np.testing.assert_array_equal(completed[0][~hole], image[0][~hole])  # the photograph's own pixels
        differences[height, width] = float(np.abs(completed - expected)[0][hole].max())
    assert max(differences.values()) <= tolerance, differences
    assert os.path.getsize(litert / export_lib.LITERT_FILES["float16"]) < 0.6 * os.path.getsize(litert / export_lib.LITERT_FILES["float32"])


def test_the_litert_completer_checks_what_the_saved_model_checks_in_its_graph(exported):
    _, _, litert = exported
    completer = completers.LiteRTCompleter(str(litert / "glcic.tflite"), max_network_pixels=32 * 32)
    image, mask = _inputs(40, 40)
    with pytest.raises(UserError, match="the batch is larger than 1024 pixels in all"):
        completer(image, mask)
    nan = np.full((1, 8, 8, 3), np.nan, np.float32)
    with pytest.raises(UserError, match="NaN or infinite"):
        completer(nan, np.ones((1, 8, 8, 1), np.float32))
    assert completer(np.zeros((0, 8, 8, 3), np.float32), np.zeros((0, 8, 8, 1), np.float32)).shape == (0, 8, 8, 3)
    photo = (image[0] * 255).astype(np.uint8)
    with pytest.raises(UserError, match=r"^the model refused a 40x40 region: the batch is larger than 1024 pixels .*\(lower --max_network_pixels\)$"):
        photos.inpaint(completer, photo, mask[0], tiling="whole")


def test_a_tflite_file_that_is_not_our_model_is_one_line(tmp_path):
    (tmp_path / "junk.tflite").write_bytes(os.urandom(3000))
    other = tf.function(lambda x: {"y": x * 2}, input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    (tmp_path / "other.tflite").write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([other.get_concrete_function()]).convert())
    with pytest.raises(UserError, match=r"^.*junk.tflite is not a readable LiteRT model"):
        completers.open_completer(model=str(tmp_path / "junk.tflite"))
    with pytest.raises(UserError, match=r"other.tflite is not a completion model of export.py: its inputs are .*\[-1, 4\] float32, an image"):
        completers.open_completer(model=str(tmp_path / "other.tflite"))
    with pytest.raises(UserError, match="LiteRT model .*missing.tflite does not exist"):
        completers.open_completer(model=str(tmp_path / "missing.tflite"))
    (tmp_path / "folder.tflite").mkdir()
    with pytest.raises(UserError, match="LiteRT model .*folder.tflite is not a file"):
        completers.open_completer(model=str(tmp_path / "folder.tflite"))
    with pytest.raises(UserError, match="is a LiteRT model, which runs as exported"):
        completers.open_completer(model=str(tmp_path / "other.tflite"), precision="bfloat16")


def test_inpaint_completes_with_a_tflite_model_where_tensorflow_is_not_installed(exported, sample_folder, tmp_path):
    _, saved_model, litert = exported
    photo = sample_folder / "test" / "coins.png"
    script = textwrap.dedent(f"""
        import importlib.util, sys
        find = importlib.util.find_spec  # TensorFlow as if not installed: glcic_tf then refuses to import it
        importlib.util.find_spec = lambda name, *rest: None if name in ("tensorflow", "keras") else find(name, *rest)
        from glcic_tf.commands import inpaint
        sys.argv = ["glcic-inpaint", "--model={litert / 'glcic.tflite'}", "--image={photo}", "--box=40,50,60,40", "--box=0,0,9,9",
                    "--postprocess", "--output={tmp_path / 'lite.png'}"]
        try:
            inpaint.run()
        finally:
            print("tensorflow imported:", "tensorflow" in sys.modules, "keras imported:", "keras" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tensorflow imported: False keras imported: False" in done.stdout
    # What needs TensorFlow says what to install, in one line, as the commands' other errors.
    for command in ("train.py", "export.py", "evaluate.py", "convert_torch_weights.py"):
        refused = subprocess.run([sys.executable, "-c", script.split("from glcic_tf.commands")[0] + f"import runpy; runpy.run_path({str(ROOT / command)!r}, run_name='__main__')"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 1 and refused.stderr.strip().splitlines() == [f"error: {glcic_tf._NO_TENSORFLOW}"], (command, refused.stderr[-2000:])
    saved = in_process.run("inpaint", f"--model={saved_model}", f"--image={photo}", "--box=40,50,60,40", "--box=0,0,9,9", "--postprocess", f"--output={tmp_path / 'saved.png'}")
    assert saved.returncode == 0, saved.stderr[-2000:]
    lite, full = cv2.imread(str(tmp_path / "lite.png")), cv2.imread(str(tmp_path / "saved.png"))
    assert np.abs(lite.astype(int) - full.astype(int)).max() <= 1  # the same completion, rounded to 8 bits


def test_export_refuses_an_unknown_format_before_any_work(trained_run, tmp_path):
    done = in_process.run("export", f"--model_dir={trained_run}", f"--export_dir={tmp_path}", "--formats=savedmodel,onnx")
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == "error: --formats savedmodel,onnx: each must be one of savedmodel, litert, web"
    assert list(tmp_path.iterdir()) == []
