"""The page as a person uses it, in a real headless Chromium driven by Playwright.

The tests start `python app.py` on a free port with a tiny trained run, then open photos, paint
with the mouse, press Complete and download the result. Chromium is Debian's package
(.ci/run installs it); without it these tests skip, unless GLCIC_REQUIRE_BROWSER=1 (CI), where
they fail.
"""

import base64
import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import pytest
from fake_serving import fake_serving

pytestmark = pytest.mark.slow  # a browser and the page's server, each started anew

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# As root in a container, with no network: no sandbox, no GPU, none of Chromium's own connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
MAX_PIXELS = 1_000_000  # the app's --max_pixels here, so the page's own size check is exercised
SECONDS = 120_000  # Playwright timeouts (ms): a completion takes well under a second once warm


@contextlib.contextmanager
def _app(*flags):
    """`python app.py --port=0 *flags` running; yields the address it prints."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port=0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        deadline = time.monotonic() + 180
        line = ""
        while "glcic_tf page: " not in line:
            line = process.stdout.readline()
            assert line or process.poll() is None, "app.py exited before serving"
            assert time.monotonic() < deadline, "app.py did not print its address"
        url = line.split("glcic_tf page: ")[1].split()[0]
        with urllib.request.urlopen(f"{url}/config", timeout=30) as reply:  # at once: the address works when printed
            assert reply.status == 200
        yield url
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def app_url(trained_run):
    with _app(f"--model={trained_run}", f"--max_pixels={MAX_PIXELS}", "--precision=float32") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        if os.environ.get("GLCIC_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser, app_url):
    """A page of the app in its own browser context (its own cookies and storage: another browser)."""
    contexts = []

    def open_page(url=app_url):
        context = browser.new_context(viewport={"width": 800, "height": 700}, accept_downloads=True)
        context.set_default_timeout(SECONDS)
        contexts.append(context)
        page = context.new_page()
        page.goto(url)
        page.wait_for_function("document.getElementById('model-line').textContent !== ''")  # /config answered
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture(scope="module")
def photos(sample_folder, tmp_path_factory):
    """Held-out photographs: chelsea at twice its size (902x600, shown scaled down), coins as it is."""
    folder = tmp_path_factory.mktemp("photos")
    chelsea = cv2.imread(str(sample_folder / "test" / "chelsea.png"))
    cv2.imwrite(str(folder / "chelsea_large.png"), cv2.resize(chelsea, (902, 600), interpolation=cv2.INTER_CUBIC))
    shutil.copy(sample_folder / "test" / "coins.png", folder / "coins.png")
    (folder / "notes.png").write_text("a text file, named like a photo")
    # A phone photo: stored sideways (451x300) with EXIF orientation 6, shown upright (300x451).
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    PIL.Image.open(sample_folder / "test" / "chelsea.png").convert("RGB").save(folder / "phone.jpg", quality=90, exif=exif)
    # The same as a WebP, which Chromium shows as stored (451x300) whatever its EXIF says.
    PIL.Image.open(sample_folder / "test" / "chelsea.png").convert("RGB").save(folder / "phone.webp", lossless=True, exif=exif)
    cv2.imwrite(str(folder / "huge.png"), np.zeros((1000, 1200, 3), np.uint8))  # 1.2 megapixels, over MAX_PIXELS
    return folder


def _open(page, path):
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#stage", state="visible")
    return cv2.imread(str(path)).shape[:2]


def _paint(page, shape, start, end):
    """Drag the mouse from `start` to `end` (photo pixels, x, y) across the canvas; returns the
    brush radius in photo pixels."""
    height, width = shape
    box = page.locator("#mask-canvas").bounding_box()

    def to_page(point):
        return box["x"] + point[0] * box["width"] / width, box["y"] + point[1] * box["height"] / height

    page.mouse.move(*to_page(start))
    page.mouse.down()
    page.mouse.move(*to_page(end), steps=25)
    page.mouse.up()
    return float(page.input_value("#brush-size")) / 2


def _complete_and_download(page, tmp_path, name="result.png"):
    page.click("#complete")
    page.wait_for_function("!document.getElementById('result-section').hidden || !document.getElementById('error').hidden")
    assert page.is_hidden("#error"), page.text_content("#error")
    with page.expect_download() as download:
        page.click("#download")
    path = tmp_path / name
    download.value.save_as(path)
    assert download.value.suggested_filename.endswith("_completed.png")
    return cv2.imread(str(path))


def _distance_to_segment(shape, start, end):
    """Each pixel centre's distance (photo pixels) to the segment start-end."""
    ys, xs = np.mgrid[: shape[0], : shape[1]] + 0.5
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((xs - x0) * dx + (ys - y0) * dy) / (dx * dx + dy * dy), 0, 1)
    return np.hypot(xs - (x0 + t * dx), ys - (y0 + t * dy))


