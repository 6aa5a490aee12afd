"""train.py as users run it: flag files, SIGTERM, restarts, errors, several workers."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from absl import flags
from absl.testing import flagsaver

from glcic_tf import data

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import tiny  # noqa: E402
import train  # noqa: E402

TINY_FLAGS = [*tiny.FLAGS, "--log_every=1"]


def _config_from(*argv):
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["train.py", *argv])
        return train.config_from_flags()


def test_places2_flags_are_the_papers_settings():
    config = _config_from(f"--flagfile={ROOT / 'places2.flags'}")
    assert config.source == "tfds:places365_small:train"
    assert (config.batch_size, config.completion_steps, config.discriminator_steps, config.total_steps) == (96, 90_000, 10_000, 500_000)
    assert config.alpha == 0.0004 and config.optimizer == "adadelta" and config.learning_rate is None
    assert config.sizes == data.TrainingSizes(256, (256, 384), (96, 128), 128) and config.width == 1.0


@pytest.mark.parametrize("flag_file", ["celeba.flags", "facade.flags", "demo.flags"])
def test_every_flag_file_parses_into_a_valid_config(flag_file, monkeypatch):
    monkeypatch.setattr(data, "estimate_mean_pixel", lambda *args: (0.5, 0.5, 0.5))  # no data set here
    config = _config_from(f"--flagfile={ROOT / flag_file}")
    assert config.total_steps >= config.completion_steps + config.discriminator_steps


def test_command_line_flags_override_the_flag_file():
    assert _config_from(f"--flagfile={ROOT / 'places2.flags'}", "--batch_size=8").batch_size == 8


def _run(args, env=None, stdout=subprocess.PIPE):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _wait_for_line(process, needle, timeout):
    deadline, lines = time.time() + timeout, []
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"no {needle!r} within {timeout} s:\n{''.join(lines[-30:])}")


def test_sigterm_saves_and_exits_0_and_the_next_start_continues(sample_folder, tmp_path):
    args = [f"--source=folder:{sample_folder}/train", f"--model_dir={tmp_path}", *TINY_FLAGS, "--checkpoint_every=100000"]
    process = _run(args)
    _wait_for_line(process, "step 3/500000 phase 1", timeout=120)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "SIGTERM received at step" in output
    saved = int(Path(tmp_path, "checkpoint").read_text().split('"')[1].split("-")[1])
    assert saved >= 3
    assert json.loads(Path(tmp_path, "config.json").read_text())["batch_size"] == 4
    assert "--batch_size=4" in Path(tmp_path, "flags.txt").read_text()

    again = _run([*args, f"--stop_at_step={saved + 2}"])
    output, _ = again.communicate(timeout=180)
    assert again.returncode == 0, output
    assert f"at step {saved} (phase 1)" in output and f"step {saved + 2}/500000" in output
    assert f"step {saved}/500000" not in output  # it did not redo a step


def test_bad_model_dir_and_missing_source_are_one_line_errors(tmp_path):
    (tmp_path / "taken").write_text("a file")
    process = _run(["--source=sample:train", f"--model_dir={tmp_path / 'taken'}"])
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1
    assert output.strip().splitlines()[-1] == f"error: --model_dir {tmp_path / 'taken'} is a file, not a folder"
    process = _run([f"--model_dir={tmp_path / 'run'}"])
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1 and output.strip().splitlines()[-1].startswith("error: --source is required")
    assert "Traceback" not in output


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_run_with_two_local_processes_completes(sample_folder, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes, logs = [], [tmp_path / "worker0.log", tmp_path / "worker1.log"]
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        args = [
            f"--source=folder:{sample_folder}/train",
            f"--model_dir={tmp_path / 'run'}",
            "--strategy=multi_worker",
            "--completion_steps=2",
            "--discriminator_steps=1",
            "--total_steps=4",
            *TINY_FLAGS,
        ]
        with open(logs[index], "w") as log:  # files, not pipes: a full pipe would stall one worker
            processes.append(_run(args, env={"TF_CONFIG": json.dumps(tf_config)}, stdout=log))
    for process in processes:
        process.wait(timeout=600)
    outputs = [log.read_text() for log in logs]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    assert "step 4/4 phase 3" in outputs[0]
    assert Path(tmp_path, "run", "ckpt-4.index").exists()
