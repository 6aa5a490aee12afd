"""A run folder's own files: the best checkpoint's score read back and its description repaired."""

import json

import pytest

import tiny
from glcic_tf import models, run_folder
from glcic_tf.errors import UserError


def test_the_best_checkpoint_keeps_its_score_and_a_stale_description_is_written_again(tmp_path):
    network = models.completion_network(tiny.WIDTH)
    assert run_folder.read_best(str(tmp_path)) is None
    run_folder.save_best(str(tmp_path), network, 7, "hole_psnr", {"hole_psnr": 12.5, "psnr": 20.0}, {"width": tiny.WIDTH}, {"every": 1})
    assert run_folder.read_best(str(tmp_path)) == (7, 12.5, "hole_psnr")
    assert json.loads((tmp_path / "best" / "config.json").read_text()) == {"width": tiny.WIDTH}
    description = tmp_path / "best" / "validation.json"
    assert not run_folder.repair_best_description(str(tmp_path), 7, 12.5, "hole_psnr")  # it describes step 7: left alone
    described = json.loads(description.read_text())
    assert described["metrics"] == {"hole_psnr": 12.5, "psnr": 20.0} and described["settings"] == {"every": 1}
    description.write_text(json.dumps({"step": 3}))  # a crash between the checkpoint and its description
    assert run_folder.read_best(str(tmp_path)) == (7, 12.5, "hole_psnr")  # reading writes nothing
    assert json.loads(description.read_text()) == {"step": 3}
    assert run_folder.repair_best_description(str(tmp_path), 7, 12.5, "hole_psnr")
    assert json.loads(description.read_text())["step"] == 7


def test_a_best_folder_holding_another_checkpoint_is_a_one_line_error(tmp_path):
    import tensorflow as tf  # noqa: PLC0415

    (tmp_path / "best").mkdir()
    tf.train.CheckpointManager(tf.train.Checkpoint(step=tf.Variable(1)), str(tmp_path / "best"), 1).save()
    with pytest.raises(UserError, match="is not a best checkpoint that train.py wrote"):
        run_folder.read_best(str(tmp_path))
