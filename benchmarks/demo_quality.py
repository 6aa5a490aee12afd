r"""Whether each checkpoint of a train.py run completes held-out photographs better or worse than
its neighbours: the check that the exported (last) checkpoint is not worse than the end of phase 1.

A GAN phase that is too short or too strong can leave the completion network worse than it was
after phase 1 (MSE alone): at the demo's scale 150 phase-3 steps filled painted strokes with a
magenta/green checkerboard. Loss curves do not show that; completions of photographs the run
never saw do. For every checkpoint (every ckpt-N.index) of every run folder this measures, on
the photographs of --test_dir (glcic_tf.sample_data's test/: chelsea, camera, coins):

(a) at each photograph's OWN size, with masks.protocol_mask("strokes", 0, i, h, w) (what a user
    paints), completed with photos.inpaint (float32, no post-processing):
    - high-frequency energy in the hole: mean over hole pixels of sum over RGB of
      |x - blur3x3(x)|, x in [0, 1]. A checkerboard or speckle scores far above the photograph
      itself; a smooth (blurry) fill scores below it. Also for the photograph (what the hole
      hides) and for OpenCV Telea (a smooth classical fill), for scale; and for the model's
      completion with the paper's post-processing (photos.postprocess), as the page offers it.
    - hole PSNR (metrics.image_metrics), and that of the mean-pixel fill, the floor a model
      must beat.
    - mean RGB (0-255) in the hole, model vs photograph: a colour cast (magenta, green) shows here.
(b) the paper's protocol at the demo's scale: evaluation.evaluation_images at 128x128 (shortest
    edge resized, centre square), one paper rectangle per image (evaluation.evaluate with the
    "paper" protocol, seed 0), the mean hole PSNR of the model and of the mean fill.

Every value is the mean over the photographs (3 by default: read the differences with that in
mind; the per-photograph table below the main one shows how much they disagree). The phase of
checkpoint ckpt-N is that of its last step (N - 1) under the run's config.json.

    python benchmarks/demo_quality.py --runs=/tmp/demo,/tmp/demo_alpha \
        --test_dir=/tmp/glcic_sample/test --output=/tmp/demo_quality.md
"""

import glob
import json
import os
import re
import time
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
from absl import app, flags, logging

from glcic_tf import completers, evaluation, images, masks, metrics, photos, train_lib

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", None, "train.py run folders (--model_dir) whose checkpoints are measured.", required=True)
flags.DEFINE_string("test_dir", None, "Folder of held-out photographs (glcic_tf.sample_data's test/).", required=True)
flags.DEFINE_string("output", None, "Markdown file the tables are written to (also printed).")
flags.DEFINE_integer("image_size", 128, "Image size of the paper protocol, (b): the demo's crop size.")
flags.DEFINE_list("steps", None, "Only these checkpoint steps (default: every checkpoint of each run).")
flags.DEFINE_string("image_dir", None, "If set, (a)'s completions are written there as RUN-ckpt-N-PHOTO.png, to look at.")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
STROKES_SEED = 0
PAPER_SEED = 0


def high_frequency_energy(image_uint8: np.ndarray, mask: np.ndarray) -> float:
    """Mean over hole pixels of sum over RGB of |x - 3x3 box blur(x)|, x = image / 255."""
    x = image_uint8.astype(np.float32) / 255.0
    detail = np.abs(x - cv2.blur(x, (3, 3))).sum(axis=-1)
    return float(detail[mask[..., 0] > 0.5].mean())


