"""The input pipeline on real photographs (scikit-image's) and on TFDS mock data, offline."""

import ctypes
import io
import os
import re
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

import crafted_files
import tiny
from glcic_tf import data, sample_data, train_lib
from glcic_tf.errors import UserError

SMALL = data.TrainingSizes(crop_size=64, edge_range=(64, 96), hole_range=(24, 32), local_size=32)


def _batch(source, seed=0, batch_size=4, sizes=SMALL, **kwargs):
    dataset = data.training_dataset(source, batch_size, seed, sizes=sizes, **kwargs)
    return {key: value.numpy() for key, value in next(iter(dataset)).items()}


def test_batches_have_the_paper_shapes_and_types(sample_folder):
    batch = _batch(f"folder:{sample_folder}/train", sizes=data.TrainingSizes())  # the paper's sizes
    assert batch["image"].shape == (4, 256, 256, 3) and batch["image"].dtype == np.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["mask"].shape == (4, 256, 256, 1)
    for key in ("hole_box", "local_box", "real_local_box"):
        assert batch[key].shape == (4, 4) and batch[key].dtype == np.int32
    assert (batch["local_box"][:, 2:] == 128).all()
    sides = batch["hole_box"][:, 2:]
    assert ((96 <= sides) & (sides <= 128)).all()


def test_mask_is_the_hole_box_and_the_local_box_holds_the_hole(sample_folder):
    batch = _batch(f"folder:{sample_folder}/train", batch_size=16)
    for mask, (y, x, h, w), (ly, lx, lh, lw) in zip(batch["mask"], batch["hole_box"], batch["local_box"]):
        assert mask.sum() == h * w and mask[y : y + h, x : x + w].all()
        assert 24 <= h <= 32 and 24 <= w <= 32 and y + h <= 64 and x + w <= 64
        assert lh == lw == 32 and ly <= y and lx <= x and y + h <= ly + 32 and x + w <= lx + 32


def test_crops_come_from_the_photographs_not_from_padding(sample_folder):
    batch = _batch(f"folder:{sample_folder}/train", batch_size=8)
    # Real photographs: every crop has texture, none is constant.
    assert (batch["image"].reshape(8, -1).std(axis=1) > 0.01).all()


def test_same_seed_same_batches_other_seed_other_holes(sample_folder):
    source = f"folder:{sample_folder}/train"
    first, again, other = _batch(source, seed=3), _batch(source, seed=3), _batch(source, seed=4)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["hole_box"], other["hole_box"])


def test_random_rescale_crop_draws_every_shortest_edge_of_the_papers_range_and_no_other(monkeypatch):
    edges = []

    def recording_resize(image, edge):
        edges.append(int(edge))
        return tf.zeros([edge, edge, 3])

    monkeypatch.setattr(data, "resize_shortest_edge", recording_resize)
    image = tf.zeros([3, 5, 3], tf.uint8)
    for index in range(2000):
        crop = data.random_rescale_crop(image, tf.constant([index, 7], tf.int64))  # the paper's defaults
    assert crop.shape == (256, 256, 3)
    # Shortest edge in [256, 384], both ends included (129 values, each drawn about 15 times).
    assert min(edges) == 256 and max(edges) == 384
    assert len(set(edges)) == 129


def _save(path, array):
    Image.fromarray(array).save(path)


