"""The paper's training holes and the seeded test-time masks."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf import masks


def _many_boxes(count, image_size=256, hole_range=(96, 128), local_size=128):
    """(hole, local, real_local) boxes for `count` seeds, drawn inside tf.data like training."""

    def draw(index):
        seed = tf.stack([tf.constant(7, tf.int64), index])
        seeds = tf.random.experimental.stateless_split(seed, 2)
        hole = masks.sample_hole(seeds[0], image_size, hole_range)
        return hole, masks.local_box_around(hole, image_size, local_size), masks.random_local_box(seeds[1], image_size, local_size)

    batch = next(iter(tf.data.Dataset.range(count).map(draw).batch(count)))
    return [box.numpy() for box in batch]


def test_paper_holes_have_sides_in_96_128_and_lie_inside_the_crop():
    holes, _, _ = _many_boxes(3000)
    y, x, h, w = holes.T
    assert h.min() == 96 and h.max() == 128 and w.min() == 96 and w.max() == 128  # both ends reachable
    assert (y >= 0).all() and (x >= 0).all() and (y + h <= 256).all() and (x + w <= 256).all()
    assert y.min() == 0 and (y + h).max() == 256  # holes reach every border


def test_local_box_is_128_square_inside_the_image_and_contains_the_whole_hole():
    holes, local, real = _many_boxes(3000)
    for boxes in (local, real):
        ly, lx, lh, lw = boxes.T
        assert (lh == 128).all() and (lw == 128).all()
        assert (ly >= 0).all() and (lx >= 0).all() and (ly + 128 <= 256).all() and (lx + 128 <= 256).all()
    y, x, h, w = holes.T
    ly, lx = local[:, 0], local[:, 1]
    assert (ly <= y).all() and (lx <= x).all() and (y + h <= ly + 128).all() and (x + w <= lx + 128).all()
    # Centred on the hole unless the border forced a move.
    free = (y + h // 2 - 64 >= 0) & (y + h // 2 + 64 <= 256)
    assert free.any() and (ly[free] == (y + h // 2 - 64)[free]).all()
    # The real image's box is random, not centred on the hole.
    assert len({tuple(box) for box in real[:, :2]}) > 1000


def test_box_to_mask_is_one_exactly_inside_the_box():
    mask = masks.box_to_mask(tf.constant([3, 5, 4, 2]), 12, 10).numpy()
    expected = np.zeros((12, 10, 1), np.float32)
    expected[3:7, 5:7] = 1
    np.testing.assert_array_equal(mask, expected)


def test_hole_range_larger_than_the_image_is_refused():
    with pytest.raises(ValueError, match="hole sides"):
        masks.sample_hole(tf.constant([1, 2], tf.int64), 64, (96, 128))


@pytest.mark.parametrize("protocol", sorted(masks.MASK_PROTOCOLS))
def test_protocols_are_binary_and_a_pure_function_of_seed_and_index(protocol):
    first = masks.protocol_mask(protocol, seed=1, index=3, height=96, width=128)
    assert first.shape == (96, 128, 1) and first.dtype == np.float32
    assert set(np.unique(first)) == {0.0, 1.0}
    np.testing.assert_array_equal(first, masks.protocol_mask(protocol, seed=1, index=3, height=96, width=128))
    if protocol != "centre":
        assert not np.array_equal(first, masks.protocol_mask(protocol, seed=2, index=3, height=96, width=128))
        assert not np.array_equal(first, masks.protocol_mask(protocol, seed=1, index=4, height=96, width=128))


# Fingerprints of masks drawn on this machine. A change means the protocols changed, and every
# number measured with them: reports would no longer compare.
GOLDEN = {
    ("paper", 0): "9a54a43bb2ac71ca",
    ("rectangles", 0): "689d538d8d3fa929",
    ("strokes", 0): "faf76303657d409d",
}


def _fingerprint(mask):
    return hashlib.sha256(np.packbits(mask.astype(bool)).tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("protocol,seed", sorted(GOLDEN))
def test_masks_are_the_same_on_every_machine(protocol, seed):
    assert _fingerprint(masks.protocol_mask(protocol, seed, 0, 256, 256)) == GOLDEN[(protocol, seed)]


@pytest.mark.parametrize("coverage", [(0.05, 0.1), (0.2, 0.3), (0.4, 0.5)])
def test_strokes_cover_a_fraction_inside_the_asked_range(coverage):
    for index in range(8):
        covered = masks.protocol_mask("strokes", 0, index, 128, 160, coverage=coverage).mean()
        assert coverage[0] <= covered <= coverage[1]


def test_rectangles_and_paper_masks_use_the_asked_sides():
    mask = masks.protocol_mask("paper", 5, 0, 256, 256)[..., 0]
    rows, cols = np.nonzero(mask)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert 96 <= height <= 128 and 96 <= width <= 128 and mask.sum() == height * width
    for index in range(20):  # on smaller pictures, the same fraction of the side: 48-64 at 128
        rows, cols = np.nonzero(masks.protocol_mask("paper", 5, index, 128, 160)[..., 0])
        assert 48 <= rows.max() - rows.min() + 1 <= 64 and 48 <= cols.max() - cols.min() + 1 <= 64
    several = masks.protocol_mask("rectangles", 5, 0, 256, 256, count=(3, 3), side=(10, 10))
    assert 10 * 10 < several.sum() <= 3 * 10 * 10


def test_centre_square_is_centred():
    mask = masks.protocol_mask("centre", 0, 0, 8, 12, fraction=0.5)[..., 0]
    expected = np.zeros((8, 12))
    expected[2:6, 4:8] = 1
    np.testing.assert_array_equal(mask, expected)


def test_unknown_protocol_names_the_choices():
    with pytest.raises(ValueError, match="centre"):
        masks.protocol_mask("circles", 0, 0, 8, 8)


# --- Free-form training holes --------------------------------------------------------------


def _free_form_batch(count, seed=11, sizes=None):
    """`count` training holes of `data.training_hole` drawn inside tf.data, as training does."""
    from glcic_tf import data  # noqa: PLC0415

    sizes = sizes or data.TrainingSizes(crop_size=96, edge_range=(96, 128), hole_range=(32, 40), local_size=48, hole_shape="free_form")

    def draw(index):
        return data.training_hole(tf.stack([tf.constant(seed, tf.int64), index]), sizes)

    masks_, boxes = next(iter(tf.data.Dataset.range(count).map(draw).batch(count)))
    return masks_.numpy(), boxes.numpy(), sizes


def test_free_form_holes_are_binary_cover_the_asked_fraction_differ_and_repeat_for_a_seed():
    holes, boxes, sizes = _free_form_batch(200)
    assert holes.shape == (200, 96, 96, 1) and set(np.unique(holes)) == {0.0, 1.0}
    coverage = holes.mean(axis=(1, 2, 3))
    low, high = sizes.free_form.coverage
    assert (coverage >= low).all() and (coverage <= high).all(), (coverage.min(), coverage.max())
    assert coverage.std() > 0.02  # a range, not one size
    assert len({h.tobytes() for h in holes}) == 200  # every example its own strokes
    again, _, _ = _free_form_batch(5)
    np.testing.assert_array_equal(again, holes[:5])  # the same (seed, example), the same hole
    other, _, _ = _free_form_batch(5, seed=12)
    assert not np.array_equal(other, holes[:5])
    # Strokes, not boxes: a hole fills only part of its bounding box.
    filled = [h.sum() / max(1, box[2] * box[3]) for h, box in zip(holes, boxes)]
    assert np.median(filled) < 0.7


def test_free_form_bounding_box_and_local_box():
    holes, boxes, sizes = _free_form_batch(300)
    crop, local = sizes.crop_size, sizes.local_size
    fits = 0
    for hole, (y, x, h, w) in zip(holes[..., 0], boxes):
        rows, cols = np.nonzero(hole)
        assert (y, x, h, w) == (rows.min(), cols.min(), rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
        ly, lx, lh, lw = masks.local_box_around(tf.constant([y, x, h, w]), crop, local).numpy()
        assert lh == lw == local and 0 <= ly <= crop - local and 0 <= lx <= crop - local  # inside the image
        assert ly <= y + h // 2 < ly + local and lx <= x + w // 2 < lx + local  # around the hole's centre
        if h <= local and w <= local:
            fits += 1
            assert ly <= y and y + h <= ly + local and lx <= x and x + w <= lx + local  # the whole hole
    assert 0 < fits < 300  # both cases occur


def test_mixed_holes_are_either_shape_in_about_the_asked_proportion():
    from glcic_tf import data  # noqa: PLC0415

    sizes = data.TrainingSizes(crop_size=64, edge_range=(64, 80), hole_range=(24, 32), local_size=32, hole_shape="mixed", free_form_probability=0.3)
    holes, boxes, _ = _free_form_batch(400, sizes=sizes)
    rectangles = [h.sum() == box[2] * box[3] and 24 <= box[2] <= 32 and 24 <= box[3] <= 32 for h, box in zip(holes, boxes)]
    assert 0.6 < np.mean(rectangles) < 0.8
