"""One completer interface for a local model, a LiteRT model and tensorflow_model_server.

A completer is a callable (image (1, h, w, 3) float in [0, 1], mask (1, h, w, 1)) -> completed
batch, what `photos.inpaint` drives: `open_completer(model=...)` loads one locally (an
export, a train.py run folder or a checkpoint: `load_completer`; a `.tflite` file:
`LiteRTCompleter`), `open_completer(server=...)` talks to TF Serving over REST or gRPC
(`ServingCompleter`). Every kind of model is opened here: `load_completion_network` reads a run
folder's Keras network (for export, conversion and fine-tuning). `inpaint.py`, `evaluate.py`
and the page take their completers from here.

TensorFlow is imported only by what runs on it: a LiteRT model completes with the LiteRT
interpreter, numpy and OpenCV (`pip install "glcic-tf[litert]"`, no TensorFlow).
"""

import base64
import binascii
import http.client
import io
import json
import os
import threading
import urllib.error
import urllib.request
from typing import Optional

import cv2
import numpy as np

from glcic_tf import cpu, images, photos, tiling
from glcic_tf.errors import ModelRefused, ServiceUnavailable, UserError

PROTOCOLS = ("rest", "grpc")
MODEL_NAME = "glcic"  # export.py's default name under the server's model base path
TIMEOUT_SECONDS = 300
# The largest gRPC message either way (gRPC's own default for replies is 4 MB, less than the PNG
# of a 2048x2048 region, 3.9-5.9 MB). A PNG takes at most about 3 bytes per pixel (noise), so
# 64 MB holds any region up to some 20 megapixels, five times tiling.MAX_NETWORK_PIXELS.
GRPC_MESSAGE_BYTES = 64 * 2**20


def open_completer(model=None, server=None, protocol="rest", model_name=MODEL_NAME, precision="auto", max_network_pixels=None):
    """A completer from exactly one of `model` (a path, runs here) or `server` (host:port).
    `max_network_pixels` is the most a run folder's network takes at once (see load_completer)."""
    if bool(model) == bool(server):
        raise UserError("give either --model (run locally) or --server (TF Serving)")
    if server:
        return ServingCompleter(server, protocol, model_name)
    if model.endswith(LITERT_SUFFIX):
        if precision == "bfloat16":
            raise UserError(f"{model} is a LiteRT model, which runs as exported (float32 arithmetic); bfloat16 needs a run folder")
        return LiteRTCompleter(model, max_network_pixels or tiling.MAX_NETWORK_PIXELS)
    return load_completer(model, precision, max_network_pixels)


def load_completion_network(path: str):
    """The completion network and mean pixel of a run folder (its latest checkpoint) or a checkpoint.

    A run folder is what train.py writes: checkpoints plus config.json, which gives the width and
    the mean pixel. A checkpoint path (`.../ckpt-1000`) reads config.json from its folder.
    Returns (keras model, mean_pixel, step).
    """
    import tensorflow as tf  # noqa: PLC0415 (only what runs on TensorFlow imports it)

    from glcic_tf import models, run_folder  # noqa: PLC0415

    checkpoint = run_folder.resolve(path)
    config = run_folder.read_config(os.path.dirname(checkpoint))
    if config is None:
        config_path = os.path.join(os.path.dirname(checkpoint), run_folder.CONFIG)
        raise UserError(f"{config_path} is missing: the network's width and mean pixel are stored there by train.py")
    network = models.completion_network(config.get("width", 1.0))
    step = tf.Variable(0, dtype=tf.int64)
    run_folder.read_completion_network(network, checkpoint, step=step)
    return network, tuple(config.get("mean_pixel", models.PLACES2_MEAN_PIXEL)), int(step.numpy())


