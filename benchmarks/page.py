r"""The page's overhead: pressing Complete to seeing the result, against glcic_tf.inference alone.

    python benchmarks/page.py                                   # paper-width network, 512x512 photo
    python benchmarks/page.py --model=quickstart_output/export --photo=chelsea --nopostprocess \
        --repeats=1 --screenshot=docs/images/app_page.png       # the docs' picture of the page (the raw model)

Starts `app.py --model=...` (by default a SavedModel of the paper-width network with random
weights: the cost does not depend on them), opens the page in headless Chromium (Debian's
package, through Playwright), opens the photo, paints one stroke with the mouse and presses
Complete --repeats times, timing each from the click to the result on screen. In the same run
it completes the same photo with the same stroke through `glcic_tf.photos.inpaint` directly,
with the same model, in this process. The difference is what the page adds: encoding the mask,
the upload, decoding, the PNG back and showing it. Prints the machine's matmul rate beside.
"""

import os
import shutil
import statistics
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.app_process import start_app  # noqa: E402
from benchmarks.page_timing import PageFailed, time_completions  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "What app.py serves; unset: an export of the paper-width network with random weights.")
flags.DEFINE_enum("photo", "astronaut", ["astronaut", "chelsea", "coins", "camera"], "scikit-image photograph to complete.")
flags.DEFINE_integer("size", 512, "With astronaut: the photo's side (resized).")
flags.DEFINE_integer("repeats", 5, "Completions timed each way (after one to warm up).")
flags.DEFINE_bool("postprocess", False, "Leave the page's post-processing ticked, as it starts (and post-process the direct completion); off: untick it.")
flags.DEFINE_string("screenshot", None, "Also save a screenshot of the page with the last result here.")


def photo():
    import cv2  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from skimage import data  # noqa: PLC0415

    image = getattr(data, FLAGS.photo)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if FLAGS.photo == "astronaut":
        image = cv2.resize(image, (FLAGS.size, FLAGS.size), interpolation=cv2.INTER_AREA)
    return image


def stroke(shape):
    """One stroke across the middle third, as fractions of the photo: (start, end, brush size)."""
    height, width = shape
    return (width * 0.35, height * 0.45), (width * 0.65, height * 0.55), max(4, round(min(height, width) / 20))


def time_direct(model, image):
    import cv2  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from glcic_tf import completers, photos  # noqa: PLC0415

    completer = completers.load_completer(model, "float32")
    (x0, y0), (x1, y1), size = stroke(image.shape[:2])
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.line(mask, (round(x0), round(y0)), (round(x1), round(y1)), 255, size)
    mask = (mask > 0).astype(np.float32)[..., None]
    seconds = []
    for repeat in range(FLAGS.repeats + 1):
        start = time.perf_counter()
        photos.inpaint(completer, image, mask, FLAGS.postprocess)
        if repeat:
            seconds.append(time.perf_counter() - start)
    return seconds


def main(argv):
    del argv
    import cv2  # noqa: PLC0415

    from benchmarks import machine  # noqa: PLC0415

    folder = tempfile.mkdtemp()
    try:
        model = FLAGS.model
        if not model:
            from glcic_tf import export_lib, models  # noqa: PLC0415

            model = os.path.join(folder, "export")
            export_lib.export_saved_model(models.completion_network(), models.PLACES2_MEAN_PIXEL, model, 1)
        image = photo()
        photo_path = os.path.join(folder, f"{FLAGS.photo}.png")
        cv2.imwrite(photo_path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        process, url = start_app(model)
        try:
            try:
                timed = time_completions(url, photo_path, image.shape[:2], stroke(image.shape[:2]), ("server",), FLAGS.repeats, FLAGS.postprocess, FLAGS.screenshot)
            except PageFailed as error:
                sys.exit(str(error))
            page, page_clock, server = (timed["server"][key] for key in ("seconds", "page_seconds", "server_seconds"))
        finally:
            process.terminate()
            process.wait(30)
        direct = time_direct(model, image)
        print(machine.describe(machine.matmul_rates(torch=False)))
        print(f"{image.shape[1]}x{image.shape[0]} {FLAGS.photo}, one stroke, model {FLAGS.model or 'paper width (random weights)'}, {FLAGS.repeats} runs each, median (min-max):")
        rows = (
            ("page: Complete -> result shown", page),
            ("  the page's clock: click -> shown", page_clock),
            ("  of which the server's handling", server),
            ("glcic_tf.photos.inpaint", direct),
        )
        for name, seconds in rows:
            print(f"  {name:<34} {statistics.median(seconds):.3f} s ({min(seconds):.3f}-{max(seconds):.3f})")
        overhead = statistics.median(page) - statistics.median(direct)
        print(f"  the page adds {overhead:.3f} s ({statistics.median(page) / statistics.median(direct):.2f}x)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
