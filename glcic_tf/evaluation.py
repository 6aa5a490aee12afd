"""Comparing completion methods on the same images with the same seeded holes.

Every image is resized (shortest edge to `image_size`, antialiased) and centre-cropped to a
square, as the paper's 256x256 training crops (or, with image_size 0, kept at its own size, as
people complete their photographs); image number i gets the mask
`masks.protocol_mask(protocol, seed, i, ...)`, so every method and every run sees identical holes.

Methods: the model, the model with the paper's post-processing, OpenCV's Telea and Navier-Stokes
inpainting (radius 3) and the mean-pixel fill. Each writes only into the hole.
"""

import csv
import json
import os
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np
import tensorflow as tf

from glcic_tf import data, images, masks, metrics, models, photos
from glcic_tf import tiling as tilings
from glcic_tf.errors import UserError

BASELINES = ("telea", "navier_stokes", "mean_fill")
MODEL_METHODS = ("model", "model_postprocessed")
METHODS = MODEL_METHODS + BASELINES
INPAINT_RADIUS = 3


def evaluation_images(
    source: str, count: Optional[int], image_size: int, data_dir: Optional[str] = None, at_most: bool = False
) -> List[np.ndarray]:
    """The first `count` images of a source (all if None), as image_size squares of uint8, or
    each at its own size for image_size 0. Fewer than `count` is an error, unless `at_most`."""

    def square(image):
        if image_size == 0:
            return image
        resized = data.resize_shortest_edge(image, image_size)
        return tf.image.convert_image_dtype(tf.image.resize_with_crop_or_pad(resized, image_size, image_size), tf.uint8, saturate=True)

    dataset = data.decoded_images(source, data_dir)
    if count is not None:
        dataset = dataset.take(count)
    pictures = [image.numpy() for image in dataset.map(square)]
    if count is not None and len(pictures) < count and not at_most:
        raise UserError(f"{source} has {len(pictures)} readable images, fewer than the {count} asked for (--num_images)")
    return pictures


def baseline(name: str, image: np.ndarray, mask: np.ndarray, mean_pixel: Sequence[float] = models.PLACES2_MEAN_PIXEL) -> np.ndarray:
    """A classical completion of a uint8 image: telea, navier_stokes or mean_fill."""
    hole = (mask[..., 0] > 0.5).astype(np.uint8) * 255
    if name == "telea":
        return cv2.inpaint(image, hole, INPAINT_RADIUS, cv2.INPAINT_TELEA)
    if name == "navier_stokes":
        return cv2.inpaint(image, hole, INPAINT_RADIUS, cv2.INPAINT_NS)
    if name == "mean_fill":
        mean = np.round(np.asarray(mean_pixel) * 255).astype(np.uint8)
        return np.where(hole[..., None] > 0, mean, image)
    raise ValueError(f"unknown baseline {name!r}")


