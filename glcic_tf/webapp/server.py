"""The page's server: the editor (static/) and one endpoint that completes a photograph.

    POST /complete   multipart form: image (the photo's file), mask (PNG, white = hole),
                     postprocess ("true"/"false") -> image/png, the photo at its own size
    GET  /config     the limits the page checks before it sends anything

Every problem a user can cause or meet is a JSON reply {"error": message} that the page shows:
a file that is no image (400), one over the size limits (413), no hole (400), the model server
down (503) or answering something that is no completion of the photo sent (502), anything
unforeseen (500, logged with its traceback): never a client's input nor a model server's
reply. The server keeps serving after each. The size limits hold for every client: the
request's bytes are counted as they arrive (a chunked request announces no Content-Length),
and reading stops at the limit with a 413, so nothing past it is read, spooled or kept.

Completions queue on the event loop, not in the worker threads: each waits for one of its own
slots (a local network runs one completion at a time, as it uses every core already; TF
Serving gets REMOTE_SLOTS at once) and only then decodes its photo in a thread of its own
limiter, so the threads that serve the page's files are never taken by waiting completions.
A completion takes its place in the queue once its upload has arrived, so a client that sends
its headers and then nothing holds a connection, not a place. At most `max_queue` completions
wait; more are answered 503 "busy, try again" (before their upload is read when the queue is
full already). A completion whose client has gone (closed the page, gave up) is dropped while
it waits, and before decoding and before running the network if its thread had started.

Connections are uvicorn's to bound (`PageServer` sets it up): at most `max_connections` at
once, idle, uploading or waiting (`limit_concurrency`: uvicorn answers the next request a plain
503), 16 KB of headers each (h11's limit), kept alive 5 s after a reply (`timeout_keep_alive`).
uvicorn has no timeout for a connection that has not yet sent its headers, or goes on sending
what nobody reads after its reply: `PageServer` closes a connection that has had no request in
flight for IDLE_SECONDS. An upload in flight has `upload_seconds` (408 after), and spools at
most its limits meanwhile (Starlette keeps 1 MB of each file in memory, the rest in a
temporary file).

Told to stop (`PageServer`: SIGTERM, Ctrl-C), the server answers every completion still
waiting and every upload still arriving 503 "stopping" at once; a running completion is
answered if it ends within `stop_seconds`, else 503 "stopping" then, its thread left to end
with the process (`Page.running` counts them; app.py does not wait for them). A second later
uvicorn's own `timeout_graceful_shutdown` cancels whatever is left (a reply its client does not
read), so the server stops within `stop_seconds` + 1 s whatever its clients do.

Exposed beyond this machine, the page is guarded: a POST from another site's page (its Origin
is not this server) is refused (403), so a web page the user visits cannot make the server
run completions; with a `token`, every request must carry it, the page's own files under
/static included (`?token=` on the page's address, which sets a same-site cookie for the
page's own requests, or `Authorization: Bearer`; 403 otherwise). Replies never carry internals
(tracebacks, exception text, the model's path): those go to the log.
"""

import ipaddress
import math
import os
import secrets
import socket
import threading
import time
from importlib import resources
from typing import Optional
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import cv2
import uvicorn
from absl import logging
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from glcic_tf import completers, images, photos
from glcic_tf.errors import ImageTooLarge, ServiceUnavailable, UserError
from glcic_tf.webapp.settings import FORM_OVERHEAD_BYTES, PageSettings

REMOTE_SLOTS = 4  # completions sent to TF Serving at once; each holds its decoded photo here
RETRY_AFTER_SECONDS = 5
STOPPING_POLL_SECONDS = 0.2  # how often a waiting completion or an upload looks whether the server is stopping
IDLE_SECONDS = 10  # a connection with no request in flight (none yet, or its reply sent) is closed after this
STOPPING = "The server is stopping; try again once it is back."
TOKEN_COOKIE = "glcic_token"
_UNKNOWN = object()
STATIC = resources.files("glcic_tf").joinpath("webapp", "static")


class _ClientGone(Exception):
    """The request's client disconnected: its completion is not worth finishing."""


