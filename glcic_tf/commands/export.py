r"""Export a trained completion network as a SavedModel for tensorflow_model_server.

    python export.py --model_dir=/tmp/demo --export_dir=/tmp/glcic_export
    glcic-export ...  # the same command, as pip installs it (any folder)
    saved_model_cli show --dir /tmp/glcic_export/750 --all

Writes `<export_dir>/<version>/` (the version defaults to the checkpoint's training step, so
newer checkpoints get higher versions, which TF Serving serves). Signatures: `serving_default`
(float image + mask -> `inpainted`) and `inpaint_bytes` (encoded files -> PNG); see
glcic_tf/export_lib.py and docs/serving.md.
"""

from absl import flags

from glcic_tf import commands, completers, export_lib, tiling
from glcic_tf.errors import UserError, one_line_errors

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A train.py run folder (its latest checkpoint) or one checkpoint (.../ckpt-N).")
flags.DEFINE_string("export_dir", None, "Model base path: the SavedModel goes into <export_dir>/<version>/.")
flags.DEFINE_integer("version", None, "Version folder (an integer); default: the checkpoint's training step (1 for step 0).")
flags.DEFINE_bool("overwrite", False, "Replace an existing version folder.")
flags.DEFINE_integer(
    "max_request_pixels",
    tiling.MAX_NETWORK_PIXELS,
    "Most pixels one request may carry, its images together; the network needs about 670 bytes per pixel.",
)
commands.define_old_name("max_pixels", "max_request_pixels")


def main(argv):
    del argv  # commands.run refuses positional arguments
    with one_line_errors():
        if not FLAGS.model_dir or not FLAGS.export_dir:
            raise UserError("--model_dir and --export_dir are required")
        network, mean_pixel, step = completers.load_completion_network(FLAGS.model_dir)
        # Step 0 (a converted or untrained network) becomes version 1: some serving tools skip 0.
        version = max(step, 1) if FLAGS.version is None else FLAGS.version
        path = export_lib.export_saved_model(network, mean_pixel, FLAGS.export_dir, version, FLAGS.overwrite, FLAGS.max_request_pixels)
    print(f"exported the completion network of step {step} to {path}")


def run():
    commands.run(main, __doc__)


if __name__ == "__main__":
    run()
