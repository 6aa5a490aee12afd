"""Image-quality metrics with TensorFlow's implementations, on the whole image and on the hole.

Images are float in [0, 1] (max_val 1), (H, W, 3); masks (H, W, 1) with 1 in the hole.

- psnr, ssim (tf.image.ssim: 11x11 Gaussian window, sigma 1.5, k1 0.01, k2 0.03), ms_ssim
  (tf.image.ssim_multiscale, only when both sides are at least MS_SSIM_MIN_SIDE, else NaN), l1:
  over the whole image.
- hole_psnr and hole_l1: over the hole's pixels only. hole_ssim: SSIM on the bounding box of
  the hole (grown, inside the image, to at least 11x11 so the window fits); it includes the
  valid pixels that share the box.
- PSNR of identical images is infinite; it is capped at PSNR_CAP so averages stay finite.
"""

from typing import Dict, NamedTuple

import numpy as np
import tensorflow as tf

PSNR_CAP = 100.0  # dB: what identical images score (a mean squared error of 1e-10)
SSIM_WINDOW = 11
MS_SSIM_MIN_SIDE = 161  # five scales of an 11-wide window: (11 - 1) * 2**4 + 1


class Metric(NamedTuple):
    """How reports show a metric, and which way is better (validation's best checkpoint)."""

    heading: str
    higher_is_better: bool
    digits: int


# Every metric, in the order reports list them: the one registry that image_metrics fills and
# the reports, per-image CSVs, validation and its best checkpoint read.
METRICS = {
    "psnr": Metric("PSNR (dB)", True, 2),
    "ssim": Metric("SSIM", True, 4),
    "ms_ssim": Metric("MS-SSIM", True, 4),
    "l1": Metric("L1", False, 4),
    "hole_psnr": Metric("hole PSNR (dB)", True, 2),
    "hole_ssim": Metric("hole SSIM", True, 4),
    "hole_l1": Metric("hole L1", False, 4),
}


def psnr_from_mse(mse: float) -> float:
    return PSNR_CAP if mse <= 10 ** (-PSNR_CAP / 10) else float(-10.0 * np.log10(mse))


def hole_box(mask: np.ndarray, minimum: int = SSIM_WINDOW):
    """(top, bottom, left, right) of the hole's bounding box, grown inside the image to `minimum`."""
    rows, cols = np.nonzero(mask[..., 0] > 0.5)
    height, width = mask.shape[:2]

    def span(low, high, size):
        low, high, need = int(low), int(high) + 1, min(minimum, size)
        if high - low < need:
            low = min(max(0, (low + high) // 2 - need // 2), size - need)
            high = low + need
        return low, high

    top, bottom = span(rows.min(), rows.max(), height)
    left, right = span(cols.min(), cols.max(), width)
    return top, bottom, left, right


def image_metrics(result: np.ndarray, target: np.ndarray, mask: np.ndarray) -> Dict[str, float]:
    """Every metric of METRICS for one completed image against its original."""
    result_t = tf.constant(result, tf.float32)
    target_t = tf.constant(target, tf.float32)
    difference = np.asarray(result, np.float64) - np.asarray(target, np.float64)
    values = {
        "psnr": psnr_from_mse(float(np.mean(difference**2))),
        "ssim": float(tf.image.ssim(result_t, target_t, max_val=1.0)),
        "ms_ssim": float("nan"),
        "l1": float(np.mean(np.abs(difference))),
    }
    if min(result.shape[:2]) >= MS_SSIM_MIN_SIDE:
        values["ms_ssim"] = float(tf.image.ssim_multiscale(result_t, target_t, max_val=1.0))
    hole = mask[..., 0] > 0.5
    if hole.any():
        values["hole_psnr"] = psnr_from_mse(float(np.mean(difference[hole] ** 2)))
        values["hole_l1"] = float(np.mean(np.abs(difference[hole])))
        top, bottom, left, right = hole_box(mask)
        values["hole_ssim"] = float(tf.image.ssim(result_t[top:bottom, left:right], target_t[top:bottom, left:right], max_val=1.0))
    else:
        values.update(hole_psnr=float("nan"), hole_l1=float("nan"), hole_ssim=float("nan"))
    return values