class _ServerStopping(Exception):
    """The server was told to stop while the upload arrived or the completion waited for its slot
    (or ran past `stop_seconds`)."""


class _Refused(Exception):
    """A request the page should explain: `status` and a message for a person."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Admission:
    """How many completions are running or waiting for the model, and whether one more may wait:
    at most `slots` running and `max_queue` waiting. Counted on the event loop only."""

    def __init__(self, slots: int, max_queue: int):
        self.limit, self.count = slots + max_queue, 0

    def full(self) -> bool:
        return self.count >= self.limit

    def try_enter(self) -> bool:
        if self.full():
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1


class Page:
    """The page's routes around one completer: the page itself, /config and /complete."""

    def __init__(self, completer, settings: PageSettings):
        self.completer, self.settings = completer, settings
        remote = isinstance(completer, completers.ServingCompleter)
        self.slots = anyio.CapacityLimiter(REMOTE_SLOTS if remote else 1)  # also the completions' own threads
        self.admission = Admission(int(self.slots.total_tokens), settings.max_queue)
        self.stopping = threading.Event()  # set by PageServer when told to stop (from its signal handler)
        self.running, self._running_lock = 0, threading.Lock()  # completions whose thread has started and not ended

    def complete(self, image_bytes: bytes, mask_bytes: bytes, name: str, post: bool, gone: threading.Event, started: threading.Event) -> bytes:
        """One completion, in a worker thread once a slot is free: the PNG of the completed photo."""
        started.set()
        with self._running_lock:
            self.running += 1
        try:
            return self._complete(image_bytes, mask_bytes, name, post, gone)
        finally:
            with self._running_lock:
                self.running -= 1

    def _complete(self, image_bytes: bytes, mask_bytes: bytes, name: str, post: bool, gone: threading.Event) -> bytes:
        if self.stopping.is_set():
            raise _ServerStopping
        if gone.is_set():
            raise _ClientGone
        settings = self.settings
        image = images.decode_image(image_bytes, name, settings.max_pixels)
        mask = images.decode_mask(mask_bytes, image.shape[:2], "the painted mask", settings.max_pixels)
        if not mask.any():
            raise _Refused(400, "Nothing is painted: paint over what should go, then press Complete.")
        if gone.is_set():
            raise _ClientGone
        try:
            completed = photos.inpaint(self.completer, image, mask, post, settings.tiling, settings.max_network_pixels)
        except completers.BadServerReply as error:  # the model server answered, but not a completion
            raise _Refused(502, str(error)) from None
        except ServiceUnavailable as error:  # the model server is down or failing: try again later
            raise _Refused(503, str(error)) from None
        except UserError as error:  # refused: --tiling=crop over the limit, the export's own limits
            raise _Refused(400, str(error)) from None
        return cv2.imencode(".png", cv2.cvtColor(completed, cv2.COLOR_RGB2BGR))[1].tobytes()

    def refused_access(self, request: Request) -> Optional[Response]:
        """403 for a request without the token (when there is one), from another site's page, or
        (with `allowed_hosts`) addressed to a name that is not this machine's."""
        allowed_hosts, token = self.settings.allowed_hosts, self.settings.token
        if allowed_hosts is not None and _url_part("//" + request.headers.get("host", ""), "hostname") not in allowed_hosts:
            return _refusal(403, "This server answers requests addressed to this machine only (127.0.0.1, localhost).")
        if token is not None:
            offered = request.cookies.get(TOKEN_COOKIE) or request.query_params.get("token") or ""
            authorization = request.headers.get("authorization", "")
            if authorization.lower().startswith("bearer "):
                offered = authorization[len("bearer ") :].strip()
            if not secrets.compare_digest(offered.encode(), token.encode()):
                return _refusal(403, "This server needs its token: open the address it printed (with ?token=...).")
        origin = request.headers.get("origin")
        if request.method == "POST" and origin is not None and _url_part(origin, "netloc") != request.headers.get("host"):
            return _refusal(403, "This server completes photos for its own page only, not for other sites.")
        return None

    async def complete_endpoint(self, request: Request) -> Response:
        if self.stopping.is_set():  # a request on a kept-alive connection after the stop
            return _refusal(503, STOPPING)
        if self.admission.full():  # no place now: said at once, before the client sends its upload
            return self._busy()
        start, name, form, admitted = time.perf_counter(), None, None, False
        try:
            form, image_file, mask_file, name, post = await self._receive_form(request)
            # The upload has arrived: only now does it take a place (and its bytes memory).
            if not self.admission.try_enter():
                return self._busy()
            admitted = True
            image_bytes, mask_bytes = await image_file.read(), await mask_file.read()
            await form.close()
            form = None
            gone, started = threading.Event(), threading.Event()
            png = await _unless_client_goes_or_server_stops(
                request.receive,
                gone,
                self.stopping,
                started,
                self.settings.stop_seconds,
                lambda: anyio.to_thread.run_sync(self.complete, image_bytes, mask_bytes, name, post, gone, started, limiter=self.slots, abandon_on_cancel=True),
            )
        except TimeoutError:
            logging.warning("refused (408): an upload took over %g s", self.settings.upload_seconds)
            return _refusal(408, f"The upload took longer than {self.settings.upload_seconds:g} s; try again on a faster connection.")
        except (_ClientGone, ClientDisconnect):
            logging.info("dropped %s: its client went away", name or "an upload")
            return Response(status_code=499)  # nobody reads it
        except _ServerStopping:
            return _refusal(503, STOPPING)
        except _Refused as refused:
            return _refusal(refused.status, str(refused))
        except ImageTooLarge as error:
            return _refusal(413, str(error))
        except UserError as error:  # a file that is no image, a mask of another size
            return _refusal(400, str(error))
        except HTTPException as error:  # a form Starlette could not parse
            return _refusal(error.status_code, f"The request is not a form this server reads: {error.detail}")
        except Exception:  # noqa: BLE001 (the page gets a message, the log the traceback)
            logging.exception("completing %s failed", name or "a photo")
            return _refusal(500, "The server failed to complete this photo (the reason is in its log); it keeps running.")
        finally:
            if admitted:
                self.admission.leave()
            if form is not None:
                await form.close()
        seconds = time.perf_counter() - start
        logging.info("completed %s in %.2f s", name, seconds)
        return Response(png, media_type="image/png", headers={"X-Completion-Seconds": f"{seconds:.3f}"})

    def _busy(self) -> Response:
        logging.warning("refused (503): %d completions running or waiting", self.admission.count)
        return JSONResponse(
            {"error": f"The server is busy ({self.admission.count} photos are being completed or waiting); try again in a moment."},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    async def _receive_form(self, request: Request):
        """The request's whole form, within the limits: (form, its image and mask files, the
        photo's name, post-process?). The files are spooled, not read; close the form."""
        settings = self.settings
        max_upload, max_mask, max_request = settings.max_upload_bytes, settings.max_mask_bytes, settings.max_request_bytes
        limits = f"this server takes photos up to {_megabytes(max_upload)} and masks up to {_megabytes(max_mask)}"
        length = int(request.headers.get("content-length") or 0)
        if length > max_request:  # an honest client's announced size: refused before reading
            raise _Refused(413, f"The upload is {_megabytes(length)}; {limits}.")
        too_large = f"The upload is larger than {_megabytes(max_request)}; {limits}."
        capped = Request(request.scope, _capped_receive(request.receive, max_request, too_large, self.stopping))
        with anyio.fail_after(settings.upload_seconds):
            form = await capped.form(max_files=2, max_fields=4, max_part_size=FORM_OVERHEAD_BYTES)
        try:
            image_file, mask_file = form.get("image"), form.get("mask")
            if not hasattr(image_file, "read") or not hasattr(mask_file, "read"):
                raise _Refused(400, "Open a photo and paint over what should go before pressing Complete.")
            name = image_file.filename or "the photo"
            if image_file.size > max_upload:
                raise _Refused(413, f"{name} is {_megabytes(image_file.size)}; this server takes photos up to {_megabytes(max_upload)}.")
            if mask_file.size > max_mask:
                raise _Refused(413, f"The painted mask is {_megabytes(mask_file.size)}; this server takes masks up to {_megabytes(max_mask)}.")
        except BaseException:
            await form.close()
            raise
        return form, image_file, mask_file, name, form.get("postprocess") == "true"

    async def config_endpoint(self, request: Request) -> Response:
        settings = self.settings
        return JSONResponse(
            {"max_pixels": settings.max_pixels, "max_upload_bytes": settings.max_upload_bytes, "max_mask_bytes": settings.max_mask_bytes, "model": settings.description}
        )

    async def index(self, request: Request) -> Response:
        reply = FileResponse(str(STATIC.joinpath("index.html")))
        if self.settings.token is not None:  # the page's own requests (its files, config, complete) then carry it
            reply.set_cookie(TOKEN_COOKIE, self.settings.token, httponly=True, samesite="strict")
        return reply


class _AccessGuard:
    """ASGI middleware: every HTTP request, whatever its path (the page's files too), passes
    `Page.refused_access` before it is routed."""

    def __init__(self, app, page: Page):
        self.app, self.page = app, page

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refused = self.page.refused_access(Request(scope))
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(completer, settings: PageSettings = PageSettings()) -> Starlette:
    """The page and its /complete endpoint around `completer` (see glcic_tf.completers)."""
    page = Page(completer, settings)
    app = Starlette(
        routes=[
            Route("/", page.index),
            Route("/config", page.config_endpoint),
            Route("/complete", page.complete_endpoint, methods=["POST"]),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        ],
        middleware=[Middleware(_AccessGuard, page=page)],
    )
    app.state.page, app.state.stopping, app.state.settings = page, page.stopping, settings
    return app


class PageServer(uvicorn.Server):
    """uvicorn's server for `create_app`'s page, with its settings' bounds on connections (see
    the module's docstring) and closing connections idle for IDLE_SECONDS.

    Told to stop (SIGTERM, Ctrl-C), it first tells the uploads still arriving and the
    completions waiting for a slot that the server is stopping (503), then stops as uvicorn
    does, once the requests in flight, now only the running completions, are answered, and
    `stop_seconds` + 1 s at most after the stop (uvicorn's `timeout_graceful_shutdown`). (Plain
    uvicorn waits for every queued completion to run, minutes with a long queue, and for every
    upload to arrive.)"""

    def __init__(self, page: Starlette, log_level: str = "warning"):
        settings = page.state.settings
        super().__init__(
            uvicorn.Config(
                page,
                log_level=log_level,
                ws="none",  # the page has no WebSocket routes
                limit_concurrency=settings.max_connections,
                timeout_graceful_shutdown=settings.stop_seconds + 1,  # asyncio.timeout's: a float is fine
            )
        )
        self.page = page
        self._idle = {}  # connection -> (its last request, or None; since when it has had none in flight)

    def handle_exit(self, sig, frame) -> None:
        self.page.state.stopping.set()  # a threading.Event: safe in a signal handler
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if counter % 10 == 0:  # once a second (uvicorn ticks every 0.1 s)
            self.close_idle_connections(time.monotonic())
        return await super().on_tick(counter)

    def close_idle_connections(self, now: float) -> None:
        """Close the connections that have had no request in flight (no complete headers yet, or
        the reply sent) for over IDLE_SECONDS. A request in flight is bounded by the page itself
        (`upload_seconds`, the queue) and kept."""
        idle = {}
        for connection in list(self.server_state.connections):
            cycle = getattr(connection, "cycle", _UNKNOWN)  # uvicorn's request in flight, h11 and httptools alike
            if cycle is _UNKNOWN or (cycle is not None and not getattr(cycle, "response_complete", False)):
                continue
            last, since = self._idle.get(connection, (cycle, now))
            since = since if last is cycle else now
            if now - since > IDLE_SECONDS:
                connection.transport.close()
            else:
                idle[connection] = (cycle, since)
        self._idle = idle


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, or "" (every address)
        return False


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, IPv4 or IPv6 as `host` is; UserError with the system's
    reason (not "Unknown error -9") if it cannot be had."""
    try:
        family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as error:  # errno > 0: the system's (create_server adds the address to strerror); else getaddrinfo's
        reason = os.strerror(error.errno) if error.errno and error.errno > 0 else (error.strerror or str(error))
        raise UserError(f"cannot listen on {page_address(host, port)}: {reason} (check --host, try another --port)") from None


def page_address(host: str, port: int) -> str:
    """host:port as a URL writes it (IPv6 in brackets); every address (0.0.0.0, ::, "") as this machine's."""
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{shown}]:{port}" if ":" in shown else f"{shown}:{port}"


