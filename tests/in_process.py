"""Run a command (`inpaint.py`, `export.py`, ...) in the test's own process, as a person runs it:
its flags parsed from argv by `commands.run`, its output and exit status captured.

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
import sys
from typing import NamedTuple

from absl import flags
from absl import logging as absl_logging
from absl.testing import flagsaver

FLAGS = flags.FLAGS
_COMMANDS = "glcic_tf.commands"


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
        sys.modules.update(saved_modules)
        for name, (owner, flag) in saved_flags.items():
            FLAGS[name] = flag
            FLAGS.register_flag_by_module(owner, flag)


def run(command: str, *args: str) -> Completed:
    """`python <command>.py ARGS` in this process: its exit status, stdout and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    root_handlers = list(root.handlers)
    # A command's log lines go to its stderr, as absl's handler writes them in a process of its own.
    log_lines = logging.StreamHandler(stderr)
    log_lines.setFormatter(absl_logging.PythonFormatter())
    root.addHandler(log_lines)
    main_doc = sys.modules["__main__"].__doc__
    argv = sys.argv
    with _alone(f"{_COMMANDS}.{command}") as module, flagsaver.flagsaver():
        FLAGS.unparse_flags()
        sys.argv = [f"{command}.py", *args]
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
    return Completed(code, stdout.getvalue(), stderr.getvalue())
