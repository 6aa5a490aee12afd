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

from glcic_tf import commands, evaluation, folded, inference, masks
from glcic_tf.errors import UserError, one_line_errors

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "SavedModel (version or base folder), train.py run folder or checkpoint.")
flags.DEFINE_string("source", "sample:test", "Images: tfds:NAME[:SPLIT], folder:PATH or sample:test.")
flags.DEFINE_string("data_dir", None, "Where tensorflow-datasets keeps prepared data sets.")
flags.DEFINE_integer("num_images", None, "Evaluate the first N images (default: all).")
flags.DEFINE_integer("image_size", 256, "Images are resized and centre-cropped to this square (the paper's 256); 0: each at its own size.")
flags.DEFINE_enum("mask_protocol", "paper", sorted(masks.MASK_PROTOCOLS), "How holes are drawn (glcic_tf/masks.py).")
flags.DEFINE_integer("seed", 0, "Seed of the holes: the same seed gives the same holes everywhere.")
flags.DEFINE_list("methods", list(evaluation.METHODS), "Methods to compare.")
flags.DEFINE_enum("precision", "auto", folded.PRECISIONS, "Arithmetic of a run folder's network: auto is bfloat16 where faster (AMX), else float32.")
flags.DEFINE_string("output_dir", None, "Where the report goes.")
flags.DEFINE_integer("grid_images", 4, "Images shown in examples.png.")
flags.DEFINE_integer("grid_tile", 0, "Side in pixels of each picture in examples.png (0: --image_size).")


def main(argv):
    del argv  # commands.run refuses positional arguments
    with one_line_errors():
        if not FLAGS.output_dir:
            raise UserError("--output_dir is required")
        # Without --model the default methods are the classical ones; model methods asked for by
        # name without a model are an error (evaluation.evaluate says so).
        default = not FLAGS["methods"].present
        methods = [m for m in FLAGS.methods if m in evaluation.BASELINES] if default and not FLAGS.model else FLAGS.methods
        if not FLAGS.model and set(methods) & set(evaluation.MODEL_METHODS):
            raise UserError("the model methods need a model (--model)")
        completer = inference.load_completer(FLAGS.model, FLAGS.precision) if FLAGS.model else None
        images = evaluation.evaluation_images(FLAGS.source, FLAGS.num_images, FLAGS.image_size, FLAGS.data_dir)
        logging.info("evaluating %s on %d images of %s", ", ".join(methods), len(images), FLAGS.source)
        from tqdm import tqdm  # noqa: PLC0415 (installed with tensorflow-datasets)

        rows, results = evaluation.evaluate(
            images, methods, FLAGS.mask_protocol, FLAGS.seed, completer, progress=lambda it: tqdm(it, unit="image", total=len(images))
        )
        summary = evaluation.summarise(rows, methods)
        settings = {
            "model": FLAGS.model,
            "source": FLAGS.source,
            "num_images": len(images),
            "image_size": FLAGS.image_size,
            "mask_protocol": FLAGS.mask_protocol,
            "seed": FLAGS.seed,
        }
        grid = evaluation.picture_grid(images, results, methods, FLAGS.grid_images, FLAGS.grid_tile)
        paths = evaluation.write_report(FLAGS.output_dir, rows, summary, settings, grid)
    print(evaluation.markdown_table(summary))
    print("report: " + ", ".join(paths.values()))


def run():
    commands.run(main, __doc__)


if __name__ == "__main__":
    run()