def model_description(model: Optional[str], server: Optional[str], protocol: str, model_name: str) -> str:
    """What /config tells anyone about the model: its folder's name, never its path on this
    machine; or the TF Serving address and model (which the page's errors name too)."""
    if model:
        return os.path.basename(os.path.normpath(model))
    return f"TF Serving at {server} ({protocol}, model {model_name})"


def _capped_receive(receive, limit: int, refusal: str, stopping: Optional[threading.Event] = None):
    """`receive` that counts the request body's bytes as they arrive and raises a 413 `_Refused`
    once more than `limit` have come, so the form parser stops there: a chunked request, which
    announces no Content-Length, is held to the same limit as one that does. Once `stopping` is
    set, the upload ends within STOPPING_POLL_SECONDS (_ServerStopping), whether or not any more
    of it arrives. (Waiting for the next piece is cancelled then: uvicorn's `receive` loses
    nothing, as Starlette's own `Request.is_disconnected` relies on.)"""
    received = 0

    async def capped_receive():
        nonlocal received
        while True:
            if stopping is not None and stopping.is_set():
                raise _ServerStopping
            with anyio.move_on_after(STOPPING_POLL_SECONDS if stopping is not None else math.inf):
                message = await receive()
                break
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _Refused(413, refusal)
        return message

    return capped_receive


