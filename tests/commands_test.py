"""The commands as installed: console scripts in a wheel, flag files found by name anywhere."""

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import in_process
import pytest

from glcic_tf import commands

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["glcic-train", "glcic-export", "glcic-evaluate", "glcic-inpaint", "glcic-app", "glcic-convert-torch-weights"]


def test_the_flag_files_ship_in_the_package():
    assert commands.flagfile_names() == ["celeba.flags", "demo.flags", "demo_freeform.flags", "facade.flags", "places2.flags", "places2_freeform.flags"]


def test_a_packaged_flag_file_expands_in_place_with_its_own_includes():
    expanded = commands.expand_packaged_flagfiles(["train.py", "--batch_size=1", "--flagfile=celeba.flags", "--model_dir=x"])
    places2 = commands.expand_packaged_flagfiles(["train.py", "--flagfile=places2.flags"])[1:]
    assert expanded[:2] == ["train.py", "--batch_size=1"] and expanded[-1] == "--model_dir=x"
    assert expanded[2 : 2 + len(places2)] == places2  # celeba.flags starts from places2.flags, then overrides
    assert "--source=tfds:places365_small:train" in places2 and not any(flag.startswith("--flagfile") for flag in expanded)
    assert not any(flag.startswith("#") for flag in expanded)


def test_a_flag_file_of_the_users_own_goes_to_absl_untouched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "places2.flags").write_text("--batch_size=3\n")
    (tmp_path / "mine.flags").write_text("--batch_size=5\n")
    argv = ["train.py", "--flagfile=places2.flags", f"--flagfile={tmp_path / 'mine.flags'}", "--flagfile=nowhere.flags"]
    assert commands.expand_packaged_flagfiles(argv) == argv


def _wheel(tmp_path):
    """`pip wheel` of a copy of the source tree (so the build leaves nothing in the clone)."""
    source = tmp_path / "source"
    top = {".git", ".venv", "build", "dist", "quickstart_output", "tests", "benchmarks", "docs"}  # at the top only: web/node_modules has a dist/

    def ignored(folder, names):
        return [name for name in names if (folder == str(ROOT) and name in top) or name == "__pycache__" or name.endswith(".egg-info")]

    shutil.copytree(ROOT, source, ignore=ignored)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("glcic_tf-*.whl")
    return wheel


