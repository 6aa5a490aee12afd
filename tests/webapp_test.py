"""The page's server: POST /complete as the page sends it, and every refusal a person can meet."""

import contextlib
import http.client
import json
import logging
import os
import re
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
from fake_serving import bad_serving, closed_port_address, fake_serving, prediction_reply
from starlette.testclient import TestClient

from glcic_tf import completers, images, photos
from glcic_tf.errors import UserError
from glcic_tf.webapp import server

ROOT = Path(__file__).resolve().parent.parent

@pytest.fixture(scope="module")
def local_completer(trained_run):
    return completers.load_completer(str(trained_run), "float32")


def _png(array):
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    return cv2.imencode(".png", array)[1].tobytes()


def _photo(sample_folder):
    return images.read_image(str(sample_folder / "test" / "chelsea.png"))


def _hole(shape):
    mask = np.zeros(shape, np.uint8)
    cv2.line(mask, (100, 120), (250, 140), 255, 21)  # a brush stroke, as the page paints
    return mask


def _post(client, image_bytes, mask_bytes, postprocess="false", name="chelsea.png"):
    return client.post("/complete", files={"image": (name, image_bytes, "image/png"), "mask": ("mask.png", mask_bytes, "image/png")}, data={"postprocess": postprocess})


@pytest.mark.parametrize("postprocess", ["false", "true"])
def test_completes_the_painted_hole_and_keeps_every_other_pixel(local_completer, sample_folder, postprocess):
    photo = _photo(sample_folder)
    hole = _hole(photo.shape[:2])
    reply = _post(TestClient(server.create_app(local_completer)), _png(photo), _png(hole), postprocess)
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
    assert float(reply.headers["x-completion-seconds"]) > 0
    completed = cv2.cvtColor(cv2.imdecode(np.frombuffer(reply.content, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert completed.shape == photo.shape
    np.testing.assert_array_equal(completed[hole == 0], photo[hole == 0])
    assert np.abs(completed.astype(int) - photo.astype(int))[hole > 0].mean() > 1
    expected = photos.inpaint(local_completer, photo, (hole > 0).astype(np.float32)[..., None], postprocess == "true")
    np.testing.assert_array_equal(completed, expected)  # what glcic_tf.inference gives, postprocessing as asked


def test_the_page_and_its_limits_are_served(local_completer):
    client = TestClient(server.create_app(local_completer, server.PageSettings(max_pixels=1234, max_upload_bytes=5678, description="tiny")))
    page = client.get("/")
    assert page.status_code == 200 and 'id="mask-canvas"' in page.text and "static/editor.js" in page.text
    assert client.get("/static/editor.js").status_code == 200 and client.get("/static/style.css").status_code == 200
    assert client.get("/config").json() == {"max_pixels": 1234, "max_upload_bytes": 5678, "max_mask_bytes": 5678, "model": "tiny"}


def test_refusals_are_messages_and_the_server_keeps_serving(local_completer, sample_folder):
    photo = _photo(sample_folder)
    hole = _png(_hole(photo.shape[:2]))
    client = TestClient(server.create_app(local_completer, server.PageSettings(max_pixels=200_000, max_upload_bytes=400_000)))
    # Limits: photo 400000 bytes, mask 200000 / 8 + 65536 = 90536, request those + 65536 = 556072.
    cases = [
        (b"this is a text file", hole, 400, "notes.png is not a readable image file"),
        (b"\xff\xd8\xff" + bytes(range(256)) * 2, hole, 400, "notes.png is not a readable image file (JPEG, PNG, WebP, GIF, BMP or TIFF)"),
        (_png(photo), _png(np.zeros(photo.shape[:2], np.uint8)), 400, "Nothing is painted"),
        (_png(photo), _png(np.full((10, 10), 255, np.uint8)), 400, "the painted mask is 10x10 but the image is 451x300"),
        (_png(cv2.resize(photo, (600, 400))), _png(_hole((400, 600))), 413, "notes.png is 600x400, over the limit of 200000 pixels"),
        # Each size check once: the announced Content-Length (only it knows the size before reading),
        # the photo's own limit, the mask's own limit.
        (b"\x89PNG" + bytes(800_000), hole, 413, "The upload is 0.76"),
        (b"\x89PNG" + bytes(450_000), hole, 413, "notes.png is 0.429 MB; this server takes photos up to 0.381 MB"),
        (_png(photo), b"\x89PNG" + bytes(99_996), 413, "The painted mask is 0.0954 MB; this server takes masks up to 0.0863 MB"),
    ]
    for image_bytes, mask_bytes, status, message in cases:
        reply = _post(client, image_bytes, mask_bytes, name="notes.png")
        assert reply.status_code == status and message in reply.json()["error"], (status, message, reply.text)
    assert client.post("/complete", data={"postprocess": "false"}).json()["error"].startswith("Open a photo")
    assert _post(client, _png(photo), hole).status_code == 200  # still serving


def _start_server(app, send_buffer=None):
    """`app` served as app.py serves it (`PageServer`) on 127.0.0.1, in a thread: (port, the
    server, its thread). `send_buffer`: the connections' socket send buffer (SO_SNDBUF, which
    they take from the listening socket), so that a small reply fills it."""
    listening = socket.create_server(("127.0.0.1", 0))
    if send_buffer is not None:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    web_server = server.PageServer(app)
    thread = threading.Thread(target=web_server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    while not web_server.started:
        time.sleep(0.01)
    return listening.getsockname()[1], web_server, thread


@contextlib.contextmanager
def _real_server(app, before_stopping=lambda: None):
    """`app` served by a real uvicorn on 127.0.0.1 in a thread; yields its port. Stopping waits
    for the requests in flight, so `before_stopping` lets a test's blocked completer go."""
    port, web_server, thread = _start_server(app)
    try:
        yield port
    finally:
        before_stopping()
        web_server.should_exit = True
        thread.join(30)


def _multipart(image_bytes, mask_bytes):
    """The form the page sends, as (boundary, body)."""
    boundary = b"glcicboundary"
    parts = [
        (b'name="image"; filename="big.png"', image_bytes),
        (b'name="mask"; filename="mask.png"', mask_bytes),
        (b'name="postprocess"', b"false"),
    ]
    body = b"".join(b"--" + boundary + b"\r\nContent-Disposition: form-data; " + disposition + b"\r\n\r\n" + data + b"\r\n" for disposition, data in parts)
    return boundary, body + b"--" + boundary + b"--\r\n"


def _post_chunked(port, boundary, body, chunk_size=64 * 1024):
    """POST /complete with Transfer-Encoding: chunked (no Content-Length), as a client that
    hides its size; stops sending once the server has answered. Returns (status, body, bytes sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(
            b"POST /complete HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n\r\n"
        )
        sent = 0
        try:
            for start in range(0, len(body), chunk_size):
                chunk = body[start : start + chunk_size]
                connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                if select.select([connection], [], [], 0)[0]:  # the server answered already
                    break
            else:
                connection.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection after answering
        reply = http.client.HTTPResponse(connection)
        reply.begin()
        return reply.status, reply.read(), sent


@pytest.mark.parametrize("oversized", ["photo", "mask"])
def test_a_chunked_upload_over_the_limit_is_refused_while_it_streams_in(local_completer, sample_folder, oversized):
    photo_png = _png(_photo(sample_folder))
    hole = _png(_hole(_photo(sample_folder).shape[:2]))
    if oversized == "photo":
        image_bytes, mask_bytes = photo_png + bytes(32 * 2**20), hole  # 32 MB against a 1 MB limit
    else:
        image_bytes, mask_bytes = photo_png, hole + bytes(32 * 2**20)  # a 32 MB mask (a valid PNG and padding)
    boundary, body = _multipart(image_bytes, mask_bytes)
    app = server.create_app(local_completer, server.PageSettings(max_pixels=200_000, max_upload_bytes=2**20))
    with _real_server(app) as port:
        status, reply, sent = _post_chunked(port, boundary, body)
        assert status == 413 and json.loads(reply)["error"].startswith("The upload is larger than 1.15 MB; this server takes photos up to 1 MB"), reply
        # Refused as it arrived, not after the whole body (what was sent includes what the
        # sockets' buffers took, a few MB, before the client saw the reply).
        assert sent < len(body) / 4, (sent, len(body))
        status, reply, _ = _post_chunked(port, *_multipart(photo_png, hole))  # the next upload, chunked too, completes
        assert status == 200 and reply.startswith(b"\x89PNG"), reply[:200]


def test_a_model_server_that_is_down_is_a_message(sample_folder):
    photo = _photo(sample_folder)
    address = closed_port_address()
    client = TestClient(server.create_app(completers.ServingCompleter(address)))
    reply = _post(client, _png(photo), _png(_hole(photo.shape[:2])))
    assert reply.status_code == 503 and f"TF Serving at http://{address}/v1/models/glcic:predict did not answer" in reply.json()["error"]
    assert client.get("/config").status_code == 200


@pytest.mark.parametrize(
    "reply,message",
    [
        ((200, "text/html", b"<html><body>Welcome to nginx!</body></html>"), "answered text/html, not JSON (43 bytes): is --server its REST port?"),
        (prediction_reply(_png(np.zeros((10, 10, 3), np.uint8))), "answered a 10x10 image for a "),
    ],
)
def test_a_model_servers_bad_reply_is_a_502_message(sample_folder, reply, message):
    # Before: a JSONDecodeError or a broadcast error, and the page's 500.
    photo = _photo(sample_folder)
    with bad_serving(reply) as address:
        client = TestClient(server.create_app(completers.ServingCompleter(address)))
        failed = _post(client, _png(photo), _png(_hole(photo.shape[:2])))
    assert failed.status_code == 502 and failed.json()["error"].startswith(f"TF Serving at http://{address}/v1/models/glcic:predict {message}"), failed.text


def test_an_unforeseen_failure_is_a_message_and_the_next_photo_completes(local_completer, sample_folder, caplog):
    photo = _photo(sample_folder)
    calls = []

    def flaky(image, mask):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory, say")
        return local_completer(image, mask)

    client = TestClient(server.create_app(flaky), raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR):
        failed = _post(client, _png(photo), _png(_hole(photo.shape[:2])))
    assert failed.status_code == 500
    assert failed.json()["error"] == "The server failed to complete this photo (the reason is in its log); it keeps running."
    assert "RuntimeError: out of memory, say" in caplog.text  # internals in the log only
    assert _post(client, _png(photo), _png(_hole(photo.shape[:2]))).status_code == 200


def test_a_malformed_form_is_a_400_message(local_completer):
    client = TestClient(server.create_app(local_completer))
    reply = client.post("/complete", content=b"--x\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--x--\r\n", headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert reply.status_code == 400 and reply.json()["error"].startswith("The request is not a form this server reads"), reply.text


def _small_photo_form():
    """A 64x48 photo with a painted square, as the page's form."""
    photo = np.random.default_rng(4).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    hole = np.zeros((48, 64), np.uint8)
    hole[10:20, 10:30] = 255
    return _multipart(_png(photo), _png(hole))


def _send_form(port, boundary, body):
    """A connection that has sent POST /complete with the form (Content-Length), reply unread."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=60)
    connection.sendall(
        b"POST /complete HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=" + boundary
        + b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    return connection


def _reply(connection):
    """(status, headers, body) of the reply on `connection`, which is then closed."""
    with connection:
        reply = http.client.HTTPResponse(connection)
        reply.begin()
        return reply.status, reply.headers, reply.read()


class _BlockingCompleter:
    """A completer that returns its input once `release` is set, counting its calls."""

    def __init__(self):
        self.started, self.release, self.calls = threading.Event(), threading.Event(), 0

    def __call__(self, image, mask):
        self.calls += 1
        self.started.set()
        assert self.release.wait(60)
        return image


def test_the_page_stays_fast_while_completions_are_queued():
    def slow(image, mask):  # a completion that takes half a second, as a small hole on a big photo
        time.sleep(0.5)
        return image

    with _real_server(server.create_app(slow, server.PageSettings(max_queue=60))) as port:
        waiting = [_send_form(port, *_small_photo_form()) for _ in range(45)]
        time.sleep(1)  # all 45 arrived: one completing, the others queued
        start = time.perf_counter()
        page = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        page.request("GET", "/")
        assert page.getresponse().status == 200
        seconds = time.perf_counter() - start
        for connection in waiting:  # the queued completions are dropped: their clients went away
            connection.close()
    # Before: completions waited for their lock in the thread pool that also reads the page's
    # files, so GET / waited behind them (3.9 s with 45 queued 1-second completions).
    assert seconds < 0.5, seconds


def test_past_the_queue_length_completions_are_told_busy_and_the_queue_completes():
    completer = _BlockingCompleter()
    with _real_server(server.create_app(completer, server.PageSettings(max_queue=2)), completer.release.set) as port:
        running = _send_form(port, *_small_photo_form())
        assert completer.started.wait(30)
        queued = [_send_form(port, *_small_photo_form()) for _ in range(2)]
        time.sleep(0.5)  # both arrived and wait for the slot
        status, headers, body = _reply(_send_form(port, *_small_photo_form()))
        assert status == 503 and headers["Retry-After"] == "5", body
        assert json.loads(body)["error"] == "The server is busy (3 photos are being completed or waiting); try again in a moment."
        completer.release.set()
        assert [_reply(connection)[0] for connection in [running, *queued]] == [200, 200, 200]
        assert _reply(_send_form(port, *_small_photo_form()))[0] == 200  # the queue is free again
    assert completer.calls == 4


def test_a_queued_completion_whose_client_went_away_is_dropped():
    completer = _BlockingCompleter()
    with _real_server(server.create_app(completer), completer.release.set) as port:
        running = _send_form(port, *_small_photo_form())
        assert completer.started.wait(30)
        abandoned = _send_form(port, *_small_photo_form())
        time.sleep(0.5)  # it arrived and waits for the slot
        abandoned.close()  # the user closed the page
        time.sleep(0.5)
        completer.release.set()
        assert _reply(running)[0] == 200
        time.sleep(1)  # time enough for the abandoned completion to run, if it were not dropped
        assert completer.calls == 1
        assert _reply(_send_form(port, *_small_photo_form()))[0] == 200
    assert completer.calls == 2


def test_told_to_stop_the_server_answers_the_waiting_completions_and_stops_after_the_running_one():
    def slow(image, mask):
        time.sleep(0.5)
        return image

    port, web_server, thread = _start_server(server.create_app(slow, server.PageSettings(max_queue=20)))
    connections = [_send_form(port, *_small_photo_form()) for _ in range(10)]
    time.sleep(0.3)  # the first one is completing, nine wait
    start = time.perf_counter()
    web_server.handle_exit(signal.SIGTERM, None)  # what SIGTERM or Ctrl-C calls in app.py
    replies = [_reply(connection) for connection in connections]
    thread.join(30)
    seconds = time.perf_counter() - start
    statuses = [status for status, _, _ in replies]
    assert 1 <= statuses.count(200) <= 2 and statuses.count(503) == 10 - statuses.count(200), statuses
    assert all(json.loads(body)["error"] == "The server is stopping; try again once it is back." for status, _, body in replies if status == 503)
    assert not thread.is_alive() and seconds < 2.5, seconds  # running the ten waiting ones would take 5 s


def test_what_the_model_server_or_the_tiling_refuses_is_a_400_the_user_can_act_on(export_base):
    big = np.zeros((2100, 2100, 3), np.uint8)  # 4.41 M pixels: over the export's 2048 x 2048
    hole = np.zeros((2100, 2100), np.uint8)
    hole[1000:1100, 1000:1100] = 255
    with fake_serving(export_base / "3") as (address, _):
        whole = TestClient(server.create_app(completers.ServingCompleter(address), server.PageSettings(tiling="whole", max_network_pixels=5_000_000)))
        reply = _post(whole, _png(big), _png(hole))
    assert reply.status_code == 400, reply.text  # the user's to act on, not 503 as if the server were down
    assert reply.json()["error"] == (
        f"TF Serving at http://{address}/v1/models/glcic:predict refused the request: image is larger than 4194304 pixels (counting every image of the request)"
    )
    crop = TestClient(server.create_app(completers.ServingCompleter(closed_port_address()), server.PageSettings(tiling="crop", max_network_pixels=1000)))
    reply = _post(crop, _png(big[:200, :200]), _png(hole[1000:1200, 1000:1200]))
    assert reply.status_code == 400 and "--max_network_pixels" in reply.json()["error"], reply.text


def test_a_post_from_another_sites_page_is_refused(local_completer, sample_folder):
    photo = _photo(sample_folder)
    client = TestClient(server.create_app(local_completer))
    files = {"image": ("chelsea.png", _png(photo), "image/png"), "mask": ("mask.png", _png(_hole(photo.shape[:2])), "image/png")}
    for origin in ("http://evil.example", "null", "http://testserver.evil.example", "http://testserver:3000", "http://["):  # another local app too; no URL (a 500 before)
        reply = client.post("/complete", files=files, headers={"Origin": origin})
        assert reply.status_code == 403 and reply.json()["error"] == "This server completes photos for its own page only, not for other sites.", origin
    assert client.post("/complete", files=files, headers={"Origin": "http://testserver"}).status_code == 200  # its own page
    assert client.post("/complete", files=files).status_code == 200  # a script (curl sends no Origin)


def test_with_a_token_every_request_must_carry_it(local_completer, sample_folder):
    photo = _photo(sample_folder)
    files = {"image": ("chelsea.png", _png(photo), "image/png"), "mask": ("mask.png", _png(_hole(photo.shape[:2])), "image/png")}
    app = server.create_app(local_completer, server.PageSettings(token="s3cret-token"))
    stranger = TestClient(app)
    for reply in (stranger.get("/"), stranger.get("/config"), stranger.post("/complete", files=files), stranger.get("/?token=wrong")):
        assert reply.status_code == 403 and "needs its token" in reply.json()["error"], reply.text
    for path in ("/static/editor.js", "/static/style.css", "/static/index.html", "/static/nothing-here", "/nothing-here"):
        reply = stranger.get(path)  # the page's own files too: before, /static answered anyone
        assert reply.status_code == 403 and "needs its token" in reply.json()["error"], path
    browser = TestClient(app)
    assert browser.get("/?token=s3cret-token").status_code == 200  # the printed address; sets the cookie
    assert browser.get("/static/editor.js").status_code == 200 and browser.get("/static/style.css").status_code == 200
    assert browser.get("/config").status_code == 200 and browser.post("/complete", files=files).status_code == 200
    script = TestClient(app, headers={"Authorization": "Bearer s3cret-token"})
    assert script.post("/complete", files=files).status_code == 200 and script.get("/static/editor.js").status_code == 200


def test_a_stale_token_cookie_does_not_hide_the_right_token():
    # Before: the cookie won, so after a restart with a new random token the printed address
    # (and a script's Authorization header) got 403 from a browser holding the old cookie.
    app = server.create_app(lambda image, mask: image, server.PageSettings(token="new-token"))
    browser = TestClient(app, cookies={server.TOKEN_COOKIE: "old-token"})
    assert browser.get("/config").status_code == 403  # the stale cookie alone
    page = browser.get("/?token=new-token")
    assert page.status_code == 200, page.text
    assert f"{server.TOKEN_COOKIE}=new-token" in page.headers["set-cookie"]  # the page's reply sets it anew
    assert browser.get("/config").status_code == 200 and browser.get("/static/editor.js").status_code == 200
    script = TestClient(app, cookies={server.TOKEN_COOKIE: "old-token"}, headers={"Authorization": "Bearer new-token"})
    assert script.get("/config").status_code == 200
    wrong = TestClient(app, cookies={server.TOKEN_COOKIE: "new-token"}, headers={"Authorization": "Bearer old-token"})
    assert wrong.get("/config").status_code == 200  # any way that carries the right one


def test_config_tells_the_models_folder_name_not_its_path():
    assert server.model_description("/home/me/secret/runs/places2/", None, "rest", "glcic") == "places2"
    assert server.model_description(None, "10.0.0.5:8500", "grpc", "glcic") == "TF Serving at 10.0.0.5:8500 (grpc, model glcic)"


def test_listening_on_ipv6_and_clear_errors_for_addresses_that_cannot_be_had():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    with server.listening_socket("::1", 0) as listening:
        assert listening.family == socket.AF_INET6
        port = listening.getsockname()[1]
        assert server.page_address("::1", port) == f"[::1]:{port}"
        with pytest.raises(UserError, match=rf"^cannot listen on \[::1\]:{port}: Address already in use \(check --host, try another --port\)$"):
            server.listening_socket("::1", port)
    with pytest.raises(UserError, match=r"^cannot listen on no-such-host.invalid:7860: (Name or service not known|.*not known.*) \(check --host"):
        server.listening_socket("no-such-host.invalid", 7860)
    assert server.page_address("0.0.0.0", 80) == "127.0.0.1:80" and server.page_address("::", 80) == "[::1]:80"
    assert server.is_loopback("127.0.0.1") and server.is_loopback("::1") and server.is_loopback("localhost")
    assert not server.is_loopback("0.0.0.0") and not server.is_loopback("::") and not server.is_loopback("192.168.1.20")


def _trickle(port, seconds_between=0.3, pieces=100):
    """A connection that announces a form and then sends its body one byte at a time; returns
    (connection, a thread that keeps trickling until the connection is closed or `pieces` sent)."""
    boundary, body = _small_photo_form()
    connection = socket.create_connection(("127.0.0.1", port), timeout=60)
    connection.sendall(
        b"POST /complete HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=" + boundary
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
    )

    def trickle():
        for index in range(min(pieces, len(body))):
            try:
                connection.sendall(body[index : index + 1])
            except OSError:
                return
            time.sleep(seconds_between)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    return connection


def _silent_upload(port):
    """A connection that has sent POST /complete's headers and its form's first part header, then
    nothing more (it announced 100000 bytes)."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=20)
    connection.sendall(
        b"POST /complete HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=glcicboundary\r\n"
        b"Content-Length: 100000\r\n\r\n--glcicboundary\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n\r\n"
    )
    return connection


def test_an_upload_that_trickles_in_holds_no_place_and_is_refused_after_its_time():
    # Before: three clients sending a byte every 2 s held every place (--max_queue=2) for as long
    # as they liked, and every honest client got 503 meanwhile; then each held it for 60 s.
    completer = _BlockingCompleter()
    completer.release.set()
    with _real_server(server.create_app(completer, server.PageSettings(max_queue=0, upload_seconds=1.0))) as port:
        slow = _trickle(port)
        time.sleep(0.3)
        assert _reply(_send_form(port, *_small_photo_form()))[0] == 200  # the one place is free while it trickles
        start = time.perf_counter()
        status, _, body = _reply(slow)
        assert status == 408 and "took longer than 1 s" in json.loads(body)["error"]
        assert time.perf_counter() - start < 5
    assert completer.calls == 1


def test_uploads_that_stop_halfway_hold_no_place_in_the_queue():
    # Before: a place was taken before the upload arrived, so max_queue + 1 clients that sent their
    # headers and the form's first line, then nothing, made every completion 503 for 60 s.
    completer = _BlockingCompleter()
    completer.release.set()
    with _real_server(server.create_app(completer, server.PageSettings(max_queue=2))) as port:
        silent = [_silent_upload(port) for _ in range(1 + 2 + 1)]  # one more than the slot and the queue
        time.sleep(0.5)  # all arrived and wait for the rest of their uploads
        status, _, body = _reply(_send_form(port, *_small_photo_form()))
        assert status == 200, body
        for connection in silent:
            connection.close()
    assert completer.calls == 1


def _closed_by_the_server(connection):
    """Whether the server closes `connection` (reading what it sent first), before its timeout."""
    with connection:
        while connection.recv(65536):
            pass
    return True


def _open_connections(web_server):
    return len(web_server.server_state.connections)


def _wait_for(condition, seconds):
    """Whether `condition()` holds within `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _not_reading(port, request, receive_buffer=4096):
    """A connection with a small receive buffer that sends `request` and never reads its reply."""
    connection = socket.socket()
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    connection.settimeout(20)
    connection.connect(("127.0.0.1", port))
    connection.sendall(request)
    return connection


def _large_form():
    """A 300x300 noise photo with a painted square: its completion's PNG is some 270 KB."""
    photo = np.random.default_rng(7).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    hole = np.zeros((300, 300), np.uint8)
    hole[100:120, 100:120] = 255
    boundary, body = _multipart(_png(photo), _png(hole))
    return (
        b"POST /complete HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=" + boundary
        + b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def test_connections_that_send_no_request_are_closed_within_seconds(monkeypatch):
    # Before: closed after 10 s (IDLE_SECONDS), counted against 100 connections meanwhile.
    monkeypatch.setattr(server, "HEADER_SECONDS", 1)
    app = server.create_app(lambda image, mask: image)
    port, web_server, thread = _start_server(app)
    try:
        nothing = socket.create_connection(("127.0.0.1", port), timeout=20)  # sends nothing at all
        headers_begun = socket.create_connection(("127.0.0.1", port), timeout=20)
        headers_begun.sendall(b"POST /complete HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never ends them
        answered = socket.create_connection(("127.0.0.1", port), timeout=20)
        answered.sendall(b"POST /config HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")  # 405, then trickles its body
        unread = _not_reading(port, b"GET /config HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # a reply the sockets hold, never read
        start = time.perf_counter()
        time.sleep(0.5)
        answered.sendall(b"x")
        assert all(_closed_by_the_server(connection) for connection in (nothing, headers_begun, answered, unread))
        assert time.perf_counter() - start < 1 + 1.5  # HEADER_SECONDS and the check's tick
        assert _wait_for(lambda: _open_connections(web_server) == 0, 1)
        assert _reply(_send_form(port, *_small_photo_form()))[0] == 200
    finally:
        web_server.should_exit = True
        thread.join(30)


class _ReconnectingClients:
    """`count` connections that send nothing and reconnect as soon as the server closes them."""

    def __init__(self, port, count):
        self.port, self.selector, self.reconnects, self.stopped = port, selectors.DefaultSelector(), 0, threading.Event()
        for _ in range(count):
            self._connect()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _connect(self):
        connection = socket.socket()
        connection.setblocking(False)
        connection.connect_ex(("127.0.0.1", self.port))
        self.selector.register(connection, selectors.EVENT_READ)

    def _run(self):
        while not self.stopped.is_set():
            for key, _ in self.selector.select(0.05):
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.selector.unregister(key.fileobj)
                    key.fileobj.close()
                    self.reconnects += 1
                    self._connect()

    def close(self):
        self.stopped.set()
        self.thread.join(10)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()


def test_idle_clients_reconnecting_as_soon_as_closed_do_not_shut_real_users_out(monkeypatch):
    # Before: uvicorn's limit_concurrency counted connections that had sent nothing, and the idle
    # check closed them after 10 s: 99 such clients, reconnecting, made every request a 503.
    monkeypatch.setattr(server, "HEADER_SECONDS", 1)
    app = server.create_app(lambda image, mask: image, server.PageSettings(max_connections=10))
    port, web_server, thread = _start_server(app)
    idle = _ReconnectingClients(port, 30)  # three times max_connections
    try:
        for _ in range(6):  # over 3 s: through the idle clients' closing and reconnecting
            page = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            page.request("GET", "/")
            assert page.getresponse().status == 200
            page.close()
            assert _reply(_send_form(port, *_small_photo_form()))[0] == 200
            time.sleep(0.5)
        assert idle.reconnects >= 30, idle.reconnects  # they were closed, and came back
    finally:
        idle.close()
        web_server.should_exit = True
        thread.join(30)


def test_past_max_connections_the_oldest_idle_connections_make_room():
    now = [0.0]
    connections = server._Connections(limit=3, ceiling=6, clock=lambda: now[0])
    sent, in_flight = SimpleNamespace(response_complete=True), SimpleNamespace(response_complete=False)
    uploading, old_idle, reading, kept_alive = _FakeConnection(in_flight), _FakeConnection(None), _FakeConnection(sent, 5000), _FakeConnection(sent)
    for connection in (uploading, old_idle, reading, kept_alive):
        connections.add(connection)
    assert not any(c.transport.aborted for c in (uploading, old_idle, reading, kept_alive))  # all within their grace
    now[0] = server.EVICTION_GRACE_SECONDS + 0.1
    young = [_FakeConnection(None) for _ in range(3)]
    connections.add(young[0])  # 5 open: the oldest idle ones make room, neither a request nor a reply
    assert old_idle.transport.aborted and kept_alive.transport.aborted
    assert not uploading.transport.aborted and not reading.transport.aborted and not young[0].transport.aborted
    for connection in young[1:]:  # young ones are kept past the limit, up to the ceiling...
        connections.add(connection)
    assert len(connections.opened) == 5 and not any(c.transport.aborted for c in young)
    for _ in range(2):  # ...past which the oldest idle one goes, whatever its age
        connections.add(_FakeConnection(None))
    assert young[0].transport.aborted and len(connections.opened) == 6
    connections.discard(uploading)
    assert uploading not in connections and uploading not in connections.opened


def test_past_max_uploads_an_upload_is_told_busy_and_the_page_still_served():
    completer = _BlockingCompleter()
    completer.release.set()
    with _real_server(server.create_app(completer, server.PageSettings(max_uploads=2))) as port:
        silent = [_silent_upload(port) for _ in range(2)]
        time.sleep(0.5)  # both arrived and wait for the rest of their uploads
        status, headers, body = _reply(_send_form(port, *_small_photo_form()))
        assert status == 503 and headers["Retry-After"] == "5", body
        assert json.loads(body)["error"] == "The server is busy (2 uploads are arriving); try again in a moment."
        page = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        page.request("GET", "/")
        assert page.getresponse().status == 200  # the page's files are not uploads
        for connection in silent:
            connection.close()
        time.sleep(0.3)
        assert _reply(_send_form(port, *_small_photo_form()))[0] == 200
    assert completer.calls == 1


def test_a_reply_its_client_does_not_read_is_dropped_with_its_connection(monkeypatch):
    # Before: the idle check called transport.close(), which waits for the reply to be read: the
    # connection (and its reply's bytes) stayed as long as the client did.
    monkeypatch.setattr(server, "UNREAD_SECONDS", 1)
    port, web_server, thread = _start_server(server.create_app(lambda image, mask: image), send_buffer=8192)
    try:
        unread = _not_reading(port, _large_form())
        assert _wait_for(lambda: any(c.transport.get_write_buffer_size() for c in list(web_server.server_state.connections)), 20)  # replied
        start = time.perf_counter()
        assert _wait_for(lambda: _open_connections(web_server) == 0, 1 + 2), "the connection is still open"
        assert time.perf_counter() - start > 0.9  # not before its time
        unread.close()
        assert _reply(_send_form(port, *_small_photo_form()))[0] == 200
    finally:
        web_server.should_exit = True
        thread.join(30)


class _FakeTransport:
    def __init__(self, buffered):
        self.buffered, self.aborted = buffered, False

    def get_write_buffer_size(self):
        return self.buffered

    def is_closing(self):
        return self.aborted

    def abort(self):
        self.aborted = True


class _FakeConnection:
    def __init__(self, cycle, buffered=0):
        self.cycle, self.transport = cycle, _FakeTransport(buffered)


def test_a_reply_read_slowly_is_kept_and_a_request_in_flight_is_left_to_the_page(monkeypatch):
    monkeypatch.setattr(server, "UNREAD_SECONDS", 2)
    monkeypatch.setattr(server, "HEADER_SECONDS", 1)
    web_server = server.PageServer(server.create_app(lambda image, mask: image))
    sent, in_flight = SimpleNamespace(response_complete=True), SimpleNamespace(response_complete=False)
    reading, stalled = _FakeConnection(sent, 10_000_000), _FakeConnection(sent, 10_000_000)
    uploading, waiting_for_headers = _FakeConnection(in_flight), _FakeConnection(None)
    for connection in (reading, stalled, uploading, waiting_for_headers):
        web_server.server_state.connections.add(connection)
    for tick in range(40):  # 4 s, a tick each 0.1 s
        reading.transport.buffered -= 1000  # its client takes a little
        web_server.close_idle_connections(100 + tick / 10)
        if tick == 12:
            assert waiting_for_headers.transport.aborted and not stalled.transport.aborted
    assert stalled.transport.aborted and not reading.transport.aborted and not uploading.transport.aborted


@pytest.mark.parametrize("client", ["trickling", "silent"])
def test_told_to_stop_the_server_ends_an_upload_still_arriving(client):
    # Before: one trickling upload kept a SIGTERMed server alive until its client gave up; then a
    # silent one (headers and the form's first line, then nothing) for 59.6 s.
    app = server.create_app(_BlockingCompleter(), server.PageSettings(upload_seconds=120))
    with _real_server(app) as port:
        slow = _trickle(port, seconds_between=0.1) if client == "trickling" else _silent_upload(port)
        time.sleep(0.3)
        start = time.perf_counter()
        app.state.stopping.set()  # what SIGTERM does (PageServer.handle_exit)
        status, _, body = _reply(slow)
        assert status == 503 and "stopping" in json.loads(body)["error"]
        assert time.perf_counter() - start < 5


def test_told_to_stop_a_completion_running_past_stop_seconds_is_answered_503_and_the_server_stops():
    completer = _BlockingCompleter()
    port, web_server, thread = _start_server(server.create_app(completer, server.PageSettings(stop_seconds=1)))
    try:
        running = _send_form(port, *_small_photo_form())
        assert completer.started.wait(30)
        web_server.handle_exit(signal.SIGTERM, None)
        status, _, body = _reply(running)
        assert status == 503 and json.loads(body)["error"] == server.STOPPING
        thread.join(10)
        assert not thread.is_alive()
    finally:
        completer.release.set()  # its thread, left running, ends


@pytest.mark.parametrize("reply", ["sent", "in-flight"])
def test_told_to_stop_the_server_stops_in_time_though_a_client_does_not_read_its_reply(reply):
    # Before: 8.26 s after SIGTERM (stop_seconds 7): uvicorn waited for the reply to be read until
    # its timeout_graceful_shutdown, a second after stop_seconds; without that timeout, forever.
    # "sent": a completion's reply, handed whole to the connection; "in-flight": the page's
    # files, requested again and again on one connection, each waiting for the last to be read.
    app = server.create_app(lambda image, mask: image, server.PageSettings(stop_seconds=1))
    port, web_server, thread = _start_server(app, send_buffer=8192)
    try:
        if reply == "sent":
            unread = _not_reading(port, _large_form())
        else:
            unread = _not_reading(port, b"GET /static/editor.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 100)
        assert _wait_for(lambda: any(c.transport.get_write_buffer_size() for c in list(web_server.server_state.connections)), 20)
        start = time.perf_counter()
        web_server.handle_exit(signal.SIGTERM, None)
        thread.join(15)
        seconds = time.perf_counter() - start
        assert not thread.is_alive() and seconds < 1 + 1, seconds  # within stop_seconds + 1 s
        assert seconds > 1, seconds  # a client reading slowly had stop_seconds
        unread.close()
    finally:
        web_server.should_exit = True
        thread.join(30)


@pytest.mark.slow
@pytest.mark.parametrize("stop,returncode", [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 130)], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_or_ctrl_c_stops_app_py_within_8_s_whatever_its_clients_do(stop, returncode):
    # Before: one silent upload kept app.py alive 59.6 s after SIGTERM, as uvicorn waited for it;
    # after Ctrl-C, a completion running on a model server that never answers kept it until the
    # request's own timeout (300 s).
    never_answering = socket.create_server(("127.0.0.1", 0))  # a model server that takes requests, answers none
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port=0", f"--server=127.0.0.1:{never_answering.getsockname()[1]}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        line = ""
        while "glcic_tf page: " not in line:
            line = process.stdout.readline()
            assert line, "app.py exited before serving"
        port = int(urlsplit(line.split("glcic_tf page: ")[1].split()[0]).port)
        silent = _silent_upload(port)
        # The page's files again and again, never read: some 7 MB, more than the sockets hold.
        unread = _not_reading(port, b"GET /static/editor.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 600)
        running = _send_form(port, *_small_photo_form())
        never_answering.settimeout(60)
        model_request, _ = never_answering.accept()  # the completion runs: it waits for the model server
        start = time.perf_counter()
        process.send_signal(stop)
        process.wait(timeout=15)
        seconds = time.perf_counter() - start
        # The promise: stop_seconds + 1 s. Before: 59.6 s with the silent upload; then 8.26 s
        # (SIGTERM) and 8.66 s (Ctrl-C) with the unread replies.
        assert seconds < server.PageSettings().stop_seconds + 1, seconds
        assert process.returncode == returncode  # SIGTERM: as the signal would; Ctrl-C: as an interrupted process
        unread.close()
        for connection in (silent, running):
            status, _, body = _reply(connection)
            assert status == 503 and json.loads(body)["error"] == server.STOPPING, body
        model_request.close()
    finally:
        process.kill()
        process.wait()
        never_answering.close()


def test_without_a_token_only_requests_addressed_to_this_machine_are_answered(local_completer, sample_folder):
    # DNS rebinding: a page at evil.example whose name is made to resolve to 127.0.0.1 sends
    # Host and Origin of evil.example, which match each other; the Host itself must be refused.
    client = TestClient(server.create_app(local_completer, server.PageSettings(allowed_hosts=("127.0.0.1", "localhost", "::1"))), base_url="http://127.0.0.1:7860")
    photo = _photo(sample_folder)
    files = {"image": ("chelsea.png", _png(photo), "image/png"), "mask": ("mask.png", _png(_hole(photo.shape[:2])), "image/png")}
    rebound = {"Host": "evil.example:7860", "Origin": "http://evil.example:7860"}
    for path, reply in (("/", client.get("/", headers=rebound)), ("/config", client.get("/config", headers=rebound)), ("/complete", client.post("/complete", files=files, headers=rebound))):
        assert reply.status_code == 403 and "this machine only" in reply.json()["error"], path
    for host in ("[", "[::1"):  # no host a URL can hold (a 500 before)
        reply = client.get("/config", headers={"Host": host})
        assert reply.status_code == 403 and "this machine only" in reply.json()["error"], host
    assert client.post("/complete", files=files, headers={"Origin": "http://127.0.0.1:7860"}).status_code == 200
    assert client.get("/", headers={"Host": "localhost:7860"}).status_code == 200


def _browser_folder(root: Path, version=1) -> Path:
    """A folder laid out as export.py --formats=web writes it (files of a few bytes)."""
    from glcic_tf import web_export  # noqa: PLC0415

    folder = root / web_export.WEB_FOLDER / str(version)
    for sub in ("model", "runtime", "static"):
        (folder / sub).mkdir(parents=True)
    (folder / "model" / web_export.MODEL_FILE).write_bytes(b"onnx")
    for name in web_export.RUNTIME_FILES:
        (folder / "runtime" / name).write_bytes(b"wasm")
    config = {"completer": "browser", "model": f"version {version}", "max_network_pixels": 4_000_000, "margin": 153, "multiple": 4,
              "model_url": f"model/{web_export.MODEL_FILE}", "runtime_url": f"runtime/{web_export.RUNTIME_FILES[0]}"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_the_page_offers_the_in_browser_model_it_serves_and_is_cross_origin_isolated(tmp_path):
    folder = _browser_folder(tmp_path)
    plain = TestClient(server.create_app(lambda image, mask: image))
    assert "browser" not in plain.get("/config").json()  # no such folder: not offered
    app = server.create_app(lambda image, mask: image, server.PageSettings(token="t0ken", browser_folder=str(folder)))
    client = TestClient(app, headers={"Authorization": "Bearer t0ken"})
    browser = client.get("/config").json()["browser"]
    assert browser == {"model": "version 1", "margin": 153, "multiple": 4, "max_network_pixels": 4_000_000,
                       "model_url": "browser/model/glcic.onnx", "runtime_url": "browser/runtime/ort.wasm.min.mjs"}
    for url, content in ((browser["model_url"], b"onnx"), (browser["runtime_url"], b"wasm")):
        reply = client.get("/" + url)
        assert reply.status_code == 200 and reply.content == content, url
        # Isolated (SharedArrayBuffer: onnxruntime-web's threads), as every reply of the page.
        assert reply.headers["cross-origin-embedder-policy"] == "require-corp" and reply.headers["cross-origin-opener-policy"] == "same-origin"
    assert client.get("/").headers["cross-origin-opener-policy"] == "same-origin"
    assert client.get("/browser/config.json").status_code == 404  # the model and the runtime only
    assert TestClient(app).get("/" + browser["model_url"]).status_code == 403  # the token guards them too


def test_the_in_browser_page_is_found_beside_the_models_export_or_named(tmp_path):
    from glcic_tf import web_export  # noqa: PLC0415

    export_dir = tmp_path / "export"
    for version in ("3", "²"):  # "²": a digit to str.isdigit, not to int()
        (export_dir / version).mkdir(parents=True)
        (export_dir / version / "saved_model.pb").write_bytes(b"")
    saved_model = str(export_dir / "3")
    for model in (export_dir, saved_model, f"{saved_model}/"):  # what the server loads
        assert completers.saved_model_folder(str(model)) in (saved_model, f"{saved_model}/")
    for model in (tmp_path / "model.tflite", tmp_path, tmp_path / "nothing"):
        assert completers.saved_model_folder(str(model)) is None
    assert web_export.browser_folder_beside(saved_model) is None  # no web/ beside it: not offered, no error
    _browser_folder(export_dir, 2)
    newest = _browser_folder(export_dir, 10)
    (export_dir / web_export.WEB_FOLDER / "11").mkdir()  # a version half written: not a page
    _browser_folder(export_dir, "²")
    for model in (saved_model, f"{saved_model}/"):  # no page of version 3: the newest (logged)
        assert web_export.browser_folder_beside(model) == newest
    assert web_export.browser_folder_beside(None) is None
    assert web_export.browser_folder(str(export_dir / "web" / "2")) == export_dir / "web" / "2"
    assert web_export.browser_folder(str(export_dir)) == newest
    assert web_export.browser_folder(str(export_dir / "web")) == newest
    same = _browser_folder(export_dir, 3)
    assert web_export.browser_folder_beside(saved_model) == same  # the server's own version before the newest
    for path in (export_dir / "3", tmp_path / "nothing"):
        with pytest.raises(UserError, match="holds no in-browser page: write one with export.py --formats=web"):
            web_export.browser_folder(str(path))


@pytest.mark.parametrize(
    "change, named",
    [
        ({"margin": "x"}, "margin 'x'"),  # the page found no regions and showed the photo unchanged as completed
        ({"multiple": 0}, "multiple 0"),
        ({"max_network_pixels": 2.5}, "max_network_pixels 2.5"),
        ({"model_url": "../../etc/passwd"}, "model_url '../../etc/passwd'"),
        ({"runtime_url": "http://evil.example/ort.mjs"}, "runtime_url 'http://evil.example/ort.mjs'"),
        ({"margin": None, "model": 5}, "margin None, model 5"),
    ],
)
def test_an_in_browser_page_whose_config_is_not_export_webs_is_refused_before_the_model_loads_or_not_offered(tmp_path, caplog, change, named):
    from glcic_tf import web_export  # noqa: PLC0415

    folder = _browser_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(UserError, match=f"^--web_export: .*config.json is not an in-browser page's config: {re.escape(named)}.*; write it again"):
        web_export.offered_by_the_page(str(folder), None)
    with caplog.at_level(logging.WARNING):
        assert web_export.offered_by_the_page("auto", str(tmp_path / "1")) is None  # beside --model: the page still serves, on its server
    assert "not offering completion in the browser" in caplog.text and named in caplog.text


def test_what_app_offers_for_each_web_export_choice(tmp_path):
    from glcic_tf import web_export  # noqa: PLC0415

    folder = _browser_folder(tmp_path)
    assert web_export.offered_by_the_page("auto", str(tmp_path / "1")) == folder  # beside the SavedModel <export_dir>/1
    assert web_export.offered_by_the_page("none", str(tmp_path / "1")) is None
    assert web_export.offered_by_the_page(str(folder), None) == folder
    (folder / "config.json").write_text("{not json")
    with pytest.raises(UserError, match=r"^--web_export: .*config.json is not an in-browser page's config \(JSONDecodeError"):
        web_export.offered_by_the_page(str(tmp_path), None)
    for empty in ("", " "):
        with pytest.raises(UserError, match="^--web_export must be auto, none or an in-browser page's folder"):
            web_export.offered_by_the_page(empty, None)
    with pytest.raises(UserError, match=r"^--web_export: None holds no in-browser page: .* \(--web_export=none offers none\)"):
        web_export.offered_by_the_page("None", None)