@pytest.fixture
def folder_with_bad_files(tmp_path, sample_folder):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(sample_folder / "train" / "rocket.jpg", folder / "good.jpg")
    shutil.copy(sample_folder / "train" / "astronaut.png", folder / "nested" / "good.png")
    jpeg = (sample_folder / "train" / "rocket.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "notes.png").write_text("this is not a picture")
    (folder / "readme.txt").write_text("ignored: not an image extension")
    return folder


def test_corrupt_files_are_skipped_named_and_counted(folder_with_bad_files, caplog):
    # Listed by name (nothing is opened to list them), checked where they are decoded.
    assert [os.path.relpath(f, folder_with_bad_files) for f in data.list_image_files(str(folder_with_bad_files))] == [
        "good.jpg", "nested/good.png", "notes.png", "truncated.jpg"
    ]
    batch = _batch(f"folder:{folder_with_bad_files}", batch_size=16)  # each file four times
    assert batch["image"].shape == (16, 64, 64, 3)
    assert (batch["image"].reshape(16, -1).std(axis=1) > 0.01).all()  # good photographs stood in, not gray
    for name in ("notes.png", "truncated.jpg"):
        assert caplog.text.count(f"skipping {folder_with_bad_files / name}: not a readable image") == 1
    assert re.search(r"\(\d+ broken files so far\)", caplog.text)  # counted over the process


def test_a_run_of_broken_files_longer_than_the_substitutes_gives_a_gray_image(tmp_path, caplog):
    (tmp_path / "notes.png").write_text("not a picture")
    candidates = tf.constant([str(tmp_path / "notes.png")] * (data.SUBSTITUTES + 1))
    (image,) = list(data._decoded_or_substitute(candidates).as_numpy_iterator())
    assert image.shape == (1, 1, 3) and (image == 128).all()
    assert f"skipping {tmp_path / 'notes.png'}: not a readable image" in caplog.text and "a gray image takes its place" in caplog.text


def test_jpeg_with_bytes_after_its_end_marker_is_kept(tmp_path, sample_folder, caplog):
    jpeg = (sample_folder / "train" / "rocket.jpg").read_bytes()
    (tmp_path / "padded.jpg").write_bytes(jpeg + b"\0" * 4096)
    batch = _batch(f"folder:{tmp_path}", batch_size=2)
    assert (batch["image"].reshape(2, -1).std(axis=1) > 0.01).all() and "skipping" not in caplog.text


@pytest.mark.slow
def test_a_resumed_folder_run_reads_what_an_uninterrupted_one_would_despite_broken_files(folder_with_bad_files):
    # What train.py does on a restart at step 5: the input starts at step 5's examples.
    strategy = tf.distribute.get_strategy()
    settings = dict(source=f"folder:{folder_with_bad_files}", seed=0, sizes=SMALL)
    straight = iter(data.distributed_training_dataset(strategy, 3, **settings))
    expected = [next(straight) for _ in range(8)][5:]
    resumed = iter(data.distributed_training_dataset(strategy, 3, start_step=5, **settings))
    for want in expected:
        got = next(resumed)
        for key in want:  # images, masks and every box
            np.testing.assert_array_equal(got[key].numpy(), want[key].numpy(), err_msg=key)


class _OpenedFiles:
    """Names of the files opened in a folder (by any thread or library), via Linux inotify."""

    IN_OPEN, IN_NONBLOCK = 0x20, 0o4000

    def __init__(self, folder):
        self.libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(self.IN_NONBLOCK)
        assert self.fd >= 0 and self.libc.inotify_add_watch(self.fd, str(folder).encode(), self.IN_OPEN) >= 0
        self.names = set()

    def read(self):
        while True:
            try:
                events = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return self.names
            offset = 0
            while offset < len(events):
                _, _, _, length = struct.unpack_from("iIII", events, offset)
                name = events[offset + 16 : offset + 16 + length].rstrip(b"\0").decode()
                self.names.update([name] if name else [])  # the folder itself has no name
                offset += 16 + length


def test_start_up_opens_no_image_beyond_the_first_batches(sample_folder, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    photos = sorted((sample_folder / "train").glob("*.jpg"))
    for index in range(300):  # hard links: a folder of 300 files that costs no disk
        os.link(photos[index % len(photos)], folder / f"{index:04d}.jpg")
    opened = _OpenedFiles(folder)
    config = train_lib.Config(
        source=f"folder:{folder}", batch_size=4, sizes=tiny.SIZES, width=tiny.WIDTH, completion_steps=2, discriminator_steps=0, total_steps=2
    )
    trainer = train_lib.Trainer(config, str(tmp_path / "run"))
    before_the_first_step = len(opened.read())
    trainer.run()
    # Before the first step: the one file start-up checks (measured: 1). After two steps and the
    # preview batch the pipeline has read ahead (parallel decoding, prefetching; measured: 93),
    # never the whole folder.
    assert before_the_first_step <= 8, before_the_first_step
    assert len(opened.read()) < 250
    os.close(opened.fd)


def test_grayscale_rgba_palette_and_bmp_images_become_rgb(tmp_path):
    gray = np.full((70, 90), 200, np.uint8)
    _save(tmp_path / "gray.png", gray)
    _save(tmp_path / "rgba.png", np.dstack([np.full((70, 90, 3), 10, np.uint8), np.zeros((70, 90), np.uint8)]))
    Image.fromarray(gray).convert("P").save(tmp_path / "palette.gif")
    Image.fromarray(np.dstack([gray] * 3)).save(tmp_path / "photo.bmp")
    decoded = {
        os.path.basename(path): data.decode_rgb(tf.io.read_file(path)).numpy()
        for path in data.list_image_files(str(tmp_path))
    }
    assert sorted(decoded) == ["gray.png", "palette.gif", "photo.bmp", "rgba.png"]
    for name, image in decoded.items():
        assert image.shape == (70, 90, 3), name
    assert (decoded["gray.png"] == 200).all() and (decoded["rgba.png"] == 10).all()


def test_shortest_edge_is_resized_into_the_range_before_the_crop():
    image = tf.zeros((300, 600, 3), tf.uint8)
    resized = data.resize_shortest_edge(image, 256)
    assert resized.shape == (256, 512, 3) and resized.dtype == tf.float32


@pytest.mark.parametrize("name,split", [("places365_small", "train"), ("celeb_a", "test")])
def test_tfds_sources_work_offline_with_mock_data(name, split):
    with tfds.testing.mock_data(num_examples=6):
        batch = _batch(f"tfds:{name}:{split}", batch_size=3, sizes=data.TrainingSizes())
    assert batch["image"].shape == (3, 256, 256, 3)


def test_distributed_dataset_gives_each_replica_its_share_of_the_global_batch(sample_folder, two_replicas):
    strategy = two_replicas
    dataset = data.distributed_training_dataset(
        strategy, global_batch_size=6, source=f"folder:{sample_folder}/train", seed=0, sizes=SMALL
    )
    per_replica = strategy.experimental_local_results(next(iter(dataset))["image"])
    assert [images.shape[0] for images in per_replica] == [3, 3]


def test_mean_pixel_estimate_is_exact_on_flat_images(tmp_path):
    _save(tmp_path / "a.png", np.full((8, 8, 3), (255, 0, 51), np.uint8))
    _save(tmp_path / "b.png", np.full((4, 6, 3), (0, 0, 153), np.uint8))
    np.testing.assert_allclose(data.estimate_mean_pixel(f"folder:{tmp_path}"), (0.5, 0.0, 0.4), atol=1e-6)


# --- One-line errors that say what to do ---------------------------------------------------


def _error(source, **kwargs):
    with pytest.raises(UserError) as raised:
        data.training_dataset(source, 2, 0, sizes=SMALL, **kwargs)
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_missing_folder_is_a_one_line_error(tmp_path):
    assert _error(f"folder:{tmp_path}/nope") == f"image folder {tmp_path}/nope does not exist"


def test_empty_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    assert "holds no jpg/jpeg/png" in _error(f"folder:{tmp_path}")


def test_folder_of_only_broken_images_is_a_one_line_error(tmp_path):
    (tmp_path / "x.jpg").write_text("not a jpeg")
    assert "holds no readable images (1 tried, none decodes)" in _error(f"folder:{tmp_path}")


def test_unprepared_tfds_data_set_names_it_the_folder_and_how_to_prepare(tmp_path):
    message = _error("tfds:places365_small:train", data_dir=str(tmp_path))
    assert "places365_small is not prepared in" in message and str(tmp_path) in message
    assert f"tfds build places365_small --data_dir={tmp_path}" in message and "folder:PATH" in message


def test_unknown_tfds_name_and_malformed_source_are_one_line_errors():
    assert "no data set named 'places366'" in _error("tfds:places366")
    assert "is not of the form" in _error("/some/path")


# --- Augmentations (not the paper's; the demo's) -------------------------------------------

ALL_AUGMENTATIONS = data.Augmentations(flip=True, hue=0.5, saturation=0.9, brightness=0.5, contrast=0.9, grayscale=0.5)


def _photograph(sample_folder, name="astronaut.png", size=48):
    image = np.asarray(Image.open(os.path.join(sample_folder, "train", name)).convert("RGB").resize((size, size)))
    return tf.constant(image.astype(np.float32) / 255)


def test_augmentations_off_are_the_identity(sample_folder):
    image = _photograph(sample_folder)
    np.testing.assert_array_equal(data.augment(image, tf.constant([1, 2], tf.int64)).numpy(), image.numpy())


def test_each_augmentation_keeps_shape_and_range_and_repeats_for_the_same_seed(sample_folder):
    image = _photograph(sample_folder)
    for change in (dict(flip=True), dict(hue=0.5), dict(saturation=0.9), dict(brightness=0.5), dict(contrast=0.9), dict(grayscale=1.0)):
        changes = data.Augmentations(**change)
        outputs = {}
        for seed in [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, 5)]:
            out = data.augment(image, tf.constant(seed, tf.int64), changes).numpy()
            assert out.shape == (48, 48, 3) and out.dtype == np.float32, change
            assert 0.0 <= out.min() and out.max() <= 1.0, change
            np.testing.assert_array_equal(out, data.augment(image, tf.constant(seed, tf.int64), changes).numpy())
            outputs[seed] = out
        assert any(not np.array_equal(out, image.numpy()) for out in outputs.values()), f"{change} changed nothing"
        if "grayscale" not in change:  # (grayscale at probability 1 is the same for every seed)
            assert len({out.tobytes() for out in outputs.values()}) > 1, f"{change} is the same for every example"


def test_a_flip_mirrors_and_grayscale_gives_equal_channels(sample_folder):
    image = _photograph(sample_folder).numpy()
    flips = [data.augment(image, tf.constant([0, s], tf.int64), data.Augmentations(flip=True)).numpy() for s in range(8)]
    assert {"mirrored" if np.array_equal(f, image[:, ::-1]) else "same" if np.array_equal(f, image) else "other" for f in flips} == {"mirrored", "same"}
    gray = data.augment(image, tf.constant([0, 0], tf.int64), data.Augmentations(grayscale=1.0)).numpy()
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    np.testing.assert_allclose(gray[..., 0], image @ [0.2989, 0.587, 0.114], atol=1e-3)


def test_augmentations_change_the_photograph_before_the_hole_and_boxes(sample_folder):
    source = f"folder:{sample_folder}/train"
    plain, augmented = _batch(source, batch_size=8), _batch(source, batch_size=8, augmentations=ALL_AUGMENTATIONS)
    for key in ("mask", "hole_box", "local_box", "real_local_box"):  # holes and boxes: those of a run without
        np.testing.assert_array_equal(plain[key], augmented[key])
    assert 0.0 <= augmented["image"].min() and augmented["image"].max() <= 1.0
    # The image is the augmented crop, whole: no hole cut into it, nothing left of the plain crop.
    seed = tf.constant([0, 0], tf.int64)  # example 0 of seed 0 (one input pipeline)
    expected = data.augment(plain["image"][0], tf.random.experimental.stateless_fold_in(seed, 3), ALL_AUGMENTATIONS)
    np.testing.assert_allclose(augmented["image"][0], expected.numpy(), atol=1e-6)
    assert not np.allclose(augmented["image"], plain["image"], atol=0.02)


def test_bad_augmentation_settings_are_errors():
    for bad in (dict(hue=0.6), dict(saturation=1.0), dict(contrast=-0.1), dict(grayscale=1.5), dict(brightness=2.0)):
        with pytest.raises(ValueError):
            data.Augmentations(**bad)


# --- Several input pipelines (workers) read one global stream --------------------------------

CATEGORIES = ("abbey", "beach", "canyon", "desert")


@pytest.fixture
def folder_by_category(tmp_path):
    """Places365's layout: <category>/<number>.png, 4 categories x 8 flat images; file k is gray 10 + 7k."""
    for index in range(32):
        category = tmp_path / CATEGORIES[index // 8]
        category.mkdir(exist_ok=True)
        _save(category / f"{index % 8:08d}.png", np.full((40, 40, 3), 10 + 7 * index, np.uint8))
    return tmp_path


def _examples_by_number(source, pipelines, global_batch=8, start_step=0, steps=4, sizes=tiny.SIZES, data_dir=None):
    """{global example number: example} for `steps` steps read by `pipelines` input pipelines, as workers would."""
    share = global_batch // pipelines
    examples = {}
    for pipeline in range(pipelines):
        context = tf.distribute.InputContext(num_input_pipelines=pipelines, input_pipeline_id=pipeline, num_replicas_in_sync=pipelines)
        dataset = data.training_dataset(
            source, share, seed=3, data_dir=data_dir, sizes=sizes, input_context=context, start_position=start_step * share,
            shuffle_buffer=5,
        )
        for step, batch in enumerate(dataset.take(steps), start=start_step):
            for row in range(share):
                number = (step * share + row) * pipelines + pipeline
                examples[number] = {key: value[row].numpy() for key, value in batch.items()}
    return examples


def _file_index(example):
    """Which file of folder_by_category an example's crop came from (its flat gray level)."""
    return int(round((float(example["image"].mean()) * 255 - 10) / 7))


def test_four_workers_do_not_read_neighbouring_files_together(folder_by_category):
    examples = _examples_by_number(f"folder:{folder_by_category}", pipelines=4, global_batch=4, steps=8)  # one epoch
    files = [[_file_index(examples[step * 4 + worker]) for worker in range(4)] for step in range(8)]
    assert sorted(sum(files, [])) == list(range(32))  # one epoch: every file once
    # Each worker reading its own consecutive files would read 4 files of one category ([0, 1, 2, 3], ...) in 3 of these 8 steps.
    same_category = [row for row in files if len({index // 8 for index in row}) == 1]
    assert not same_category, files


@pytest.mark.slow
@pytest.mark.parametrize("source_kind", ["folder", "tfds"])
def test_the_stream_does_not_depend_on_the_worker_count_and_resumes_with_another(folder_by_category, source_kind):
    def read(pipelines, start_step=0, steps=4):
        if source_kind == "folder":
            return _examples_by_number(f"folder:{folder_by_category}", pipelines, start_step=start_step, steps=steps)
        with tfds.testing.mock_data(num_examples=11):  # epochs that are no multiple of the batch
            return _examples_by_number("tfds:places365_small:train", pipelines, start_step=start_step, steps=steps)

    one = read(1, steps=6)
    assert len(one) == 48 and len({example["image"].tobytes() for example in one.values()}) > 20
    for pipelines, start_step in ((2, 0), (4, 0), (2, 3), (4, 5)):  # a restart at step 3 or 5 with 2 or 4 workers
        other = read(pipelines, start_step, steps=6 - start_step)
        assert sorted(other) == list(range(8 * start_step, 48))
        for number, example in other.items():
            for key, value in example.items():  # the same image, crop, hole and boxes
                np.testing.assert_array_equal(value, one[number][key], err_msg=f"{pipelines} workers, number {number}, {key}")


def test_large_training_jpegs_are_decoded_downscaled_and_oversized_files_refused(tmp_path, caplog):
    photo = cv2.resize(np.asarray(Image.open(sorted(Path(data.sample_data.ensure_sample_data(), "train").glob("*.jpg"))[0]))[..., :3], (2000, 1600))
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="JPEG", quality=95)
    encoded = tf.constant(buffer.getvalue())
    # The shortest edge 1600 halves to 800 and 400 while it stays >= 384 (the paper's largest).
    assert data.decode_for_training(encoded, shortest_edge=384).shape == (400, 500, 3)
    assert data.decode_for_training(encoded, shortest_edge=1600).shape == (1600, 2000, 3)
    # Downscaled in the DCT, the picture is the same one (mean error against a resize, 0-255).
    small = data.decode_for_training(encoded, shortest_edge=384).numpy().astype(float)
    assert np.abs(small - cv2.resize(photo, (500, 400), interpolation=cv2.INTER_AREA)).mean() < 8
    # A PNG announcing 100000x100000 fails before decoding, and a training folder substitutes it.
    _save(tmp_path / "small.png", np.full((40, 40, 3), 90, np.uint8))
    (tmp_path / "bomb.png").write_bytes(crafted_files.png_header_only(100_000, 100_000))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image over the pixel limit"):
        data.decode_for_training(tf.io.read_file(str(tmp_path / "bomb.png")), 384)
    batch = _batch(f"folder:{tmp_path}", batch_size=4, sizes=tiny.SIZES)
    assert np.allclose(batch["image"], 90 / 255, atol=1e-3)  # the small PNG stood in every time
    assert f"skipping {tmp_path / 'bomb.png'}: not a readable image, or one over 50 megapixels" in caplog.text
    # Every format whose header states a size is held to the limit before decoding: a GIF too.
    gif_bomb = b"GIF89a" + struct.pack("<HH", 60_000, 60_000) + b"\0" * 32
    with pytest.raises(tf.errors.InvalidArgumentError, match="image over the pixel limit"):
        data.decode_for_training(tf.constant(gif_bomb), 384)


def test_a_file_whose_first_read_fails_is_read_again_and_named(tmp_path, caplog):
    _save(tmp_path / "photo.png", np.full((40, 40, 3), 77, np.uint8))
    attempts = []

    def flaky(path):  # a network file system's passing error: the first read fails
        attempts.append(path.numpy())
        if len(attempts) == 1:
            raise OSError("Input/output error")
        return tf.io.read_file(path)

    candidates = tf.constant([str(tmp_path / "photo.png"), str(tmp_path / "missing.png")])
    read = lambda path: tf.py_function(flaky, [path], tf.string)  # noqa: E731
    (image,) = list(data._decoded_or_substitute(candidates, read=read).as_numpy_iterator())
    assert (image == 77).all() and len(attempts) == 2  # its own pixels, not a stand-in's
    assert f"read {tmp_path / 'photo.png'} again after an error" in caplog.text and "skipping" not in caplog.text


def test_a_slow_file_delays_its_batch_and_never_moves_an_example_to_another_step(folder_by_category):
    # One large PNG among small ones decodes far slower; every batch must still hold exactly the
    # examples of its own step (a resumed run starts at step s's first number and would
    # otherwise read some examples twice and others never). Before, without --deterministic,
    # 12 of 12 batches held numbers of another step.
    _save(folder_by_category / "beach" / "slow.png", np.full((3000, 3000, 3), 250, np.uint8))
    files = data.list_image_files(str(folder_by_category))
    levels = [250 if name.endswith("slow.png") else 10 + 7 * int(os.path.basename(name)[:-4]) + 7 * 8 * CATEGORIES.index(name.split(os.sep)[-2]) for name in files]
    count, seed = len(files), 3

    def level_of(number):  # which file global example `number` is: perm_e(number mod N), e = number // N
        index = tf.random.experimental.index_shuffle(tf.constant(number % count, tf.int64), tf.constant([seed, number // count], tf.int64), count - 1)
        return levels[int(index)]

    dataset = data.training_dataset(f"folder:{folder_by_category}", 4, seed, sizes=tiny.SIZES)
    for step, batch in enumerate(dataset.take(12)):
        got = [int(round(float(image.numpy().mean()) * 255)) for image in batch["image"]]
        assert got == [level_of(number) for number in range(4 * step, 4 * step + 4)], step


class GlcicTinyPhotos(tfds.core.GeneratorBasedBuilder):
    """A real TFDS data set of 23 flat photographs (example i is gray 10 i), written in 4 shards."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(None, None, 3))}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for index in range(23):
            yield index, {"image": np.full((40, 40, 3), 10 * index, np.uint8)}


@pytest.fixture(scope="module")
def prepared_tfds(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    GlcicTinyPhotos(data_dir=str(data_dir)).download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=4))
    return str(data_dir)


@pytest.mark.slow
def test_a_prepared_tfds_split_in_shards_is_one_stream_for_any_worker_count_and_restart(prepared_tfds):
    # Unlike mock_data (one "file", read as asked), this reads TFDS's shards: its file order and
    # parallel reading must not change which image a number is.
    source = "tfds:glcic_tiny_photos:train"
    one = _examples_by_number(source, 1, steps=6, data_dir=prepared_tfds)
    levels = [int(round(float(one[number]["image"].mean()) * 255 / 10)) for number in range(48)]
    for epoch in range(2):  # 23 examples an epoch: each once, in an order of its own
        assert sorted(levels[23 * epoch : 23 * epoch + 23]) == list(range(23))
    assert levels[:23] != levels[23:46]
    for pipelines, start_step in ((2, 0), (4, 3)):
        other = _examples_by_number(source, pipelines, start_step=start_step, steps=6 - start_step, data_dir=prepared_tfds)
        assert sorted(other) == list(range(8 * start_step, 48))
        for number, example in other.items():
            for key, value in example.items():
                np.testing.assert_array_equal(value, one[number][key], err_msg=f"{pipelines} workers, number {number}, {key}")
    assert data.fingerprint(source, prepared_tfds) == {"kind": "tfds", "name": "glcic_tiny_photos", "split": "train", "version": "1.0.0", "examples": 23}


def test_the_sample_photographs_are_renamed_into_place_so_parallel_starts_never_read_half_a_file(tmp_path, monkeypatch):
    """Two workers of a run (or parallel tests) may fill the sample cache at once: every file is
    written under another name and renamed, so a reader sees it whole or not at all."""
    written, renamed = [], []
    real_save, real_copy, real_replace = Image.Image.save, shutil.copyfile, os.replace
    monkeypatch.setattr(Image.Image, "save", lambda self, path, *a, **k: (written.append(str(path)), real_save(self, path, *a, **k))[1])
    monkeypatch.setattr(shutil, "copyfile", lambda source, path: (written.append(str(path)), real_copy(source, path))[1])
    monkeypatch.setattr(os, "replace", lambda source, target: (renamed.append(str(target)), real_replace(source, target))[1])
    paths = sample_data.write_sample_data(str(tmp_path))
    targets = sorted(path for split in paths.values() for path in split)
    assert len(targets) == len(sample_data.TRAIN_PHOTOS) + len(sample_data.TEST_PHOTOS)
    assert not set(written) & set(targets) and sorted(renamed) == targets
    assert sorted(str(path) for path in tmp_path.rglob("*") if path.is_file()) == targets  # nothing partial left
    umask = os.umask(0)
    os.umask(umask)
    assert {os.stat(path).st_mode & 0o777 for path in targets} == {0o666 & ~umask}  # as any file the user writes
