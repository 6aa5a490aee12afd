"""The input pipeline: images from tensorflow-datasets or a folder, cut as the paper trains.

A source is one string:

- `tfds:NAME[:SPLIT]`, any tensorflow-datasets image data set (`tfds:places365_small:train`,
  `tfds:celeb_a:train`), read from `data_dir` (TFDS's default folder when None);
- `folder:PATH`, every JPEG/PNG/BMP/GIF/WebP image under PATH, searched recursively;
- `sample:train` or `sample:test`, the photographs of `glcic_tf.sample_data` (for demos).

Training examples follow the paper (its section on training): shortest edge resized to a
random size in [256, 384], a random 256x256 crop, one hole with sides in [96, 128], the local
discriminator's 128x128 box around it and a random 128x128 box for the real image
(`glcic_tf.masks`). Every size is a parameter with the paper's value as default.

Every example has a global number (0, 1, 2, ... over the whole run, whatever the number of
workers: input pipeline i of n reads numbers i, i + n, ...). Which image number g is, and its
crop, hole and boxes, are stateless functions of (seed, g), so a seed fixes the whole stream
whatever the number of parallel calls or workers, and a restarted run continues it with no
iterator state to save. The order is kept through every parallel step (a slow file delays
its batch rather than moving to another), so step s always holds the examples s*B to (s+1)*B - 1.
Shuffling happens on encoded bytes (or file names), before decoding, to keep buffers small.
"""

import collections
import dataclasses
import functools
import hashlib
import os
import threading
import time
from typing import List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from glcic_tf import image_ops, images, masks, models, sample_data
from glcic_tf.errors import UserError

# Paper: "the smallest edge of each image is resized to a random size in [256, 384], then a
# random 256x256 crop is taken".
SHORTEST_EDGE_RANGE = (256, 384)
CROP_SIZE = models.GLOBAL_SIZE
LOCAL_SIZE = models.LOCAL_SIZE

IMAGE_EXTENSIONS = images.extensions(images.TENSORFLOW_FORMATS)  # what tf.io.decode_image reads
SHUFFLE_BUFFER = 10_000
AUTOTUNE = tf.data.AUTOTUNE

# How many other images of the same epoch stand in, in turn, for a file that cannot be decoded
# before a flat gray image does (positions and seeds stay those of an uninterrupted run).
SUBSTITUTES = 8

# Most pixels a training image may have when it cannot be decoded downscaled (PNG): 50 megapixels,
# 150 MB as RGB bytes. JPEGs are decoded downscaled instead (decode_for_training).
MAX_TRAINING_PIXELS = 50_000_000

# A training file that cannot be read or decoded is read once more after this delay before
# another stands in for it: on a network file system a read can fail and then succeed.
RETRY_DELAY_SECONDS = 0.2


@dataclasses.dataclass(frozen=True)
class Source:
    """A parsed source string: `kind` is "tfds" or "folder"; `split` is for TFDS only."""

    kind: str
    name: str
    split: str = "train"

    def __str__(self):
        return f"tfds:{self.name}:{self.split}" if self.kind == "tfds" else f"folder:{self.name}"


def parse_source(spec: str) -> Source:
    """`tfds:NAME[:SPLIT]`, `folder:PATH` or `sample:train|test` (a folder of glcic_tf.sample_data)
    -> Source; anything else is a UserError."""
    kind, _, rest = spec.partition(":")
    if kind == "folder" and rest:
        return Source("folder", os.path.expanduser(rest))
    if kind == "sample" and rest in ("train", "test"):
        return Source("folder", os.path.join(sample_data.ensure_sample_data(), rest))
    if kind == "tfds" and rest:
        name, _, split = rest.partition(":")
        return Source("tfds", name, split or "train")
    raise UserError(f"source {spec!r} is not of the form tfds:NAME[:SPLIT], folder:PATH or sample:train|test")


# --- Folders -------------------------------------------------------------------------------


