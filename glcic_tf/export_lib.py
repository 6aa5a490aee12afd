"""The SavedModel that tensorflow_model_server serves, `<export_dir>/<version>/`, and the same
network as LiteRT models, `<export_dir>/litert/<version>/` (`export_litert`).

Signatures:
- `serving_default`: image float32 [batch, height, width, 3] in [0, 1], mask float32
  [batch, height, width, 1] (1 = hole) -> inpainted float32 [batch, height, width, 3];
- `inpaint_bytes`: image_bytes and mask_bytes, string [batch] (PNG/JPEG/BMP/GIF/WebP files; white
  mask pixels are the hole) -> inpainted_bytes, string [batch] (PNG). The `_bytes` names let
  TF Serving's REST API take and give `{"b64": ...}`.

The mean pixel is a constant of the export; the network is the inference form that `Inpainter`
runs, each BatchNorm folded into its convolution (`glcic_tf.folded`), in float32 and with
EXPORT_UPSAMPLING: nothing of the exporting machine (its cores, kernels or GPU) is in the graph. The version is written
into a temporary folder and renamed into place, so a server watching `export_dir` never sees a
partial version.

Bad requests fail with InvalidArgumentError and a message (the server answers 400 and keeps
serving): undecodable bytes, a request of more than `max_request_pixels` pixels in all (its images
together; checked from the files' headers before decoding, and after), a mask of another size,
NaN or infinite float pixels.
"""

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from glcic_tf import image_ops, images
from glcic_tf.errors import UserError
from glcic_tf.inference import Inpainter
from glcic_tf.tiling import MAX_NETWORK_PIXELS

BYTES_SIGNATURE = "inpaint_bytes"

# The upsampling form every export runs, whatever machine makes it (an export is served on
# machines its maker does not know): the sub-pixel form, fast with Eigen's kernels (AVX2-only
# processors) and close to the transposed convolution with oneDNN's (docs/performance.md, "Inference").
EXPORT_UPSAMPLING = "subpixel"


def _request_checks(image_bytes, mask_bytes, max_request_pixels: int):
    """Checks on the whole bytes request, from the files' headers before any is decoded: the
    images announce at most `max_request_pixels` pixels in all, and so do the masks (tf.map_fn decodes
    and completes up to 10 images at once, so a per-image bound alone lets a batch take ten
    times the memory, and a long batch as long as it runs)."""
    limit = tf.constant(max_request_pixels, tf.int64)
    checks = [tf.debugging.assert_equal(tf.size(image_bytes), tf.size(mask_bytes), message="there must be one mask per image")]
    for files, what in ((image_bytes, "image"), (mask_bytes, "mask")):
        announced = tf.map_fn(lambda encoded: tf.reduce_prod(image_ops.announced_size(encoded)), files, fn_output_signature=tf.int64)
        message = f"{what} is larger than {max_request_pixels} pixels (counting every {what} of the request)"
        # Every file first: a size that is no size (a BMP's negative width) must not lower the sum.
        checks.append(tf.debugging.assert_positive(announced, message=f"{what} is not a {images.TENSORFLOW_FORMAT_NAMES} file"))
        with tf.control_dependencies(checks[-1:]):
            checks.append(tf.debugging.assert_less_equal(tf.reduce_sum(announced), limit, message=message))
    return checks


def _png_of_one(inpainter, pair, max_request_pixels: int):
    image_bytes, mask_bytes = pair
    image = tf.image.convert_image_dtype(image_ops.decode_in_graph(image_bytes, 3, "image", max_request_pixels), tf.float32)
    # Decoded in colour: TensorFlow's BMP, GIF and WebP decoders give no single channel.
    mask = image_ops.gray(image_ops.decode_in_graph(mask_bytes, 3, "mask", max_request_pixels))
    mask = tf.cast(mask >= 128, tf.float32)
    tf.debugging.assert_equal(tf.shape(mask)[:2], tf.shape(image)[:2], message="mask and image sizes differ")
    inpainted = inpainter(image[None], mask[None])[0]
    return tf.io.encode_png(tf.image.convert_image_dtype(inpainted, tf.uint8, saturate=True))


def version_path(export_dir: str, version: int, overwrite: bool = False) -> str:
    """`export_dir/version`, refused if the version is negative or exists (without `overwrite`)."""
    if version < 0:
        raise UserError(f"--version must be a non-negative integer, not {version}")
    target = os.path.join(export_dir, str(version))
    if os.path.exists(target) and not overwrite:
        raise UserError(f"{target} exists already: choose another --version or pass --overwrite")
    return target