async def _unless_client_goes_or_server_stops(receive, gone: threading.Event, stopping: threading.Event, started: threading.Event, stop_seconds: float, work):
    """`await work()` (a thread's work, run with `abandon_on_cancel`, that sets `started` first
    thing and then looks at `gone` and `stopping` itself), unless:

    - the client disconnects (`gone` is set): cancelled while the work waits for its slot
      (_ClientGone); once it has `started`, left to end on its own, so it holds its slot until
      then;
    - `stopping` is set: cancelled before the work has `started` (_ServerStopping); once it has,
      it has `stop_seconds` to end, and is then abandoned to its thread (_ServerStopping: no new
      work starts once stopping, so its slot is not needed).
    """
    outcome = {}

    async def run(scope):
        try:
            outcome["value"] = await work()
        except Exception as error:  # noqa: BLE001 (re-raised below, outside the task group)
            outcome["error"] = error
        scope.cancel()

    async def watch(scope):
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()  # before looking at `started`: a thread starting now sees it
        if not started.is_set():
            scope.cancel()

    async def watch_stopping(scope):
        while not stopping.is_set():
            await anyio.sleep(STOPPING_POLL_SECONDS)
        if started.is_set():  # a running completion may end within stop_seconds
            await anyio.sleep(stop_seconds)
            logging.warning("a completion still running %g s after the stop is answered 503 and left to its thread", stop_seconds)
        outcome["stopping"] = True
        scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(run, group.cancel_scope)
        group.start_soon(watch, group.cancel_scope)
        group.start_soon(watch_stopping, group.cancel_scope)
    if "error" in outcome:
        raise outcome["error"]
    if "value" in outcome:
        return outcome["value"]
    raise _ServerStopping if "stopping" in outcome else _ClientGone


def _url_part(url: str, part: str) -> Optional[str]:
    """`urlsplit(url)`'s `part` (hostname, netloc); None for what no URL holds (`[`, say), which
    urlsplit refuses with a ValueError: a client's header, so a 403, not a 500."""
    try:
        return getattr(urlsplit(url), part)
    except ValueError:
        return None


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.3g} MB"


def _refusal(status: int, message: str) -> Response:
    logging.warning("refused (%d): %s", status, message)
    return JSONResponse({"error": message}, status_code=status)
