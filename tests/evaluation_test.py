"""evaluate: the same holes and numbers for the same seed, every method in a report that parses."""

import csv
import json
from pathlib import Path

import cv2
import in_process
from fake_serving import fake_serving
import numpy as np
import pytest

from glcic_tf import completers, evaluation, masks


@pytest.fixture(scope="module")
def images(sample_folder):
    return evaluation.evaluation_images(f"folder:{sample_folder}/test", None, 128)


@pytest.fixture(scope="module")
def completer(trained_run):
    return completers.load_completer(str(trained_run))


def test_images_are_resized_and_centre_cropped_squares(images):
    assert len(images) == 3 and all(image.shape == (128, 128, 3) and image.dtype == np.uint8 for image in images)


def test_same_seed_same_masks_and_numbers_other_seed_other_holes(images, completer):
    first, results = evaluation.evaluate(images, evaluation.METHODS, "rectangles", 7, completer)
    again, results_again = evaluation.evaluate(images, evaluation.METHODS, "rectangles", 7, completer)
    np.testing.assert_equal(first, again)  # NaN (MS-SSIM at 128 px) counts as equal
    for index, (a, b) in enumerate(zip(results, results_again)):
        np.testing.assert_array_equal(a["mask"], b["mask"])
        np.testing.assert_array_equal(a["mask"], masks.protocol_mask("rectangles", 7, index, 128, 128))
    other, _ = evaluation.evaluate(images, ["mean_fill"], "rectangles", 8, completer)
    assert [row["hole_fraction"] for row in other] != [row["hole_fraction"] for row in first if row["method"] == "mean_fill"]


def test_every_method_changes_only_the_hole(images, completer):
    _, results = evaluation.evaluate(images[:1], evaluation.METHODS, "paper", 0, completer)
    outside = results[0]["mask"][..., 0] == 0
    for method in evaluation.METHODS:
        np.testing.assert_array_equal(results[0][method][outside], images[0][outside], err_msg=method)


def test_report_files_exist_and_parse_with_every_method(images, completer, tmp_path):
    rows, results = evaluation.evaluate(images, evaluation.METHODS, "paper", 0, completer)
    summary = evaluation.summarise(rows, evaluation.METHODS)
    grid = evaluation.picture_grid(images, results, evaluation.METHODS, count=2)
    paths = evaluation.write_report(str(tmp_path), rows, summary, {"seed": 0, "mask_protocol": "paper"}, grid)
    with open(paths["per_image.csv"]) as file:
        table = list(csv.DictReader(file))
    assert len(table) == 3 * len(evaluation.METHODS) and {row["method"] for row in table} == set(evaluation.METHODS)
    report = json.loads(Path(paths["summary.json"]).read_text())
    assert set(report["methods"]) == set(evaluation.METHODS) and report["seed"] == 0 and report["psnr_cap_db"] == 100.0
    assert report["methods"]["telea"]["psnr"]["mean"] > 0
    markdown = Path(paths["results.md"]).read_text()
    assert all(f"| {method} |" in markdown for method in evaluation.METHODS) and "MS-SSIM" not in markdown  # 128 px: no MS-SSIM
    picture = cv2.imread(paths["examples.png"])
    assert picture.shape[1:] == ((len(evaluation.METHODS) + 2) * 128, 3) and 16 <= picture.shape[0] - 2 * 128 <= 28
    small = evaluation.picture_grid(images, results, evaluation.METHODS, count=2, tile=64)  # e.g. for a README
    header = small.shape[0] - 2 * 64
    assert small.shape[1] == (len(evaluation.METHODS) + 2) * 64 and 16 <= header < 28
    original = cv2.resize(images[1], (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(small[header + 64:, -64:], original)


def _evaluate(*args):
    return in_process.run("evaluate", *args)


def test_command_writes_the_report(trained_run, sample_folder, tmp_path):
    done = _evaluate(f"--model={trained_run}", f"--source=folder:{sample_folder}/test", f"--output_dir={tmp_path}", "--num_images=2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| model_postprocessed |" in done.stdout
    assert json.loads((tmp_path / "summary.json").read_text())["num_images"] == 2


def test_the_command_evaluates_the_model_a_server_serves_as_it_evaluates_the_export(export_base, sample_folder, tmp_path):
    common = [f"--source=folder:{sample_folder}/test", "--num_images=2", "--image_size=64", "--methods=model"]
    local = _evaluate(f"--model={export_base}", *common, f"--output_dir={tmp_path / 'local'}")
    with fake_serving(export_base / "3") as (address, requests):
        served = _evaluate(f"--server={address}", *common, f"--output_dir={tmp_path / 'served'}")
    assert local.returncode == 0 and served.returncode == 0, local.stderr[-2000:] + served.stderr[-2000:]
    assert len(requests) == 2  # one request per image, through TF Serving's REST API
    scores = [json.loads((tmp_path / run / "summary.json").read_text())["methods"]["model"]["hole_psnr"]["mean"] for run in ("local", "served")]
    assert scores[1] == pytest.approx(scores[0], abs=0.05)  # the same model; PNG round trips differ by a level at most
    assert json.loads((tmp_path / "served" / "summary.json").read_text())["model"].startswith(f"TF Serving at {address}")


@pytest.mark.parametrize(
    "case,expected",
    [
        ("bad_model", "is neither a SavedModel (or a folder of versions) nor a train.py run folder"),
        ("too_many", "has 3 readable images, fewer than the 5 asked for (--num_images)"),
        ("empty", "holds no jpg/jpeg/png"),
        ("model_methods_without_a_model", "the model methods need a model (--model or --server)"),
    ],
)
def test_bad_input_is_a_one_line_error(trained_run, sample_folder, tmp_path, case, expected):
    (tmp_path / "empty").mkdir()
    args = {
        "bad_model": [f"--model={tmp_path}", f"--source=folder:{sample_folder}/test"],
        "too_many": [f"--model={trained_run}", f"--source=folder:{sample_folder}/test", "--num_images=5"],
        "empty": [f"--model={trained_run}", f"--source=folder:{tmp_path / 'empty'}"],
        "model_methods_without_a_model": ["--methods=model,telea", f"--source=folder:{sample_folder}/test"],
    }[case]
    done = _evaluate(*args, f"--output_dir={tmp_path / 'report'}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last
    assert not (tmp_path / "report").exists()
