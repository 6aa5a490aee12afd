"""train.py as users run it: flag files, SIGTERM, restarts, errors, several workers."""

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import in_process
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

from glcic_tf import commands, data
from glcic_tf.commands import train
from glcic_tf.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import tiny  # noqa: E402

TINY_FLAGS = [*tiny.FLAGS, "--log_every=1"]


def _config_from(*argv):
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(commands.expand_packaged_flagfiles(["train.py", *argv]))
        return train.config_from_flags()


def test_places2_flags_are_the_papers_settings():
    config = _config_from("--flagfile=places2.flags")
    assert config.source == "tfds:places365_small:train"
    assert (config.batch_size, config.completion_steps, config.discriminator_steps, config.total_steps) == (96, 90_000, 10_000, 500_000)
    assert config.alpha == 0.0004 and config.optimizer == "adadelta" and config.learning_rate is None
    assert config.sizes == data.TrainingSizes(256, (256, 384), (96, 128), 128) and config.width == 1.0
    assert config.augmentations == data.Augmentations()  # the paper's random rescale and crop only
    # Validation (not the paper's) changes nothing the run trains; on Places2's validation split.
    assert config.validation.source == "tfds:places365_small:validation" and config.validation.protocol == "paper"


def test_augmentation_flags_reach_the_config_and_bad_values_are_one_line_errors():
    config = _config_from("--source=sample:train", "--flip", "--hue=0.5", "--saturation=0.3", "--brightness=0.1", "--contrast=0.2", "--grayscale=0.25")
    assert config.augmentations == data.Augmentations(True, 0.5, 0.3, 0.1, 0.2, 0.25)
    with pytest.raises(UserError, match="hue"):
        _config_from("--source=sample:train", "--hue=0.7")
    demo = _config_from("--flagfile=demo.flags")
    assert demo.augmentations.flip and demo.augmentations.hue > 0 and demo.augmentations.grayscale > 0


@pytest.mark.parametrize("flag_file", ["celeba.flags", "facade.flags", "demo.flags", "demo_freeform.flags", "places2_freeform.flags"])
def test_every_flag_file_parses_into_a_valid_config(flag_file, monkeypatch):
    monkeypatch.setattr(data, "estimate_mean_pixel", lambda *args: (0.5, 0.5, 0.5))  # no data set here
    config = _config_from(f"--flagfile={flag_file}")
    assert config.total_steps >= config.completion_steps + config.discriminator_steps


def test_free_form_flag_files_differ_from_theirs_in_the_holes_only():
    assert _config_from("--flagfile=demo.flags").sizes.hole_shape == "mixed"  # the demo trains for the page's strokes too
    for free_form, rectangles in (("places2_freeform.flags", "places2.flags"), ("demo_freeform.flags", "demo.flags")):
        config, paper = _config_from(f"--flagfile={free_form}"), _config_from(f"--flagfile={rectangles}")
        assert config.sizes.hole_shape == "free_form" and paper.sizes.hole_shape in ("rectangle", "mixed")
        assert dataclasses.replace(config, sizes=paper.sizes, validation=paper.validation) == paper


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--free_form_coverage=0.5,0.1", "free_form_coverage must be two positive numbers min,max with min <= max, not (0.5, 0.1)"),
        ("--free_form_vertices=1,3", "free_form_vertices must start at 2 or more"),
        ("--free_form_strokes=a,b", "--free_form_strokes must be two numbers min,max, not a,b"),
    ],
)
def test_bad_free_form_flags_are_one_line_errors_naming_the_flag(flag, message):
    with pytest.raises(UserError, match=re.escape(message)):
        _config_from("--source=sample:train", flag)


def test_command_line_flags_override_the_flag_file():
    assert _config_from("--flagfile=places2.flags", "--batch_size=8").batch_size == 8


