"""Run a command (`inpaint.py`, `export.py`, ...) in the test's own process, as a person runs it:
its flags parsed from argv by `commands.run`, its exit status, stdout and stderr (its log lines
included) captured.

A subprocess would spend seconds starting Python and TensorFlow for each call; the tests that
check the process boundary itself (kill -9, SIGTERM, installed console scripts, several
workers) still start one. Each command's flags live in absl's global FLAGS, and the commands
share names (`--model`, `--max_pixels`), so each run imports its command anew with only its
own flags defined, and puts back what was there before.
"""

import contextlib
import importlib
import io
import logging
import os
import sys
from typing import NamedTuple

from absl import app as absl_app
from absl import flags
from absl import logging as absl_logging
from absl.testing import flagsaver

import glcic_tf.commands

FLAGS = flags.FLAGS
_COMMANDS = "glcic_tf.commands"

# What absl.app.run does once per process, done here first: its --help flags defined (owned by
# this module, so they outlive each command's own flags) and its logging handler installed, which
# removes the root logger's handlers that write to stderr (here: none of ours). Its handler is
# taken off again; each run logs to its own captured stderr instead.
absl_app.define_help_flags()
absl_logging.use_absl_handler()
logging.getLogger().removeHandler(absl_logging.get_absl_handler())


class Completed(NamedTuple):
    """What `subprocess.run(..., capture_output=True, text=True)` returns, in short."""

    returncode: int
    stdout: str
    stderr: str


def _command_flags():
    """{name: (owner module, flag)} of the flags the commands define."""
    owned = {}
    for owner, defined in FLAGS.flags_by_module_dict().items():
        if owner.startswith(_COMMANDS):
            for flag in defined:
                if flag.name in FLAGS:
                    owned[flag.name] = (owner, flag)
    return owned


def _remove_command_flags_and_modules():
    for name in _command_flags():
        delattr(FLAGS, name)
    removed = {name: sys.modules.pop(name) for name in list(sys.modules) if name.startswith(_COMMANDS + ".")}
    for name in removed:
        if hasattr(glcic_tf.commands, name.rsplit(".", 1)[1]):
            delattr(glcic_tf.commands, name.rsplit(".", 1)[1])
    return removed


@contextlib.contextmanager
def _alone(module_name: str):
    """The command's module, imported anew with only its own flags defined."""
    saved_flags = _command_flags()
    saved_modules = _remove_command_flags_and_modules()
    try:
        yield importlib.import_module(module_name)
    finally:
        _remove_command_flags_and_modules()
        for name, module in saved_modules.items():
            sys.modules[name] = module
            setattr(glcic_tf.commands, name.rsplit(".", 1)[1], module)
        for name, (owner, flag) in saved_flags.items():
            FLAGS[name] = flag
            FLAGS.register_flag_by_module(owner, flag)


@contextlib.contextmanager
def _environment(**values):
    """os.environ with `values` set where they are unset, as they were afterwards."""
    added = {name: value for name, value in values.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            del os.environ[name]


def run(command: str, *args: str) -> Completed:
    """`python <command>.py ARGS` in this process: its exit status, stdout and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    root_handlers, verbosity = list(root.handlers), absl_logging.get_verbosity()
    # The log lines a command's own process writes on its stderr (absl's format, INFO and up).
    log_lines = logging.StreamHandler(stderr)
    log_lines.setFormatter(absl_logging.PythonFormatter())
    main_doc, argv = sys.modules["__main__"].__doc__, sys.argv
    # TensorFlow runs already in this process: the command's sizing of its thread pools would
    # only warn that it is too late; with these set it leaves them, as in a process of its own.
    threads = dict(TF_NUM_INTRAOP_THREADS="0", TF_NUM_INTEROP_THREADS="0")
    with _alone(f"{_COMMANDS}.{command}") as module, flagsaver.flagsaver(), _environment(**threads):
        FLAGS.unparse_flags()
        sys.argv = [f"{command}.py", *args]
        root.addHandler(log_lines)
        absl_logging.set_verbosity(absl_logging.INFO)
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                try:
                    module.run()
                    code = 0
                except SystemExit as exit:  # what the interpreter does with sys.exit's argument
                    code = exit.code
                    if isinstance(code, str):
                        print(code, file=sys.stderr)
                        code = 1
                    code = code or 0
        finally:
            sys.argv = argv
            sys.modules["__main__"].__doc__ = main_doc
            for handler in list(root.handlers):  # ours, and absl.app's own (installed at its first run)
                if handler not in root_handlers:
                    root.removeHandler(handler)
            absl_logging.set_verbosity(verbosity)
    return Completed(code, stdout.getvalue(), stderr.getvalue())