def list_image_files(folder: str) -> List[str]:
    """The names of all files with an image extension under `folder`, sorted; nothing is opened.

    Files are checked where they are decoded (`training_dataset`), so a folder of millions of
    photographs starts in seconds. Missing or image-less folders are one-line UserErrors.
    """
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise UserError(f"image folder {folder} {what}")
    files = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder, followlinks=True)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not files:
        raise UserError(f"image folder {folder} holds no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} files")
    logging.info("found %d image files in %s", len(files), folder)
    return files


@functools.lru_cache(maxsize=2)
def _file_table(folder: str, modified_ns: int) -> tf.Tensor:
    """`list_image_files` as one string tensor, listed once per process (and per change of the
    folder's own modification time) however many pipelines read it."""
    del modified_ns  # part of the cache key only
    return tf.constant(list_image_files(folder))


def image_file_table(folder: str) -> tf.Tensor:
    """The sorted image file names under `folder` as a string tensor (cached: see _file_table)."""
    if not os.path.isdir(folder):
        list_image_files(folder)  # the one-line error
    return _file_table(folder, os.stat(folder).st_mtime_ns)


_broken_files = collections.Counter()
_broken_lock = threading.Lock()


def _note_broken(path, substitute, retried=False) -> bool:
    """Logs a file that could not be decoded and what took its place (once per file and process),
    or one that was read again after an error and then decoded (each time)."""
    path, substitute = path.numpy().decode(), substitute.numpy().decode()
    if bool(retried):
        logging.warning("read %s again after an error (%.1f s later), and it decoded: a passing read error?", path, RETRY_DELAY_SECONDS)
        return True
    with _broken_lock:
        _broken_files[path] += 1
        first_time, count = _broken_files[path] == 1, len(_broken_files)
    if first_time:
        logging.warning(
            "skipping %s: not a readable image, or one over %d megapixels (%d broken file%s so far); %s takes its place",
            path, MAX_TRAINING_PIXELS // 1_000_000, count, "s" if count > 1 else "", substitute or "a gray image",
        )
    return True


def fingerprint(source: str, data_dir: Optional[str] = None) -> dict:
    """What identifies a source's data, beyond its name: a folder's file count and a hash of its
    sorted file names relative to it (so a folder that gained or lost files differs, and a moved
    one does not); a TFDS split's name, version and example count (None where TFDS has none)."""
    parsed = parse_source(source)
    if parsed.kind == "folder":
        names = [os.path.relpath(name.decode(), parsed.name) for name in image_file_table(parsed.name).numpy()]
        return {"kind": "folder", "files": len(names), "names_sha1": hashlib.sha1("\n".join(names).encode()).hexdigest()}
    builder = _tfds_builder(parsed, data_dir)
    try:
        examples = builder.info.splits[parsed.split].num_examples
    except (KeyError, ValueError):
        examples = None
    return {"kind": "tfds", "name": parsed.name, "split": parsed.split, "version": str(builder.version), "examples": examples}


# --- TensorFlow Datasets -------------------------------------------------------------------