def evaluate(
    pictures: Sequence[np.ndarray],
    methods: Sequence[str],
    protocol: str,
    seed: int,
    completer: Optional[Callable] = None,
    tiling: str = "auto",
    max_network_pixels: int = tilings.MAX_NETWORK_PIXELS,
    progress: Callable = lambda iterable: iterable,
):
    """Per-image metrics of every method, and the completed images: (rows, results).

    `rows`: dicts with image, method and every metric; `results[i][method]`: uint8 image i.
    The model runs as `photos.inpaint` runs it (`tiling`, `max_network_pixels`).
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise UserError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if completer is None and set(methods) & set(MODEL_METHODS):
        raise UserError("the model methods need a model (--model or --server)")
    rows, results = [], []
    for index, image in enumerate(progress(pictures)):
        mask = masks.protocol_mask(protocol, seed, index, *image.shape[:2])
        completed = {}
        for method in methods:
            if method == "model":
                completed[method] = photos.inpaint(completer, image, mask, tiling=tiling, max_network_pixels=max_network_pixels)
            elif method == "model_postprocessed":
                plain = completed.get("model")
                if plain is None:
                    plain = photos.inpaint(completer, image, mask, tiling=tiling, max_network_pixels=max_network_pixels)
                completed[method] = photos.postprocess(image, plain, mask)
            else:
                completed[method] = baseline(method, image, mask)
            values = metrics.image_metrics(completed[method] / 255.0, image / 255.0, mask)
            rows.append({"image": index, "method": method, "hole_fraction": float(mask.mean()), **values})
        results.append({"mask": mask, **completed})
    return rows, results


def summarise(rows: Sequence[Dict], methods: Sequence[str]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Mean and standard deviation of each metric per method (NaNs, e.g. MS-SSIM on small images, left out)."""
    summary = {}
    for method in methods:
        chosen = [row for row in rows if row["method"] == method]
        summary[method] = {}
        for name in metrics.METRICS:
            values = np.array([row[name] for row in chosen], np.float64)
            values = values[np.isfinite(values)]
            summary[method][name] = {
                "mean": float(values.mean()) if values.size else None,
                "std": float(values.std()) if values.size else None,
            }
    return summary


def markdown_table(summary) -> str:
    """The summary as a Markdown table, mean ± standard deviation."""
    names = [n for n in metrics.METRICS if any(summary[m][n]["mean"] is not None for m in summary)]
    lines = ["| method | " + " | ".join(metrics.METRICS[n].heading for n in names) + " |", "|---|" + "---|" * len(names)]
    for method, values in summary.items():
        cells = []
        for name in names:
            mean, std = values[name]["mean"], values[name]["std"]
            digits = metrics.METRICS[name].digits
            cells.append("n/a" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def picture_grid(pictures, results, methods, count: int = 4, tile: int = 0) -> np.ndarray:
    """Rows of: input with the hole (white) | each method | original, with a labelled header.

    tile: width of each picture in pixels (0: the first image's width), e.g. smaller for a README.
    """
    columns = ["input"] + list(methods) + ["original"]
    side = tile or pictures[0].shape[1]
    rows = []
    for image, result in list(zip(pictures, results))[:count]:
        holed = np.where(result["mask"] > 0.5, 255, image).astype(np.uint8)
        pictures = [holed] + [result[m] for m in methods] + [image]
        if side != image.shape[1]:  # the tile's width, the image's aspect ratio
            height = max(1, round(image.shape[0] * side / image.shape[1]))
            pictures = [cv2.resize(picture, (side, height), interpolation=cv2.INTER_AREA) for picture in pictures]
        rows.append(np.concatenate(pictures, axis=1))
    grid = np.concatenate(rows, axis=0)
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, 1
    widest = max(cv2.getTextSize(label, font, 1.0, thickness)[0][0] for label in columns)
    scale = min(0.5, (side - 8) / widest)  # every label fits its column
    header = np.full((max(16, round(56 * scale)), grid.shape[1], 3), 255, np.uint8)
    text_baseline = header.shape[0] - round(16 * scale)
    for index, label in enumerate(columns):
        cv2.putText(header, label, (index * side + 4, text_baseline), font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return np.concatenate([header, grid], axis=0)


def write_report(output_dir: str, rows, summary, settings: Dict, grid: np.ndarray) -> Dict[str, str]:
    """per_image.csv, summary.json, results.md and examples.png in output_dir; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {name: os.path.join(output_dir, name) for name in ("per_image.csv", "summary.json", "results.md", "examples.png")}
    with open(paths["per_image.csv"], "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["image", "method", "hole_fraction", *metrics.METRICS])
        writer.writeheader()
        writer.writerows(rows)
    with open(paths["summary.json"], "w") as file:
        json.dump({**settings, "psnr_cap_db": metrics.PSNR_CAP, "methods": summary}, file, indent=2)
    with open(paths["results.md"], "w") as file:
        file.write(markdown_table(summary))
    images.write_image(paths["examples.png"], grid)
    return paths
