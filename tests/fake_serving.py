"""A stand-in for tensorflow_model_server's REST predict API, backed by an export's own signature.

tensorflow_model_server cannot be installed here; this speaks the same protocol (the
inpaint_bytes signature, base64 in JSON, POST /v1/models/glcic:predict) with the SavedModel's
own `inpaint_bytes` function, so clients are tested against what the server would run. Its gRPC
twin is `fake_grpc_serving`; `bad_serving` and `bad_grpc_serving` answer what a model server
should not (HTML, JSON without the image, an image of another size...).
"""

import base64
import contextlib
import http.server
import json
import threading
import time

import tensorflow as tf


class _Handler(http.server.BaseHTTPRequestHandler):
    signature = None
    requests = None
    delay_seconds = 0.0

    def do_POST(self):  # noqa: N802 (http.server's name)
        assert self.path == "/v1/models/glcic:predict"
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert request["signature_name"] == "inpaint_bytes"
        self.requests.append(request)
        time.sleep(self.delay_seconds)  # a busy model server
        images = [base64.b64decode(i["image_bytes"]["b64"]) for i in request["instances"]]
        masks = [base64.b64decode(i["mask_bytes"]["b64"]) for i in request["instances"]]
        try:
            outputs = self.signature(image_bytes=tf.constant(images), mask_bytes=tf.constant(masks))["inpainted_bytes"]
        except tf.errors.InvalidArgumentError as error:  # as TF Serving: 400 with the message
            status, reply = 400, json.dumps({"error": error.message}).encode()
        else:
            status, reply = 200, json.dumps({"predictions": [{"b64": base64.b64encode(o).decode()} for o in outputs.numpy()]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def fake_serving(export_version_dir, delay_seconds=0.0):
    """Serves the export on 127.0.0.1, each request after `delay_seconds` (requests are answered
    in threads, at the same time); yields (address "127.0.0.1:port", list of requests seen)."""
    signature = tf.saved_model.load(str(export_version_dir)).signatures["inpaint_bytes"]
    handler = type("Handler", (_Handler,), {"signature": signature, "requests": [], "delay_seconds": delay_seconds})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_port}", handler.requests
    finally:
        server.shutdown()
        server.server_close()


class _BadHandler(http.server.BaseHTTPRequestHandler):
    reply = None  # (status, content type, body[, more headers]), or bytes written as they are (any HTTP, or none)
    sent = None  # bytes of each reply the client took before it closed the connection

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        if isinstance(self.reply, bytes):
            self._write(self.reply)
            self.close_connection = True
            return
        status, content_type, body, *more = self.reply
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (more[0] if more else {}).items():
            self.send_header(name, value)
        self.end_headers()
        self._write(body)

    def _write(self, data: bytes, piece: int = 2**16):
        """`data`, until the client stops taking it (a client that read enough closes the connection)."""
        sent = 0
        try:
            for start in range(0, len(data), piece):
                self.wfile.write(data[start : start + piece])
                sent += len(data[start : start + piece])
        except OSError:
            self.close_connection = True
        self.sent.append(sent)

    def log_message(self, *args):
        pass


def prediction_reply(encoded: bytes) -> tuple:
    """What a REST model server answers for one completed image `encoded` (status, type, body)."""
    return 200, "application/json", json.dumps({"predictions": [{"b64": base64.b64encode(encoded).decode()}]}).encode()


@contextlib.contextmanager
def bad_serving(reply, sent=None):
    """A REST "model server" on 127.0.0.1 that answers every predict request with `reply`:
    (status, content type, body[, {header: value}]), or bytes sent as they are (a reply of one's
    own making, or none at all); yields its address. `sent`, a list, gets the bytes of each reply
    the client took."""
    handler = type("BadHandler", (_BadHandler,), {"reply": reply, "sent": [] if sent is None else sent})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def bad_grpc_serving(outputs):
    """A gRPC PredictionService on 127.0.0.1 that answers every Predict with `outputs` ({name:
    list of bytes}, as string tensors); yields its address."""
    import concurrent.futures  # noqa: PLC0415

    import grpc  # noqa: PLC0415
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: PLC0415

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (the service's name)
            reply = predict_pb2.PredictResponse()
            for name, values in outputs.items():
                reply.outputs[name].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string))
            return reply

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def closed_port_address():
    """host:port where nothing listens (a server that is down)."""
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@contextlib.contextmanager
def fake_grpc_serving(export_version_dir, max_message_bytes=64 * 2**20):
    """TF Serving's gRPC PredictionService on 127.0.0.1, with tensorflow-serving-api's own
    messages and stubs, running the export's `inpaint_bytes` signature; yields (address, list of
    PredictRequests seen). Its message limit is raised as tensorflow_model_server's is."""
    import concurrent.futures  # noqa: PLC0415

    import grpc  # noqa: PLC0415
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: PLC0415

    signature = tf.saved_model.load(str(export_version_dir)).signatures["inpaint_bytes"]
    requests = []

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (the service's name)
            requests.append(request)
            if request.model_spec.name != "glcic" or request.model_spec.signature_name != "inpaint_bytes":
                context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.model_spec.name} / {request.model_spec.signature_name}")
            inputs = {name: tf.constant(tf.make_ndarray(request.inputs[name])) for name in ("image_bytes", "mask_bytes")}
            try:
                outputs = signature(**inputs)["inpainted_bytes"]
            except tf.errors.InvalidArgumentError as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)
            reply = predict_pb2.PredictResponse()
            reply.outputs["inpainted_bytes"].CopyFrom(tf.make_tensor_proto(outputs.numpy()))
            return reply

    limits = [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", max_message_bytes)]
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4), options=limits)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", requests
    finally:
        server.stop(grace=None)