def export_saved_model(
    network, mean_pixel, export_dir: str, version: int, overwrite: bool = False, max_request_pixels: int = MAX_NETWORK_PIXELS
) -> str:
    """Write the SavedModel of `network` into `export_dir/version`; returns that path.

    Both signatures refuse requests of more than `max_request_pixels` pixels in all, the batch's images
    together (the bytes signature checks the headers before decoding too): the server runs the
    network on what it is sent, at about 670 bytes per pixel, so the default (4 megapixels)
    keeps a request under 3 GB whatever its batch.
    Clients send the holes' neighbourhoods (`glcic_tf.tiling`), not whole photographs.
    """
    target = version_path(export_dir, version, overwrite)
    inpainter = Inpainter(network, mean_pixel, max_request_pixels, upsampling=EXPORT_UPSAMPLING)

    archive = keras.export.ExportArchive()
    archive.track(inpainter)  # the folded weights it runs (not the Keras network's: see glcic_tf.folded)
    archive.add_endpoint(
        "serving_default",
        lambda image, mask: {"inpainted": inpainter(image, mask)},
        input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32, name="image"),
            tf.TensorSpec([None, None, None, 1], tf.float32, name="mask"),
        ],
    )
    def inpaint_bytes(image_bytes, mask_bytes):
        with tf.control_dependencies(_request_checks(image_bytes, mask_bytes, max_request_pixels)):
            image_bytes, mask_bytes = tf.identity(image_bytes), tf.identity(mask_bytes)
        pngs = tf.map_fn(
            lambda pair: _png_of_one(inpainter, pair, max_request_pixels), (image_bytes, mask_bytes), fn_output_signature=tf.TensorSpec([], tf.string)
        )
        return {"inpainted_bytes": pngs}

    archive.add_endpoint(
        BYTES_SIGNATURE,
        inpaint_bytes,
        input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes"),
            tf.TensorSpec([None], tf.string, name="mask_bytes"),
        ],
    )
    return _written_into_place(target, lambda staging: archive.write_out(staging, verbose=False))


def _written_into_place(target: str, write) -> str:
    """`write(folder)` into a hidden temporary folder beside `target`, renamed into place once
    complete: a server watching the folder never sees a partial version."""
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.partial-", dir=parent)
    try:
        write(staging)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# The LiteRT export: `<export_dir>/litert/<version>/`, beside the SavedModel's versions (TF Serving
# serves numbered folders only). Both files take serving_default's inputs at any size; float16
# stores the weights in half precision (half the file) and computes in float32.
LITERT_FOLDER = "litert"
LITERT_FILES = {"float32": "glcic.tflite", "float16": "glcic_float16.tflite"}


def export_litert(network, mean_pixel, export_dir: str, version: int, overwrite: bool = False) -> str:
    """Write the completion network as LiteRT models into `export_dir/litert/version`; returns that path.

    The model is serving_default's without its checks (LiteRT has no ops for them; the LiteRT
    completer, glcic_tf.completers.LiteRTCompleter, checks in Python): image float32
    [batch, height, width, 3] in [0, 1] and mask [batch, height, width, 1] (1 = hole) at any
    size, completed image out with the photograph's own pixels outside the hole. Converted with
    built-in operators only, so any LiteRT runtime runs it.
    """
    target = version_path(os.path.join(export_dir, LITERT_FOLDER), version, overwrite)
    files = {name: litert_model(network, mean_pixel, precision) for precision, name in LITERT_FILES.items()}

    def write(folder):
        for name, model in files.items():
            with open(os.path.join(folder, name), "wb") as file:
                file.write(model)

    return _written_into_place(target, write)


def litert_model(network, mean_pixel, precision: str = "float32") -> bytes:
    """The LiteRT model (a .tflite file's bytes) that export_litert writes for `precision`
    (a key of LITERT_FILES); glcic_tf.web_export converts the float32 one to ONNX."""
    inpainter = Inpainter(network, mean_pixel, upsampling=EXPORT_UPSAMPLING)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32, name="image"),
            tf.TensorSpec([None, None, None, 1], tf.float32, name="mask"),
        ]
    )
    def serving_default(image, mask):
        return {"inpainted": inpainter.complete_checked(image, tf.cast(mask > 0.5, tf.float32))}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serving_default.get_concrete_function()], inpainter)
    if precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()
