"""Completions timed in the page as a person makes them: headless Chromium (Debian's package,
through Playwright) opens app.py's page, opens a photo, paints one stroke with the mouse and
presses Complete, each way the page offers ("server": POST /complete; "browser": the export's
model on onnxruntime-web, the photo never sent), the ways interleaved so that a slow spell of a
noisy machine falls on all alike. Used by benchmarks/page.py and benchmarks/run.py; no flags.
"""

import shutil
import time
from typing import Dict, Sequence

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
RADIO = {"server": "#where-server", "browser": "#where-browser"}


class PageFailed(Exception):
    """The page could not be timed: no chromium, no in-browser option, or a completion the page
    answered with an error (its message)."""


def chromium():
    """Debian's chromium, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def time_completions(url: str, photo_path: str, shape, stroke, ways: Sequence[str] = ("server",), repeats: int = 3, postprocess: bool = False, screenshot=None) -> Dict:
    """Each way's completions of the photo with the stroke ((start, end, brush size) in photo
    pixels) through the page at `url`, after one untimed completion each (the server traces its
    network, the browser loads its runtime and model):

        {way: {"seconds": click to result shown (this process's clock), "page_seconds": the
               page's own clock, "server_seconds": the server's handling (server only)},
         "first_load_bytes": {"page": the page and its files, "browser": what choosing the
               browser loads besides (runtime, model)},
         "chromium": its version, "threads": the threads onnxruntime-web may use there}
    """
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    executable = chromium()
    if not executable:
        raise PageFailed("needs Debian's chromium: apt-get install -y chromium")
    (x0, y0), (x1, y1), size = stroke
    times = {way: {"seconds": [], "page_seconds": [], "server_seconds": []} for way in ways}
    loaded = {"bytes": 0}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 760})
        page.set_default_timeout(600_000)
        page.on("requestfinished", lambda request: loaded.__setitem__("bytes", loaded["bytes"] + request.sizes()["responseBodySize"]))
        page.goto(url)
        page.wait_for_function("document.getElementById('model-line').textContent !== ''")
        page.set_input_files("#file", photo_path)
        page.wait_for_selector("#stage", state="visible")
        page_bytes = loaded["bytes"]
        if "browser" in ways and not page.locator("#where").is_visible():
            raise PageFailed("the page offers no completion in the browser: serve an export written with --formats=savedmodel,web")
        page.fill("#brush-size", str(size))
        box = page.locator("#mask-canvas").bounding_box()
        scale = box["width"] / shape[1]
        page.mouse.move(box["x"] + x0 * scale, box["y"] + y0 * scale)
        page.mouse.down()
        page.mouse.move(box["x"] + x1 * scale, box["y"] + y1 * scale, steps=25)
        page.mouse.up()
        browser_bytes = 0
        for repeat in range(repeats + 1):
            for way in ways:
                if way in RADIO and page.locator("#where").is_visible():
                    page.check(RADIO[way])
                if way == "server":
                    page.set_checked("#postprocess", postprocess)
                before = loaded["bytes"]
                page.evaluate("document.getElementById('result-section').hidden = true")
                start = time.perf_counter()
                page.click("#complete")
                page.wait_for_selector("#result-section:not([hidden]), #error:not([hidden])")  # a result, or the page's message
                if page.locator("#error").is_visible():
                    raise PageFailed(f"the page failed to complete ({way}): {page.text_content('#error')}")
                page.wait_for_function("document.getElementById('result').complete")  # decoded and shown
                if way == "browser" and not repeat:
                    browser_bytes = loaded["bytes"] - before
                if repeat:
                    times[way]["seconds"].append(time.perf_counter() - start)
                    timing = page.text_content("#timing")  # "Completed in 0.71 s (0.66 s on the server)." or "... in this browser."
                    times[way]["page_seconds"].append(float(timing.split("Completed in ")[1].split(" s")[0]))
                    if "on the server" in timing:
                        times[way]["server_seconds"].append(float(timing.split("(")[1].split(" s on the server")[0]))
        if screenshot:
            bottom = page.evaluate("Math.max(...[...document.querySelectorAll('main > section')].map((s) => s.getBoundingClientRect().bottom))")
            page.screenshot(path=screenshot, clip={"x": 0, "y": 0, "width": 1400, "height": bottom + 12})
        isolated, cores = page.evaluate("[self.crossOriginIsolated, navigator.hardwareConcurrency]")
        version = browser.version
        browser.close()
    return {
        **times,
        "first_load_bytes": {"page": page_bytes, "browser": browser_bytes},
        "chromium": version,
        "threads": min(4, cores) if isolated else 1,  # as browser_complete.mjs chooses
    }
