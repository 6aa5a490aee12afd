"""What the page allows and how it is reached: one dataclass with the defaults `app.py` offers.

Apart from the server so that the command can read its defaults without the web packages.
"""

import dataclasses
from typing import Optional

from glcic_tf import images
from glcic_tf.tiling import MAX_NETWORK_PIXELS

FORM_OVERHEAD_BYTES = 64 * 1024  # the form's boundaries, part headers and postprocess field, generously


@dataclasses.dataclass(frozen=True)
class PageSettings:
    """The page's limits and access rules.

    A photo's file may have up to `max_upload_bytes` and `max_pixels` pixels; the mask's file up
    to `max_mask_bytes` (one bit per pixel); a request those plus FORM_OVERHEAD_BYTES. Up to
    `max_queue` completions wait for the model, each holding a place from when its upload has
    arrived; more are answered 503. At most `max_uploads` uploads arrive at once (more are
    answered 503 before they are read), each within `upload_seconds` (408 after). Past
    `max_connections` open at once (at most half the files the process may open), new ones
    close the oldest idle connections (no request in flight) that have been open a second:
    connections that send nothing are counted against no one (the server closes them after a
    few seconds anyway). Told to stop, the server answers the running completions that end
    within `stop_seconds` and 503 the others, and has stopped a second later (a reply still
    unread is dropped then). `token`, if given, is required of every request;
    `allowed_hosts`, if given, are the only names a request's Host header may carry (without a
    token: this machine's names, so a web page whose name is made to resolve to 127.0.0.1, DNS
    rebinding, gets a 403). `description` is what /config tells about the model. The network runs
    as in inpaint.py: `tiling`, `max_network_pixels`. `browser_folder`, if given, is an in-browser
    page's version folder export.py wrote (--formats=web), whose model the page offers to run in the browser
    instead, the photo never sent.
    """

    max_pixels: int = images.MAX_PIXELS
    max_upload_bytes: int = 50 * 2**20  # a 12-megapixel phone photo is 3-8 MB as JPEG, 20-35 MB as PNG
    max_queue: int = 8  # each waiting completion holds its upload (within the limits) meanwhile
    upload_seconds: float = 60.0  # a client trickling its body, or sending none, cannot hold its connection longer
    max_uploads: int = 100  # each arriving spools up to max_request_bytes (1 MB of each file in memory, the rest on disk)
    max_connections: int = 1000  # a request-less one costs a socket and at most 16 KB of headers
    stop_seconds: float = 7.0  # and uvicorn's second after it: stopped within the 10 s `docker stop` waits before SIGKILL
    token: Optional[str] = None
    allowed_hosts: Optional[tuple] = None
    tiling: str = "auto"
    max_network_pixels: int = MAX_NETWORK_PIXELS
    description: str = ""
    browser_folder: Optional[str] = None

    @property
    def max_mask_bytes(self) -> int:
        return images.mask_limit_bytes(self.max_pixels, self.max_upload_bytes)

    @property
    def max_request_bytes(self) -> int:
        return self.max_upload_bytes + self.max_mask_bytes + FORM_OVERHEAD_BYTES
