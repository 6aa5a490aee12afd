"""Validation during training: evaluate.py's numbers, the best checkpoint kept apart and across resumes."""

import csv
import dataclasses
import json
from pathlib import Path

import in_process
import numpy as np
import pytest
import tensorflow as tf

import tiny
from glcic_tf import completers, photos, run_folder, train_lib, validation
from glcic_tf.errors import UserError


def _config(sample_folder, **overrides):
    settings = dict(
        completion_steps=2,
        discriminator_steps=1,
        total_steps=4,
        deterministic=True,
        checkpoint_every=1,
        keep_checkpoints=1,
        validation=validation.ValidationSettings(source=f"folder:{sample_folder}/test", every=1, protocol="strokes", image_size=0),
    )
    return tiny.config(f"folder:{sample_folder}/train", **{**settings, **overrides})


def _rows(run):
    with open(Path(run, validation.CSV_NAME), newline="") as file:
        return list(csv.DictReader(file))


def _weights(network):
    return [variable.numpy().copy() for variable in network.weights]


def _best_step(run):
    return int(tf.train.load_checkpoint(tf.train.latest_checkpoint(str(Path(run, "best")))).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.fixture
def scripted(monkeypatch):
    """Validator.evaluate returns the given hole PSNRs in turn and records the weights it saw."""
    seen = {}

    def install(values):
        values = iter(values)

        def evaluate(self):
            seen[len(seen) + 1] = _weights(self.network)  # the n-th validation: step n when validating every step
            value = next(values)
            return {"hole_psnr": value, "hole_l1": value}

        monkeypatch.setattr(validation.Validator, "evaluate", evaluate)
        return seen

    return install


@pytest.fixture(scope="module")
def validated_run(sample_folder, tmp_path_factory):
    """A tiny run validated at every step on the held-out photographs at their own sizes, strokes."""
    folder = tmp_path_factory.mktemp("validated_run")
    config = _config(sample_folder)
    train_lib.Trainer(config, str(folder)).run()
    run_folder.write_config(str(folder), train_lib.run_settings(config))
    return folder, config


@pytest.mark.slow
@pytest.mark.xdist_group("validated_run")  # its module fixture trained once, on one worker
def test_validation_metrics_are_evaluate_py_s_on_the_same_images_and_holes(validated_run, sample_folder, tmp_path):
    run, config = validated_run
    rows = _rows(run)
    assert [int(row["step"]) for row in rows] == [1, 2, 3, 4] and [int(row["phase"]) for row in rows] == [1, 1, 2, 3]
    best = max(rows, key=lambda row: float(row["hole_psnr"]))
    assert _best_step(run) == int(best["step"])
    # evaluate.py on the best checkpoint, by name, with the same images and holes.
    done = in_process.run(
        "evaluate", f"--model={run}/best", f"--source=folder:{sample_folder}/test",
        "--image_size=0", "--mask_protocol=strokes", "--seed=0", "--methods=model", "--precision=float32", f"--output_dir={tmp_path}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())["methods"]["model"]
    for name in ("psnr", "ssim", "l1", "hole_psnr", "hole_ssim", "hole_l1"):
        assert summary[name]["mean"] == pytest.approx(float(best[name]), rel=1e-6, abs=1e-6), name
    assert json.loads(Path(run, "best", "validation.json").read_text())["step"] == int(best["step"])
    # And the last step's row is its own weights' (validation refreshes them every time), not the first's.
    last = in_process.run(
        "evaluate", f"--model={run}/ckpt-4", f"--source=folder:{sample_folder}/test",
        "--image_size=0", "--mask_protocol=strokes", "--seed=0", "--methods=model", "--precision=float32", f"--output_dir={tmp_path / 'last'}",
    )
    assert last.returncode == 0, last.stderr[-2000:]
    scored = json.loads((tmp_path / "last" / "summary.json").read_text())["methods"]["model"]["hole_psnr"]["mean"]
    assert scored == pytest.approx(float(rows[-1]["hole_psnr"]), rel=1e-6) and rows[-1]["hole_psnr"] != rows[0]["hole_psnr"]


@pytest.mark.slow
@pytest.mark.xdist_group("validated_run")  # its module fixture trained once, on one worker
def test_the_best_checkpoint_is_a_run_folder_that_export_and_inpaint_load_by_name(validated_run):
    run, _ = validated_run
    network, mean_pixel, step = completers.load_completion_network(str(run / "best"))
    assert step == _best_step(run) and mean_pixel == tuple(train_lib.Config(source="").mean_pixel)
    completer = completers.load_completer(str(run / "best"))
    image = np.full((40, 48, 3), 120, np.uint8)
    mask = photos.mask_from_boxes((40, 48), [(8, 8, 16, 16)])
    assert photos.inpaint(completer, image, mask).shape == (40, 48, 3)


@pytest.mark.slow
def test_the_best_checkpoint_survives_rotation_and_holds_the_weights_it_scored_with(sample_folder, tmp_path, scripted):
    seen = scripted([10.0, 12.0, 11.0, 9.0])
    trainer = train_lib.Trainer(_config(sample_folder), str(tmp_path))
    trainer.run()
    assert [Path(p).name for p in trainer.manager.checkpoints] == ["ckpt-4"]  # rotation kept only the latest
    assert _best_step(tmp_path) == 2
    assert sorted(p.name for p in Path(tmp_path, "best").glob("*.index")) == ["ckpt-2.index"]
    network, _, _ = completers.load_completion_network(str(tmp_path / "best"))
    for saved, scored in zip(_weights(network), seen[2]):
        np.testing.assert_array_equal(saved, scored)
    assert not all(np.array_equal(a, b) for a, b in zip(seen[2], _weights(trainer.completion)))  # not the final weights
    assert [row["best"] for row in _rows(tmp_path)] == ["1", "1", "0", "0"]


@pytest.mark.slow
def test_a_resumed_run_keeps_the_best_and_validates_again_the_steps_after_its_checkpoint(sample_folder, tmp_path, scripted):
    scripted([10.0, 12.0])
    train_lib.Trainer(_config(sample_folder, total_steps=6), str(tmp_path)).run(until_step=2)
    # As if the run had validated step 3 and died before its checkpoint: that row goes on resume.
    with open(tmp_path / validation.CSV_NAME, "a", newline="") as file:
        csv.DictWriter(file, fieldnames=validation.CSV_FIELDS).writerow({"step": 3, "phase": 2, "hole_psnr": 99.0, "seconds": 1.0, "best": 1})
    scripted([11.0, 11.5, 13.0, 12.5])
    trainer = train_lib.Trainer(_config(sample_folder, total_steps=6), str(tmp_path))
    assert trainer.validator.best_step == 2 and trainer.validator.best_value == 12.0
    trainer.run(until_step=4)
    assert _best_step(tmp_path) == 2  # 11.0 and 11.5 do not beat the 12.0 from before the restart
    trainer.run()
    assert _best_step(tmp_path) == 5
    assert [(row["step"], row["hole_psnr"], row["best"]) for row in _rows(tmp_path)] == [
        ("1", "10.0", "1"), ("2", "12.0", "1"), ("3", "11.0", "0"), ("4", "11.5", "0"), ("5", "13.0", "1"), ("6", "12.5", "0"),
    ]


@pytest.mark.slow
def test_a_lower_is_better_metric_and_another_metric_on_resume(sample_folder, tmp_path, scripted):
    by_l1 = dataclasses.replace(_config(sample_folder).validation, metric="hole_l1")
    scripted([2.0, 1.0])
    train_lib.Trainer(_config(sample_folder, validation=by_l1), str(tmp_path)).run(until_step=2)
    assert _best_step(tmp_path) == 2  # the lower L1
    # Resumed choosing by hole PSNR: the best by L1 is no yardstick, the next validation replaces it.
    scripted([0.5])
    trainer = train_lib.Trainer(_config(sample_folder), str(tmp_path))
    assert trainer.validator.best_value is None
    trainer.run(until_step=3)
    assert _best_step(tmp_path) == 3


@pytest.mark.slow
@pytest.mark.xdist_group("validated_run")  # its module fixture trained once, on one worker
def test_validating_does_not_change_what_the_run_computes(sample_folder, tmp_path, validated_run):
    run, config = validated_run
    plain = train_lib.Trainer(dataclasses.replace(config, validation=validation.ValidationSettings()), str(tmp_path))
    assert plain.validator is None
    plain.run()
    validated = train_lib.Trainer(config, str(run))  # the validated run's last checkpoint
    for a, b in zip(_weights(plain.completion), _weights(validated.completion)):
        np.testing.assert_array_equal(a, b)
    assert not train_lib.changed_settings(dataclasses.replace(config, validation=validation.ValidationSettings(every=7)), str(run))


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"every": 0}, "--validation_every must be positive"),
        ({"metric": "fid"}, "unknown --validation_metric 'fid'"),
        ({"protocol": "blobs"}, "unknown --validation_protocol 'blobs'"),
    ],
)
def test_bad_validation_settings_are_one_line_errors(overrides, message):
    with pytest.raises(UserError, match=message):
        validation.ValidationSettings(source="sample:test", **overrides)


