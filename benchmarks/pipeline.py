r"""Input-pipeline speed against what the training step consumes, measured in one run.

    python benchmarks/pipeline.py [--batch_size=96] [--train_batch_size=8] [--output=pipeline.json]

The pipeline reads JPEG photographs from a folder (scikit-image's sample photographs,
re-encoded as JPEG at quality 90) with the paper's settings: shortest edge to [256, 384], a
256x256 crop, a 96-128 hole, 128x128 local boxes. It is timed twice, with all cores and with
tf.data limited to one thread, and with free-form holes (brush strokes) instead of rectangles,
then one training step of each phase is timed at the paper's
sizes and width on a fixed, cached batch (so that the pipeline does not compete for the cores).
Both figures are images per second from the same run on the same machine.
"""

import json
import os
import sys
import tempfile
import time

from absl import app, flags, logging
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from glcic_tf import data, sample_data, train_lib  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 96, "Pipeline batch size (the paper's).")
flags.DEFINE_integer("batches", 12, "Pipeline batches timed after two warm-up batches.")
flags.DEFINE_integer("train_batch_size", 8, "Batch of the timed training steps (CPU memory).")
flags.DEFINE_integer("train_steps", 3, "Timed steps per phase after one warm-up step.")
flags.DEFINE_string("output", None, "Also write the results as JSON here.")


def jpeg_folder(folder: str) -> str:
    """scikit-image's photographs as JPEG files (quality 90), like a folder of user photos."""
    source = sample_data.ensure_sample_data()
    for split in ("train", "test"):
        for name in os.listdir(os.path.join(source, split)):
            image = Image.open(os.path.join(source, split, name)).convert("RGB")
            image.save(os.path.join(folder, os.path.splitext(name)[0] + ".jpg"), quality=90)
    return folder


def pipeline_rate(source: str, threads: int = 0, hole_shape: str = "rectangle") -> float:
    dataset = data.training_dataset(source, FLAGS.batch_size, seed=0, sizes=data.TrainingSizes(hole_shape=hole_shape))
    if threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
        dataset = dataset.with_options(options)
    iterator = iter(dataset)
    for _ in range(2):
        next(iterator)
    start = time.perf_counter()
    for _ in range(FLAGS.batches):
        next(iterator)["image"].numpy()
    return FLAGS.batches * FLAGS.batch_size / (time.perf_counter() - start)


def training_rates(source: str, model_dir: str) -> dict:
    config = train_lib.Config(source=source, batch_size=FLAGS.train_batch_size, checkpoint_every=10**9)
    trainer = train_lib.Trainer(config, model_dir)
    cached = data.training_dataset(source, FLAGS.train_batch_size, seed=0).take(1).cache().repeat()
    rates = {}
    for phase in (1, 2, 3):
        iterator = iter(cached)
        trainer.run_step(phase, iterator)  # trace
        start = time.perf_counter()
        for _ in range(FLAGS.train_steps):
            values = trainer.run_step(phase, iterator)
        float(next(iter(values.values())))
        rates[f"phase{phase}"] = FLAGS.train_steps * FLAGS.train_batch_size / (time.perf_counter() - start)
    return rates


def main(argv):
    del argv
    cores = os.cpu_count()
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as model_dir:
        source = f"folder:{jpeg_folder(folder)}"
        logging.info("timing the input pipeline on %s", source)
        all_cores = pipeline_rate(source)
        one_core = pipeline_rate(source, threads=1)
        free_form = pipeline_rate(source, hole_shape="free_form")
        logging.info("timing training steps at the paper's sizes, batch %d", FLAGS.train_batch_size)
        training = training_rates(source, model_dir)
    results = {
        "cores": cores,
        "pipeline_images_per_second": {"all_cores": all_cores, "one_core": one_core, "per_core": all_cores / cores, "free_form_all_cores": free_form},
        "training_images_per_second": training,
        "pipeline_over_fastest_training_phase": all_cores / max(training.values()),
    }
    print(f"input pipeline (JPEG folder, paper settings, batch {FLAGS.batch_size}):")
    print(f"  {all_cores:8.1f} img/s on {cores} cores = {all_cores / cores:.1f} img/s per core; {one_core:.1f} img/s with one thread")
    print(f"training step at the paper's sizes (batch {FLAGS.train_batch_size}, width 1.0), img/s consumed:")
    for phase, rate in training.items():
        print(f"  {phase}: {rate:8.2f}")
    print(f"the pipeline delivers {results['pipeline_over_fastest_training_phase']:.0f}x what the fastest phase consumes here")
    print(f"with free-form holes (--hole_shape=free_form): {free_form:.1f} img/s on {cores} cores = {free_form / max(training.values()):.0f}x the fastest phase")
    if FLAGS.output:
        with open(FLAGS.output, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    app.run(main)
