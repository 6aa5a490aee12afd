"""The page's server: the editor (static/) and one endpoint that completes a photograph.

    POST /complete   multipart form: image (the photo's file), mask (PNG, white = hole),
                     postprocess ("true"/"false") -> image/png, the photo at its own size
    GET  /config     the limits the page checks before it sends anything, and (with
                     `browser_folder`) what completing in the browser needs
    GET  /browser/*  the in-browser page's model and runtime (export.py --formats=web), which the
                     page loads only when a person chooses to complete in the browser

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

Connections are `PageServer`'s to bound (uvicorn has no timeout for a connection that has
not yet sent its headers, nor for a reply its client does not read), and a connection that has
sent no request costs a socket, not a place (uvicorn's `limit_concurrency`, which counts them,
is not used). A connection must send a request's complete headers within HEADER_SECONDS of
opening or of its last reply's delivery (kept alive that long), else it is aborted; a reply its
client takes none of for UNREAD_SECONDS is dropped with its connection (aborted: closing would
wait for the client to read). Past `max_connections` open at once, each new one aborts the
oldest idle ones (no request in flight, no reply left to write) open for over
EVICTION_GRACE_SECONDS; past half the files the process may open, the oldest idle ones whatever
their age. So connections that send nothing, however many, cannot shut real users out: they last
seconds and make room. What costs memory is bounded by the page: at most `max_uploads` uploads
arrive at once (more are answered 503 "busy, try again" before their upload is read), each
within `upload_seconds` (408 after), spooling at most its limits meanwhile (Starlette keeps 1 MB
of each file in memory, the rest in a temporary file); 16 KB of headers each (h11's limit).

Told to stop (`PageServer`: SIGTERM, Ctrl-C), the server answers every completion still
waiting and every upload still arriving 503 "stopping" at once; a running completion is
answered if it ends within `stop_seconds`, else 503 "stopping" then, its thread left to end
with the process (`Page.running` counts them; app.py does not wait for them). Half a second
later every connection still open is aborted (a reply its client does not read), and uvicorn's
own `timeout_graceful_shutdown` cancels whatever task is left a second after `stop_seconds`, so
the server stops within `stop_seconds` + 1 s whatever its clients do.

Exposed beyond this machine, the page is guarded: a POST from another site's page (its Origin
is not this server) is refused (403), so a web page the user visits cannot make the server
run completions; with a `token`, every request must carry it, the page's own files under
/static included (`?token=` on the page's address, which sets a same-site cookie for the
page's own requests, or `Authorization: Bearer`; 403 otherwise: a correct token in the address
or the header counts whatever cookie a browser still sends, say one of an earlier run). Replies
never carry internals (tracebacks, exception text, the model's path): those go to the log.
Every reply says the page is cross-origin isolated (COOP same-origin, COEP require-corp: it
loads nothing from elsewhere), which gives the in-browser completion its threads.
"""

import asyncio
import ipaddress
import math
import os
import secrets
import socket
import threading
import time
from importlib import resources
from pathlib import Path
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

from glcic_tf import completers, images, photos, web_export
from glcic_tf.errors import ImageTooLarge, ServiceUnavailable, UserError
from glcic_tf.webapp.settings import FORM_OVERHEAD_BYTES, PageSettings

