r"""Export a trained completion network as a SavedModel for tensorflow_model_server, and as LiteRT models.

    python export.py --model_dir=/tmp/demo --export_dir=/tmp/glcic_export
    python export.py --model_dir=/tmp/demo --export_dir=/tmp/glcic_export --formats=savedmodel,litert
    glcic-export ...  # the same command, as pip installs it (any folder)
    saved_model_cli show --dir /tmp/glcic_export/750 --all

Writes `<export_dir>/<version>/` (the version defaults to the checkpoint's training step, so
newer checkpoints get higher versions, which TF Serving serves). Signatures: `serving_default`
(float image + mask -> `inpainted`) and `inpaint_bytes` (encoded files -> PNG); see
glcic_tf/export_lib.py and docs/serving.md. `--formats=litert` writes
`<export_dir>/litert/<version>/glcic.tflite` and `glcic_float16.tflite` (half the size), which
`inpaint.py --model=...tflite` runs without TensorFlow. `--formats=web` writes
`<export_dir>/web/<version>/`, a static folder whose page completes photographs in the browser
(glcic_tf/web_export.py; needs `npm ci` in web/ and tf2onnx).
"""

import os

from absl import flags

from glcic_tf import commands, completers, export_lib, tiling, web_export
from glcic_tf.errors import UserError, one_line_errors

FLAGS = flags.FLAGS
FORMATS = ("savedmodel", "litert", "web")
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
flags.DEFINE_list("formats", ["savedmodel"], f"What to write: {', '.join(FORMATS)} (comma-separated).")


def main(argv):
    del argv  # commands.run refuses positional arguments
    with one_line_errors():
        if not FLAGS.model_dir or not FLAGS.export_dir:
            raise UserError("--model_dir and --export_dir are required")
        unknown = [name for name in FLAGS.formats if name not in FORMATS]
        if unknown or not FLAGS.formats:
            raise UserError(f"--formats {','.join(FLAGS.formats)}: each must be one of {', '.join(FORMATS)}")
        network, mean_pixel, step = completers.load_completion_network(FLAGS.model_dir)
        # Step 0 (a converted or untrained network) becomes version 1: some serving tools skip 0.
        version = max(step, 1) if FLAGS.version is None else FLAGS.version
        for name in FLAGS.formats:  # each version folder refused before any is written
            folder = {"litert": [export_lib.LITERT_FOLDER], "web": [web_export.WEB_FOLDER]}.get(name, [])
            export_lib.version_path(os.path.join(FLAGS.export_dir, *folder), version, FLAGS.overwrite)
        if "web" in FLAGS.formats:
            web_export.runtime_dir()  # npm's files are there before any is written
        paths = []
        if "savedmodel" in FLAGS.formats:
            paths.append(export_lib.export_saved_model(network, mean_pixel, FLAGS.export_dir, version, FLAGS.overwrite, FLAGS.max_request_pixels))
        if "litert" in FLAGS.formats:
            paths.append(export_lib.export_litert(network, mean_pixel, FLAGS.export_dir, version, FLAGS.overwrite))
        if "web" in FLAGS.formats:
            paths.append(web_export.export_web(network, mean_pixel, FLAGS.export_dir, version, FLAGS.overwrite))
    print(f"exported the completion network of step {step} to {' and '.join(paths)}")


def run():
    commands.run(main, __doc__)


if __name__ == "__main__":
    run()
