r"""Why phase 2 runs the completion network as phase 3 does: how far its completions with BatchNorm
on the moving statistics (inference mode) are from those on each batch's own (training mode).

Phase 2 trains the discriminators on the completion network's output with the network fixed;
phase 3 runs it in training mode. Were phase 2 to run it in inference mode and the two outputs
differ, phase 2 would teach the discriminators completions that phase 3 never produces, so
phase 2 runs it in training mode and puts its moving statistics back (train_lib). This trains a small completion
network through phase 1 on the sample photographs (`--steps`), then compares, on held-out
batches, the hole pixels of the two modes: on the photographs it trained on (moving statistics
that follow the data), and on a new domain (the same photographs turned gray and darker, as
a fine-tuning run from Places2 to faces starts phase 2 with another data set's statistics).

    python benchmarks/phase2_batchnorm.py --steps=300
"""

import tempfile

import tensorflow as tf
from absl import app, flags

from glcic_tf import data, losses, train_lib

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 300, "Phase-1 steps before the comparison.")
flags.DEFINE_float("width", 0.25, "Channel width of the networks (the demo's).")
flags.DEFINE_integer("batch_size", 16, "Batch of the training steps and of each compared batch.")

SIZES = data.TrainingSizes(crop_size=64, edge_range=(64, 96), hole_range=(24, 32), local_size=32)


def _hole_mean(values, mask):
    return float(tf.reduce_sum(values * mask) / (3 * tf.reduce_sum(mask)))


def compare(trainer, batch) -> dict:
    """Mean |inference - training| and each mode's hole error, in the hole, in [0, 1] units."""
    inference, _ = trainer.complete(batch, training=False)
    # Training mode updates the moving statistics: keep them, so the run is left as it was.
    saved = [variable.numpy() for variable in trainer.completion.non_trainable_variables]
    training, _ = trainer.complete(batch, training=True)
    for variable, value in zip(trainer.completion.non_trainable_variables, saved):
        variable.assign(value)
    mask, image = batch["mask"], batch["image"]
    return {
        "|inference - training|": _hole_mean(tf.abs(inference - training), mask),
        "hole L1 inference": _hole_mean(tf.abs(inference - image), mask),
        "hole L1 training": _hole_mean(tf.abs(training - image), mask),
        "hole MSE inference": float(tf.reduce_mean(losses.hole_mse(inference, image, mask))),
        "hole MSE training": float(tf.reduce_mean(losses.hole_mse(training, image, mask))),
    }


def main(argv):
    del argv
    config = train_lib.Config(
        source="sample:train", batch_size=FLAGS.batch_size, completion_steps=FLAGS.steps, discriminator_steps=0,
        total_steps=FLAGS.steps, sizes=SIZES, width=FLAGS.width, optimizer="adam", learning_rate=5e-4,
        log_every=100, summary_every=10_000, image_every=10_000, checkpoint_every=10_000,
    )
    with tempfile.TemporaryDirectory() as model_dir:
        trainer = train_lib.Trainer(config, model_dir)
        trainer.run()
        held_out = next(iter(data.training_dataset("sample:test", FLAGS.batch_size, seed=7, sizes=SIZES)))
        gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(held_out["image"])) * 0.6
        shifted = {**held_out, "image": gray}
        print(f"after {FLAGS.steps} phase-1 steps, width {FLAGS.width}, batch {FLAGS.batch_size}, {SIZES.crop_size}px:")
        for name, batch in (("held-out photographs", held_out), ("a new domain (gray, 0.6x)", shifted)):
            values = compare(trainer, batch)
            print(f"  {name}: " + ", ".join(f"{key} {value:.4f}" for key, value in values.items()))


if __name__ == "__main__":
    app.run(main)
