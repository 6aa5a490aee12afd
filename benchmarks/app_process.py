"""app.py started as a user starts it, for the page's benchmarks."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_app(model, *flags):
    """app.py on a free port with `model` (and `flags`): (its process, the address it printed)."""
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "app.py"), f"--model={model}", "--port=0", "--precision=float32", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    line = ""
    while "glcic_tf page: " not in line:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            sys.exit("app.py exited before serving")
    return process, line.split("glcic_tf page: ")[1].split()[0]