def saved_model_folder(path: str) -> Optional[str]:
    """The SavedModel `load_completer` loads for `path`: `path` itself, or the highest version
    folder of an export folder (its base path, as TF Serving reads it); None where there is none."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if not os.path.isdir(path):
        return None
    versions = [v for v in os.listdir(path) if v.isascii() and v.isdigit() and os.path.isfile(os.path.join(path, v, "saved_model.pb"))]
    return os.path.join(path, max(versions, key=int)) if versions else None


def load_completer(path: str, precision: str = "float32", max_network_pixels: Optional[int] = None):
    """A callable (image, mask) -> completed, float batches as `Inpainter`, from an export or a run.

    `path`: a SavedModel (export.py's version folder, or its base folder whose highest version
    is used), a train.py run folder, or a checkpoint (.../ckpt-N). A SavedModel runs as it was
    exported (float32, with the pixel limit it was exported with); `precision` and
    `max_network_pixels` (the most the network runs on at once: default
    tiling.MAX_NETWORK_PIXELS, set it to what --max_network_pixels sends) apply to runs and
    checkpoints (see inference.Inpainter).
    """
    import tensorflow as tf  # noqa: PLC0415 (only what runs on TensorFlow imports it)

    from glcic_tf import inference  # noqa: PLC0415

    saved_model = saved_model_folder(path)
    if saved_model:
        if precision == "bfloat16":
            raise UserError(f"{saved_model} is a SavedModel, which runs as exported (float32); bfloat16 needs a run folder")
        signature = tf.saved_model.load(saved_model).signatures["serving_default"]
        return lambda image, mask: signature(image=image, mask=mask)["inpainted"]
    if os.path.isdir(path) and not tf.train.latest_checkpoint(path):
        raise UserError(f"{path} is neither a SavedModel (or a folder of versions) nor a train.py run folder")
    network, mean_pixel, _ = load_completion_network(path)
    return inference.Inpainter(network, mean_pixel, max_network_pixels or tiling.MAX_NETWORK_PIXELS, precision=precision)


LITERT_SUFFIX = ".tflite"


class LiteRTCompleter:
    """A LiteRT model that `export.py --formats=litert` wrote, as a completer: the LiteRT
    interpreter (ai-edge-litert, XNNPACK) with numpy, no TensorFlow.

    The model takes any size (the network is fully convolutional): its inputs are resized to a
    region's size when it changes, and only then (resizing costs an allocation; the signature
    runner would resize on every call). The checks the SavedModel makes in TensorFlow ops, which
    LiteRT has no ops for, are made here: at most `max_network_pixels` at once and finite pixels
    (ModelRefused otherwise). One interpreter runs one call at a time (the page calls from its
    worker threads). `threads` defaults to the cores this process may use.
    """

    def __init__(self, path: str, max_network_pixels: int = tiling.MAX_NETWORK_PIXELS, threads: Optional[int] = None):
        try:
            from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 (an extra)
        except ImportError:
            raise UserError(f'{path} is a LiteRT model: it runs on the LiteRT interpreter, pip install "glcic-tf[litert]"') from None
        if not os.path.isfile(path):
            raise UserError(f"LiteRT model {path} {'is not a file' if os.path.exists(path) else 'does not exist'}")
        try:
            self.interpreter = Interpreter(model_path=path, num_threads=threads or cpu.usable_cores())
        except (ValueError, RuntimeError) as error:
            raise UserError(f"{path} is not a readable LiteRT model ({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})") from None
        inputs = {detail["shape_signature"][-1]: detail for detail in self.interpreter.get_input_details() if len(detail["shape_signature"]) == 4}
        outputs = self.interpreter.get_output_details()
        expected = len(inputs) == 2 and set(inputs) == {1, 3} and len(outputs) == 1
        expected = expected and all(list(detail["shape_signature"][:3]) == [-1, -1, -1] and detail["dtype"] == np.float32 for detail in [*inputs.values(), *outputs])
        if not expected:
            found = ", ".join(f"{d['name']} {[int(side) for side in d['shape_signature']]} {np.dtype(d['dtype']).name}" for d in self.interpreter.get_input_details())
            raise UserError(f"{path} is not a completion model of export.py: its inputs are {found or 'none'}, an image [-1, -1, -1, 3] and a mask [-1, -1, -1, 1] of float32 expected")
        self.image_input, self.mask_input, self.output = inputs[3]["index"], inputs[1]["index"], outputs[0]["index"]
        self.max_network_pixels, self.path = max_network_pixels, path
        self._shape, self._lock = None, threading.Lock()

    def __call__(self, image, mask):
        image, mask = np.asarray(image, np.float32), np.asarray(mask, np.float32)
        if image.shape[:3] != mask.shape[:3]:
            raise ModelRefused(f"mask and image sizes differ ({mask.shape[:3]} and {image.shape[:3]})")
        if image.size == 0:
            return image.copy()  # nothing to complete
        if int(np.prod(image.shape[:3])) > self.max_network_pixels:
            raise ModelRefused(f"the batch is larger than {self.max_network_pixels} pixels in all (images x height x width), the most the network runs on at once")
        if not np.isfinite(image).all():
            raise ModelRefused("the image holds NaN or infinite values")
        with self._lock:
            if image.shape != self._shape:
                self.interpreter.resize_tensor_input(self.image_input, list(image.shape))
                self.interpreter.resize_tensor_input(self.mask_input, list(mask.shape))
                self.interpreter.allocate_tensors()
                self._shape = image.shape
            self.interpreter.set_tensor(self.image_input, image)
            self.interpreter.set_tensor(self.mask_input, mask)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self.output).copy()


class BadServerReply(ServiceUnavailable):
    """A model server that answered, but not what this project's export answers: no JSON, no
    completed image, or one that is not the region sent (its size, RGB), a reply larger than any
    completion of it, a redirect. Not the request's fault (the page answers 502)."""


