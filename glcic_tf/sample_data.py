"""A small folder of real photographs for demos and tests, taken from scikit-image's own files.

scikit-image ships a few photographs inside its package (skimage/data); nothing is downloaded.
`write_sample_data(folder)` copies them into `folder/train` and `folder/test`, so that
`folder:<folder>/train` is a training source and `folder/test` holds held-out photographs.
The sources `sample:train` and `sample:test` do the same in a cache folder on first use.

    python -m glcic_tf.sample_data /tmp/glcic_sample
"""

import os
import shutil
import sys
import uuid
from typing import Dict, List

from PIL import Image

from glcic_tf.errors import UserError

# Photographs (not drawings or synthetic images) that scikit-image ships. Grayscale ones
# exercise the grayscale-to-RGB path; the JPEGs the JPEG decoder.
TRAIN_PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "motorcycle_left.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "moon.png",
    "clock_motion.png",
)
TEST_PHOTOS = ("chelsea.png", "camera.png", "coins.png")


def skimage_data_folder() -> str:
    """The folder of photographs inside the installed scikit-image package."""
    try:
        import skimage  # noqa: PLC0415 (optional dependency, only needed here)
    except ImportError:
        raise UserError("the sample data comes from scikit-image: pip install 'glcic-tf[demo]' (or scikit-image)") from None
    return os.path.join(os.path.dirname(skimage.__file__), "data")


def write_sample_data(folder: str) -> Dict[str, List[str]]:
    """Copy the photographs into `folder/train` and `folder/test`; returns the written paths."""
    source = skimage_data_folder()
    written = {}
    for split, names in (("train", TRAIN_PHOTOS), ("test", TEST_PHOTOS)):
        os.makedirs(os.path.join(folder, split), exist_ok=True)
        written[split] = []
        for name in names:
            if not os.path.exists(os.path.join(source, name)):
                raise UserError(f"scikit-image at {source} lacks {name}: install scikit-image>=0.22")
            target = os.path.join(folder, split, name)
            # Written under a name of its own, then renamed: several processes may fill the
            # cache at once (two workers of a run, parallel tests), and none reads half a file.
            # (A unique name, created as any file: mkstemp's would be readable by its owner only.)
            partial = os.path.join(os.path.dirname(target), f".{name}.{uuid.uuid4().hex}.partial")
            try:
                if name.endswith(".png"):
                    # Re-encoded without their colour profile chunk: some carry an sRGB profile that
                    # libpng warns about on every decode, which would flood training logs.
                    with Image.open(os.path.join(source, name)) as photo:
                        photo.info.pop("icc_profile", None)
                        photo.save(partial, format="PNG")
                else:
                    shutil.copyfile(os.path.join(source, name), partial)
                os.replace(partial, target)
            finally:
                if os.path.exists(partial):
                    os.remove(partial)
            written[split].append(target)
    return written


def default_folder() -> str:
    """Where the `sample:train` and `sample:test` sources keep the photographs."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "glcic_tf", "sample_data")


def ensure_sample_data(folder: str = None) -> str:
    """The sample folder, written first if any photograph is missing."""
    folder = folder or default_folder()
    expected = [os.path.join(folder, "train", n) for n in TRAIN_PHOTOS] + [os.path.join(folder, "test", n) for n in TEST_PHOTOS]
    if not all(os.path.exists(path) for path in expected):
        write_sample_data(folder)
    return folder


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: python -m glcic_tf.sample_data FOLDER")
    try:
        written = write_sample_data(argv[1])
    except UserError as error:
        sys.exit(f"error: {error}")
    for split, paths in written.items():
        print(f"{len(paths)} {split} photographs in {os.path.join(argv[1], split)}")


if __name__ == "__main__":
    main(sys.argv)
