"""Generated inputs against every path that decodes and completes a photograph: OpenCV's (the page,
inpaint.py), the export's `inpaint_bytes` signature, and the page's endpoint.

The contract, whatever arrives: a completion that keeps the photograph's pixels outside the hole,
or a one-line refusal (UserError, the signature's InvalidArgumentError, the page's 4xx/503), never
another exception or a 500, never more decoded pixels than the limit, and a file as an encoder
wrote it in a format the path reads is never refused (unless over the limit). Inputs: photographs
from 1x1 to 48x48 in every format (progressive JPEGs and animated GIFs too), masks from one pixel
to all, both cut short, with chunks repeated, bytes flipped, or random bytes behind a real magic
number.

A short run (conftest.py's "suite" profile: derandomized, so CI sees the same inputs every time)
runs in the suite; a long random one by a flag:
`python -m pytest tests/fuzz_test.py --hypothesis-profile=fuzz`.
"""

import io
import resource
from typing import NamedTuple

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

import tiny
from glcic_tf import export_lib, image_ops, images, models, photos
from glcic_tf.errors import ImageTooLarge, UserError

MAX_PIXELS = 1500  # below some generated photographs (48x48 = 2304), so the limit is met too
MEMORY_BOUND_MB = 300  # what a path may add to the process's peak over a whole run
FORMATS = ["PNG", "JPEG", "progressive JPEG", "BMP", "GIF", "animated GIF", "WEBP", "TIFF"]
MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xc2", b"GIF89a", b"BM", b"RIFF\0\0\0\0WEBPVP8 ", b"II*\0", b"MM\0*"]


def _encoded(array: np.ndarray, file_format: str) -> bytes:
    picture = PIL.Image.fromarray(array)
    encoded = io.BytesIO()
    if file_format == "progressive JPEG":
        picture.convert("RGB").save(encoded, format="JPEG", progressive=True)
    elif file_format == "animated GIF":
        frames = [picture, PIL.Image.fromarray(255 - array)]
        frames[0].save(encoded, format="GIF", save_all=True, append_images=frames[1:])
    else:
        picture.save(encoded, format=file_format, **({"lossless": True} if file_format == "WEBP" else {}))
    return encoded.getvalue()


@st.composite
def _mutated(draw, encoded: bytes):
    """(bytes, whether they are as the encoder wrote them)."""
    how = draw(st.sampled_from(["as written"] * 3 + ["cut short", "chunk repeated", "bytes flipped", "random behind a magic number"]))
    if how == "as written" or not encoded:
        return encoded, True
    if how == "cut short":
        return encoded[: draw(st.integers(0, len(encoded) - 1))], False
    if how == "chunk repeated":
        start = draw(st.integers(0, len(encoded) - 1))
        chunk = encoded[start : start + draw(st.integers(1, 64))]
        return encoded[:start] + chunk * draw(st.integers(2, 3000)) + encoded[start:], False
    if how == "bytes flipped":
        flipped = bytearray(encoded)
        for position in draw(st.lists(st.integers(0, len(encoded) - 1), min_size=1, max_size=8)):
            flipped[position] ^= draw(st.integers(1, 255))
        return bytes(flipped), False
    return draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=400)), False


class Case(NamedTuple):
    photo: np.ndarray
    photo_bytes: bytes
    photo_format: str
    mask_bytes: bytes
    mask_format: str
    as_written: bool  # both files as their encoder wrote them, of one size
    post: bool


@st.composite
def cases(draw):
    """A photograph and a mask, as files, maybe broken."""
    height, width = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    photo = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 256, (height, width, 3), dtype=np.uint8)
    photo_format, mask_format = draw(st.sampled_from(FORMATS)), draw(st.sampled_from(FORMATS))
    mask = np.zeros((height, width), np.uint8)
    kind = draw(st.sampled_from(["box", "one pixel", "line", "noise", "all", "none", "another size"]))
    y, x = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
    if kind == "box":
        mask[y : y + draw(st.integers(1, 20)), x : x + draw(st.integers(1, 20))] = 255
    elif kind == "one pixel":
        mask[y, x] = 255
    elif kind == "line":
        mask[y, x:] = 255
    elif kind == "noise":
        mask[np.random.default_rng(y * 100 + x).random((height, width)) < 0.2] = 255
    elif kind == "all":
        mask[:] = 255
    elif kind == "another size":
        mask = np.full((height + 1, width), 255, np.uint8)
    photo_bytes, photo_as_written = draw(_mutated(_encoded(photo, photo_format)))
    mask_bytes, mask_as_written = draw(_mutated(_encoded(mask, mask_format)))
    as_written = photo_as_written and mask_as_written and kind != "another size"
    return Case(photo, photo_bytes, photo_format, mask_bytes, mask_format, as_written, draw(st.booleans()))


def _flat_gray(image, mask):
    return tf.ones_like(image) * 0.5


