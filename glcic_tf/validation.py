"""Validation during training: evaluate.py's protocol on a fixed held-out set, and the best checkpoint.

Every `every` steps the chief completes the same held-out images with the same seeded holes as
`evaluate.py --model=RUN --image_size=SIZE --mask_protocol=PROTOCOL --seed=SEED` would (the code
is `glcic_tf.evaluation`'s, so the numbers are equal), and writes the mean of every metric to
TensorBoard (`RUN/validation`) and to `RUN/validation.csv`.

The checkpoint of the best value of `metric` so far is kept in `RUN/best/`, a folder of its own
that `--keep_checkpoints` never rotates: the completion network, the step and the value it
scored, with the run's config.json beside it, so `RUN/best` is a run folder that export.py,
inpaint.py, app.py and evaluate.py take as they take `RUN` (the latest checkpoint).

Validation reads the weights and changes nothing, so a run with it trains exactly as one without.
"""

import csv
import dataclasses
import os
import time
from typing import Dict, Optional

import numpy as np
import tensorflow as tf
from absl import logging

from glcic_tf import evaluation, inference, masks, metrics, run_folder
from glcic_tf.errors import UserError

CSV_NAME = "validation.csv"
SUMMARY_FOLDER = "validation"
CSV_FIELDS = ["step", "phase", *metrics.METRICS, "seconds", "best"]


@dataclasses.dataclass(frozen=True)
class ValidationSettings:
    """What to validate on and how often; no source: no validation (the paper had none)."""

    source: Optional[str] = None
    data_dir: Optional[str] = None
    every: int = 5000
    num_images: Optional[int] = 200  # at most; None: every image of the source
    image_size: Optional[int] = None  # None: the training crop size; 0: each image at its own size
    protocol: str = "paper"
    seed: int = 0
    metric: str = "hole_psnr"

    def __post_init__(self):
        if self.every < 1:
            raise UserError("--validation_every must be positive")
        if self.num_images is not None and self.num_images < 1:
            raise UserError("--validation_images must be positive (the flag's 0, None here: every image)")
        if self.image_size is not None and self.image_size < 0:
            raise UserError("--validation_size must be 0 (each image at its own size) or positive")
        if self.protocol not in masks.MASK_PROTOCOLS:
            raise UserError(f"unknown --validation_protocol {self.protocol!r}; choose one of {sorted(masks.MASK_PROTOCOLS)}")
        if self.metric not in metrics.METRICS:
            raise UserError(f"unknown --validation_metric {self.metric!r}; choose one of {sorted(metrics.METRICS)}")

    @property
    def enabled(self) -> bool:
        return bool(self.source)


def _better(value: float, than: Optional[float], metric: str) -> bool:
    if not np.isfinite(value):
        return False
    if than is None:
        return True
    return value > than if metrics.METRICS[metric].higher_is_better else value < than