def test_a_validation_source_without_images_is_an_error_before_training(sample_folder, tmp_path):
    (tmp_path / "empty").mkdir()
    config = _config(sample_folder, validation=validation.ValidationSettings(source=f"folder:{tmp_path / 'empty'}"))
    with pytest.raises(UserError, match="holds no jpg/jpeg/png"):
        train_lib.Trainer(config, str(tmp_path / "run"))


def test_ms_ssim_on_validation_images_too_small_for_it_is_an_error_before_training(sample_folder, tmp_path):
    settings = validation.ValidationSettings(source=f"folder:{sample_folder}/test", image_size=32, metric="ms_ssim")
    with pytest.raises(UserError, match="--validation_metric=ms_ssim needs validation images of 161 pixels or more a side"):
        train_lib.Trainer(_config(sample_folder, validation=settings), str(tmp_path / "run"))


@pytest.mark.slow
def test_a_foreign_best_folder_is_a_one_line_error_and_an_unreadable_csv_is_kept_aside(sample_folder, tmp_path, scripted):
    scripted([10.0])
    trainer = train_lib.Trainer(_config(sample_folder, validation=validation.ValidationSettings()), str(tmp_path))
    trainer.run(until_step=1)
    best = tmp_path / "best"
    best.mkdir()
    for name in ("checkpoint", "ckpt-1.index", "ckpt-1.data-00000-of-00001"):  # a run's checkpoint, not a best one
        (best / name).write_bytes((tmp_path / name).read_bytes())
    with pytest.raises(UserError, match="is not a best checkpoint that train.py wrote"):
        train_lib.Trainer(_config(sample_folder), str(tmp_path))
    for name in list(best.iterdir()):
        name.unlink()
    (tmp_path / validation.CSV_NAME).write_text("when,score\n1,2\n")  # another program's or version's
    trainer = train_lib.Trainer(_config(sample_folder), str(tmp_path))
    assert (tmp_path / (validation.CSV_NAME + ".old")).read_text() == "when,score\n1,2\n"
    trainer.run(until_step=2)
    assert [row["step"] for row in _rows(tmp_path)] == ["2"]


@pytest.mark.slow
def test_a_failing_validation_is_logged_and_training_goes_on_from_a_checkpoint_of_that_step(sample_folder, tmp_path, monkeypatch):
    def broken(self):
        raise OSError("disk full")

    monkeypatch.setattr(validation.Validator, "evaluate", broken)
    trainer = train_lib.Trainer(_config(sample_folder, checkpoint_every=1000, keep_checkpoints=5), str(tmp_path))
    trainer.run()
    assert int(trainer.step.numpy()) == 4
    assert sorted(p.name for p in tmp_path.glob("ckpt-*.index")) == [f"ckpt-{n}.index" for n in (1, 2, 3, 4)]  # saved at each validation

