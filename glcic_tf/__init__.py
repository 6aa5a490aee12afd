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


if importlib.util.find_spec("tensorflow") is None:
    sys.meta_path.insert(0, _TensorFlowMissing())