def _tfds_builder(source: Source, data_dir: Optional[str]):
    try:
        return tfds.builder(source.name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(f"tensorflow-datasets has no data set named {source.name!r} (see tfds.list_builders())") from None


def _image_feature(builder) -> str:
    for key, feature in builder.info.features.items():
        if isinstance(feature, tfds.features.Image):
            return key
    raise UserError(f"data set {builder.name} has no image feature (features: {list(builder.info.features)})")


def _tfds_encoded_images(source, data_dir) -> tf.data.Dataset:
    """Encoded image bytes of a TFDS split in its prepared order; fails at once if not prepared."""
    builder = _tfds_builder(source, data_dir)
    key = _image_feature(builder)
    # One file after another, parsed in order: the same order on every read (see _tfds_stream).
    options = tf.data.Options()
    options.deterministic = True
    read_config = tfds.ReadConfig(options=options, interleave_cycle_length=1)
    try:
        dataset = builder.as_dataset(
            split=source.split,
            shuffle_files=False,
            decoders={key: tfds.decode.SkipDecoding()},
            read_config=read_config,
        )
    except AssertionError:  # what TFDS raises for a data set that was never prepared
        raise UserError(
            f"TFDS data set {source.name} is not prepared in {builder.data_dir}: prepare it once with "
            f"`tfds build {source.name} --data_dir={os.path.dirname(os.path.dirname(builder.data_dir))}` "
            f"(downloads the data; some data sets need a manual download, see "
            f"https://www.tensorflow.org/datasets/catalog/{source.name}), pass --data_dir=<where it is "
            f"prepared>, or use a folder source: folder:PATH"
        ) from None
    except (ValueError, KeyError) as error:
        raise UserError(f"cannot read split {source.split!r} of TFDS data set {source.name}: {error}") from None
    return dataset.map(lambda example: example[key], num_parallel_calls=AUTOTUNE, deterministic=True)


# --- Decoding and the paper's transformations ----------------------------------------------


def decode_rgb(encoded) -> tf.Tensor:
    """Encoded JPEG/PNG/BMP/GIF/WebP bytes -> (H, W, 3) uint8; grayscale and RGBA become RGB."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


def decode_for_training(encoded, shortest_edge: int, max_pixels: int = MAX_TRAINING_PIXELS) -> tf.Tensor:
    """`decode_rgb`, bounded for training: a JPEG is decoded downscaled (by 2, 4 or 8 in its DCT,
    which costs a fraction of a full decode) while its shortest edge stays at least
    `shortest_edge`, the largest the crop is cut from; a PNG, GIF, BMP or WebP whose header
    announces more than `max_pixels` (glcic_tf.image_ops.announced_size) fails before decoding (the pipeline then substitutes it, with a warning). A
    100-megapixel photograph would otherwise cost gigabytes as float32, with 16 in flight. As
    everywhere, a GIF is decoded from its first frame alone and a JPEG of more scans than any
    encoder writes fails (glcic_tf.image_ops.bounded_in_graph)."""
    bounded, checks = image_ops.bounded_in_graph(encoded, "the training image")
    with tf.control_dependencies(checks):
        encoded = tf.identity(bounded)

    def jpeg():
        size = tf.image.extract_jpeg_shape(encoded)
        halvings = tf.reduce_sum(tf.cast(tf.reduce_min(size[:2]) >= shortest_edge * tf.constant([2, 4, 8]), tf.int32))
        branches = [lambda ratio=ratio: tf.io.decode_jpeg(encoded, channels=3, ratio=ratio) for ratio in (1, 2, 4, 8)]
        return tf.switch_case(halvings, branches)

    def other():
        size = image_ops.announced_size(encoded)  # PNG, GIF, BMP, WebP: the header's size; [0, 0] for others, which decode_rgb refuses
        check = tf.debugging.Assert(size[0] * size[1] <= max_pixels, ["image over the pixel limit"])
        with tf.control_dependencies([check]):
            return decode_rgb(encoded)

    image = tf.cond(tf.equal(tf.strings.substr(encoded, 0, 3), b"\xff\xd8\xff"), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def resize_shortest_edge(image, edge) -> tf.Tensor:
    """Scale so that the shortest edge becomes `edge` pixels; float32 in [0, 1] out."""
    image = tf.image.convert_image_dtype(image, tf.float32)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.cast(edge, tf.float32) / tf.reduce_min(shape)
    size = tf.cast(tf.round(shape * scale), tf.int32)
    resized = tf.image.resize(image, tf.maximum(size, edge), method="bilinear", antialias=True)
    return tf.clip_by_value(resized, 0.0, 1.0)


def random_rescale_crop(image, seed, edge_range=SHORTEST_EDGE_RANGE, crop_size=CROP_SIZE) -> tf.Tensor:
    """The paper's augmentation: shortest edge to a random size in `edge_range`, random square crop."""
    if not crop_size <= edge_range[0] <= edge_range[1]:
        raise ValueError(f"edge range {edge_range} must start at or above the crop size {crop_size}")
    seeds = tf.random.experimental.stateless_split(seed, 2)
    edge = tf.random.stateless_uniform([], seeds[0], edge_range[0], edge_range[1] + 1, dtype=tf.int32)
    resized = resize_shortest_edge(image, edge)
    return tf.image.stateless_random_crop(resized, [crop_size, crop_size, 3], seeds[1])


@dataclasses.dataclass(frozen=True)
class TrainingSizes:
    """The sizes of the paper's data protocol; the defaults are the paper's values."""

    crop_size: int = CROP_SIZE
    edge_range: Tuple[int, int] = SHORTEST_EDGE_RANGE
    hole_range: Tuple[int, int] = masks.HOLE_SIDE_RANGE
    local_size: int = LOCAL_SIZE
    # Not the paper's: "free_form" brush strokes, or "mixed" (free-form with this probability).
    hole_shape: str = "rectangle"
    free_form: masks.FreeForm = masks.FreeForm()
    free_form_probability: float = 0.5

    def __post_init__(self):
        if not self.hole_range[1] <= self.local_size <= self.crop_size:
            raise ValueError(f"need largest hole side <= local size <= crop size, got {self}")
        if self.hole_shape not in masks.HOLE_SHAPES or not 0 <= self.free_form_probability <= 1:
            raise ValueError(f"hole shape must be one of {masks.HOLE_SHAPES} and the free-form probability in [0, 1], got {self}")


@dataclasses.dataclass(frozen=True)
class Augmentations:
    """Changes to each training crop before its hole is drawn; not the paper's, so off by default.

    The paper trained on 8 million photographs with the random rescale and crop only. A demo
    on a dozen photographs needs more variety, or the network learns to recognise which
    photograph it sees and recall its colours instead of reading the hole's surroundings.
    All zero (the default) is the identity.
    """

    flip: bool = False  # mirror left-right with probability 1/2
    hue: float = 0.0  # rotate the hue by up to this fraction of a turn each way (at most 0.5)
    saturation: float = 0.0  # scale the saturation by a factor in [1 - s, 1 + s]
    brightness: float = 0.0  # add the same value in [-b, b] to every channel
    contrast: float = 0.0  # scale the contrast about the mean by a factor in [1 - c, 1 + c]
    grayscale: float = 0.0  # probability of turning the crop into a gray photograph

    def __post_init__(self):
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue change must be in [0, 0.5] (a fraction of a turn), got {self.hue}")
        if not (0 <= self.saturation < 1 and 0 <= self.contrast < 1 and 0 <= self.brightness <= 1):
            raise ValueError(f"saturation and contrast changes must be in [0, 1), brightness in [0, 1], got {self}")
        if not 0 <= self.grayscale <= 1:
            raise ValueError(f"grayscale probability must be in [0, 1], got {self.grayscale}")


def augment(image, seed, augmentations: Augmentations = Augmentations()) -> tf.Tensor:
    """`image` (H, W, 3) float32 in [0, 1] changed as `augmentations` says, from a stateless seed.

    Each change draws from its own seed, so the same (seed, example) always gives the same
    photograph and switching one change on or off leaves the others' draws alone.
    """
    a = augmentations
    seeds = tf.random.experimental.stateless_split(seed, 6)
    if a.flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    if a.hue:
        image = tf.image.stateless_random_hue(image, a.hue, seeds[1])
    if a.saturation:
        image = tf.image.stateless_random_saturation(image, 1 - a.saturation, 1 + a.saturation, seeds[2])
    if a.brightness:
        image = tf.image.stateless_random_brightness(image, a.brightness, seeds[3])
    if a.contrast:
        image = tf.image.stateless_random_contrast(image, 1 - a.contrast, 1 + a.contrast, seeds[4])
    if a.grayscale:
        gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
        image = tf.where(tf.random.stateless_uniform([], seeds[5]) < a.grayscale, gray, image)
    if a != Augmentations():
        image = tf.clip_by_value(image, 0.0, 1.0)
    return image


def training_hole(seed, sizes: TrainingSizes = TrainingSizes()) -> Tuple[tf.Tensor, tf.Tensor]:
    """One training hole as (mask (S, S, 1), bounding box [y, x, height, width]) of `sizes.hole_shape`."""

    def rectangle():  # from `seed` itself, not a fold of it: a run of rectangles draws the same holes whatever other shapes exist
        box = masks.sample_hole(seed, sizes.crop_size, sizes.hole_range)
        return masks.box_to_mask(box, sizes.crop_size, sizes.crop_size), box

    def free_form():
        mask = masks.free_form_mask(tf.random.experimental.stateless_fold_in(seed, 1), sizes.crop_size, sizes.free_form)
        return mask, masks.bounding_box(mask)

    if sizes.hole_shape == "rectangle":
        return rectangle()
    if sizes.hole_shape == "free_form":
        return free_form()
    draw = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 2)) < sizes.free_form_probability
    return tf.cond(draw, free_form, rectangle)