def hole_mean_rgb(image_uint8: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean RGB (0-255) of the hole's pixels."""
    return image_uint8[mask[..., 0] > 0.5].astype(np.float64).mean(axis=0)


def hole_psnr(result_uint8: np.ndarray, target_uint8: np.ndarray, mask: np.ndarray) -> float:
    return metrics.image_metrics(result_uint8 / 255.0, target_uint8 / 255.0, mask)["hole_psnr"]


def checkpoints_of(run: str) -> List[Tuple[int, str]]:
    """(step, prefix) of every ckpt-N of a run folder, by step."""
    found = []
    for index_file in glob.glob(os.path.join(run, "ckpt-*.index")):
        match = re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(index_file))
        if match:
            found.append((int(match.group(1)), index_file[: -len(".index")]))
    return sorted(found)


def phase_of(step: int, config: Dict) -> int:
    """The phase of ckpt-`step` in a run of config.json `config`: that of its last step, step - 1."""
    phases = train_lib.Config(source="", completion_steps=config["completion_steps"], discriminator_steps=config["discriminator_steps"], total_steps=config.get("total_steps", config["completion_steps"] + config["discriminator_steps"]))
    return phases.phase_at(step - 1)


class Photographs:
    """The held-out photographs at their own sizes with their stroke masks, and the 128 squares;
    the measurements that do not depend on the model (photograph, Telea, mean fill) once."""

    def __init__(self, test_dir: str, image_size: int):
        paths = sorted(p for p in glob.glob(os.path.join(test_dir, "*")) if p.lower().endswith(IMAGE_SUFFIXES))
        if not paths:
            raise app.UsageError(f"no images in {test_dir}")
        self.names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
        self.photos = [images.read_image(p) for p in paths]
        self.masks = [masks.protocol_mask("strokes", STROKES_SEED, i, *image.shape[:2]) for i, image in enumerate(self.photos)]
        self.squares = evaluation.evaluation_images(f"folder:{test_dir}", None, image_size)
        self.reference = {
            "hf_photo": [high_frequency_energy(im, m) for im, m in zip(self.photos, self.masks)],
            "hf_telea": [high_frequency_energy(evaluation.baseline("telea", im, m), m) for im, m in zip(self.photos, self.masks)],
            "psnr_mean_fill": [hole_psnr(evaluation.baseline("mean_fill", im, m), im, m) for im, m in zip(self.photos, self.masks)],
            "rgb_photo": [hole_mean_rgb(im, m) for im, m in zip(self.photos, self.masks)],
        }
        rows, _ = evaluation.evaluate(self.squares, ["mean_fill"], "paper", PAPER_SEED)
        self.paper_mean_fill = evaluation.summarise(rows, ["mean_fill"])["mean_fill"]["hole_psnr"]["mean"]

    def measure(self, completer, image_prefix: str = "") -> Dict:
        """Every measurement of one completer: per photograph lists, and (b)'s mean; (a)'s
        completions are written as {image_prefix}{photo}.png when image_prefix is given."""
        results = [photos.inpaint(completer, im, m) for im, m in zip(self.photos, self.masks)]
        if image_prefix:
            for name, result in zip(self.names, results):
                images.write_image(f"{image_prefix}{name}.png", result)
        posts = [photos.postprocess(im, r, m) for im, r, m in zip(self.photos, results, self.masks)]
        rows, _ = evaluation.evaluate(self.squares, ["model"], "paper", PAPER_SEED, completer)
        return {
            "hf_model": [high_frequency_energy(r, m) for r, m in zip(results, self.masks)],
            "psnr_model": [hole_psnr(r, im, m) for r, im, m in zip(results, self.photos, self.masks)],
            "hf_post": [high_frequency_energy(r, m) for r, m in zip(posts, self.masks)],
            "psnr_post": [hole_psnr(r, im, m) for r, im, m in zip(posts, self.photos, self.masks)],
            "rgb_model": [hole_mean_rgb(r, m) for r, m in zip(results, self.masks)],
            "paper_model": evaluation.summarise(rows, ["model"])["model"]["hole_psnr"]["mean"],
        }


def _rgb(values: Sequence[np.ndarray]) -> str:
    return "/".join(f"{v:.0f}" for v in np.mean(values, axis=0))