class Validator:
    """Validates a run's completion network on the chief and keeps its best checkpoint."""

    def __init__(self, settings: ValidationSettings, model_dir: str, network, run_settings: Dict, restored_step: int):
        """run_settings: the run's config.json (its width and mean pixel; copied into best/)."""
        self.settings = settings
        self.run_settings = run_settings
        self.model_dir = model_dir
        self.network = network
        self.mean_pixel = tuple(run_settings["mean_pixel"])
        size = run_settings["sizes"]["crop_size"] if settings.image_size is None else settings.image_size
        started = time.perf_counter()
        self.photos = evaluation.evaluation_images(settings.source, settings.num_images, size, settings.data_dir, at_most=True)
        if not self.photos:
            raise UserError(f"--validation_source {settings.source} holds no readable image")
        smallest = min(min(photo.shape[:2]) for photo in self.photos)
        if settings.metric == "ms_ssim" and smallest < metrics.MS_SSIM_MIN_SIDE:
            raise UserError(
                f"--validation_metric=ms_ssim needs validation images of {metrics.MS_SSIM_MIN_SIDE} pixels or more a side, "
                f"and {settings.source} gives {smallest} (--validation_size): choose another metric or a larger size"
            )
        logging.info(
            "validation: %d images of %s (%s), %s holes, seed %d, every %d steps, best by %s (read in %.1f s)",
            len(self.photos), settings.source, f"{size}x{size}" if size else "own sizes", settings.protocol, settings.seed,
            settings.every, settings.metric, time.perf_counter() - started,
        )
        self.writer = tf.summary.create_file_writer(os.path.join(model_dir, SUMMARY_FOLDER))
        self.best_step, self.best_value = None, None
        self.completer = None
        self._read_best()
        self._drop_rows_after(restored_step)

    # --- the best checkpoint ------------------------------------------------------------

    def _read_best(self) -> None:
        """The best step and value so far, from the run folder's best checkpoint."""
        found = run_folder.read_best(self.model_dir)
        if found is None:
            return
        step, value, metric = found
        if metric != self.settings.metric:
            logging.warning(
                "the best checkpoint so far (step %d) was chosen by %s, this run chooses by %s: the next validation replaces it",
                step, metric, self.settings.metric,
            )
            return
        self.best_step, self.best_value = step, value
        logging.info("best checkpoint so far: step %d, %s %.4f (%s)", step, metric, value, run_folder.best_path(self.model_dir))
        run_folder.repair_best_description(self.model_dir, step, value, metric)

    # --- the CSV --------------------------------------------------------------------------

    def _csv_path(self) -> str:
        return os.path.join(self.model_dir, CSV_NAME)

    def _drop_rows_after(self, step: int) -> None:
        """A resumed run validates again the steps after its checkpoint: their old rows go. A CSV
        this version cannot read (another header, a torn line) is kept aside as .old, not lost."""
        path = self._csv_path()
        if not os.path.exists(path):
            return
        try:
            with open(path, newline="") as file:
                reader = csv.DictReader(file)
                rows = list(reader)
                if reader.fieldnames != CSV_FIELDS:
                    raise ValueError(f"header {reader.fieldnames}")
                kept = [row for row in rows if int(row["step"]) <= step]
        except (ValueError, TypeError, csv.Error) as error:
            os.replace(path, path + ".old")
            logging.warning("%s could not be read (%s): kept as %s.old, a new one begins", path, error, path)
            return
        with open(path + ".tmp", "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=CSV_FIELDS)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(path + ".tmp", path)

    def _append_row(self, row: Dict) -> None:
        path = self._csv_path()
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        with open(path, "a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=CSV_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)

    # --- validating -------------------------------------------------------------------------

    def evaluate(self) -> Dict[str, float]:
        """The mean of every metric over the held-out set, as evaluate.py computes it."""
        if self.completer is None:  # float32, as evaluate.py --precision=float32 runs a run folder; built (and compiled) once
            self.completer = inference.Inpainter(self.network, self.mean_pixel)
        else:
            self.completer.network.fold(self.network)  # this step's weights
        rows, _ = evaluation.evaluate(self.photos, ["model"], self.settings.protocol, self.settings.seed, self.completer)
        summary = evaluation.summarise(rows, ["model"])["model"]
        return {name: summary[name]["mean"] for name in metrics.METRICS if summary[name]["mean"] is not None}

    def validate(self, step: int, phase: int) -> Dict[str, float]:
        """Validates at `step`, logs it, and saves the best checkpoint if this is the best so far."""
        started = time.perf_counter()
        means = self.evaluate()
        seconds = time.perf_counter() - started
        value = means.get(self.settings.metric, float("nan"))
        best = _better(value, self.best_value, self.settings.metric)
        with self.writer.as_default():
            for name, mean in means.items():
                tf.summary.scalar(f"validation/{name}", mean, step=step)
        self.writer.flush()
        self._append_row({"step": step, "phase": phase, **{n: means.get(n, "") for n in metrics.METRICS}, "seconds": round(seconds, 2), "best": int(best)})
        if best:
            run_folder.save_best(self.model_dir, self.network, step, self.settings.metric, means, self.run_settings, dataclasses.asdict(self.settings))
            self.best_step, self.best_value = step, value
        logging.info(
            "validation at step %d: %s | %.1f s%s", step, " ".join(f"{name} {mean:.4g}" for name, mean in means.items()), seconds,
            f" | best so far ({self.settings.metric}), saved in {run_folder.best_path(self.model_dir)}" if best
            else f" | best remains step {self.best_step} ({self.settings.metric} {self.best_value:.4g})" if self.best_value is not None
            else f" | {self.settings.metric} is not finite: not kept as the best",
        )
        return means