def _check_completion(result, photo_path, start, end, radius):
    original = cv2.imread(str(photo_path))
    assert result.shape == original.shape  # the photo at its own size
    distance = _distance_to_segment(original.shape[:2], start, end)
    changed = np.any(result != original, axis=-1)
    # Outside the stroke grown by the brush radius (plus the anti-aliased edge and the mapping of
    # screen to photo pixels): untouched. Well inside: completed.
    assert not changed[distance > radius + 3].any()
    assert changed[distance < radius - 3].mean() > 0.9


def test_paint_a_stroke_complete_and_download(new_page, photos, tmp_path):
    page = new_page()
    shape = _open(page, photos / "chelsea_large.png")
    assert page.locator("#mask-canvas").bounding_box()["width"] < shape[1]  # shown scaled down
    start, end = (300, 260), (620, 330)
    radius = _paint(page, shape, start, end)
    assert page.is_enabled("#undo")
    result = _complete_and_download(page, tmp_path)
    _check_completion(result, photos / "chelsea_large.png", start, end, radius)
    assert "Completed in" in page.text_content("#timing")
    assert page.is_hidden("#busy") and page.is_enabled("#complete")


def test_a_phone_photo_turned_by_its_exif_orientation_completes_as_shown(new_page, photos, tmp_path):
    page = new_page()
    shape = _open(page, photos / "phone.jpg")  # OpenCV turns it as browsers do: 451 high, 300 wide
    assert shape == (451, 300) and page.text_content("#photo-info") == "phone.jpg: 300x451"
    start, end = (80, 150), (220, 300)
    radius = _paint(page, shape, start, end)
    _check_completion(_complete_and_download(page, tmp_path), photos / "phone.jpg", start, end, radius)


def test_bad_files_are_messages_and_the_page_goes_on(new_page, photos, tmp_path):
    page = new_page()
    page.set_input_files("#file", str(photos / "notes.png"))
    page.wait_for_selector("#error", state="visible")
    assert "notes.png is not an image this browser can open" in page.text_content("#error")
    page.set_input_files("#file", str(photos / "huge.png"))
    page.wait_for_function("document.getElementById('error').textContent.includes('huge.png')")
    assert f"huge.png is 1200x1000, over this server's limit of {MAX_PIXELS} pixels" in page.text_content("#error")
    shape = _open(page, photos / "coins.png")
    assert page.is_hidden("#error")
    start, end = (100, 120), (220, 150)
    radius = _paint(page, shape, start, end)
    _check_completion(_complete_and_download(page, tmp_path), photos / "coins.png", start, end, radius)


def test_undo_clear_and_erase_leave_no_hole_and_the_page_says_so(new_page, photos, tmp_path):
    page = new_page()
    shape = _open(page, photos / "coins.png")
    start, end = (100, 120), (220, 150)

    def complete_says_nothing_is_painted():
        page.click("#complete")
        page.wait_for_selector("#error", state="visible")
        assert "Nothing is painted" in page.text_content("#error")
        assert page.is_hidden("#result-section")

    _paint(page, shape, start, end)
    page.click("#undo")
    complete_says_nothing_is_painted()
    _paint(page, shape, start, end)
    page.click("#clear")
    complete_says_nothing_is_painted()
    page.click("#undo")  # the clear is undone: the stroke is back
    radius = _paint(page, shape, start, start)  # and a dot
    page.check("#tool-erase")
    page.fill("#brush-size", "120")
    _paint(page, shape, (start[0] - 60, start[1]), (end[0] + 60, end[1]))  # erases everything painted
    complete_says_nothing_is_painted()  # said by the server: the page cannot know erasing left nothing
    page.check("#tool-paint")
    page.fill("#brush-size", str(int(radius * 2)))
    _paint(page, shape, start, end)
    _check_completion(_complete_and_download(page, tmp_path), photos / "coins.png", start, end, radius)
    assert page.is_hidden("#error")


