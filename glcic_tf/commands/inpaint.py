r"""Complete your own photographs with an exported model, locally or through TF Serving.

    python inpaint.py --model=/tmp/glcic_export --image=photo.jpg --mask=hole.png --output=done.png
    python inpaint.py --model=/tmp/glcic_export --image=photo.jpg --box=40,60,90,80 --box=200,30,50,50 --output=done.png
    python inpaint.py --model=/tmp/glcic_export --image=photos/ --mask=masks/ --output=completed/ --postprocess
    python inpaint.py --server=localhost:8501 --image=photo.jpg --mask=hole.png --output=done.png
    glcic-inpaint ...  # the same command, as pip installs it (any folder)

--mask is an image where white is the hole (same size as the image); --box is x,y,width,height
and may be repeated. With a folder of images, --mask is a folder of masks with the same file
names (or --box applies to every image) and --output a folder. --model takes a SavedModel
(export.py's version folder or its base folder, whose highest version is used) or a train.py
run folder. --server sends each image to tensorflow_model_server's REST API (the
`inpaint_bytes` signature); --protocol=grpc uses its gRPC API (needs tensorflow-serving-api,
installed with --no-deps: see docs/serving.md).

By default (--tiling=auto) the network runs on each hole's neighbourhood only (its box grown
by the network's 153-pixel receptive field), locally or on the server, so a 12-megapixel photo
with a small hole takes about a second; see glcic_tf/tiling.py. Images are read if they are
JPEG, PNG, WebP, GIF, BMP or TIFF files (glcic_tf/images.py); with a folder, a broken image or
one in another format is skipped and named, the others are written, and the exit status is 1.
Nothing is overwritten that is read: an output that would be an input (--output equal to
--image, or the images' own folder holding a PNG of an image's name) or two images that would be
written under one name (a.jpg and a.png) are refused before any model loads. Each output is
written under a new temporary name and renamed into place.
"""

import contextlib
import os
import time

from absl import flags, logging

from glcic_tf import commands, images, photos
from glcic_tf.errors import UserError, one_line_errors

FLAGS = flags.FLAGS
flags.DEFINE_string("image", None, "An image file or a folder of images.")
flags.DEFINE_string("mask", None, "A mask image (white = hole), or a folder of masks named like the images.")
flags.DEFINE_multi_string("box", [], "A rectangular hole x,y,width,height (repeatable); instead of --mask.")
flags.DEFINE_string("output", None, "Output file (.png or .jpg), or a folder when --image is a folder.")
flags.DEFINE_bool("postprocess", False, "The paper's post-processing: fast marching, then Poisson blending.")
commands.define_completion_flags()
commands.define_photo_flags()
commands.define_old_name("strategy", "tiling")

IMAGE_EXTENSIONS = images.extensions()  # every format images.py reads


def _parse_box(text):
    try:
        x, y, w, h = (int(value) for value in text.split(","))
    except ValueError:
        raise UserError(f"--box {text!r} must be four integers x,y,width,height") from None
    return x, y, w, h


def _jobs():
    """(image path, mask path or None, output path) for every image to complete; refused here,
    before any model loads, if an output would overwrite an input or another output."""
    if not FLAGS.image or not FLAGS.output:
        raise UserError("--image and --output are required")
    if bool(FLAGS.mask) == bool(FLAGS.box):
        raise UserError("give either --mask or --box")
    if not os.path.exists(FLAGS.image):
        raise UserError(f"image {FLAGS.image} does not exist")
    if os.path.isfile(FLAGS.image):
        images.output_extension(FLAGS.output)  # refused now, not after the network has run
        jobs = [(FLAGS.image, FLAGS.mask, FLAGS.output)]
    elif os.path.isdir(FLAGS.image):
        jobs = _folder_jobs()
    else:
        raise UserError(f"--image {FLAGS.image} is neither a file nor a folder")
    _refuse_overwriting_inputs(jobs)
    return jobs


