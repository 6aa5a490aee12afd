r"""Convert the authors' released Torch7 completion network into a glcic_tf run folder (and export it).

    bash download_model.sh          # from github.com/satoshiiizuka/siggraph2017_inpainting
    python convert_torch_weights.py --t7=completionnet_places2.t7 --output=runs/authors_places2 \
        --export_dir=/models/glcic
    glcic-convert-torch-weights ...  # the same command, as pip installs it (any folder)

The run folder (a checkpoint plus config.json with the width and the file's mean pixel) is
accepted by export.py, evaluate.py, inpaint.py and train.py --init_checkpoint like any run.
The authors' weights are licensed CC BY-NC-SA 4.0: non-commercial use only.
"""

from absl import flags

from glcic_tf import commands, export_lib, torch_import
from glcic_tf.errors import UserError, one_line_errors

FLAGS = flags.FLAGS
flags.DEFINE_string("t7", None, "A released .t7 file: completionnet_places2.t7, ..._freeform.t7 or completionnet_celeba.t7.")
flags.DEFINE_string("output", None, "New (or empty) folder for the converted run: checkpoint + config.json.")
flags.DEFINE_string("export_dir", None, "Also export a SavedModel into <export_dir>/<version>/ for TF Serving.")
flags.DEFINE_integer("version", 1, "Version folder of the export.")
flags.DEFINE_bool("list", False, "Only print the Torch layers of --t7, in forward order.")


def main(argv):
    del argv  # commands.run refuses positional arguments
    with one_line_errors():
        if not FLAGS.t7:
            raise UserError("--t7 is required")
        if FLAGS.list:
            layers, mean_pixel = torch_import.read_t7(FLAGS.t7)
            print(torch_import.describe_layers(layers))
            print(f"mean pixel {mean_pixel}")
            return
        if not FLAGS.output:
            raise UserError("--output is required (a new folder for the converted run)")
        if FLAGS.export_dir:  # refused now rather than after the run folder is written
            export_lib.version_path(FLAGS.export_dir, FLAGS.version)
        converted = torch_import.convert(FLAGS.t7)
        checkpoint = torch_import.write_run_folder(converted, FLAGS.output, FLAGS.t7)
        print(f"converted {FLAGS.t7} (width {converted.width:g}, mean pixel {converted.mean_pixel}) to {checkpoint}")
        if FLAGS.export_dir:
            path = export_lib.export_saved_model(converted.network, converted.mean_pixel, FLAGS.export_dir, FLAGS.version)
            print(f"exported to {path}")
        print(f"license of these weights: {torch_import.AUTHORS_LICENSE}")


def run():
    commands.run(main, __doc__)


if __name__ == "__main__":
    run()
