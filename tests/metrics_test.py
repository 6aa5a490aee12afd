"""Metrics against scikit-image and against values computed by hand."""

import numpy as np
import pytest
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from glcic_tf import metrics

# Tolerances: PSNR is the same formula (1e-6 dB); SSIM differs only in float32 vs float64 and
# how the border of the 11x11 window is cut (1e-3).
PSNR_TOLERANCE = 1e-6
SSIM_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def photo():
    return skdata.astronaut()[100:356, 150:406].astype(np.float32) / 255.0


NO_HOLE = np.zeros((256, 256, 1), np.float32)


@pytest.mark.parametrize("noise", [0.01, 0.05, 0.2])
def test_psnr_and_ssim_agree_with_scikit_image(photo, noise):
    noisy = np.clip(photo + np.random.default_rng(1).normal(0, noise, photo.shape), 0, 1).astype(np.float32)
    values = metrics.image_metrics(noisy, photo, NO_HOLE)
    assert values["psnr"] == pytest.approx(peak_signal_noise_ratio(photo, noisy, data_range=1.0), abs=PSNR_TOLERANCE)
    expected_ssim = structural_similarity(
        photo, noisy, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert values["ssim"] == pytest.approx(expected_ssim, abs=SSIM_TOLERANCE)


def test_identical_images_give_ssim_1_and_the_psnr_cap(photo):
    values = metrics.image_metrics(photo, photo, NO_HOLE)
    assert values["ssim"] == pytest.approx(1.0, abs=1e-6) and values["ms_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert values["psnr"] == metrics.PSNR_CAP == 100.0 and values["l1"] == 0.0


def test_known_noise_gives_the_psnr_computed_by_hand(photo):
    image = 0.2 + 0.6 * photo  # values in [0.2, 0.8], so +-0.1 never clips
    signs = np.where(np.random.default_rng(0).random(image.shape) < 0.5, -1.0, 1.0)
    noisy = (image + 0.1 * signs).astype(np.float32)
    # Every pixel is off by exactly 0.1: MSE 0.01, PSNR = 10 log10(1 / 0.01) = 20 dB.
    assert metrics.image_metrics(noisy, image, NO_HOLE)["psnr"] == pytest.approx(20.0, abs=1e-4)


def test_hole_metrics_see_only_the_hole(photo):
    mask = np.zeros((256, 256, 1), np.float32)
    mask[100:140, 60:120] = 1
    result = photo.copy()
    result[100:140, 60:120] = photo[100:140, 60:120] * 0 + 0.5  # a flat grey fill
    values = metrics.image_metrics(result, photo, mask)
    hole_error = np.abs(0.5 - photo[100:140, 60:120])
    assert values["hole_l1"] == pytest.approx(hole_error.mean(), rel=1e-5)
    assert values["l1"] == pytest.approx(hole_error.sum() / photo.size, rel=1e-5)
    assert values["hole_psnr"] == pytest.approx(-10 * np.log10(np.mean(hole_error.astype(np.float64) ** 2)), abs=1e-4)
    assert values["hole_psnr"] < values["psnr"] and values["hole_ssim"] < values["ssim"]


def test_hole_box_is_grown_to_the_ssim_window_inside_the_image():
    mask = np.zeros((64, 64, 1), np.float32)
    mask[0:3, 60:64] = 1
    top, bottom, left, right = metrics.hole_box(mask)
    assert (top, bottom) == (0, 11) and (left, right) == (53, 64)


def test_ms_ssim_is_left_out_on_images_too_small_for_five_scales(photo):
    small = photo[:128, :128]
    assert np.isnan(metrics.image_metrics(small, small, NO_HOLE[:128, :128])["ms_ssim"])


def test_one_registry_names_every_metric_the_reports_and_validation_use():
    from glcic_tf import evaluation, validation  # noqa: PLC0415

    image = np.random.default_rng(0).random((170, 170, 3))
    mask = np.zeros((170, 170, 1))
    mask[40:80, 50:90] = 1
    assert set(metrics.image_metrics(image * 0.9, image, mask)) == set(metrics.METRICS)
    table = evaluation.markdown_table(evaluation.summarise([{"method": "model", **metrics.image_metrics(image * 0.9, image, mask)}], ["model"]))
    assert all(metric.heading in table for metric in metrics.METRICS.values())
    for name, metric in metrics.METRICS.items():
        assert validation.ValidationSettings(source="folder:x", metric=name).metric == name  # every one can choose the best
        better, worse = (2.0, 1.0) if metric.higher_is_better else (1.0, 2.0)
        assert validation._better(better, worse, name) and not validation._better(worse, better, name)