@pytest.mark.slow
def test_the_built_wheel_installs_commands_that_run_in_a_fresh_environment(tmp_path):
    wheel = _wheel(tmp_path)
    # Every module and shipped file of the package is in it (a folder without __init__.py was not).
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("glcic_tf/")}
    ours = {str(path.relative_to(ROOT)) for path in (ROOT / "glcic_tf").rglob("*") if path.is_file() and "__pycache__" not in path.parts}
    assert ours - shipped == set()
    # onnxruntime-web's files, where `npm ci` ran in web/ (CI): a PyPI install exports the web page without npm.
    if (ROOT / "web" / "node_modules" / "onnxruntime-web").is_dir():
        import setup_lists  # noqa: PLC0415

        assert {f"glcic_tf/web_runtime/{name}" for name in setup_lists.WEB_RUNTIME_FILES} <= shipped
    environment = tmp_path / "fresh"
    venv.create(environment, with_pip=False)
    python = environment / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)], check=True, capture_output=True, timeout=600)
    # The dependencies (TensorFlow, 600 MB) come from this environment, after the fresh one's own
    # site-packages, so glcic_tf itself is the wheel's, not this clone's.
    fresh_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True).stdout.strip()
    Path(fresh_site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""}
    located = subprocess.run([str(python), "-c", "import glcic_tf, glcic_tf.commands as c; print(glcic_tf.__file__); print(c.flagfile_path('places2.flags'))"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert located.returncode == 0, located.stderr[-2000:]
    package_file, places2 = located.stdout.split()
    assert package_file.startswith(str(environment)) and Path(places2).is_file() and places2.startswith(str(environment))
    for command in COMMANDS:
        assert (environment / "bin" / command).exists(), command
    # A command's --help, run from an empty folder with a packaged flag file named as in README.
    helped = subprocess.run([str(environment / "bin" / "glcic-train"), "--flagfile=demo.flags", "--help"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    # absl's --help exits with status 1 after printing; a missing flag file would fail before it.
    assert "Train the completion network and the discriminators with the paper's three phases." in helped.stdout
    assert "  --model_dir: Folder for checkpoints" in helped.stdout and "flagfile" not in helped.stderr, helped.stderr[-2000:]
    app_help = subprocess.run([str(environment / "bin" / "glcic-app"), "--help"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert "Complete photographs in the browser" in app_help.stdout and "  --server: TF Serving address" in app_help.stdout, app_help.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "script,flags",
    [
        ("train.py", ["--model_dir", "--batch_size"]),
        ("export.py", ["--export_dir"]),
        ("evaluate.py", ["--output_dir", "--model"]),
        ("inpaint.py", ["--box", "--model", "--server", "--tiling"]),  # its own and the shared completion flags
        ("convert_torch_weights.py", ["--t7"]),
        ("app.py", ["--port", "--model", "--server", "--max_pixels"]),
    ],
)
def test_each_clone_script_is_the_packaged_command_and_its_help_lists_its_flags(script, flags):
    shim = (ROOT / script).read_text()
    assert f"from glcic_tf.commands.{script[:-3]} import run" in shim
    helped = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    listed = [line.split(":")[0].strip() for line in helped.stdout.splitlines() if line.startswith("  --")]
    assert set(flags) <= set(listed), helped.stdout[-3000:]


def _app_py(*args):
    return in_process.run("app", *args)


def test_app_says_a_wrong_web_export_before_the_model_loads(tmp_path):
    refused = _app_py(f"--model={tmp_path / 'no-model'}", "--port=0", f"--web_export={tmp_path / 'no-page'}")
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert refused.stderr.strip().splitlines()[-1] == f"error: --web_export: {tmp_path / 'no-page'} holds no in-browser page: write one with export.py --formats=web (into <export_dir>/web/<version>) (--web_export=none offers none)"


def test_the_page_command_says_in_one_line_what_is_wrong(trained_run):
    import socket  # noqa: PLC0415

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        busy = _app_py(f"--model={trained_run}", f"--port={port}")
    assert busy.returncode == 1 and busy.stderr.strip().splitlines()[-1] == f"error: cannot listen on 127.0.0.1:{port}: Address already in use (check --host, try another --port)"
    neither = _app_py("--port=0")
    assert neither.returncode == 1 and neither.stderr.strip().splitlines()[-1] == "error: give either --model (run locally) or --server (TF Serving)"
    assert "Traceback" not in busy.stderr + neither.stderr


@pytest.mark.slow
@pytest.mark.parametrize("host", ["0.0.0.0", "::1"])
def test_the_page_command_listens_on_ipv4_and_ipv6_and_needs_a_token_off_loopback(trained_run, host):
    import json  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), f"--model={trained_run}", f"--host={host}", "--port=0", "--precision=float32"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    try:
        line = process.stdout.readline()
        url = line.split("glcic_tf page: ")[1].split()[0]
        base = url.split("/?token=")[0]
        if host == "0.0.0.0":  # reachable from other machines: a random token is printed in the address
            assert url.startswith("http://127.0.0.1:") and "/?token=" in url, line
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{base}/config", timeout=30)
            assert refused.value.code == 403
            with urllib.request.urlopen(url, timeout=30) as page:  # the printed address opens the page and sets the cookie
                cookie = page.headers["Set-Cookie"].split(";")[0]
            config = urllib.request.Request(f"{base}/config", headers={"Cookie": cookie})
        else:  # loopback: no token
            assert url.startswith("http://[::1]:") and "token" not in url, line
            config = urllib.request.Request(f"{base}/config")
        with urllib.request.urlopen(config, timeout=30) as reply:
            assert json.loads(reply.read())["model"] == trained_run.name  # its folder's name, not its path
    finally:
        process.terminate()
        process.wait(30)
