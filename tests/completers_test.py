"""One completer interface: a local model and TF Serving (REST, gRPC) give the same completion,
and what a model server answers wrongly is one message naming it."""

import importlib.util
import time

import cv2
import in_process
import numpy as np
import pytest
from fake_serving import bad_grpc_serving, bad_serving, closed_port_address, fake_grpc_serving, fake_serving, prediction_reply

from glcic_tf import completers, images, photos
from glcic_tf.errors import ServiceUnavailable, UserError


def _photo_and_hole(sample_folder):
    image = images.read_image(str(sample_folder / "test" / "chelsea.png"))
    mask = photos.mask_from_boxes(image.shape[:2], [(120, 80, 50, 40)])
    return image, mask


def test_a_server_and_the_same_export_run_locally_complete_alike(export_base, sample_folder):
    image, mask = _photo_and_hole(sample_folder)
    local = photos.inpaint(completers.open_completer(model=str(export_base)), image, mask)
    with fake_serving(export_base / "3") as (address, requests):
        remote_completer = completers.open_completer(server=address)
        assert isinstance(remote_completer, completers.ServingCompleter)
        remote = photos.inpaint(remote_completer, image, mask)
    assert len(requests) == 1  # the hole's neighbourhood, once
    assert remote.shape == image.shape
    np.testing.assert_array_equal(remote[mask[..., 0] == 0], image[mask[..., 0] == 0])
    assert np.abs(remote.astype(int) - local.astype(int)).max() <= 1  # PNG round trips may differ by one level
    assert np.abs(remote.astype(int) - image.astype(int))[mask[..., 0] > 0].mean() > 1  # the hole was filled


def test_a_server_that_is_down_is_a_user_error_naming_it(sample_folder):
    image, mask = _photo_and_hole(sample_folder)
    address = closed_port_address()
    with pytest.raises(UserError, match=f"TF Serving at http://{address}/v1/models/glcic:predict did not answer"):
        photos.inpaint(completers.open_completer(server=address), image, mask)


@pytest.mark.parametrize("model,server", [(None, None), ("some/run", "localhost:8501")])
def test_exactly_one_of_model_and_server(model, server):
    with pytest.raises(UserError, match="give either --model"):
        completers.open_completer(model, server)


def test_an_unknown_protocol_is_a_user_error():
    with pytest.raises(UserError, match="protocol 'http' is not one of rest, grpc"):
        completers.ServingCompleter("localhost:8501", "http")


def test_grpc_without_tensorflow_serving_api_says_what_to_install(sample_folder):
    if importlib.util.find_spec("tensorflow_serving"):
        pytest.skip("tensorflow-serving-api is installed here")
    image, mask = _photo_and_hole(sample_folder)
    with pytest.raises(UserError, match="gRPC needs tensorflow-serving-api: pip install --no-deps tensorflow-serving-api grpcio"):
        photos.inpaint(completers.ServingCompleter(closed_port_address(), "grpc"), image, mask)