def training_example(image, seed, sizes: TrainingSizes = TrainingSizes(), augmentations: Augmentations = Augmentations()) -> dict:
    """One training example from a decoded image and a stateless seed (shape [2]).

    Returns image (S, S, 3) float32 in [0, 1] (cropped, then augmented), mask (S, S, 1) with 1
    in the hole, and int32 boxes [y, x, height, width]: hole_box, local_box (centred on the
    hole, inside the image) and real_local_box (random), both local boxes local_size square.
    Augmentations draw from a seed of their own: crops and holes are those of a run without.
    """
    seeds = tf.random.experimental.stateless_split(seed, 3)
    crop = random_rescale_crop(image, seeds[0], sizes.edge_range, sizes.crop_size)
    crop = augment(crop, tf.random.experimental.stateless_fold_in(seed, 3), augmentations)
    mask, hole_box = training_hole(seeds[1], sizes)
    return {
        "image": crop,
        "mask": mask,
        "hole_box": hole_box,
        "local_box": masks.local_box_around(hole_box, sizes.crop_size, sizes.local_size),
        "real_local_box": masks.random_local_box(seeds[2], sizes.crop_size, sizes.local_size),
    }


# --- Whole pipelines -----------------------------------------------------------------------


def encoded_images(source: str, data_dir: Optional[str] = None) -> tf.data.Dataset:
    """One pass over a whole source as encoded image bytes, in a fixed order: the sorted file
    names, or a TFDS split in its prepared order."""
    parsed = parse_source(source)
    if parsed.kind == "tfds":
        return _tfds_encoded_images(parsed, data_dir)
    return tf.data.Dataset.from_tensor_slices(image_file_table(parsed.name)).map(tf.io.read_file, num_parallel_calls=AUTOTUNE)