def _one_line(message: str) -> bool:
    return bool(message.strip()) and "\n" not in message.strip() and "Traceback" not in message


@pytest.fixture
def memory_bound():
    """Fails the test if the process's peak memory grew by more than MEMORY_BOUND_MB over all its
    examples (one fixture for the whole run, on purpose: the bound is on the run)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb <= MEMORY_BOUND_MB, f"the peak grew by {grown_mb:.0f} MB"


@given(case=cases())
def test_opencv_path_completes_or_refuses_in_one_line(memory_bound, case):
    try:
        image = images.decode_image(case.photo_bytes, "the photo", MAX_PIXELS)
        hole = images.decode_mask(case.mask_bytes, image.shape[:2], "the mask", MAX_PIXELS)
    except UserError as error:
        assert _one_line(str(error)), str(error)
        too_large = isinstance(error, ImageTooLarge) and case.photo.shape[0] * case.photo.shape[1] > MAX_PIXELS
        assert too_large or not case.as_written, f"refused a {case.photo_format} and a {case.mask_format} as written: {error}"
        return
    assert image.shape[0] * image.shape[1] <= MAX_PIXELS and image.dtype == np.uint8 and image.shape[2] == 3
    completed = photos.inpaint(_flat_gray, image, hole, post=case.post)
    assert completed.shape == image.shape
    outside = hole[..., 0] == 0
    np.testing.assert_array_equal(completed[outside], image[outside])


@pytest.fixture(scope="module")
def inpaint_bytes(tmp_path_factory):
    """The export's bytes signature of a tiny network, as TF Serving runs it."""
    network = models.completion_network(tiny.WIDTH)
    folder = export_lib.export_saved_model(network, models.PLACES2_MEAN_PIXEL, str(tmp_path_factory.mktemp("export")), 1, max_request_pixels=MAX_PIXELS)
    return tf.saved_model.load(folder).signatures[export_lib.BYTES_SIGNATURE]


@given(case=cases())
def test_the_exports_bytes_signature_completes_or_refuses_in_one_line(memory_bound, inpaint_bytes, case):
    try:
        reply = inpaint_bytes(image_bytes=tf.constant([case.photo_bytes]), mask_bytes=tf.constant([case.mask_bytes]))["inpainted_bytes"]
    except tf.errors.InvalidArgumentError as error:
        message = photos.failed_check_message(error.message)
        assert _one_line(message) and not message.startswith(("[[", "{{", "Graph execution", "Detected at")), error.message  # what, not where
        if case.as_written and "TIFF" not in (case.photo_format, case.mask_format):  # TensorFlow reads no TIFF
            assert case.photo.shape[0] * case.photo.shape[1] > MAX_PIXELS, f"refused a {case.photo_format} and a {case.mask_format} as written: {message}"
        return
    completed = tf.io.decode_png(reply[0]).numpy()
    image = image_ops.decode_in_graph(tf.constant(case.photo_bytes), 3, "the photo", MAX_PIXELS).numpy()
    assert completed.shape == image.shape and image.shape[0] * image.shape[1] <= MAX_PIXELS
    hole = image_ops.gray(image_ops.decode_in_graph(tf.constant(case.mask_bytes), 3, "the mask", MAX_PIXELS)).numpy()[..., 0] >= 128
    np.testing.assert_array_equal(completed[~hole], image[~hole])


@pytest.fixture(scope="module")
def page():
    """The page's app around a stand-in completer, as a browser or a script reaches it."""
    from starlette.testclient import TestClient  # noqa: PLC0415

    from glcic_tf.webapp import server  # noqa: PLC0415
    from glcic_tf.webapp.settings import PageSettings  # noqa: PLC0415

    with TestClient(server.create_app(_flat_gray, PageSettings(max_pixels=MAX_PIXELS))) as client:
        yield client


@given(case=cases())
def test_the_page_completes_or_answers_a_message_never_a_500(memory_bound, page, case):
    files = {"image": ("photo", case.photo_bytes), "mask": ("mask.png", case.mask_bytes)}
    reply = page.post("/complete", files=files, data={"postprocess": "true" if case.post else "false"})
    if reply.status_code != 200:
        assert reply.status_code in (400, 413), reply.text  # the client's input, never the server's failure
        assert _one_line(reply.json()["error"])
        nothing_painted = reply.json()["error"].startswith("Nothing is painted")
        assert not case.as_written or nothing_painted or case.photo.shape[0] * case.photo.shape[1] > MAX_PIXELS, reply.text
        return
    image = images.decode_image(case.photo_bytes, "the photo", MAX_PIXELS)
    outside = images.decode_mask(case.mask_bytes, image.shape[:2], "the mask", MAX_PIXELS)[..., 0] == 0
    completed = images.decode_image(reply.content)
    np.testing.assert_array_equal(completed[outside], image[outside])