def _run(args, env=None, stdout=subprocess.PIPE, read_only=None):
    command = [sys.executable, str(ROOT / "train.py"), *args]
    return subprocess.Popen(
        _read_only(read_only, command) if read_only else command,
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


@pytest.mark.slow
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
    assert len(Path(tmp_path, "settings_history.jsonl").read_text().splitlines()) == 2  # one line per start

    changed = _run([*args, "--batch_size=8", "--seed=3"])  # would move the data position and change the data
    output, _ = changed.communicate(timeout=120)
    assert changed.returncode == 1 and "Traceback" not in output
    assert output.strip().splitlines()[-1].startswith(
        f"error: --model_dir {tmp_path} holds a run with other settings (batch_size: 4 -> 8; seed: 0 -> 3)"
    )


def test_bad_model_dir_and_missing_source_are_one_line_errors(tmp_path):
    (tmp_path / "taken").write_text("a file")
    done = in_process.run("train", "--source=sample:train", f"--model_dir={tmp_path / 'taken'}")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"error: --model_dir {tmp_path / 'taken'} is a file, not a folder"
    done = in_process.run("train", f"--model_dir={tmp_path / 'run'}")
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith("error: --source is required")
    assert "Traceback" not in done.stderr


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _read_only(folder, command):
    """`command` in a mount namespace of its own where `folder` is read-only (even for root)."""
    return ["unshare", "--mount", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(folder), *command]


def _start_workers(worker_flags, run_dir, logs_prefix, *extra):
    """Two train.py worker processes of one cluster on 127.0.0.1 (TF_CONFIG), logging to files.

    The second worker (not the chief) sees `run_dir` read-only: a write there would fail it.
    """
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    processes, logs = [], []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        args = [f"--model_dir={run_dir}", "--strategy=multi_worker", *worker_flags, *extra]
        logs.append(Path(f"{logs_prefix}{index}.log"))
        with open(logs[index], "w") as log:  # files, not pipes: a full pipe would stall one worker
            processes.append(_run(args, env={"TF_CONFIG": json.dumps(tf_config)}, stdout=log, read_only=run_dir if index else None))
    return processes, logs


def _finish(processes, logs):
    """Each worker's output, once both have exited with status 0; a worker that fails ends the
    others at once (they would wait for it in a collective)."""
    deadline, failed = time.time() + 600, None
    while any(process.poll() is None for process in processes) and time.time() < deadline and failed is None:
        failed = next((index for index, process in enumerate(processes) if process.poll() not in (None, 0)), None)
        time.sleep(0.2)
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
    outputs = [log.read_text() for log in logs]
    assert failed is None, f"worker {failed} failed:\n{outputs[failed][-3000:]}"
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    return outputs


# TensorFlow's own bookkeeping, not the run's: how many saves, and how many steps had run when the
# preemption handler last saved (0 in a run it never stopped).
_BOOKKEEPING = ("save_counter", "checkpointed_runs")


def _checkpoint_values(prefix):
    reader = tf.train.load_checkpoint(str(prefix))
    names = [name for name in reader.get_variable_to_shape_map() if not name.startswith(_BOOKKEEPING)]
    return {name: reader.get_tensor(name) for name in names}


@pytest.fixture(scope="module")
def multi_worker_flags(sample_folder):
    # Phase 1 is steps 0-1, phase 2 step 2, phase 3 from step 3 on; deterministic, so two runs
    # of the same steps end with the same weights (the phases do not depend on --total_steps).
    return [
        f"--source=folder:{sample_folder}/train",
        "--completion_steps=2",
        "--discriminator_steps=1",
        "--deterministic",
        f"--validation_source=folder:{sample_folder}/test",
        "--validation_every=2",
        *TINY_FLAGS,
    ]


# Long enough that a SIGTERM after step 4 stops the workers before its end (they agree on the
# stop through the coordination service, which takes a few steps of this tiny network).
STRAIGHT_STEPS = 16


@pytest.fixture(scope="module")
def two_workers_straight(multi_worker_flags, tmp_path_factory):
    """Two workers, STRAIGHT_STEPS steps without a stop: the run folder and both workers' output."""
    folder = tmp_path_factory.mktemp("two_workers_straight")
    outputs = _finish(*_start_workers(multi_worker_flags, folder / "run", folder / "worker", f"--total_steps={STRAIGHT_STEPS}"))
    return folder / "run", outputs


@pytest.mark.slow
@pytest.mark.xdist_group("two_workers_straight")  # one worker of the suite runs the fixture, and one cluster at a time
def test_multi_worker_run_with_two_local_processes_completes(two_workers_straight):
    run, outputs = two_workers_straight
    for output in outputs:
        assert f"step {STRAIGHT_STEPS}/{STRAIGHT_STEPS} phase 3" in output
    assert Path(run, f"ckpt-{STRAIGHT_STEPS}.index").exists()
    # The second worker ran with the run folder read-only (see _start_workers) and still
    # finished, so it wrote nothing there; nor beside it (TensorFlow's workertemp_<id> folders).
    assert not list(Path(run).parent.glob("workertemp*")) and not list(Path(run).glob("workertemp*"))
    # The chief alone validates, every second step, and keeps the best checkpoint apart.
    validated = [int(line.split(",")[0]) for line in Path(run, "validation.csv").read_text().splitlines()[1:]]
    assert validated == list(range(2, STRAIGHT_STEPS + 1, 2))
    assert f"validation at step {STRAIGHT_STEPS}" in outputs[0] and "validation at step" not in outputs[1]
    assert tf.train.latest_checkpoint(str(Path(run, "best")))


def _wait_in_file(path, needle, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and needle in path.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"no {needle!r} in {path} within {timeout} s:\n{path.read_text()[-3000:]}")


@pytest.mark.slow
@pytest.mark.xdist_group("two_workers_straight")
def test_sigterm_to_one_of_two_workers_stops_both_at_the_same_step_and_the_restart_ends_as_an_uninterrupted_run(
    multi_worker_flags, two_workers_straight, tmp_path
):
    """Stopped inside phase 3 by a SIGTERM to the second worker, started again on both machines
    up to --stop_at_step: the weights are those of the uninterrupted run, bit for bit."""
    straight, _ = two_workers_straight
    run = tmp_path / "run"
    processes, logs = _start_workers(multi_worker_flags, run, tmp_path / "first", "--total_steps=100000")
    _wait_in_file(logs[1], "step 4/100000 phase 3", timeout=300)
    processes[1].send_signal(signal.SIGTERM)
    outputs = _finish(processes, logs)
    stops = [re.search(r"every worker saved at step (\d+); stopping", output) for output in outputs]
    assert all(stops), [output[-2000:] for output in outputs]
    step = int(stops[0].group(1))
    assert int(stops[1].group(1)) == step >= 4
    assert step < STRAIGHT_STEPS, f"stopped at step {step}, past the uninterrupted run's {STRAIGHT_STEPS}"
    assert "SIGTERM received: every worker saved" in outputs[1]
    assert "another worker was asked to stop: every worker saved" in outputs[0]
    assert tf.train.latest_checkpoint(str(run)).endswith(f"ckpt-{step}")

    outputs = _finish(*_start_workers(multi_worker_flags, run, tmp_path / "again", "--total_steps=100000", f"--stop_at_step={STRAIGHT_STEPS}"))
    for output in outputs:  # every worker continues from the chief's checkpoint, not from scratch
        assert f"resuming from {run / f'ckpt-{step}'} at step {step} (phase 3)" in output
        assert f"step {STRAIGHT_STEPS}/100000 phase 3" in output and f"step {step}/100000" not in output and "step 1/100000" not in output
    expected, resumed = _checkpoint_values(Path(straight, f"ckpt-{STRAIGHT_STEPS}")), _checkpoint_values(run / f"ckpt-{STRAIGHT_STEPS}")
    assert expected.keys() == resumed.keys()
    for name in expected:
        np.testing.assert_array_equal(expected[name], resumed[name], err_msg=name)