REPLY_SLACK_BYTES = 64 * 1024  # a PNG's chunks besides its rows; the JSON around REST's base64
ERROR_REPLY_BYTES = 64 * 1024  # the most of a model server's error reply read for its message


def _encode_png(array: np.ndarray) -> bytes:
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    return cv2.imencode(".png", array)[1].tobytes()


def _largest_png(shape: tuple) -> int:
    """The most bytes the PNG of a region of `shape` (h, w, ...) can take: 4 a pixel (the export's
    8-bit RGB takes at most 3 and a filter byte a row, stored uncompressed) and REPLY_SLACK_BYTES."""
    height, width = shape[:2]
    return 4 * height * width + height + REPLY_SLACK_BYTES


def _largest_rest_reply(shape: tuple) -> int:
    """The most bytes a REST reply for a region of `shape` can take: its largest PNG in base64
    (4/3), a 32nd more for a JSON writer that escapes base64's "/", and the JSON around it."""
    return 4 * -(-_largest_png(shape) // 3) * 33 // 32 + REPLY_SLACK_BYTES


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects refused: a redirect is answered as the HTTPError it is."""

    def redirect_request(self, *args, **kwargs):
        return None


_REST_OPENER = urllib.request.build_opener(_NoRedirects)


class ServingCompleter:
    """TF Serving's `inpaint_bytes` signature as a completer: PNG files on the wire.

    `photos.inpaint` crops around the holes before it calls this, so the server gets the
    holes' neighbourhoods, not the whole photograph. A server that does not answer (or fails on
    its side: HTTP 5xx, gRPC UNAVAILABLE...) is a ServiceUnavailable naming its address, one
    that refuses the request (HTTP 4xx, gRPC INVALID_ARGUMENT...: the export's pixel limit, say)
    a plain UserError with its message, one that answers something else than the completed
    region (not JSON, JSON without it, not an RGB image of the region's size) a BadServerReply,
    so callers can show any of them in one line and carry on.

    A reply is bounded before memory is spent on it: at most the bytes the largest PNG of the
    region sent can take are read (with base64's 4/3 over REST), and the image's header must
    state the region's size before the image is decoded. A redirect is not followed
    (BadServerReply naming it): TF Serving answers its predictions itself.

    gRPC goes through one channel, opened at the first call and shared by every call after it
    (from any thread: gRPC channels are thread-safe), with messages of up to
    `max_message_bytes` each way; `close()` (or leaving a `with` block) closes it.
    """

    def __init__(
        self,
        address: str,
        protocol: str = "rest",
        model_name: str = MODEL_NAME,
        timeout: float = TIMEOUT_SECONDS,
        max_message_bytes: int = GRPC_MESSAGE_BYTES,
    ):
        if protocol not in PROTOCOLS:
            raise UserError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        self.address, self.protocol, self.model_name, self.timeout = address, protocol, model_name, timeout
        self.max_message_bytes = max_message_bytes
        self._channel, self._stub, self._opening = None, None, threading.Lock()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self) -> None:
        """Close the gRPC channel, if one is open (a later call opens a new one)."""
        with self._opening:
            if self._channel is not None:
                self._channel.close()
            self._channel, self._stub = None, None

    def __call__(self, image, mask):
        region = images.to_uint8(np.asarray(image)[0])
        image_png = _encode_png(region)
        mask_png = _encode_png((np.asarray(mask)[0, ..., 0] > 0.5).astype(np.uint8) * 255)
        if self.protocol == "grpc":
            encoded, server = self._grpc(image_png, mask_png), f"TF Serving at {self.address} (gRPC)"
            if len(encoded) > _largest_png(region.shape):  # the channel's own bound is max_message_bytes
                raise BadServerReply(f"{server} answered {len(encoded)} bytes, more than any PNG of the {region.shape[1]}x{region.shape[0]} region sent")
        else:
            encoded, server = self._rest(image_png, mask_png, region.shape), f"TF Serving at {self._url()}"
        completed = _decode_completed(encoded, region.shape, server)
        return cv2.cvtColor(completed, cv2.COLOR_BGR2RGB)[None].astype(np.float32) / 255.0

    def _url(self) -> str:
        return f"http://{self.address}/v1/models/{self.model_name}:predict"

    def _rest(self, image_png: bytes, mask_png: bytes, shape: tuple) -> bytes:
        instance = {"image_bytes": {"b64": base64.b64encode(image_png).decode()}, "mask_bytes": {"b64": base64.b64encode(mask_png).decode()}}
        from glcic_tf.export_lib import BYTES_SIGNATURE  # noqa: PLC0415 (the export's name for it)

        request = json.dumps({"signature_name": BYTES_SIGNATURE, "instances": [instance]}).encode()
        url, limit = self._url(), _largest_rest_reply(shape)
        too_large = f"TF Serving at {url} answered over {limit} bytes, more than any completion of the {shape[1]}x{shape[0]} region sent: is --server its REST port?"
        try:
            with _REST_OPENER.open(urllib.request.Request(url, request, {"Content-Type": "application/json"}), timeout=self.timeout) as reply:
                if reply.length is not None and reply.length > limit:  # announced: refused before reading
                    raise BadServerReply(too_large)
                body, content_type = reply.read(limit + 1), reply.headers.get_content_type()
        except urllib.error.HTTPError as error:  # the server answered, with an error of its own (or a redirect)
            if 300 <= error.code < 400:
                location = str(error.headers.get("Location", ""))[:200]
                raise BadServerReply(f"TF Serving at {url} answered a redirect (HTTP {error.code} to {location or 'nowhere'}), which is not followed: is --server TF Serving's REST port?") from None
            failure = ServiceUnavailable if error.code >= 500 else UserError
            raise failure(f"TF Serving at {url} refused the request: {photos.failed_check_message(_serving_error(error))}") from None
        except (urllib.error.URLError, OSError) as error:
            raise ServiceUnavailable(f"TF Serving at {url} did not answer: {getattr(error, 'reason', error)}") from None
        except http.client.HTTPException as error:  # a reply that is not HTTP, or cut short
            raise BadServerReply(f"TF Serving at {url} answered something that is not a whole HTTP reply ({type(error).__name__}): is --server its REST port?") from None
        if len(body) > limit:  # sent without its length (chunked), or more than it announced
            raise BadServerReply(too_large)
        try:
            prediction = json.loads(body)["predictions"][0]
        except RecursionError:  # json's parser on deeply nested arrays or objects
            raise BadServerReply(f"TF Serving at {url} answered {content_type} nested too deeply to be a prediction ({len(body)} bytes): is --server its REST port?") from None
        except ValueError:
            raise BadServerReply(f"TF Serving at {url} answered {content_type}, not JSON ({len(body)} bytes): is --server its REST port?") from None
        except (KeyError, IndexError, TypeError):
            raise BadServerReply(f"TF Serving at {url} answered JSON without predictions: is --server TF Serving's REST port?") from None
        # One named output comes back as the bare value; several as a dict by name.
        try:
            encoded = prediction["b64"] if "b64" in prediction else prediction["inpainted_bytes"]["b64"]
            return base64.b64decode(encoded, validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):  # binascii.Error is a ValueError; a non-ASCII str raises a plain one
            raise BadServerReply(
                f"TF Serving at {url} answered without a completed image (inpainted_bytes in base64): is --model_name this project's export?"
            ) from None

    def _grpc(self, image_png: bytes, mask_png: bytes) -> bytes:
        try:
            import grpc  # noqa: PLC0415
            import tensorflow as tf  # noqa: PLC0415
            from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: PLC0415
        except ImportError:
            raise UserError("gRPC needs tensorflow-serving-api: pip install --no-deps tensorflow-serving-api grpcio (see docs/serving.md)") from None
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        from glcic_tf.export_lib import BYTES_SIGNATURE  # noqa: PLC0415 (the export's name for it)

        request.model_spec.signature_name = BYTES_SIGNATURE
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([image_png]))
        request.inputs["mask_bytes"].CopyFrom(tf.make_tensor_proto([mask_png]))
        with self._opening:
            if self._stub is None:
                limits = [("grpc.max_receive_message_length", self.max_message_bytes), ("grpc.max_send_message_length", self.max_message_bytes)]
                self._channel = grpc.insecure_channel(self.address, options=limits)
                self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            stub = self._stub
        try:
            reply = stub.Predict(request, self.timeout)
        except grpc.RpcError as error:
            unavailable = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.RESOURCE_EXHAUSTED}
            failure = ServiceUnavailable if error.code() in unavailable else UserError
            raise failure(f"TF Serving at {self.address} (gRPC) failed: {photos.failed_check_message(error.details() or str(error.code()))}") from None
        if "inpainted_bytes" not in reply.outputs or len(reply.outputs["inpainted_bytes"].string_val) != 1:
            raise BadServerReply(f"TF Serving at {self.address} (gRPC) answered without a completed image (inpainted_bytes): is --model_name this project's export?")
        return reply.outputs["inpainted_bytes"].string_val[0]


def _decode_completed(encoded: bytes, shape: tuple, server: str) -> np.ndarray:
    """The BGR uint8 image a server answered for a region of `shape` (h, w, 3); BadServerReply
    naming `server` if it is no image, or not an 8-bit RGB image of that size. Its size is read
    from its header first: an image of another size is never decoded (a 0.7 MB black PNG of
    15000x15000 would take 675 MB)."""
    size = images.header_size(io.BytesIO(encoded))
    if size is None:
        raise BadServerReply(f"{server} answered with something that is not an image ({len(encoded)} bytes)")
    if size != (shape[1], shape[0]):
        raise BadServerReply(f"{server} answered a {size[0]}x{size[1]} image for a {shape[1]}x{shape[0]} region: is --model_name this project's export?")
    try:
        completed = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        completed = None
    if completed is None:
        raise BadServerReply(f"{server} answered with something that is not an image ({len(encoded)} bytes)")
    channels = completed.shape[2] if completed.ndim == 3 else 1
    if channels != 3 or completed.dtype != np.uint8:
        raise BadServerReply(f"{server} answered a {channels}-channel {completed.dtype} image, not the 8-bit RGB this project's export answers")
    if completed.shape[:2] != tuple(shape[:2]):
        raise BadServerReply(
            f"{server} answered a {completed.shape[1]}x{completed.shape[0]} image for a {shape[1]}x{shape[0]} region: is --model_name this project's export?"
        )
    return completed


def _serving_error(error) -> str:
    """TF Serving's own message out of an HTTP error reply ({"error": "..."}: its first
    ERROR_REPLY_BYTES), else the status."""
    try:
        message = json.loads(error.read(ERROR_REPLY_BYTES))["error"]
    except (ValueError, KeyError, IndexError, TypeError, RecursionError, OSError, http.client.HTTPException):
        message = None
    return message if isinstance(message, str) and message.strip() else f"HTTP {error.code} {error.reason}"