def tables(photos: Photographs, measured: Sequence[Tuple[str, int, int, Dict]]) -> str:
    """The main table (means over photographs) and the per-photograph one, as Markdown."""
    ref = photos.reference
    lines = [
        f"Held-out photographs: {', '.join(f'{n} {im.shape[1]}x{im.shape[0]}' for n, im in zip(photos.names, photos.images))}; "
        f"(a) strokes masks at their own sizes (hole fractions "
        f"{', '.join(f'{m.mean():.2f}' for m in photos.masks)}), (b) paper protocol at {photos.squares[0].shape[0]}x{photos.squares[0].shape[1]}. "
        "Means over the photographs. HF = high-frequency energy in the hole (photograph's own: "
        "above it is artefacts, below it is smoothing).",
        "",
        "| run | step | phase | (a) HF model | HF post-processed | HF photo | HF telea | hole PSNR model | post-processed "
        "| mean fill | mean RGB model | mean RGB photo | (b) hole PSNR model | (b) mean fill |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for run, step, phase, m in measured:
        lines.append(
            f"| {run} | {step} | {phase} | {np.mean(m['hf_model']):.3f} | {np.mean(m['hf_post']):.3f} | {np.mean(ref['hf_photo']):.3f} | "
            f"{np.mean(ref['hf_telea']):.3f} | {np.mean(m['psnr_model']):.2f} | {np.mean(m['psnr_post']):.2f} | {np.mean(ref['psnr_mean_fill']):.2f} | "
            f"{_rgb(m['rgb_model'])} | {_rgb(ref['rgb_photo'])} | {m['paper_model']:.2f} | {photos.paper_mean_fill:.2f} |"
        )
    names = photos.names
    lines += [
        "",
        "Per photograph, (a): HF model (photo's own) and hole PSNR model (mean fill).",
        "",
        "| run | step | " + " | ".join(f"{n} HF" for n in names) + " | " + " | ".join(f"{n} PSNR" for n in names) + " |",
        "|---|---:|" + "---:|" * (2 * len(names)),
    ]
    for run, step, _, m in measured:
        hf = [f"{v:.3f} ({p:.3f})" for v, p in zip(m["hf_model"], ref["hf_photo"])]
        psnr = [f"{v:.2f} ({p:.2f})" for v, p in zip(m["psnr_model"], ref["psnr_mean_fill"])]
        lines.append(f"| {run} | {step} | " + " | ".join(hf + psnr) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    started = time.time()
    photos = Photographs(FLAGS.test_dir, FLAGS.image_size)
    if FLAGS.image_dir:
        os.makedirs(FLAGS.image_dir, exist_ok=True)
    wanted = None if FLAGS.steps is None else {int(s) for s in FLAGS.steps}
    measured = []
    for run in FLAGS.runs:
        run = run.rstrip("/")
        with open(os.path.join(run, "config.json")) as file:
            config = json.load(file)
        found = checkpoints_of(run)
        if not found:
            raise app.UsageError(f"{run} holds no ckpt-N.index")
        for step, prefix in found:
            if wanted is not None and step not in wanted:
                continue
            completer = completers.load_completer(prefix, precision="float32")
            name = os.path.basename(run)
            image_prefix = os.path.join(FLAGS.image_dir, f"{name}-ckpt-{step}-") if FLAGS.image_dir else ""
            measured.append((name, step, phase_of(step, config), photos.measure(completer, image_prefix)))
            logging.info("%s ckpt-%d: HF %.3f, hole PSNR %.2f", run, step, np.mean(measured[-1][3]["hf_model"]), np.mean(measured[-1][3]["psnr_model"]))
    report = tables(photos, measured)
    print(report)
    if FLAGS.output:
        with open(FLAGS.output, "w") as file:
            file.write(report)
    logging.info("%d checkpoints in %.0f s", len(measured), time.time() - started)


if __name__ == "__main__":
    app.run(main)
