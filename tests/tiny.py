"""The tiny training configuration the tests share: the paper's protocol at 32x32, 1/8 width."""

from glcic_tf import data, train_lib

SIZES = data.TrainingSizes(crop_size=32, edge_range=(32, 40), hole_range=(8, 12), local_size=16)
WIDTH = 0.125

# The same as train.py flags.
FLAGS = [
    "--batch_size=4",
    f"--crop_size={SIZES.crop_size}",
    f"--min_edge={SIZES.edge_range[0]}",
    f"--max_edge={SIZES.edge_range[1]}",
    f"--min_hole={SIZES.hole_range[0]}",
    f"--max_hole={SIZES.hole_range[1]}",
    f"--local_size={SIZES.local_size}",
    f"--width={WIDTH}",
    "--summary_every=1000",
    "--image_every=1000",
]


def config(source: str, **overrides) -> train_lib.Config:
    """A tiny run of `source`: batch 4, these sizes and width, Adam at 1e-3, quiet logs; `overrides` change any setting."""
    settings = dict(
        source=source,
        batch_size=4,
        sizes=SIZES,
        width=WIDTH,
        optimizer="adam",
        learning_rate=1e-3,
        log_every=1000,
        summary_every=1000,
        image_every=1000,
    )
    return train_lib.Config(**{**settings, **overrides})
