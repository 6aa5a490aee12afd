"""Packaging for glcic_tf. TensorFlow comes from an extra: `.[cpu]` or `.[gpu]`."""

import re
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

VERSION = re.search(r'__version__ = "([^"]+)"', Path("glcic_tf/__init__.py").read_text()).group(1)

APP = ["starlette>=0.40", "uvicorn>=0.30", "python-multipart>=0.0.18"]
TENSORFLOW_ALONGSIDE = ["tensorboard>=2.20", "tensorflow-datasets>=4.9.4"]

# onnxruntime-web's files that the in-browser page loads (glcic_tf/web_export.py RUNTIME_FILES;
# tests/web_export_test.py checks the two lists agree).
WEB_RUNTIME_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


class BuildWithWebRuntime(build_py):
    """The wheel carries onnxruntime-web's files (from web/node_modules, after `npm ci` in web/)
    into glcic_tf/web_runtime/, so `export.py --formats=web` from a PyPI install needs no npm.
    Without them (no `npm ci`), the wheel is built without, and the export says what to do."""

    def run(self):
        super().run()
        source = Path("web", "node_modules", "onnxruntime-web", "dist")
        if all((source / name).is_file() for name in WEB_RUNTIME_FILES):
            target = Path(self.build_lib, "glcic_tf", "web_runtime")
            target.mkdir(parents=True, exist_ok=True)
            for name in WEB_RUNTIME_FILES:
                shutil.copyfile(source / name, target / name)


setup(
    name="glcic-tf",
    cmdclass={"build_py": BuildWithWebRuntime},
    version=VERSION,
    description="Globally and Locally Consistent Image Completion (Iizuka et al., SIGGRAPH 2017) in TensorFlow 2 / Keras 3",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["glcic_tf", "glcic_tf.*"]),
    # The flag files (places2.flags, ...) and the page's HTML/JS/CSS ship inside the package.
    package_data={"glcic_tf": ["flagfiles/*.flags", "webapp/static/*"]},
    entry_points={
        "console_scripts": [
            "glcic-train=glcic_tf.commands.train:run",
            "glcic-export=glcic_tf.commands.export:run",
            "glcic-evaluate=glcic_tf.commands.evaluate:run",
            "glcic-inpaint=glcic_tf.commands.inpaint:run",
            "glcic-app=glcic_tf.commands.app:run",
            "glcic-convert-torch-weights=glcic_tf.commands.convert_torch_weights:run",
        ]
    },
    python_requires=">=3.10",
    # TensorFlow itself is not listed here: `tensorflow` and `tensorflow-cpu` both provide the
    # `tensorflow` module, and listing one would install it beside the other. Pick an extra.
    # The base install completes photographs with a LiteRT model (the litert extra); what runs on
    # TensorFlow (training, data sets, export, SavedModels) comes with the cpu or gpu extra.
    install_requires=[
        "absl-py>=2.1",
        "numpy>=1.26",
        "opencv-python-headless>=4.9",
        "pillow>=10",
        "tqdm>=4.60",
    ],
    extras_require={
        # tf.summary needs tensorboard (tensorflow-cpu 2.21 no longer brings it); data sets come
        # through tensorflow-datasets.
        "cpu": ["tensorflow-cpu>=2.21", *TENSORFLOW_ALONGSIDE],
        "gpu": ["tensorflow[and-cuda]>=2.21", *TENSORFLOW_ALONGSIDE],
        # scikit-image ships the photographs of glcic_tf.sample_data (demos and tests).
        "demo": ["scikit-image>=0.22"],
        # The page of `glcic-app` / app.py: a Starlette app served by uvicorn.
        "app": APP,
        # The browser tests drive Debian's chromium (apt-get install chromium) with Playwright.
        # Starlette 1.10+ runs its TestClient on httpx2 (on httpx with a deprecation warning).
        # pytest-xdist runs the suite on every core (pytest.ini).
        "test": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "ai-edge-litert>=2.3", "scikit-image>=0.22", "torchfile>=0.1", *APP, "starlette>=1.10", "httpx2>=2", "playwright>=1.50"],
        # The documentation site (mkdocs.yml): mkdocs build --strict, mkdocs serve.
        "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings-python>=1.10"],
        # Completing with a LiteRT model (export.py --formats=litert; inpaint.py --model=X.tflite)
        # on the LiteRT interpreter: no TensorFlow.
        "litert": ["ai-edge-litert>=2.3"],
        # The in-browser page (export.py --formats=web): tf2onnx converts the LiteRT model to ONNX
        # for onnxruntime-web, which npm installs into web/node_modules (npm ci in web/).
        "web": ["tf2onnx>=1.17", "onnx>=1.16"],
        # Reading the authors' released Torch7 models (convert_torch_weights.py); pure Python.
        "torch": ["torchfile>=0.1"],
        # The PyTorch peer of benchmarks/run.py (CPU wheel); never needed by the library.
        "bench": ["torch==2.13.0", "scikit-image>=0.22"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Processing",
    ],
)
