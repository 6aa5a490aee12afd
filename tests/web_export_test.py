"""The in-browser page that export.py --formats=web writes, in a real headless Chromium.

The folder is served by `python -m http.server` (a static server that knows nothing of the
model); a photo is opened, a stroke painted with the mouse and Complete pressed. The result must
be the SavedModel's serving_default in the hole (within 2/255: the page rounds to 8 bits) and
the photo's own pixels elsewhere, and no request may carry the photograph: every request is a
GET, without a body, of one of the folder's own files.

Needs Debian's chromium, tf2onnx (the web extra) and the runtime from npm (`npm ci` in web/);
skips without them unless GLCIC_REQUIRE_BROWSER=1 (CI).
"""

import base64
import contextlib
import os
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from browser_test import _app, _open, _paint
from glcic_tf import export_lib, models, web_export
from glcic_tf.errors import UserError

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("web_export")]  # one export for both tests

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
SECONDS = 180_000  # Playwright timeouts (ms)
WIDTH = 0.25  # a narrow network: the page's steps are the same at any width


def _needed():
    missing = []
    if not CHROMIUM:
        missing.append("chromium (apt-get install -y chromium)")
    try:
        import tf2onnx  # noqa: F401, PLC0415
    except ImportError:
        missing.append("tf2onnx (pip install '.[web]')")
    try:
        web_export.runtime_dir()
    except UserError:
        missing.append("onnxruntime-web (npm ci in web/)")
    if missing:
        if os.environ.get("GLCIC_REQUIRE_BROWSER"):
            pytest.fail("missing: " + ", ".join(missing))
        pytest.skip("missing: " + ", ".join(missing))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(the web folder, the SavedModel's serving_default) of one network."""
    _needed()
    import tensorflow as tf  # noqa: PLC0415

    keras.utils.set_random_seed(1)
    network = models.completion_network(WIDTH)
    export_dir = tmp_path_factory.mktemp("export")
    saved = export_lib.export_saved_model(network, models.PLACES2_MEAN_PIXEL, str(export_dir), 1)
    web = web_export.export_web(network, models.PLACES2_MEAN_PIXEL, str(export_dir), 1)
    return Path(web), tf.saved_model.load(saved).signatures["serving_default"]


@contextlib.contextmanager
def _static_server(folder):
    """`python -m http.server` on a free port serving `folder`; yields its address."""
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        line = process.stdout.readline()  # Serving HTTP on 127.0.0.1 port N (http://127.0.0.1:N/) ...
        port = int(line.split(" port ")[1].split()[0])
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def static_server(exported):
    with _static_server(exported[0]) as url:
        yield url


def _photo(height, width, folder):
    """A textured photograph (smooth waves and noise) and its PNG file in `folder`."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width] / width
    photo = np.stack([128 + 90 * np.sin(7 * x + 3 * y), 128 + 90 * np.cos(5 * y), 60 + 120 * x * y], -1)
    photo = np.clip(photo + rng.normal(0, 8, photo.shape), 0, 255).astype(np.uint8)
    path = folder / "photo.png"
    cv2.imwrite(str(path), photo[..., ::-1])
    return photo, path


def _result_and_hole(page):
    """The page's result image (RGB) and where its mask canvas is painted (bool), read from the page."""
    result_png = base64.b64decode(
        page.evaluate(
            """async () => {
              const bytes = new Uint8Array(await (await fetch(document.getElementById("result").src)).arrayBuffer());
              let text = ""; for (const byte of bytes) text += String.fromCharCode(byte);
              return btoa(text);
            }"""
        )
    )
    painted = base64.b64decode(
        page.evaluate(
            """() => {
              const c = document.getElementById("mask-canvas");
              const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
              let text = ""; for (let i = 3; i < d.length; i += 4) text += String.fromCharCode(d[i] > 0 ? 1 : 0);
              return btoa(text);
            }"""
        )
    )
    result = cv2.imdecode(np.frombuffer(result_png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    return result, np.frombuffer(painted, np.uint8).reshape(result.shape[:2]) > 0


def _check_against_serving_default(result, hole, photo, serving_default):
    """The photo's own pixels outside the hole; the SavedModel's within 2/255 in it (8-bit rounding)."""
    assert result.shape == photo.shape
    np.testing.assert_array_equal(result[~hole], photo[~hole])
    expected = serving_default(image=(photo[None] / 255).astype(np.float32), mask=hole[None, ..., None].astype(np.float32))["inpainted"].numpy()[0]
    difference = np.abs(result / 255 - expected)[hole].max()
    assert difference <= 2 / 255, difference


def test_export_writes_a_static_folder(exported):
    web, _ = exported
    files = sorted(str(path.relative_to(web)) for path in web.rglob("*") if path.is_file())
    assert files == sorted(
        ["index.html", "config.json", f"model/{web_export.MODEL_FILE}"]
        + [f"static/{name}" for name in web_export.EDITOR_FILES[1:]]
        + [f"runtime/{name}" for name in web_export.RUNTIME_FILES]
    )
    assert 'data-completer="browser"' in (web / "index.html").read_text()


def test_the_page_completes_in_the_browser_and_sends_nothing(exported, static_server, tmp_path):
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    web, serving_default = exported
    # An odd size, a stroke near the right edge (its crop ends at the photo's edge, padded to 4)
    # and one inside.
    height, width = 301, 403
    photo, path = _photo(height, width, tmp_path)

    requests = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 700})
            page.set_default_timeout(SECONDS)
            page.on("request", lambda request: requests.append((request.url, request.method, request.post_data_buffer)))
            page.goto(static_server)
            page.wait_for_function("document.getElementById('model-line').textContent !== ''")  # config.json read
            assert page.locator("#postprocess").is_hidden()
            shape = _open(page, path)  # the page's own tests' way of opening and painting
            _paint(page, shape, (120, 100), (200, 160))
            _paint(page, shape, (395, 40), (395, 120))
            page.click("#complete")
            page.wait_for_selector("#result-section", state="visible")
            assert page.locator("#error").is_hidden()
            result, hole = _result_and_hole(page)
        finally:
            browser.close()

    assert hole[:, width - 20 :].any() and hole[:, : width // 2].any()
    _check_against_serving_default(result, hole, photo, serving_default)

    # Nothing left the page: each request a GET without a body of one of the folder's files.
    served = {"/"} | {"/" + str(file.relative_to(web)) for file in web.rglob("*") if file.is_file()}
    for url, method, body in requests:
        if url.startswith(("data:", "blob:")):
            continue  # the page's own bytes, never sent anywhere
        parsed = urllib.parse.urlsplit(url)
        assert url.startswith(static_server) and method == "GET" and not body, (url, method)
        assert parsed.path in served, url


def test_a_wheels_copy_of_the_runtime_is_used_before_a_clones_npm_folder(tmp_path, monkeypatch):
    import setup_lists  # noqa: PLC0415 (setup.py's list, read without running setup())

    assert setup_lists.WEB_RUNTIME_FILES == web_export.RUNTIME_FILES  # what the wheel carries is what the export copies
    monkeypatch.delenv("GLCIC_WEB_RUNTIME", raising=False)
    monkeypatch.setattr(web_export, "PACKAGED_RUNTIME", tmp_path)
    for name in web_export.RUNTIME_FILES:
        (tmp_path / name).write_text("")
    assert web_export.runtime_dir() == tmp_path
    (tmp_path / web_export.RUNTIME_FILES[-1]).unlink()  # an incomplete copy is not used
    assert web_export.runtime_dir() != tmp_path or pytest.fail("used an incomplete copy")


def test_the_apps_page_offers_completion_in_the_browser_beside_its_server(exported, tmp_path):
    """app.py with an export holding a web page (--formats=savedmodel,web) offers both: in the
    browser nothing is posted, on the server the photo is; both complete as serving_default does."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    web, serving_default = exported
    photo, path = _photo(203, 251, tmp_path)
    posts = []
    with _app(f"--model={web.parent.parent}", "--precision=float32") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 700})
            page.set_default_timeout(SECONDS)
            page.on("request", lambda request: posts.append(request.url) if request.method != "GET" else None)
            page.goto(url)
            page.wait_for_function("document.getElementById('model-line').textContent !== ''")
            assert page.evaluate("self.crossOriginIsolated")  # the runtime may use threads
            assert page.locator("#where").is_visible() and page.locator("#postprocess").is_visible()
            shape = _open(page, path)
            _paint(page, shape, (60, 50), (150, 120))
            page.check("#where-browser")
            assert page.locator("#postprocess").is_hidden()  # the server's, in Python
            page.click("#complete")
            page.wait_for_selector("#result-section", state="visible")
            assert page.locator("#error").is_hidden(), page.text_content("#error")
            assert page.text_content("#timing").endswith("in this browser.")
            assert posts == []  # the photo was not sent
            _check_against_serving_default(*_result_and_hole(page), photo, serving_default)

            page.check("#where-server")
            page.set_checked("#postprocess", False)
            page.evaluate("document.getElementById('result-section').hidden = true")
            page.click("#complete")
            page.wait_for_selector("#result-section", state="visible")
            assert "on the server" in page.text_content("#timing") and posts == [f"{url}/complete"]
            _check_against_serving_default(*_result_and_hole(page), photo, serving_default)
        finally:
            browser.close()


def test_a_model_that_does_not_load_is_a_message_that_says_what_to_do(exported, tmp_path):
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    web, _ = exported
    broken = tmp_path / "web"
    shutil.copytree(web, broken)
    model = broken / "model" / web_export.MODEL_FILE
    model.write_bytes(model.read_bytes()[:5000])  # cut short
    _, path = _photo(60, 80, tmp_path)
    with _static_server(broken) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 700})
            page.set_default_timeout(SECONDS)
            page.goto(url)
            page.wait_for_function("document.getElementById('model-line').textContent !== ''")
            shape = _open(page, path)
            _paint(page, shape, (20, 20), (50, 40))
            page.click("#complete")
            page.wait_for_selector("#error", state="visible")
            message = page.text_content("#error")
            assert message.startswith("The in-browser model did not load (") and message.endswith(
                "): reload the page; if it fails again, write this folder anew with export.py --formats=web."
            ), message
            assert page.locator("#complete").is_enabled()  # the page goes on
        finally:
            browser.close()
