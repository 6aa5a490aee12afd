r"""Complete your own photographs with an exported model, locally or through TF Serving.

    python inpaint.py --model=/tmp/glcic_export --image=photo.jpg --mask=hole.png --output=done.png
    python inpaint.py --model=/tmp/glcic_export --image=photo.jpg --box=40,60,90,80 --box=200,30,50,50 --output=done.png
    python inpaint.py --model=/tmp/glcic_export --image=photos/ --mask=masks/ --output=completed/ --postprocess
    python inpaint.py --server=localhost:8501 --image=photo.jpg --mask=hole.png --output=done.png

--mask is an image where white is the hole (same size as the image); --box is x,y,width,height
and may be repeated. With a folder of images, --mask is a folder of masks with the same file
names (or --box applies to every image) and --output a folder. --model takes a SavedModel
(export.py's version folder or its base folder, whose highest version is used) or a train.py
run folder. --server sends each image to tensorflow_model_server's REST API (the
`inpaint_bytes` signature); --protocol=grpc uses its gRPC API (needs tensorflow-serving-api,
installed with --no-deps: see BUILD.md).

By default (--strategy=auto) the network runs on each hole's neighbourhood only (its box grown
by the network's 153-pixel receptive field), locally or on the server, so a 12-megapixel photo
with a small hole takes about a second; see glcic_tf/strategy.py. With a folder, a broken image
is skipped and named, the others are written, and the exit status is 1.
"""

import base64
import json
import os
import time
import urllib.error
import urllib.request

import numpy as np
from absl import app, flags, logging

from glcic_tf import folded, inference, strategy
from glcic_tf.errors import UserError, one_line_errors

FLAGS = flags.FLAGS
flags.DEFINE_string("image", None, "An image file or a folder of images.")
flags.DEFINE_string("mask", None, "A mask image (white = hole), or a folder of masks named like the images.")
flags.DEFINE_multi_string("box", [], "A rectangular hole x,y,width,height (repeatable); instead of --mask.")
flags.DEFINE_string("output", None, "Output file (.png or .jpg), or a folder when --image is a folder.")
flags.DEFINE_bool("postprocess", False, "The paper's post-processing: fast marching, then Poisson blending.")
flags.DEFINE_string("model", None, "SavedModel (version folder or base folder) or train.py run folder; runs locally.")
flags.DEFINE_string("server", None, "TF Serving address host:port (REST 8501, gRPC 8500) instead of --model.")
flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "How to talk to --server.")
flags.DEFINE_string("model_name", "glcic", "The model's name on the server.")
flags.DEFINE_integer("max_pixels", inference.MAX_PIXELS, "Refuse images with more pixels than this (checked from the header and after decoding).")
flags.DEFINE_enum(
    "strategy",
    "auto",
    strategy.STRATEGIES,
    "What the network runs on: auto (crops around the holes, downscaled where larger than --max_network_pixels), "
    "crop (crops at full resolution), resize (the whole image, downscaled to fit) or whole (the whole image).",
)
flags.DEFINE_enum("precision", "auto", folded.PRECISIONS, "Arithmetic of a run folder's network: auto is bfloat16 where faster (AMX), else float32.")
flags.DEFINE_integer("max_network_pixels", strategy.MAX_NETWORK_PIXELS, "Most pixels the network runs on at once.")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def _parse_box(text):
    try:
        x, y, w, h = (int(value) for value in text.split(","))
    except ValueError:
        raise UserError(f"--box {text!r} must be four integers x,y,width,height") from None
    return x, y, w, h


def _encode_png(array):
    import cv2  # noqa: PLC0415

    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    return cv2.imencode(".png", array)[1].tobytes()


def serving_completer(image, mask):
    """TF Serving as a completer: float batches of one (as `Inpainter`), PNG files on the wire.

    `inference.inpaint` crops around the holes before it calls this, so the server gets the
    holes' neighbourhoods, not the whole photograph.
    """
    completed = remote_complete(inference.to_uint8(np.asarray(image)[0]), np.asarray(mask)[0])
    return completed[None].astype(np.float32) / 255.0


def remote_complete(image, mask):
    """The completed image from TF Serving (inpaint_bytes signature), as (H, W, 3) uint8."""
    import cv2  # noqa: PLC0415

    image_png, mask_png = _encode_png(image), _encode_png((mask[..., 0] * 255).astype(np.uint8))
    if FLAGS.protocol == "grpc":
        encoded = _grpc_predict(image_png, mask_png)
    else:
        request = {
            "signature_name": "inpaint_bytes",
            "instances": [{"image_bytes": {"b64": base64.b64encode(image_png).decode()}, "mask_bytes": {"b64": base64.b64encode(mask_png).decode()}}],
        }
        url = f"http://{FLAGS.server}/v1/models/{FLAGS.model_name}:predict"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, json.dumps(request).encode(), {"Content-Type": "application/json"}), timeout=300) as reply:
                prediction = json.loads(reply.read())["predictions"][0]
        except (urllib.error.URLError, OSError) as error:
            raise UserError(f"TF Serving at {url} did not answer: {getattr(error, 'reason', error)}") from None
        encoded = base64.b64decode(prediction["b64"] if isinstance(prediction, dict) and "b64" in prediction else prediction["inpainted_bytes"]["b64"])
    completed = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(completed, cv2.COLOR_BGR2RGB)


