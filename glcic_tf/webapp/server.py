"""The page's server: the editor (static/) and one endpoint that completes a photograph.

    POST /complete   multipart form: image (the photo's file), mask (PNG, white = hole),
                     postprocess ("true"/"false") -> image/png, the photo at its own size
    GET  /config     the limits the page checks before it sends anything

Every problem a user can cause or meet is a JSON reply {"error": message} that the page shows:
a file that is no image (400), one over the size limits (413), no hole (400), the model server
down (503), anything unforeseen (500, logged with its traceback). The server keeps serving after
each. The completion runs in a worker thread, so pages complete at the same time; a local
network runs one completion at a time (it uses every core already), TF Serving gets requests
as they come.
"""

import contextlib
import threading
import time
from importlib import resources

import cv2
from absl import logging
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from glcic_tf import completers, inference, strategy
from glcic_tf.errors import ImageTooLarge, UserError

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # a 12-megapixel phone photo is 3-8 MB as JPEG, 20-35 MB as PNG
STATIC = resources.files("glcic_tf").joinpath("webapp", "static")


class _Refused(Exception):
    """A request the page should explain: `status` and a message for a person."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def create_app(
    completer,
    max_pixels: int = inference.MAX_PIXELS,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    strategy_name: str = "auto",
    max_network_pixels: int = strategy.MAX_NETWORK_PIXELS,
    description: str = "",
) -> Starlette:
    """The page and its /complete endpoint around `completer` (see glcic_tf.completers)."""
    remote = isinstance(completer, completers.ServingCompleter)
    one_at_a_time = contextlib.nullcontext() if remote else threading.Lock()

    def complete(image_bytes: bytes, mask_bytes: bytes, name: str, post: bool) -> bytes:
        image = inference.decode_image(image_bytes, name, max_pixels)
        mask = inference.decode_mask(mask_bytes, image.shape[:2], "the painted mask", max_pixels)
        if not mask.any():
            raise _Refused(400, "Nothing is painted: paint over what should go, then press Complete.")
        try:
            with one_at_a_time:
                completed = inference.inpaint(completer, image, mask, post, strategy_name, max_network_pixels)
        except UserError as error:
            raise _Refused(503 if remote else 400, str(error)) from None
        return cv2.imencode(".png", cv2.cvtColor(completed, cv2.COLOR_RGB2BGR))[1].tobytes()

    async def complete_endpoint(request: Request) -> Response:
        start = time.perf_counter()
        try:
            length = int(request.headers.get("content-length") or 0)
            if length > max_upload_bytes + 1024 * 1024:  # the photo, the mask and the form's own bytes
                raise _Refused(413, f"The photo is {_megabytes(length)}; this server takes up to {_megabytes(max_upload_bytes)}.")
            async with request.form(max_files=2, max_fields=4, max_part_size=1024 * 1024) as form:
                image_file, mask_file = form.get("image"), form.get("mask")
                if not hasattr(image_file, "read") or not hasattr(mask_file, "read"):
                    raise _Refused(400, "Open a photo and paint over what should go before pressing Complete.")
                name = image_file.filename or "the photo"
                image_bytes, mask_bytes = await image_file.read(), await mask_file.read()
                post = form.get("postprocess") == "true"
            if len(image_bytes) > max_upload_bytes:
                raise _Refused(413, f"{name} is {_megabytes(len(image_bytes))}; this server takes up to {_megabytes(max_upload_bytes)}.")
            png = await run_in_threadpool(complete, image_bytes, mask_bytes, name, post)
        except _Refused as refused:
            return _refusal(refused.status, str(refused))
        except ImageTooLarge as error:
            return _refusal(413, str(error))
        except UserError as error:  # a file that is no image, a mask of another size
            return _refusal(400, str(error))
        except HTTPException as error:  # a form Starlette could not parse
            return _refusal(error.status_code, f"The request is not a form this server reads: {error.detail}")
        except Exception as error:  # noqa: BLE001 (the page gets a message, the log the traceback)
            logging.exception("completing failed")
            return _refusal(500, f"The server failed to complete this photo ({type(error).__name__}: {error}); it keeps running.")
        seconds = time.perf_counter() - start
        logging.info("completed %s in %.2f s", name, seconds)
        return Response(png, media_type="image/png", headers={"X-Completion-Seconds": f"{seconds:.3f}"})

    async def config_endpoint(request: Request) -> Response:
        return JSONResponse({"max_pixels": max_pixels, "max_upload_bytes": max_upload_bytes, "model": description})

    async def page(request: Request) -> Response:
        return FileResponse(str(STATIC.joinpath("index.html")))

    return Starlette(
        routes=[
            Route("/", page),
            Route("/config", config_endpoint),
            Route("/complete", complete_endpoint, methods=["POST"]),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        ]
    )


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f}".removesuffix(".0") + " MB"


def _refusal(status: int, message: str) -> Response:
    logging.warning("refused (%d): %s", status, message)
    return JSONResponse({"error": message}, status_code=status)
