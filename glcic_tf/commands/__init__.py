"""The command-line programs: train, export, evaluate, inpaint, app, convert_torch_weights.

Each is installed as a console script (`glcic-train`, `glcic-export`, `glcic-evaluate`,
`glcic-inpaint`, `glcic-app`, `glcic-convert-torch-weights`) and runs from a clone as the
top-level `train.py` and so on. Both go through `run`, which also finds the flag files that
ship inside the package (glcic_tf/flagfiles) by name: `--flagfile=places2.flags` works in any
folder. A path that exists is the user's own file and goes to absl as it is.
"""

import os
import sys
from importlib import resources

from absl import app as absl_app  # not `app`: the submodule glcic_tf.commands.app takes that name
from absl import flags

from glcic_tf import completers, cpu, images, tiling


def flagfile_names():
    """The flag files that ship with glcic_tf (places2.flags, demo.flags, ...)."""
    return sorted(entry.name for entry in resources.files("glcic_tf").joinpath("flagfiles").iterdir() if entry.name.endswith(".flags"))


def flagfile_path(name: str) -> str:
    """The packaged flag file `name` on disk."""
    return str(resources.files("glcic_tf").joinpath("flagfiles", name))


def _packaged_lines(name: str, seen=()):
    """A packaged flag file's flags, read as absl reads flag files (blank lines and lines
    starting with # or // skipped), with its own --flagfile=NAME lines expanded in place: absl
    would look for those relative to the working folder."""
    if name in seen:
        raise absl_app.UsageError(f"flag file {name} includes itself")
    with open(flagfile_path(name)) as file:
        lines = [line.strip() for line in file if line.strip() and not line.lstrip().startswith(("#", "//"))]
    return [flag for line in lines for flag in _expand(line, (*seen, name))]


def _expand(argument: str, seen=()):
    for prefix in ("--flagfile=", "-flagfile="):
        if argument.startswith(prefix):
            name = argument[len(prefix) :]
            if not os.path.exists(name) and name in flagfile_names():
                return _packaged_lines(name, seen)
    return [argument]


def expand_packaged_flagfiles(argv):
    """argv with each --flagfile=NAME of a packaged flag file (and no such file here) replaced by
    its flags, which is what absl does with a flag file it can open."""
    return [argv[0], *(flag for argument in argv[1:] for flag in _expand(argument))]


def run(main, doc: str):
    """absl's app.run(main) for a command, with packaged flag files found by name and positional
    arguments refused (every input is a flag).

    `doc` is the command's usage text: absl prints the __main__ module's docstring with --help,
    and a console script's __main__ has none; the same goes for the flags it lists.
    """
    sys.modules["__main__"].__doc__ = doc
    # --help lists the key flags of the main module, sys.argv[0]: the shim or console script,
    # which defines none. Give it the command's own and the shared ones defined here.
    for module in (main.__module__, __name__):
        for flag in flags.FLAGS.get_key_flags_for_module(module):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

    def without_arguments(argv):
        if len(argv) > 1:
            raise absl_app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        _apply_old_names()
        cpu.size_thread_pools()  # before TensorFlow's first op: a container's quota, not its host's cores
        return main(argv)

    absl_app.run(without_arguments, flags_parser=lambda argv: absl_app.parse_flags_with_usage(expand_packaged_flagfiles(argv)))


def define_old_name(old: str, new: str) -> None:
    """`--old` as a deprecated name of the flag `--new` (defined before), which says its new name."""
    flags.DEFINE_string(old, None, f"Deprecated: the old name of --{new}.")
    flags.FLAGS[old].new_name = new  # the flag itself knows, so only the running command's flags count


def _apply_old_names():
    """A value given under an old name goes to the flag's new name (checked as the new flag checks it)."""
    for old in list(flags.FLAGS):
        new = getattr(flags.FLAGS[old], "new_name", None)
        if new is None or not flags.FLAGS[old].present:
            continue
        if flags.FLAGS[new].present:
            sys.exit(f"error: --{old} is the old name of --{new}: give --{new} alone")
        print(f"warning: --{old} is deprecated, its new name is --{new}", file=sys.stderr)
        try:
            flags.FLAGS[new].parse(flags.FLAGS[old].value)
        except flags.IllegalFlagValueError as error:
            sys.exit(f"error: --{old} (now --{new}): {error}")


def define_completion_flags():
    """The flags of the commands that complete images (inpaint, app, evaluate): which model, and
    what the network runs on. Defined here once, so they mean the same in each."""
    flags.DEFINE_string("model", None, "SavedModel (version folder or base folder), train.py run folder or checkpoint; runs locally.")
    flags.DEFINE_string("server", None, "TF Serving address host:port (REST 8501, gRPC 8500) instead of --model.")
    flags.DEFINE_enum("protocol", "rest", completers.PROTOCOLS, "How to talk to --server.")
    flags.DEFINE_string("model_name", completers.MODEL_NAME, "The model's name on the server.")
    flags.DEFINE_enum("precision", "auto", cpu.PRECISIONS, "Arithmetic of a run folder's network: auto is bfloat16 where faster (AMX), else float32.")
    flags.DEFINE_enum(
        "tiling",
        "auto",
        tiling.TILINGS,
        "What the network runs on: auto (crops around the holes, downscaled where larger than --max_network_pixels), "
        "crop (crops at full resolution), resize (the whole image, downscaled to fit) or whole (the whole image).",
    )
    flags.DEFINE_integer("max_network_pixels", tiling.MAX_NETWORK_PIXELS, "Most pixels the network runs on at once.")


def define_photo_flags():
    """The flags of the commands that read people's photograph files (inpaint, app)."""
    flags.DEFINE_integer("max_pixels", images.MAX_PIXELS, "Refuse images with more pixels than this (checked from the header and after decoding).")


def completer_from_flags():
    """The completer that the flags of define_completion_flags name (glcic_tf.completers)."""
    values = flags.FLAGS
    return completers.open_completer(values.model, values.server, values.protocol, values.model_name, values.precision, values.max_network_pixels)