def test_grpc_completes_as_rest_does_through_one_channel_that_close_closes(export_base, sample_folder, monkeypatch):
    pytest.importorskip("tensorflow_serving", reason="gRPC needs tensorflow-serving-api (pip install --no-deps tensorflow-serving-api)")
    import grpc  # noqa: PLC0415

    opened = []
    open_channel = grpc.insecure_channel

    def counting_channel(*args, **kwargs):
        opened.append(open_channel(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(grpc, "insecure_channel", counting_channel)
    image, _ = _photo_and_hole(sample_folder)
    mask = photos.mask_from_boxes(image.shape[:2], [(10, 10, 20, 20), (420, 270, 20, 20)])  # two regions, two requests
    local = photos.inpaint(completers.open_completer(model=str(export_base)), image, mask, tiling="crop", max_network_pixels=40_000)
    with fake_grpc_serving(export_base / "3") as (address, requests):
        with completers.open_completer(server=address, protocol="grpc") as remote_completer:
            remote = photos.inpaint(remote_completer, image, mask, tiling="crop", max_network_pixels=40_000)
            assert len(requests) == 2 and len(opened) == 1  # one channel for every region
        closed = opened[0]
        with pytest.raises(ValueError, match="closed"):  # grpc refuses calls on a closed channel
            closed.unary_unary("/x")(b"")
    assert np.abs(remote.astype(int) - local.astype(int)).max() <= 1
    np.testing.assert_array_equal(remote[mask[..., 0] == 0], image[mask[..., 0] == 0])


def test_grpc_takes_replies_over_grpcs_default_4_mb(export_base):
    pytest.importorskip("tensorflow_serving", reason="gRPC needs tensorflow-serving-api (pip install --no-deps tensorflow-serving-api)")
    # Noise compresses to about 3 bytes per pixel: this region's PNG, and so the reply, is ~4.4 MB,
    # as a 2048x2048 region of a photo can be.
    noise = np.random.default_rng(5).random((1, 1200, 1230, 3), dtype=np.float32)
    mask = np.zeros((1, 1200, 1230, 1), np.float32)
    mask[:, 500:540, 600:640] = 1
    with fake_grpc_serving(export_base / "3") as (address, requests):
        with completers.ServingCompleter(address, "grpc") as remote_completer:
            completed = remote_completer(noise, mask)
        assert requests[0].inputs["image_bytes"].ByteSize() > 4 * 2**20
    outside = mask[0, ..., 0] == 0
    np.testing.assert_array_equal(completed[0][outside], images.to_uint8(noise[0])[outside] / np.float32(255))


def test_a_grpc_refusal_is_a_user_error_with_the_servers_message(export_base):
    pytest.importorskip("tensorflow_serving", reason="gRPC needs tensorflow-serving-api (pip install --no-deps tensorflow-serving-api)")
    image = np.zeros((1, 40, 40, 3), np.float32)
    mask = np.ones((1, 40, 40, 1), np.float32)
    with fake_grpc_serving(export_base / "3") as (address, _):
        with pytest.raises(UserError, match=f"TF Serving at {address} \\(gRPC\\) failed: no model other / inpaint_bytes"):
            with completers.ServingCompleter(address, "grpc", model_name="other") as remote_completer:
                remote_completer(image, mask)


def _png(array):
    return cv2.imencode(".png", array)[1].tobytes()


# A 40x30 region is sent; each reply below is not its completion. Before: JSONDecodeError,
# KeyError, a broadcast error pasting the reply back (tracebacks; the page's 500).
REGION = np.full((1, 30, 40, 3), 0.5, np.float32), np.ones((1, 30, 40, 1), np.float32)
WRONG_IMAGES = [
    (b"this is no PNG", "answered with something that is not an image (14 bytes)"),
    (_png(np.zeros((10, 10, 3), np.uint8)), "answered a 10x10 image for a 40x30 region: is --model_name this project's export?"),
    (_png(np.zeros((30, 40), np.uint8)), "answered a 1-channel uint8 image, not the 8-bit RGB this project's export answers"),
    (_png(np.zeros((30, 40, 4), np.uint8)), "answered a 4-channel uint8 image, not the 8-bit RGB this project's export answers"),
    (_png(np.zeros((30, 40, 3), np.uint16)), "answered a 3-channel uint16 image, not the 8-bit RGB this project's export answers"),
]
WRONG_IMAGE_IDS = ["not-an-image", "wrong-size", "gray", "rgba", "16-bit"]


@pytest.mark.parametrize(
    "reply,message",
    [
        ((200, "text/html", b"<html>Welcome to nginx!</html>"), "answered text/html, not JSON (30 bytes): is --server its REST port?"),
        ((200, "application/json", b'{"outputs": {}}'), "answered JSON without predictions: is --server TF Serving's REST port?"),
        ((200, "application/json", b'{"predictions": []}'), "answered JSON without predictions: is --server TF Serving's REST port?"),
        ((200, "application/json", b'{"predictions": [{"scores": [1]}]}'), "answered without a completed image (inpainted_bytes in base64): is --model_name"),
        ((200, "application/json", b'{"predictions": [{"b64": "not base64!"}]}'), "answered without a completed image (inpainted_bytes in base64): is --model_name"),
        # Before: a ValueError (not a binascii.Error) and a RecursionError, the page's 500.
        ((200, "application/json", '{"predictions": [{"b64": "é"}]}'.encode()), "answered without a completed image (inpainted_bytes in base64): is --model_name"),
        ((200, "application/json", b"[" * 100_000), "answered application/json nested too deeply to be a prediction (100000 bytes): is --server its REST port?"),
        ((200, "application/json", b'{"predictions": ' + b"[" * 100_000), "answered application/json nested too deeply to be a prediction"),
        # Before: followed, and the completion asked of whatever it led to.
        ((302, "text/html", b"", {"Location": "http://elsewhere.example/login"}), "answered a redirect (HTTP 302 to http://elsewhere.example/login), which is not followed"),
        (b"\x00\x00\x12\x04\x00\x00\x00\x00\x00garbage\r\n\r\n", "answered something that is not a whole HTTP reply (BadStatusLine): is --server its REST port?"),
        *[(prediction_reply(encoded), message) for encoded, message in WRONG_IMAGES],
    ],
    ids=["html", "no-predictions", "empty-predictions", "no-image", "bad-base64", "non-ascii-base64", "deep-nesting", "deep-in-json", "redirect", "not-http", *WRONG_IMAGE_IDS],
)
def test_a_bad_rest_reply_is_one_message_naming_the_server(reply, message):
    with bad_serving(reply) as address, pytest.raises(completers.BadServerReply) as raised:
        completers.ServingCompleter(address)(*REGION)
    assert str(raised.value).startswith(f"TF Serving at http://{address}/v1/models/glcic:predict {message}"), raised.value
    assert "\n" not in str(raised.value) and isinstance(raised.value, ServiceUnavailable)  # the page: 502, inpaint.py: error: ...


@pytest.mark.parametrize(
    "outputs,message",
    [
        ({}, "answered without a completed image (inpainted_bytes): is --model_name this project's export?"),
        ({"inpainted_bytes": []}, "answered without a completed image (inpainted_bytes): is --model_name this project's export?"),
        *[({"inpainted_bytes": [encoded]}, message) for encoded, message in WRONG_IMAGES],
    ],
    ids=["no-output", "empty-output", *WRONG_IMAGE_IDS],
)
def test_a_bad_grpc_reply_is_one_message_naming_the_server(outputs, message):
    pytest.importorskip("tensorflow_serving", reason="gRPC needs tensorflow-serving-api (pip install --no-deps tensorflow-serving-api)")
    with bad_grpc_serving(outputs) as address, completers.ServingCompleter(address, "grpc") as completer, pytest.raises(completers.BadServerReply) as raised:
        completer(*REGION)
    assert str(raised.value).startswith(f"TF Serving at {address} (gRPC) {message}"), raised.value


def test_inpaint_py_says_a_bad_reply_in_one_line(sample_folder, tmp_path):
    photo = sample_folder / "test" / "coins.png"
    with bad_serving((200, "text/html", b"<html>Welcome to nginx!</html>")) as address:
        done = in_process.run("inpaint", f"--server={address}", f"--image={photo}", "--box=50,60,40,40", f"--output={tmp_path / 'out.png'}")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: TF Serving at http://{address}/v1/models/glcic:predict answered text/html, not JSON (30 bytes): is --server its REST port?"
    )
    assert not (tmp_path / "out.png").exists()


def test_an_error_reply_whose_message_is_no_text_is_its_status():
    # Before: {"error": {...}} reached failed_check_message, an AttributeError (the page's 500).
    for body in (b'{"error": {"code": 3}}', b'{"error": ' + b"[" * 100_000, b"<html>Bad</html>"):
        with bad_serving((400, "application/json", body)) as address, pytest.raises(UserError) as raised:
            completers.ServingCompleter(address)(*REGION)
        assert str(raised.value) == f"TF Serving at http://{address}/v1/models/glcic:predict refused the request: HTTP 400 Bad Request", raised.value


def _too_large_rest_reply(framing, body):
    if framing == "announced":  # Content-Length states it
        return (200, "application/json", body)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"  # no length: found out by reading


@pytest.mark.parametrize("framing", ["announced", "chunked"])
def test_a_reply_larger_than_any_completion_of_the_region_is_not_read_whole(framing):
    # Before: a 400 MB reply was read whole (then base64-decoded, decoded) for a 40x30 region.
    body = b'{"predictions": [{"b64": "' + b"A" * (40 * 2**20) + b'"}]}'
    sent = []
    with bad_serving(_too_large_rest_reply(framing, body), sent) as address, pytest.raises(completers.BadServerReply) as raised:
        completers.ServingCompleter(address)(*REGION)
    limit = completers._largest_rest_reply((30, 40))
    assert 100_000 < limit < 200_000  # 4 bytes a pixel, base64, the slack
    assert str(raised.value) == (
        f"TF Serving at http://{address}/v1/models/glcic:predict answered over {limit} bytes, more than any completion of the 40x30 region sent: is --server its REST port?"
    )
    time.sleep(0.2)  # the fake server finds the connection closed
    assert sent and sent[0] < len(body) / 2, sent  # what the sockets' buffers took, not the whole reply


def _black_png(side):
    return _png(np.zeros((side, side, 3), np.uint8))


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_an_image_of_another_size_is_refused_from_its_header_before_it_is_decoded(protocol, monkeypatch):
    # A black PNG compresses 1000:1: 31 KB (within what a 40x30 region's PNG may take) states
    # 3000x3000, 27 MB decoded; 0.7 MB of it state 15000x15000, 675 MB (1.3 GB more at its peak).
    if protocol == "grpc":
        pytest.importorskip("tensorflow_serving", reason="gRPC needs tensorflow-serving-api (pip install --no-deps tensorflow-serving-api)")
    bomb = _black_png(3000)
    assert len(bomb) < completers._largest_png((30, 40))
    decoded = []
    imdecode = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *args: decoded.append(1) or imdecode(*args))
    serving = bad_serving(prediction_reply(bomb)) if protocol == "rest" else bad_grpc_serving({"inpainted_bytes": [bomb]})
    with serving as address, completers.ServingCompleter(address, protocol) as completer, pytest.raises(completers.BadServerReply) as raised:
        completer(*REGION)
    assert str(raised.value).endswith("answered a 3000x3000 image for a 40x30 region: is --model_name this project's export?"), raised.value
    assert not decoded  # refused from its header


def test_a_grpc_reply_larger_than_any_completion_of_the_region_is_refused():
    pytest.importorskip("tensorflow_serving", reason="gRPC needs tensorflow-serving-api (pip install --no-deps tensorflow-serving-api)")
    noise = np.random.default_rng(6).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    with bad_grpc_serving({"inpainted_bytes": [noise]}) as address, completers.ServingCompleter(address, "grpc") as completer, pytest.raises(completers.BadServerReply) as raised:
        completer(*REGION)
    assert str(raised.value) == f"TF Serving at {address} (gRPC) answered 300000 bytes, more than any PNG of the 40x30 region sent", raised.value