def _grpc_predict(image_png, mask_png):
    try:
        import grpc  # noqa: PLC0415
        import tensorflow as tf  # noqa: PLC0415
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: PLC0415
    except ImportError:
        raise UserError("--protocol=grpc needs tensorflow-serving-api: pip install --no-deps tensorflow-serving-api grpcio (see BUILD.md)") from None
    request = predict_pb2.PredictRequest()
    request.model_spec.name = FLAGS.model_name
    request.model_spec.signature_name = "inpaint_bytes"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([image_png]))
    request.inputs["mask_bytes"].CopyFrom(tf.make_tensor_proto([mask_png]))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(FLAGS.server))
    try:
        reply = stub.Predict(request, 300)
    except grpc.RpcError as error:
        raise UserError(f"TF Serving at {FLAGS.server} (gRPC) failed: {error.details()}") from None
    return reply.outputs["inpainted_bytes"].string_val[0]


def _jobs():
    """(image path, mask path or None, output path) for every image to complete."""
    if not FLAGS.image or not FLAGS.output:
        raise UserError("--image and --output are required")
    if bool(FLAGS.mask) == bool(FLAGS.box):
        raise UserError("give either --mask or --box")
    if not os.path.exists(FLAGS.image):
        raise UserError(f"image {FLAGS.image} does not exist")
    if os.path.isfile(FLAGS.image):
        return [(FLAGS.image, FLAGS.mask, FLAGS.output)]
    names = sorted(name for name in os.listdir(FLAGS.image) if name.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise UserError(f"image folder {FLAGS.image} holds no images")
    if FLAGS.mask and not os.path.isdir(FLAGS.mask):
        raise UserError(f"--image is a folder, so --mask must be a folder of masks, and {FLAGS.mask} is not")
    jobs = []
    for name in names:
        mask = None
        if FLAGS.mask:
            stem = os.path.splitext(name)[0]
            candidates = [m for m in os.listdir(FLAGS.mask) if os.path.splitext(m)[0] == stem]
            if not candidates:
                raise UserError(f"no mask named {stem}.* in {FLAGS.mask} for image {name}")
            mask = os.path.join(FLAGS.mask, candidates[0])
        jobs.append((os.path.join(FLAGS.image, name), mask, os.path.join(FLAGS.output, os.path.splitext(name)[0] + ".png")))
    return jobs


def _complete_file(completer, image_path, mask_path, output_path, boxes):
    image = inference.read_image(image_path, FLAGS.max_pixels)
    if mask_path:
        mask = inference.read_mask(mask_path, image.shape[:2], FLAGS.max_pixels)
    else:
        mask = inference.box_mask(image.shape[:2], boxes)
    start = time.perf_counter()
    completed = inference.inpaint(completer, image, mask, FLAGS.postprocess, FLAGS.strategy, FLAGS.max_network_pixels)
    logging.info("%s: %dx%d in %.2f s", image_path, image.shape[1], image.shape[0], time.perf_counter() - start)
    inference.write_image(output_path, completed)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    with one_line_errors():
        jobs = _jobs()
        boxes = [_parse_box(text) for text in FLAGS.box]
        if bool(FLAGS.model) == bool(FLAGS.server):
            raise UserError("give either --model (run locally) or --server (TF Serving)")
        completer = inference.load_completer(FLAGS.model, FLAGS.precision) if FLAGS.model else serving_completer
        failures = []
        from tqdm import tqdm  # noqa: PLC0415 (installed with tensorflow-datasets)

        for image_path, mask_path, output_path in tqdm(jobs, unit="image", disable=len(jobs) == 1):
            try:
                _complete_file(completer, image_path, mask_path, output_path, boxes)
            except UserError as error:
                if len(jobs) == 1:
                    raise
                logging.warning("skipped: %s", error)  # one broken photograph does not stop a folder
                failures.append(image_path)
        if failures:
            raise UserError(f"{len(failures)} of {len(jobs)} images failed (named above); the other {len(jobs) - len(failures)} were written to {FLAGS.output}")
    print(f"wrote {len(jobs)} completed image{'s' if len(jobs) > 1 else ''} to {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