def _gray_image():
    return tf.fill([1, 1, 3], tf.constant(128, tf.uint8))


def _after_a_pause(*values):
    """`values`, RETRY_DELAY_SECONDS later (a sleep that holds no lock TensorFlow needs)."""
    slept = tf.py_function(lambda: time.sleep(RETRY_DELAY_SECONDS) is None, [], tf.bool)
    with tf.control_dependencies([slept]):
        return tuple(tf.identity(value) for value in values)


def _decoded_or_substitute(candidates, read=tf.io.read_file, names=None, decode=decode_rgb, retry=True) -> tf.data.Dataset:
    """The first of `candidates` that decodes (`decode` after `read`), as one (H, W, 3) uint8 image.

    Candidates are read one by one and only until one decodes; if none does, a flat gray image.
    With `retry`, the first candidate is read once more, RETRY_DELAY_SECONDS later, before any
    other stands in: a network file system's passing error is not a broken file. `names`
    (default: the candidates, file names) name them in the warnings.
    """
    names = candidates if names is None else names
    count = tf.shape(candidates, out_type=tf.int64)[0]
    first = tf.data.Dataset.from_tensors((tf.constant(0, tf.int64), False))
    others = tf.data.Dataset.range(1, count).map(lambda index: (index, False))
    if retry:
        again = tf.data.Dataset.from_tensors((tf.constant(0, tf.int64), True))
        first = first.concatenate(again.map(_after_a_pause))
    decoded = (
        first.concatenate(others)
        .map(lambda index, retried: (index, retried, decode(read(candidates[index]))))
        .ignore_errors()
        .concatenate(tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64), False, _gray_image())))
        .take(1)
    )

    def note(index, retried, image):
        substituted = tf.not_equal(index, 0)
        substitute = tf.where(index > 0, names[tf.maximum(index, 0)], "")
        logged = tf.cond(
            substituted | retried, lambda: tf.py_function(_note_broken, [names[0], substitute, retried], tf.bool), lambda: substituted
        )
        with tf.control_dependencies([logged]):
            return tf.identity(image)

    return decoded.map(note)


