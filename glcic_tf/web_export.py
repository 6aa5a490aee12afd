"""The page that completes photographs in the browser: `export.py --formats=web` writes
`<export_dir>/web/<version>/`, a static folder that any static server serves
(`python -m http.server -d <export_dir>/web/<version>`), the photograph never leaving the machine.

    index.html              the page's own (glcic_tf/webapp/static), told to complete in the browser
    static/                 editor.js, style.css, browser_complete.mjs (the editor's complete step)
    runtime/                onnxruntime-web's WASM build: the ES module and its SIMD (threaded) WASM
    model/glcic.onnx        the LiteRT export's float32 model (serving_default without its checks)
                            converted to ONNX by tf2onnx
    config.json             what the page's server tells the page in its /config, and the crop's
                            margin (the receptive radius) and size multiple

The runtime comes from npm: `npm ci` in web/ (web/package.json, package-lock.json) fills
web/node_modules, which this copies from in a clone; a wheel carries the files in
glcic_tf/web_runtime (setup.py copies them at build time), so a PyPI install needs no npm
(GLCIC_WEB_RUNTIME names another node_modules/onnxruntime-web/dist). The page crops around each painted hole with the network's receptive radius, as
glcic_tf.tiling does, pads each crop to a multiple of 4 by repeating its last row and column
(as the network does itself: onnxruntime refuses other sizes for this model) and pastes back the
hole's pixels only.

The page's server (`app.py`) offers the same folder's completion beside its own
(`browser_folder`); reading the folder needs no TensorFlow, writing it does.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from absl import logging

from glcic_tf import architecture, tiling
from glcic_tf.errors import UserError

WEB_FOLDER = "web"
STATIC = Path(__file__).resolve().parent / "webapp" / "static"
EDITOR_FILES = ("index.html", "editor.js", "style.css", "browser_complete.mjs")
# onnxruntime-web's WASM-only build: the module the page imports and the files it loads itself.
RUNTIME_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
MODEL_FILE = "glcic.onnx"
ONNX_OPSET = 17


PACKAGED_RUNTIME = Path(__file__).resolve().parent / "web_runtime"  # where the wheel carries it (setup.py)


def runtime_dir() -> Path:
    """onnxruntime-web's files: GLCIC_WEB_RUNTIME, else the wheel's copy (glcic_tf/web_runtime),
    else web/node_modules of a clone."""
    named = os.environ.get("GLCIC_WEB_RUNTIME")
    if named:
        folder = Path(named)
    elif all((PACKAGED_RUNTIME / name).is_file() for name in RUNTIME_FILES):
        folder = PACKAGED_RUNTIME
    else:
        folder = Path(__file__).resolve().parent.parent / "web" / "node_modules" / "onnxruntime-web" / "dist"
    missing = [name for name in RUNTIME_FILES if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{folder} lacks {', '.join(missing)}: run `npm ci` in web/ (or set GLCIC_WEB_RUNTIME to onnxruntime-web's dist folder)")
    return folder


def onnx_model(network, mean_pixel) -> bytes:
    """The network as ONNX: the float32 LiteRT model converted by tf2onnx (inputs
    serving_default_image:0 [n, h, w, 3] and serving_default_mask:0 [n, h, w, 1], h and w
    multiples of 4)."""
    try:
        import tf2onnx  # noqa: F401  (the web extra)
    except ImportError as error:
        raise UserError("--formats=web needs tf2onnx: pip install 'glcic_tf[web]'") from error
    from tf2onnx import convert

    from glcic_tf import export_lib  # noqa: PLC0415 (TensorFlow: the writing side only)

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "glcic.tflite")
        with open(path, "wb") as file:
            file.write(export_lib.litert_model(network, mean_pixel))
        model, _ = convert.from_tflite(path, opset=ONNX_OPSET)
    return model.SerializeToString()


def export_web(network, mean_pixel, export_dir: str, version: int, overwrite: bool = False, model_name: str = "") -> str:
    """Write the in-browser page of `network` into `export_dir/web/version`; returns that path."""
    from glcic_tf import export_lib  # noqa: PLC0415 (TensorFlow: the writing side only)

    target = export_lib.version_path(os.path.join(export_dir, WEB_FOLDER), version, overwrite)
    runtime = runtime_dir()  # refused before the conversion's minute
    model = onnx_model(network, mean_pixel)
    config = {
        "completer": "browser",
        "model": model_name or f"version {version}, in this browser",
        "max_network_pixels": tiling.MAX_NETWORK_PIXELS,
        "margin": architecture.receptive_radius(),
        "multiple": architecture.SIZE_MULTIPLE,
        "model_url": f"model/{MODEL_FILE}",
        "runtime_url": f"runtime/{RUNTIME_FILES[0]}",
    }

    def write(folder):
        root = Path(folder)
        for sub in ("static", "runtime", "model"):
            (root / sub).mkdir()
        html = (STATIC / "index.html").read_text()
        (root / "index.html").write_text(html.replace('<body>', '<body data-completer="browser">', 1))
        for name in EDITOR_FILES[1:]:
            shutil.copyfile(STATIC / name, root / "static" / name)
        for name in RUNTIME_FILES:
            shutil.copyfile(runtime / name, root / "runtime" / name)
        (root / "model" / MODEL_FILE).write_bytes(model)
        (root / "config.json").write_text(json.dumps(config, indent=1))

    return export_lib._written_into_place(target, write)


def browser_folder(path: str) -> Path:
    """The in-browser page's folder that `path` names: one `export_web` wrote
    (`<export_dir>/web/<version>`), or `<export_dir>` or `<export_dir>/web`, whose highest version
    is taken. A UserError names what is missing."""
    folder = Path(path)
    for candidate in (folder, folder / WEB_FOLDER):
        versions = [v for v in candidate.iterdir() if _is_version(v.name) and _is_browser_folder(v)] if candidate.is_dir() else []
        if versions:
            return max(versions, key=lambda v: int(v.name))
    if _is_browser_folder(folder):
        return folder
    raise UserError(f"{path} holds no in-browser page: write one with export.py --formats=web (into <export_dir>/web/<version>)")


def browser_folder_beside(saved_model: Optional[str]) -> Optional[Path]:
    """The in-browser page export.py wrote beside the SavedModel folder `saved_model`
    (`<export_dir>/<version>`, completers.saved_model_folder): `<export_dir>/web/<version>`, else
    the export's newest page, with a warning that the browser runs another version; None if
    there is none."""
    if not saved_model:
        return None
    saved_model = os.path.abspath(saved_model)
    version, web = os.path.basename(saved_model), Path(os.path.dirname(saved_model)) / WEB_FOLDER
    if _is_browser_folder(web / version):
        return web / version
    try:
        folder = browser_folder(str(web))
    except UserError:
        return None
    logging.warning("the in-browser page offered is %s, another version than the server's model (%s)", folder, saved_model)
    return folder


def offered_by_the_page(choice: str, saved_model: Optional[str]) -> Optional[Path]:
    """The in-browser page app.py's page offers (app.py's --web_export): `choice` "none" (None),
    "auto" (the one beside the page's SavedModel folder `saved_model`, if any and sound: a
    broken one is logged and not offered), or a folder `browser_folder` takes (a UserError if it
    is none). Its config.json is checked (`browser_config`), so a page offered completes."""
    if choice == "none":
        return None
    if choice == "auto":
        folder = browser_folder_beside(saved_model)
        if folder is not None:
            try:
                browser_config(folder, "")
            except UserError as error:
                logging.warning("not offering completion in the browser: %s", error)
                return None
        return folder
    if not choice.strip():
        raise UserError("--web_export must be auto, none or an in-browser page's folder (export.py --formats=web)")
    try:
        folder = browser_folder(choice)
        browser_config(folder, "")
    except UserError as error:
        raise UserError(f"--web_export: {error} (--web_export=none offers none)") from None
    return folder


def _is_version(name: str) -> bool:
    return name.isascii() and name.isdigit()


def _is_browser_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model" / MODEL_FILE).is_file() and all((folder / "runtime" / name).is_file() for name in RUNTIME_FILES)


def browser_config(folder: Path, url_prefix: str) -> dict:
    """The folder's config.json for a page that serves the folder under `url_prefix`: what the
    editor's in-browser complete step reads (model and runtime addresses, crop margin, size
    multiple, pixels per network call). A UserError if it is not what export_web writes: positive
    whole numbers, addresses of the folder's own model and runtime files."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
        numbers = {key: config[key] for key in ("margin", "multiple", "max_network_pixels")}
        urls = {key: config[key] for key in ("model_url", "runtime_url")}
        model = config.get("model", "")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path} is not an in-browser page's config ({type(error).__name__}: {error}): write it again with export.py --formats=web") from None
    wrong = [f"{key} {value!r}" for key, value in numbers.items() if type(value) is not int or value <= 0]
    own = {"model_url": f"model/{MODEL_FILE}", "runtime_url": f"runtime/{RUNTIME_FILES[0]}"}
    wrong += [f"{key} {value!r} (not {own[key]!r})" for key, value in urls.items() if value != own[key]]
    wrong += [] if isinstance(model, str) else [f"model {model!r}"]
    if wrong:
        raise UserError(f"{path} is not an in-browser page's config: {', '.join(wrong)}; write it again with export.py --formats=web")
    return {"model": model, **numbers, **{key: url_prefix + value for key, value in urls.items()}}