def _folder_jobs():
    names = sorted(name for name in os.listdir(FLAGS.image) if name.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise UserError(f"image folder {FLAGS.image} holds no images")
    if FLAGS.mask and not os.path.isdir(FLAGS.mask):
        raise UserError(f"--image is a folder, so --mask must be a folder of masks, and {FLAGS.mask} is not")
    if os.path.exists(FLAGS.output) and not os.path.isdir(FLAGS.output):
        raise UserError(f"--image is a folder, so --output must be a folder, and {FLAGS.output} is a file")
    masks = sorted(os.listdir(FLAGS.mask)) if FLAGS.mask else []
    jobs, by_output = [], {}
    for name in names:
        stem = os.path.splitext(name)[0]
        mask = None
        if FLAGS.mask:
            candidates = [m for m in masks if os.path.splitext(m)[0] == stem]
            if not candidates:
                raise UserError(f"no mask named {stem}.* in {FLAGS.mask} for image {name}")
            if len(candidates) > 1:
                raise UserError(f"image {name} has several masks in {FLAGS.mask} ({', '.join(candidates)}): keep one")
            mask = os.path.join(FLAGS.mask, candidates[0])
        output = os.path.join(FLAGS.output, stem + ".png")
        by_output.setdefault(output.casefold(), []).append(name)  # A.png and a.png are one file on macOS and Windows
        jobs.append((os.path.join(FLAGS.image, name), mask, output))
    clashes = [names for names in by_output.values() if len(names) > 1]
    if clashes:
        listed = "; ".join(" and ".join(names) for names in clashes)
        raise UserError(f"images would be written under one name ({listed}): rename one of each, or complete them separately")
    return jobs


def _refuse_overwriting_inputs(jobs):
    """UserError if an output is (the same file as) an image or a mask read: --output equal to
    --image, or the images' own folder holding a PNG of the same name."""

    def identity(path):
        status = os.stat(path)
        return status.st_dev, status.st_ino

    inputs = {identity(path): path for job in jobs for path in job[:2] if path}
    for _, _, output in jobs:
        if os.path.exists(output) and identity(output) in inputs:
            raise UserError(f"--output would overwrite the input {inputs[identity(output)]}: choose another output")


def _read_inputs(image_path, mask_path, boxes):
    """The image and its mask (1 = hole); UserError if nothing is to be completed."""
    image = images.read_image(image_path, FLAGS.max_pixels)
    height, width = image.shape[:2]
    if mask_path:
        mask = images.read_mask(mask_path, image.shape[:2], FLAGS.max_pixels)
        if not mask.any():
            raise UserError(f"mask {mask_path} marks no hole: white pixels (128 or more) are the hole")
    else:
        mask = photos.mask_from_boxes(image.shape[:2], boxes)
        if not mask.any():
            raise UserError(f"--box {' --box '.join(FLAGS.box)} lies outside image {image_path} ({width}x{height})")
    return image, mask


class _Attempt:
    """One photograph's step of a run: whether it failed (see _skipped_on_failure)."""

    failed = False


@contextlib.contextmanager
def _skipped_on_failure(image_path, failures, alone):
    """For a folder: a photograph that fails is named in the log and the next one goes on (a
    UserError as a warning, anything else, a defect of ours, with its traceback). Alone, its
    error stops the command as usual."""
    attempt = _Attempt()
    try:
        yield attempt
    except UserError as error:
        if alone:
            raise
        logging.warning("skipped: %s", error)
        attempt.failed = True
    except Exception:  # noqa: BLE001 (one photograph's failure does not stop a folder)
        if alone:
            raise
        logging.exception("skipped %s: completing it failed unexpectedly (please report this with the traceback)", image_path)
        attempt.failed = True
    if attempt.failed:
        failures.append(image_path)


def main(argv):
    del argv  # commands.run refuses positional arguments
    with one_line_errors():
        jobs = _jobs()
        boxes = [_parse_box(text) for text in FLAGS.box]
        completer, failures, written = None, [], 0
        from tqdm import tqdm  # noqa: PLC0415 (installed with tensorflow-datasets)

        try:
            for image_path, mask_path, output_path in tqdm(jobs, unit="image", disable=len(jobs) == 1):
                with _skipped_on_failure(image_path, failures, alone=len(jobs) == 1) as reading:
                    image, mask = _read_inputs(image_path, mask_path, boxes)
                if reading.failed:
                    continue
                if completer is None:  # loaded once an input is known good; its errors stop the command
                    completer = commands.completer_from_flags()
                with _skipped_on_failure(image_path, failures, alone=len(jobs) == 1):
                    start = time.perf_counter()
                    completed = photos.inpaint(completer, image, mask, FLAGS.postprocess, FLAGS.tiling, FLAGS.max_network_pixels)
                    logging.info("%s: %dx%d in %.2f s", image_path, image.shape[1], image.shape[0], time.perf_counter() - start)
                    images.write_image(output_path, completed)
                    written += 1
        finally:
            getattr(completer, "close", lambda: None)()  # a TF Serving completer's gRPC channel
        if failures:
            raise UserError(f"{len(failures)} of {len(jobs)} images failed (named above); the other {written} were written to {FLAGS.output}")
    print(f"wrote {written} completed image{'s' if written != 1 else ''} to {FLAGS.output}")


def run():
    commands.run(main, __doc__)


if __name__ == "__main__":
    run()
