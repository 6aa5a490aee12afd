"""glcic_tf: Globally and Locally Consistent Image Completion in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"

try:
    import tensorflow  # noqa: F401  (the CPU and GPU wheels both provide this module)
except ImportError:
    raise ImportError(
        "glcic_tf needs TensorFlow, which is not installed: "
        "run `pip install 'glcic-tf[cpu]'` (CPU) or `pip install 'glcic-tf[gpu]'` (NVIDIA GPU)."
    ) from None