REMOTE_SLOTS = 4  # completions sent to TF Serving at once; each holds its decoded photo here
RETRY_AFTER_SECONDS = 5
STOPPING_POLL_SECONDS = 0.2  # how often a waiting completion or an upload looks whether the server is stopping
HEADER_SECONDS = 3  # for a request's headers to arrive: from a connection's opening, or its last reply's delivery
UNREAD_SECONDS = 10  # a reply its client takes none of for this long is dropped, its connection aborted
EVICTION_GRACE_SECONDS = 1  # past max_connections, an idle connection this old makes room for a new one
ABORT_AFTER_STOP_SECONDS = 0.5  # past `stop_seconds` after the stop, the connections still open are aborted
STOPPING = "The server is stopping; try again once it is back."
TOKEN_COOKIE = "glcic_token"
BROWSER_PATH = "browser"  # where the in-browser page's model and runtime are served
ISOLATION_HEADERS = [(b"cross-origin-opener-policy", b"same-origin"), (b"cross-origin-embedder-policy", b"require-corp")]
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
        self.uploading = 0  # uploads arriving (counted on the event loop)
        folder = settings.browser_folder
        self.browser = web_export.browser_config(Path(folder), BROWSER_PATH + "/") if folder else None

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
            # Each way of carrying it counts: a stale cookie (an earlier run's random token) must not
            # hide the right token in the printed address, whose page then sets the cookie anew.
            authorization = request.headers.get("authorization", "")
            bearer = authorization[len("bearer ") :].strip() if authorization.lower().startswith("bearer ") else ""
            offered = (bearer, request.query_params.get("token", ""), request.cookies.get(TOKEN_COOKIE, ""))
            if not any(secrets.compare_digest(candidate.encode(), token.encode()) for candidate in offered):
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
        if self.uploading >= self.settings.max_uploads:  # as many arriving as the server spools at once
            logging.warning("refused (503): %d uploads arriving", self.uploading)
            return JSONResponse(
                {"error": f"The server is busy ({self.uploading} uploads are arriving); try again in a moment."},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        start, name, form, admitted = time.perf_counter(), None, None, False
        try:
            self.uploading += 1
            try:
                form, image_file, mask_file, name, post = await self._receive_form(request)
            finally:
                self.uploading -= 1
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
        config = {"max_pixels": settings.max_pixels, "max_upload_bytes": settings.max_upload_bytes, "max_mask_bytes": settings.max_mask_bytes, "model": settings.description}
        if self.browser is not None:
            config["browser"] = self.browser
        return JSONResponse(config)

    async def index(self, request: Request) -> Response:
        reply = FileResponse(str(STATIC.joinpath("index.html")))
        if self.settings.token is not None:  # the page's own requests (its files, config, complete) then carry it
            reply.set_cookie(TOKEN_COOKIE, self.settings.token, httponly=True, samesite="strict")
        return reply


class _CrossOriginIsolated:
    """ASGI middleware: every reply carries ISOLATION_HEADERS, so the page may use
    SharedArrayBuffer (onnxruntime-web's threads)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_isolated(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *ISOLATION_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_isolated)


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
    routes = [
        Route("/", page.index),
        Route("/config", page.config_endpoint),
        Route("/complete", page.complete_endpoint, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    if page.browser is not None:  # only the model and the runtime: the folder's page is this one
        routes += [Mount(f"/{BROWSER_PATH}/{sub}", StaticFiles(directory=os.path.join(settings.browser_folder, sub))) for sub in ("model", "runtime")]
    app = Starlette(routes=routes, middleware=[Middleware(_CrossOriginIsolated), Middleware(_AccessGuard, page=page)])
    app.state.page, app.state.stopping, app.state.settings = page, page.stopping, settings
    return app


class PageServer(uvicorn.Server):
    """uvicorn's server for `create_app`'s page, bounding its connections (see the module's
    docstring): each must send a request's headers within HEADER_SECONDS, a reply not read for
    UNREAD_SECONDS is dropped, and past `max_connections` the oldest idle connections make room
    for new ones (`_Connections`). (uvicorn's own `limit_concurrency` is not used: it counts
    connections that have sent nothing, so 99 of them, reconnecting as they are closed, shut
    everyone out.)

    Told to stop (SIGTERM, Ctrl-C), it first tells the uploads still arriving and the
    completions waiting for a slot that the server is stopping (503), then stops as uvicorn
    does, once the requests in flight, now only the running completions, are answered; at
    `stop_seconds` + ABORT_AFTER_STOP_SECONDS after the stop it aborts every connection still
    open (a reply its client does not read), and uvicorn's `timeout_graceful_shutdown` cancels
    what is left at `stop_seconds` + 1 s. (Plain uvicorn waits for every queued completion to
    run, minutes with a long queue, for every upload to arrive and every reply to be read.)"""

    def __init__(self, page: Starlette, log_level: str = "warning"):
        settings = page.state.settings
        ceiling = max(2, _open_files_limit() // 2)  # the other half for the uploads' files, the model's, the threads'
        super().__init__(
            uvicorn.Config(
                page,
                log_level=log_level,
                ws="none",  # the page has no WebSocket routes
                # Also how many connections asyncio accepts at once, before any has been read from:
                # at most half the ceiling, so one batch cannot push out a connection before its request is read.
                backlog=max(1, min(2048, ceiling // 2)),
                timeout_graceful_shutdown=settings.stop_seconds + 1,  # asyncio.timeout's: a float is fine
            )
        )
        self.page, self.stop_seconds = page, settings.stop_seconds
        self.server_state.connections = _Connections(min(settings.max_connections, ceiling), ceiling)  # uvicorn's set, which makes room
        self._waiting = {}  # connection -> (what it waits for, its request, write buffer size, since when)
        self._stopped_at = None

    def handle_exit(self, sig, frame) -> None:
        self.page.state.stopping.set()  # a threading.Event: safe in a signal handler
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        self.close_idle_connections(time.monotonic())  # every tick (0.1 s): 5 ms for 10000 connections
        return await super().on_tick(counter)

    def close_idle_connections(self, now: float) -> None:
        """Abort the connections that have not sent a request's complete headers within
        HEADER_SECONDS (of opening, or of their last reply's delivery), and those whose client has
        taken none of their reply for UNREAD_SECONDS. A request in flight is bounded by the page
        itself (`upload_seconds`, the queue, the stop) and kept."""
        waiting = {}
        for connection in list(self.server_state.connections):
            transport, cycle = getattr(connection, "transport", None), getattr(connection, "cycle", _UNKNOWN)
            if transport is None or cycle is _UNKNOWN or transport.is_closing():
                continue
            buffered = transport.get_write_buffer_size()
            if buffered:  # a reply being written, sent or not: its client must take some of it
                what, limit = "reading", UNREAD_SECONDS
            elif _between_requests(connection):  # none yet, or its reply delivered
                what, limit = "headers", HEADER_SECONDS
            else:
                continue
            last = self._waiting.get(connection)
            if last is None or last[:2] != (what, cycle) or buffered < last[2]:
                last = (what, cycle, buffered, now)
            if now - last[3] > limit:
                transport.abort()
            else:
                waiting[connection] = (what, cycle, buffered, last[3])
        self._waiting = waiting

    async def shutdown(self, sockets=None) -> None:
        stopped_at = self._stopped_at if self._stopped_at is not None else time.monotonic()
        delay = max(0.0, stopped_at + self.stop_seconds + ABORT_AFTER_STOP_SECONDS - time.monotonic())
        abort = asyncio.get_running_loop().call_later(delay, self.abort_connections)
        try:
            await super().shutdown(sockets=sockets)
        finally:
            abort.cancel()

    def abort_connections(self) -> None:
        """Abort every connection still open (the stop's bound: a reply still unread is dropped)."""
        connections = [connection for connection in self.server_state.connections if getattr(connection, "transport", None) is not None]
        if connections:
            logging.warning("stopping: %d connections still open %g s after the stop are aborted", len(connections), self.stop_seconds + ABORT_AFTER_STOP_SECONDS)
        for connection in connections:
            connection.transport.abort()


class _Connections(set):
    """uvicorn's set of open connections (`ServerState.connections`: a connection adds itself as
    it opens, discards itself as it closes) that makes room. Past `limit` open, a new connection
    aborts the oldest idle ones (no request in flight, no reply left to write) that have been
    open for EVICTION_GRACE_SECONDS, time for a client's request to arrive; past `ceiling`, the
    oldest idle ones whatever their age. A reply still being written is bounded by UNREAD_SECONDS
    instead, a request in flight by the page."""

    def __init__(self, limit: int, ceiling: int, clock=time.monotonic):
        super().__init__()
        self.limit, self.ceiling, self.clock = limit, max(limit, ceiling), clock
        self.opened = {}  # connection -> when it opened, oldest first; those not aborted here

    def add(self, connection) -> None:
        super().add(connection)
        now = self.clock()
        self.opened[connection] = now
        over_limit, over_ceiling = len(self.opened) - self.limit, len(self.opened) - self.ceiling
        evicted = []
        for other, opened_at in self.opened.items():  # oldest first
            if len(evicted) >= over_limit or other is connection:
                break
            if now - opened_at < EVICTION_GRACE_SECONDS and len(evicted) >= over_ceiling:
                break  # this one and the ones after it are in their grace, and the ceiling is kept
            if _idle(other):
                evicted.append(other)
        for other in evicted:
            del self.opened[other]
            other.transport.abort()

    def discard(self, connection) -> None:
        super().discard(connection)
        self.opened.pop(connection, None)

    def remove(self, connection) -> None:
        super().remove(connection)
        self.opened.pop(connection, None)


def _between_requests(connection) -> bool:
    """Whether an open uvicorn connection has no request in flight: none yet (or its headers not
    all arrived), or its last reply sent (`cycle` is uvicorn's request, h11 and httptools alike)."""
    transport, cycle = getattr(connection, "transport", None), getattr(connection, "cycle", _UNKNOWN)
    if transport is None or cycle is _UNKNOWN or transport.is_closing():
        return False
    return cycle is None or bool(getattr(cycle, "response_complete", False))


def _idle(connection) -> bool:
    """Whether an open connection has no request in flight and nothing of its last reply left to write."""
    return _between_requests(connection) and not connection.transport.get_write_buffer_size()


def _open_files_limit() -> int:
    """How many files this process may have open (its soft limit); a large number where unknown."""
    try:
        import resource  # noqa: PLC0415 (Unix only)

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 2**20
    return 2**20 if soft == resource.RLIM_INFINITY or soft <= 0 else soft


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