def _decodes(path: bytes) -> bool:
    try:
        decode_rgb(tf.io.read_file(path))
        return True
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnknownError):
        return False


def _tfds_stream(source, data_dir, seed, numbers, shuffle_buffer) -> tf.data.Dataset:
    """(global number, encoded image, name) of a TFDS split, at the global example numbers `numbers`.

    The split is read in its prepared order (TFDS shuffles examples when it prepares a data
    set), cut into windows of `shuffle_buffer` images, and each window is permuted by a
    stateless shuffle seeded by (seed, epoch, window). So global example g is the same image
    however many input pipelines read and wherever a run restarts, with no iterator state to
    save. Each pipeline reads the whole stream and keeps its own numbers (every n-th): reading
    is cheap beside training (encoded bytes only), and a restart skips at most one epoch's bytes.
    """
    first, step = int(numbers.start), int(numbers.step)
    base = _tfds_encoded_images(parse_source(source), data_dir)
    epoch_size = int(base.cardinality())
    if epoch_size < 0:  # TFDS records it when preparing; count once if it did not
        epoch_size = int(base.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))
    if epoch_size == 0:
        raise UserError(f"TFDS source {source} holds no examples")

    def epoch(number):
        def permute(window_number, window):
            window_seed = tf.random.experimental.stateless_fold_in(tf.stack([tf.constant(seed, tf.int64), number]), window_number)
            return tf.gather(window, tf.random.experimental.stateless_shuffle(tf.range(tf.size(window)), window_seed))

        shuffled = base.batch(shuffle_buffer).enumerate().map(permute).unbatch()
        return tf.data.Dataset.zip(tf.data.Dataset.range(number * epoch_size, (number + 1) * epoch_size), shuffled)

    start_epoch = first // epoch_size
    stream = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max // epoch_size).flat_map(epoch)
    stream = stream.skip(first - start_epoch * epoch_size).shard(step, 0)
    return stream.map(lambda number, encoded: (number, encoded, tf.strings.format("example {} of " + str(source), number)))


def _positioned_stream(source, data_dir, seed, numbers, shuffle_buffer, decode=decode_rgb) -> tf.data.Dataset:
    """(global example number, decoded image) pairs, endless, at the global numbers `numbers`.

    `numbers` is a range (start, endless, step): input pipeline i of n reads numbers i, i + n, ...
    (from where a run restarts), so the stream of images does not depend on how many pipelines
    read it, and a resumed run, with any number of workers, reads what an uninterrupted one
    would. Folders: number g is file perm_e(g mod N) of epoch e = g // N, where perm_e is a
    stateless permutation of all N files seeded by (seed, e). TFDS: see _tfds_stream. An image
    that cannot be decoded keeps its number: the next files of the permutation stand in for it,
    in turn (SUBSTITUTES of them, then a gray image; for TFDS, a gray image), so broken files
    shift nothing.
    """
    parsed = parse_source(source)
    if parsed.kind == "tfds":

        def decode_example(number, encoded, name):
            image = _decoded_or_substitute(tf.reshape(encoded, [1]), tf.identity, tf.reshape(name, [1]), decode, retry=False)
            return image.map(lambda image: (number, image))

        stream = _tfds_stream(source, data_dir, seed, numbers, shuffle_buffer)
        return stream.interleave(decode_example, cycle_length=16, block_length=1, num_parallel_calls=AUTOTUNE, deterministic=True)
    table = image_file_table(parsed.name)
    count = tf.cast(tf.shape(table)[0], tf.int64)

    def candidates(number):
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), number // count])
        following = (number + tf.range(SUBSTITUTES + 1, dtype=tf.int64)) % count
        indices = tf.random.experimental.index_shuffle(following, epoch_seed, count - 1)
        return number, tf.gather(table, indices)

    def decode_one(number, paths):
        return _decoded_or_substitute(paths, decode=decode).map(lambda image: (number, image))

    # The one check at start-up: the first example's file (or a stand-in) must decode, so a
    # folder of nothing but broken files is an error, not a run on gray images.
    _, first = candidates(tf.constant(numbers.start, tf.int64))
    if not any(_decodes(path) for path in first.numpy()):
        raise UserError(f"image folder {parsed.name} holds no readable images ({len(set(first.numpy()))} tried, none decodes)")

    # One small dataset per example, interleaved in order and in parallel: reads stay lazy.
    positions = tf.data.Dataset.range(numbers.start, np.iinfo(np.int64).max, numbers.step)
    return positions.map(candidates).interleave(
        decode_one, cycle_length=16, block_length=1, num_parallel_calls=AUTOTUNE, deterministic=True
    )


