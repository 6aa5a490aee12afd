"""glcic_tf: Globally and Locally Consistent Image Completion in TensorFlow 2 / Keras 3."""

import importlib.util
import sys

__version__ = "0.1.0"

_NO_TENSORFLOW = (
    "this part of glcic_tf needs TensorFlow, which is not installed: "
    "run `pip install 'glcic-tf[cpu]'` (CPU) or `pip install 'glcic-tf[gpu]'` (NVIDIA GPU). "
    "(Completing photographs with a LiteRT model, `.tflite`, needs only `pip install 'glcic-tf[litert]'`.)"
)


class _TensorFlowMissing:
    """Where TensorFlow is not installed (a LiteRT install), importing it, or Keras, from any
    module raises an ImportError that says what to install, instead of "No module named
    'tensorflow'": the modules that complete with a LiteRT model never import it."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name in ("tensorflow", "keras"):
            raise ImportError(_NO_TENSORFLOW, name=name)
        return None


def _said_in_one_line(kind, error, traceback, previous=sys.excepthook):
    """An uncaught ImportError of _TensorFlowMissing ends a program (`glcic-train` in a LiteRT
    install) as the commands' errors do, in one `error:` line; anything else as before."""
    if isinstance(error, ImportError) and str(error) == _NO_TENSORFLOW:
        print(f"error: {error}", file=sys.stderr)
    else:
        previous(kind, error, traceback)


if importlib.util.find_spec("tensorflow") is None:
    sys.meta_path.insert(0, _TensorFlowMissing())
    sys.excepthook = _said_in_one_line