def test_two_browsers_complete_at_the_same_time_each_getting_its_own_result(new_page, photos, tmp_path):
    first, second = new_page(), new_page()
    shape_first = _open(first, photos / "chelsea_large.png")
    # The second opens its photo by drag and drop.
    data = base64.b64encode((photos / "coins.png").read_bytes()).decode()
    transfer = second.evaluate_handle(
        "(data) => { const t = new DataTransfer(); const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));"
        " t.items.add(new File([bytes], 'coins.png', { type: 'image/png' })); return t; }",
        data,
    )
    second.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    second.wait_for_selector("#stage", state="visible")
    shape_second = (303, 384)
    strokes = {"first": ((200, 200), (700, 420)), "second": ((60, 250), (300, 60))}
    radius_first = _paint(first, shape_first, *strokes["first"])
    radius_second = _paint(second, shape_second, *strokes["second"])
    # The paper's post-processing is on by default (docs/demo.md says why); the first
    # completes without it.
    assert first.is_checked("#postprocess") and second.is_checked("#postprocess")
    first.uncheck("#postprocess")
    first.click("#complete")
    second.click("#complete")
    assert first.is_visible("#busy")  # the first is still working when the second has asked
    results = {}
    for name, page in (("first", first), ("second", second)):
        page.wait_for_selector("#result-section", state="visible")
        with page.expect_download() as download:
            page.click("#download")
        download.value.save_as(tmp_path / f"{name}.png")
        results[name] = cv2.imread(str(tmp_path / f"{name}.png"))
    _check_completion(results["first"], photos / "chelsea_large.png", *strokes["first"], radius_first)
    _check_completion(results["second"], photos / "coins.png", *strokes["second"], radius_second)


def test_through_tf_serving_and_a_message_when_it_is_down(new_page, export_base, photos, tmp_path):
    with contextlib.ExitStack() as model_server:
        address, requests = model_server.enter_context(fake_serving(export_base / "3"))
        with _app(f"--server={address}") as url:
            page = new_page(url)
            assert f"TF Serving at {address}" in page.text_content("#model-line")
            shape = _open(page, photos / "coins.png")
            start, end = (100, 120), (220, 150)
            radius = _paint(page, shape, start, end)
            _check_completion(_complete_and_download(page, tmp_path), photos / "coins.png", start, end, radius)
            assert len(requests) == 1  # the completion came from the model server
            model_server.close()  # TF Serving goes down; the page's server does not
            page.click("#complete")
            page.wait_for_selector("#error", state="visible")
            assert f"TF Serving at http://{address}/v1/models/glcic:predict did not answer" in page.text_content("#error")
            assert page.is_enabled("#complete") and page.is_hidden("#busy")


def test_two_browsers_through_tf_serving_complete_at_the_same_time_while_the_page_answers(new_page, export_base, photos):
    # A model server that takes 3 s a request: if the page's server ran completions one after
    # the other, or blocked while one ran, both results would take 6 s and /config would wait.
    delay = 3.0
    with fake_serving(export_base / "3", delay_seconds=delay) as (address, requests), _app(f"--server={address}") as url:
        pages = [new_page(url), new_page(url)]
        for page in pages:
            _paint(page, _open(page, photos / "coins.png"), (100, 120), (220, 150))
            page.uncheck("#postprocess")  # the model server's time alone
        pages[0].click("#complete")  # a first completion warms the model server's signature up
        pages[0].wait_for_selector("#result-section", state="visible")
        start = time.perf_counter()
        for page in pages:
            page.click("#complete")
        time.sleep(0.5)  # both requests are at the model server now
        asked = time.perf_counter()
        with urllib.request.urlopen(f"{url}/config", timeout=30) as reply:
            assert reply.status == 200
        config_seconds = time.perf_counter() - asked
        for page in pages:
            page.wait_for_selector("#result-section", state="visible")
        both_seconds = time.perf_counter() - start
    assert len(requests) == 3
    assert config_seconds < 0.5, config_seconds
    assert both_seconds < 1.6 * delay, both_seconds  # at the same time: about one request's time


def test_a_webp_with_exif_orientation_completes_as_chromium_shows_it_as_stored(new_page, photos, tmp_path):
    # OpenCV 5 turns a WebP by its EXIF orientation; Chromium does not, so the server must not
    # either, or the mask painted on what the page showed would not fit (or fill the wrong area).
    page = new_page()
    page.set_input_files("#file", str(photos / "phone.webp"))
    page.wait_for_selector("#stage", state="visible")
    assert page.text_content("#photo-info") == "phone.webp: 451x300"
    start, end = (100, 120), (300, 200)
    radius = _paint(page, (300, 451), start, end)
    stored = tmp_path / "stored.png"  # the WebP's pixels as stored, unturned (Pillow does not turn them)
    cv2.imwrite(str(stored), cv2.cvtColor(np.asarray(PIL.Image.open(photos / "phone.webp").convert("RGB")), cv2.COLOR_RGB2BGR))
    _check_completion(_complete_and_download(page, tmp_path), stored, start, end, radius)