def training_dataset(
    source: str,
    batch_size: int,
    seed: int,
    data_dir: Optional[str] = None,
    sizes: TrainingSizes = TrainingSizes(),
    input_context: Optional[tf.distribute.InputContext] = None,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    start_position: int = 0,
    augmentations: Augmentations = Augmentations(),
) -> tf.data.Dataset:
    """Endless batches of `training_example` dicts, decoded and cut in parallel, prefetched.

    `start_position` is the number of examples this input pipeline has already delivered (a
    resumed run passes step * examples per step). A folder's file that fails to decode is named
    in a warning and another image takes its place (see _positioned_stream).
    """
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    pipelines = input_context.num_input_pipelines if input_context else 1
    # This pipeline's examples are the global numbers pipeline_id, pipeline_id + pipelines, ...
    numbers = range(start_position * pipelines + pipeline_id, np.iinfo(np.int64).max, pipelines)

    def make_example(number, image):
        return training_example(image, tf.stack([tf.constant(seed, tf.int64), number]), sizes, augmentations)

    # Every parallel step keeps the order (deterministic=True), so batch k holds the numbers of
    # step k: a resumed run reads each example once, in its step, with or without op determinism.
    decode = functools.partial(decode_for_training, shortest_edge=sizes.edge_range[1])
    dataset = _positioned_stream(source, data_dir, seed, numbers, shuffle_buffer, decode)
    dataset = dataset.map(make_example, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def distributed_training_dataset(strategy: tf.distribute.Strategy, global_batch_size: int, start_step: int = 0, **kwargs):
    """`training_dataset` split across the strategy's replicas, one input pipeline per worker.

    `start_step` is the training step to continue from: each pipeline skips what it delivered.
    """

    def dataset_fn(input_context):
        batch_size = input_context.get_per_replica_batch_size(global_batch_size)
        start_position = start_step * (global_batch_size // input_context.num_input_pipelines)
        return training_dataset(batch_size=batch_size, input_context=input_context, start_position=start_position, **kwargs)

    return strategy.distribute_datasets_from_function(dataset_fn)


def decoded_images(source: str, data_dir: Optional[str] = None) -> tf.data.Dataset:
    """Every image of a source once, in a fixed order, as (H, W, 3) uint8."""
    dataset = encoded_images(source, data_dir)
    return dataset.map(decode_rgb, num_parallel_calls=AUTOTUNE, deterministic=True).ignore_errors(log_warning=True)


def estimate_mean_pixel(source: str, data_dir: Optional[str] = None, max_images: int = 10_000) -> Tuple[float, float, float]:
    """The mean RGB value in [0, 1] over the first `max_images` images (each image weighs the same)."""
    per_image = decoded_images(source, data_dir).take(max_images).map(
        lambda image: tf.reduce_mean(tf.image.convert_image_dtype(image, tf.float32), axis=[0, 1]),
        num_parallel_calls=AUTOTUNE,
    )
    means = np.array(list(per_image.as_numpy_iterator()))
    return tuple(float(value) for value in means.mean(axis=0))
