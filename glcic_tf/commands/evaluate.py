r"""PSNR/SSIM report of a model and classical baselines on the same images and the same holes.

    python evaluate.py --model=/tmp/glcic_export --source=sample:test --output_dir=/tmp/eval
    python evaluate.py --model=runs/places2 --source=tfds:places365_small:validation --num_images=1000
    glcic-evaluate ...  # the same command, as pip installs it (any folder)

Writes into --output_dir: per_image.csv, summary.json (mean and standard deviation per method
and metric, with the protocol, seed, model and number of images), results.md (the table) and
examples.png (input with hole | each method | original). See glcic_tf/evaluation.py and
glcic_tf/metrics.py for what is measured and how.
"""

from absl import flags, logging

from glcic_tf import commands, evaluation, masks
from glcic_tf.errors import UserError, one_line_errors

FLAGS = flags.FLAGS
flags.DEFINE_string("source", "sample:test", "Images: tfds:NAME[:SPLIT], folder:PATH or sample:test.")
flags.DEFINE_string("data_dir", None, "Where tensorflow-datasets keeps prepared data sets.")
flags.DEFINE_integer("num_images", None, "Evaluate the first N images (default: all).")
flags.DEFINE_integer("image_size", 256, "Images are resized and centre-cropped to this square (the paper's 256); 0: each at its own size.")
flags.DEFINE_enum("mask_protocol", "paper", sorted(masks.MASK_PROTOCOLS), "How holes are drawn (glcic_tf/masks.py).")
flags.DEFINE_integer("seed", 0, "Seed of the holes: the same seed gives the same holes everywhere.")
flags.DEFINE_list("methods", list(evaluation.METHODS), "Methods to compare.")
flags.DEFINE_string("output_dir", None, "Where the report goes.")
flags.DEFINE_integer("grid_images", 4, "Images shown in examples.png.")
flags.DEFINE_integer("grid_tile", 0, "Side in pixels of each picture in examples.png (0: --image_size).")
commands.define_completion_flags()  # --model or --server, and what the network runs on, as inpaint.py


def main(argv):
    del argv  # commands.run refuses positional arguments
    with one_line_errors():
        if not FLAGS.output_dir:
            raise UserError("--output_dir is required")
        # Without a model the default methods are the classical ones; model methods asked for by
        # name without one are an error.
        has_model = bool(FLAGS.model or FLAGS.server)
        default = not FLAGS["methods"].present
        methods = [m for m in FLAGS.methods if m in evaluation.BASELINES] if default and not has_model else FLAGS.methods
        if not has_model and set(methods) & set(evaluation.MODEL_METHODS):
            raise UserError("the model methods need a model (--model or --server)")
        completer = commands.completer_from_flags() if has_model else None
        photos = evaluation.evaluation_images(FLAGS.source, FLAGS.num_images, FLAGS.image_size, FLAGS.data_dir)
        logging.info("evaluating %s on %d images of %s", ", ".join(methods), len(photos), FLAGS.source)
        from tqdm import tqdm  # noqa: PLC0415 (installed with tensorflow-datasets)

        try:
            rows, results = evaluation.evaluate(
                photos, methods, FLAGS.mask_protocol, FLAGS.seed, completer, FLAGS.tiling, FLAGS.max_network_pixels,
                progress=lambda it: tqdm(it, unit="image", total=len(photos)),
            )
        finally:
            getattr(completer, "close", lambda: None)()  # a TF Serving completer's gRPC channel
        summary = evaluation.summarise(rows, methods)
        settings = {
            "model": FLAGS.model or f"TF Serving at {FLAGS.server} (model {FLAGS.model_name})",
            "source": FLAGS.source,
            "num_images": len(photos),
            "image_size": FLAGS.image_size,
            "mask_protocol": FLAGS.mask_protocol,
            "seed": FLAGS.seed,
            "tiling": FLAGS.tiling,
            "max_network_pixels": FLAGS.max_network_pixels,
            "precision": FLAGS.precision,
        }
        grid = evaluation.picture_grid(photos, results, methods, FLAGS.grid_images, FLAGS.grid_tile)
        paths = evaluation.write_report(FLAGS.output_dir, rows, summary, settings, grid)
    print(evaluation.markdown_table(summary))
    print("report: " + ", ".join(paths.values()))


def run():
    commands.run(main, __doc__)


if __name__ == "__main__":
    run()
