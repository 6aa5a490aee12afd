"""Completing the holes' neighbourhoods instead of the whole photograph, and downscaled copies."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

import tiny
from glcic_tf import inference, models, photos, tiling
from glcic_tf.errors import UserError


@pytest.fixture(scope="module")
def inpainter():
    # Random weights at 1/8 width: the architecture (and so the receptive field) is Table 1's.
    keras_seed = tf.keras.utils.set_random_seed
    keras_seed(4)
    return inference.Inpainter(models.completion_network(tiny.WIDTH), max_network_pixels=4000 * 3000)


@pytest.fixture(scope="module")
def large_photo(sample_folder):
    """A 1200x800 photograph (chelsea, upscaled), float32 in [0, 1]."""
    image = cv2.cvtColor(cv2.imread(str(sample_folder / "test" / "chelsea.png")), cv2.COLOR_BGR2RGB)
    return cv2.resize(image, (1200, 800), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255


class _Counting:
    """An array completer over the Inpainter that records the size of everything it is given."""

    def __init__(self, inpainter):
        self.inpainter, self.shapes = inpainter, []

    def __call__(self, image, mask):
        self.shapes.append(image.shape[:2])
        return self.inpainter(image[None], mask[None])[0].numpy()


def _square_holes(shape, corners, side):
    mask = np.zeros((*shape, 1), np.float32)
    for y, x in corners:
        mask[y : y + side, x : x + side] = 1.0
    return mask


def test_receptive_field_of_table_1_is_153_pixels_each_way():
    assert tiling.MARGIN == models.receptive_radius() == 153


def test_the_network_reads_exactly_153_pixels_away_and_no_farther():
    # Which input rows and columns the completion of a 4x4 block of output pixels (one of each
    # phase of the stride-4 grid) depends on: the margin is tight, not padded for safety.
    tf.keras.utils.set_random_seed(4)
    network = models.completion_network(tiny.WIDTH)
    inputs = tf.Variable(tf.random.uniform([1, 400, 400, 4]))
    reach = []
    for offset in range(4):
        centre = 200 + offset
        with tf.GradientTape() as tape:
            output = tf.reduce_sum(network(inputs, training=False)[0, centre, centre])
        read = np.abs(tape.gradient(output, inputs).numpy()[0]).sum(axis=2) > 0
        rows, cols = np.nonzero(read.any(axis=1))[0], np.nonzero(read.any(axis=0))[0]
        reach += [centre - rows.min(), rows.max() - centre, centre - cols.min(), cols.max() - centre]
    assert max(reach) == tiling.MARGIN


# Hole corners at 153 + 4k and sides of 4k + 2 pixels put both edges of the grown box on the grid:
# the aligned crop then has exactly the margin asked for, no more.
ONE_HOLE = [(301, 497)]
TWO_HOLES = [(165, 169), (573, 973)]
SIDE = 42


@pytest.mark.parametrize("corners", [ONE_HOLE, TWO_HOLES], ids=["one_hole", "two_distant_holes"])
def test_crops_with_the_receptive_field_as_margin_complete_the_holes_as_the_whole_image(inpainter, large_photo, corners):
    mask = _square_holes(large_photo.shape[:2], corners, SIDE)
    whole = inpainter(large_photo[None], mask[None])[0].numpy()
    counting = _Counting(inpainter)
    cropped = tiling.complete(counting, large_photo, mask, "crop")
    hole = mask[..., 0] > 0.5
    assert len(counting.shapes) == len(corners)  # distant holes: one crop each
    assert sum(h * w for h, w in counting.shapes) <= 2 * 348 * 348  # each hole and its margin only
    np.testing.assert_allclose(cropped[hole], whole[hole], atol=1e-4)
    np.testing.assert_array_equal(cropped[~hole], large_photo[~hole])


def test_hole_regions_are_grown_aligned_clipped_and_merged():
    mask = np.zeros((500, 700, 1), np.float32)
    mask[10:20, 10:20] = 1  # near the top-left corner: clipped at 0
    mask[30:40, 200:210] = 1  # overlaps the first one's region once grown: merged with it
    mask[450:460, 650:690] = 1  # alone, near the bottom-right corner: clipped at the image's edge
    regions = tiling.hole_regions(mask, margin=100)
    assert regions == [tiling.Region(0, 0, 140, 312), tiling.Region(348, 548, 500, 700)]
    for region in regions:
        assert region.top % 4 == region.left % 4 == 0


def test_a_phone_photograph_with_one_small_hole_completes_through_inpaint(inpainter):
    image = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    mask = _square_holes(image.shape[:2], [(1436, 1936)], 128)
    result = photos.inpaint(inpainter, image, mask)  # the default tiling crops
    hole = mask[..., 0] > 0.5
    assert result.shape == image.shape and result.dtype == np.uint8
    np.testing.assert_array_equal(result[~hole], image[~hole])
    assert not np.array_equal(result[hole], image[hole])


def test_auto_downscales_a_region_over_the_limit_and_crop_and_whole_refuse_it(inpainter, large_photo):
    mask = _square_holes(large_photo.shape[:2], [(200, 300)], 300)
    limit = 200 * 200
    counting = _Counting(inpainter)
    result = tiling.complete(counting, large_photo, mask, "auto", max_network_pixels=limit)
    assert len(counting.shapes) == 1 and counting.shapes[0][0] * counting.shapes[0][1] <= limit
    hole = mask[..., 0] > 0.5
    np.testing.assert_array_equal(result[~hole], large_photo[~hole])
    # The upscaled completion fills the hole, as the whole image's completion would roughly.
    assert np.abs(result[hole] - large_photo[hole]).mean() > 0.01
    for name in ("crop", "whole"):
        with pytest.raises(UserError, match=f"--tiling={name} would run the network on .* over the limit of {limit}"):
            tiling.complete(counting, large_photo, mask, name, max_network_pixels=limit)
    with pytest.raises(UserError, match="--max_network_pixels must be a positive number of pixels, not 0"):
        tiling.complete(counting, large_photo, mask, "auto", max_network_pixels=0)
    resized = _Counting(inpainter)
    tiling.complete(resized, large_photo, mask, "resize", max_network_pixels=limit)
    assert resized.shapes == [(163, 244)]  # the whole image, downscaled into the limit


def test_the_inpainter_refuses_more_pixels_than_its_limit():
    small = inference.Inpainter(models.completion_network(tiny.WIDTH), max_network_pixels=32 * 32)
    small(tf.zeros([1, 32, 32, 3]), tf.zeros([1, 32, 32, 1]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="larger than 1024 pixels"):
        small(tf.zeros([1, 32, 36, 3]), tf.zeros([1, 32, 36, 1]))


def test_a_region_over_the_models_own_limit_is_a_one_line_error(large_photo):
    small = inference.Inpainter(models.completion_network(tiny.WIDTH), max_network_pixels=64 * 64)
    image = (large_photo[:200, :300] * 255).astype(np.uint8)
    mask = _square_holes(image.shape[:2], [(50, 50)], 20)
    with pytest.raises(UserError, match=r"the model refused a 300x200 region: .*larger than 4096 pixels.*--max_network_pixels"):
        photos.inpaint(small, image, mask, tiling="whole")


def _stroke(shape, start, end, thickness):
    """A thin straight brush stroke (a power line, say) as a (H, W, 1) mask."""
    mask = np.zeros(shape, np.uint8)
    cv2.line(mask, start, end, 255, thickness)
    return (mask > 0).astype(np.float32)[..., None]


def test_tiles_of_a_region_over_the_limit_complete_its_holes_as_the_whole_image(inpainter, large_photo):
    mask = _stroke(large_photo.shape[:2], (10, 20), (1190, 780), 5)  # across the whole photo: its box is all of it
    limit = 500 * 500
    counting = _Counting(inpainter)
    tiled = tiling.complete(counting, large_photo, mask, "crop", max_network_pixels=limit)  # crop tiles whatever it costs
    whole = inpainter(large_photo[None], mask[None])[0].numpy()
    hole = mask[..., 0] > 0.5
    assert len(counting.shapes) > 1 and all(h * w <= limit for h, w in counting.shapes), counting.shapes
    np.testing.assert_allclose(tiled[hole], whole[hole], atol=1e-4)  # full resolution, exact: no downscaling
    np.testing.assert_array_equal(tiled[~hole], large_photo[~hole])
    # At this size the tiles' margins cost more than the photo: auto downscales instead.
    assert [region.scale < 1 for region in tiling.plan(mask, "auto", max_network_pixels=limit)] == [True]


def test_a_power_line_across_a_phone_photo_is_planned_as_full_resolution_tiles():
    # Before: one 4000x3000 box completed at 0.59 scale and scaled back.
    mask = _stroke((3000, 4000), (0, 0), (3999, 2999), 9)
    planned = tiling.plan(mask)
    assert all(region.scale == 1.0 and region.pixels <= tiling.MAX_NETWORK_PIXELS for region in planned)
    assert sum(region.pixels for region in planned) < 0.75 * 4000 * 3000
    filled = np.zeros((3000, 4000), bool)
    for region in planned:  # the tiles' cores cover every hole pixel, each once
        top, left, bottom, right = region.fills
        assert not filled[top:bottom, left:right].any()
        filled[top:bottom, left:right] = True
        assert region.top <= top - 156 or region.top == 0
        assert region.top % 4 == region.left % 4 == 0
    assert filled[mask[..., 0] > 0.5].all()


def test_a_large_solid_hole_is_downscaled_by_auto_and_tiled_by_crop(inpainter, large_photo):
    mask = _square_holes(large_photo.shape[:2], [(200, 300)], 300)
    limit = 500 * 500  # room for tiles, but tiling a solid hole costs more than its crop
    auto = tiling.plan(mask, "auto", max_network_pixels=limit)
    assert len(auto) == 1 and auto[0].scale < 1.0
    counting = _Counting(inpainter)
    cropped = tiling.complete(counting, large_photo, mask, "crop", max_network_pixels=limit)
    assert len(counting.shapes) > 1 and all(h * w <= limit for h, w in counting.shapes)
    hole = mask[..., 0] > 0.5
    whole = inpainter(large_photo[None], mask[None])[0].numpy()
    np.testing.assert_allclose(cropped[hole], whole[hole], atol=1e-4)
