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
"""

import os
import time

from absl import flags, logging

from glcic_tf import commands, images, inference
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
    """(image path, mask path or None, output path) for every image to complete."""
    if not FLAGS.image or not FLAGS.output:
        raise UserError("--image and --output are required")
    if bool(FLAGS.mask) == bool(FLAGS.box):
        raise UserError("give either --mask or --box")
    if not os.path.exists(FLAGS.image):
        raise UserError(f"image {FLAGS.image} does not exist")
    if os.path.isfile(FLAGS.image):
        images.output_extension(FLAGS.output)  # refused now, not after the network has run
        return [(FLAGS.image, FLAGS.mask, FLAGS.output)]
    names = sorted(name for name in os.listdir(FLAGS.image) if name.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise UserError(f"image folder {FLAGS.image} holds no images")
    if FLAGS.mask and not os.path.isdir(FLAGS.mask):
        raise UserError(f"--image is a folder, so --mask must be a folder of masks, and {FLAGS.mask} is not")
    jobs = []
    for name in names:
        mask = None
        if FLAGS.mask:
            stem = os.path.splitext(name)[0]
            candidates = [m for m in os.listdir(FLAGS.mask) if os.path.splitext(m)[0] == stem]
            if not candidates:
                raise UserError(f"no mask named {stem}.* in {FLAGS.mask} for image {name}")
            mask = os.path.join(FLAGS.mask, candidates[0])
        jobs.append((os.path.join(FLAGS.image, name), mask, os.path.join(FLAGS.output, os.path.splitext(name)[0] + ".png")))
    return jobs


def _complete_file(completer, image_path, mask_path, output_path, boxes):
    image = images.read_image(image_path, FLAGS.max_pixels)
    if mask_path:
        mask = images.read_mask(mask_path, image.shape[:2], FLAGS.max_pixels)
    else:
        mask = inference.mask_from_boxes(image.shape[:2], boxes)
    start = time.perf_counter()
    completed = inference.inpaint(completer, image, mask, FLAGS.postprocess, FLAGS.tiling, FLAGS.max_network_pixels)
    logging.info("%s: %dx%d in %.2f s", image_path, image.shape[1], image.shape[0], time.perf_counter() - start)
    images.write_image(output_path, completed)


def main(argv):
    del argv  # commands.run refuses positional arguments
    with one_line_errors():
        jobs = _jobs()
        boxes = [_parse_box(text) for text in FLAGS.box]
        completer = commands.completer_from_flags()
        failures = []
        from tqdm import tqdm  # noqa: PLC0415 (installed with tensorflow-datasets)

        try:
            for image_path, mask_path, output_path in tqdm(jobs, unit="image", disable=len(jobs) == 1):
                try:
                    _complete_file(completer, image_path, mask_path, output_path, boxes)
                except UserError as error:
                    if len(jobs) == 1:
                        raise
                    logging.warning("skipped: %s", error)  # one broken photograph does not stop a folder
                    failures.append(image_path)
        finally:
            getattr(completer, "close", lambda: None)()  # a TF Serving completer's gRPC channel
        if failures:
            raise UserError(f"{len(failures)} of {len(jobs)} images failed (named above); the other {len(jobs) - len(failures)} were written to {FLAGS.output}")
    print(f"wrote {len(jobs)} completed image{'s' if len(jobs) > 1 else ''} to {FLAGS.output}")


def run():
    commands.run(main, __doc__)


if __name__ == "__main__":
    run()
