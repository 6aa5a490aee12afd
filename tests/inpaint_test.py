"""The inpaint command as users run it: files, boxes, folders, TF Serving's REST API, bad input."""

import cv2
import in_process
import numpy as np
import pytest
from fake_serving import fake_serving


def _inpaint(*args):
    return in_process.run("inpaint", *args)


def _read(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_completes_a_photograph_with_a_mask_file_and_keeps_the_rest(export_base, sample_folder, tmp_path):
    photo = sample_folder / "test" / "chelsea.png"
    original = _read(photo)
    mask = np.zeros(original.shape[:2], np.uint8)
    mask[100:160, 200:290] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    done = _inpaint(f"--model={export_base}", f"--image={photo}", f"--mask={tmp_path / 'mask.png'}", f"--output={tmp_path / 'out.png'}", "--postprocess")
    assert done.returncode == 0, done.stderr[-2000:]
    result = _read(tmp_path / "out.png")
    assert result.shape == original.shape
    np.testing.assert_array_equal(result[mask == 0], original[mask == 0])
    assert not np.array_equal(result[mask > 0], original[mask > 0])


def test_boxes_on_a_folder_write_one_output_per_image(export_base, sample_folder, tmp_path):
    done = _inpaint(f"--model={export_base}", f"--image={sample_folder / 'test'}", "--box=10,20,40,30", "--box=0,0,8,8", f"--output={tmp_path / 'out'}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["camera.png", "chelsea.png", "coins.png"]


def test_server_mode_speaks_tf_servings_rest_api(export_base, sample_folder, tmp_path):
    photo = sample_folder / "test" / "coins.png"
    with fake_serving(export_base / "3") as (address, requests):
        done = _inpaint(f"--server={address}", f"--image={photo}", "--box=50,60,40,40", f"--output={tmp_path / 'remote.png'}")
    local = _inpaint(f"--model={export_base}", f"--image={photo}", "--box=50,60,40,40", f"--output={tmp_path / 'local.png'}")
    assert len(requests) == 1
    assert done.returncode == 0 and local.returncode == 0, done.stderr[-2000:] + local.stderr[-2000:]
    difference = np.abs(_read(tmp_path / "remote.png").astype(int) - _read(tmp_path / "local.png").astype(int))
    assert difference.max() <= 1  # the same model; PNG round trips may differ by one level


@pytest.mark.parametrize(
    "case,expected",
    [
        ("missing_image", "error: image {tmp}/nope.jpg does not exist"),
        ("wrong_mask_size", "error: mask {tmp}/small.png is 10x10 but the image is 451x300"),
        ("too_large", "error: image {photo} is 451x300, over the limit of 1000 pixels (--max_pixels)"),
        ("too_large_tiff", "error: image {tmp}/photo.tif is 451x300, over the limit of 100000 pixels (--max_pixels)"),
        ("too_large_webp", "error: image {tmp}/photo.webp is 451x300, over the limit of 100000 pixels (--max_pixels)"),
        ("ppm_not_allowed", "error: image {tmp}/photo.ppm is not a readable image file (JPEG, PNG, WebP, GIF, BMP or TIFF)"),
        ("corrupt", "error: image {tmp}/corrupt.png is not a readable image file (JPEG, PNG, WebP, GIF, BMP or TIFF)"),
        ("mask_and_box", "error: give either --mask or --box"),
        ("bad_box", "error: --box '1,2,3' must be four integers x,y,width,height"),
    ],
)
def test_bad_input_is_a_one_line_error_and_writes_nothing(export_base, sample_folder, tmp_path, case, expected):
    photo = sample_folder / "test" / "chelsea.png"
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((10, 10), np.uint8))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    for extension in ("tif", "webp", "ppm"):  # formats whose headers the PNG/JPEG/GIF/BMP check did not read
        cv2.imwrite(str(tmp_path / f"photo.{extension}"), cv2.imread(str(photo)))
    args = {
        "missing_image": [f"--image={tmp_path}/nope.jpg", "--box=1,1,5,5"],
        "wrong_mask_size": [f"--image={photo}", f"--mask={tmp_path}/small.png"],
        "too_large": [f"--image={photo}", "--box=1,1,5,5", "--max_pixels=1000"],
        "too_large_tiff": [f"--image={tmp_path}/photo.tif", "--box=1,1,5,5", "--max_pixels=100000"],
        "too_large_webp": [f"--image={tmp_path}/photo.webp", "--box=1,1,5,5", "--max_pixels=100000"],
        "ppm_not_allowed": [f"--image={tmp_path}/photo.ppm", "--box=1,1,5,5"],
        "corrupt": [f"--image={tmp_path}/corrupt.png", "--box=1,1,5,5"],
        "mask_and_box": [f"--image={photo}", f"--mask={tmp_path}/small.png", "--box=1,1,5,5"],
        "bad_box": [f"--image={photo}", "--box=1,2,3"],
    }[case]
    done = _inpaint(f"--model={export_base}", *args, f"--output={tmp_path / 'out.png'}")
    assert done.returncode == 1
    message = expected.format(tmp=tmp_path, photo=photo)
    assert done.stderr.strip().splitlines()[-1] == message
    assert done.stderr.count(message.removeprefix("error: ")) == 1  # said once, not logged and printed
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.png").exists()


def test_a_folder_with_a_broken_image_writes_the_others_and_fails_naming_it_once(export_base, sample_folder, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("camera.png", "coins.png"):
        (photos / name).write_bytes((sample_folder / "test" / name).read_bytes())
    jpeg = cv2.imencode(".jpg", _read(photos / "coins.png"))[1].tobytes()
    broken = {
        "broken.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 50,
        "a_garbage.jpg": b"\xff\xd8\xff" + np.random.default_rng(0).bytes(500),  # TensorFlow's extract_jpeg_shape raised here
        "b_cut.jpg": jpeg[:150],
        "d_radiance.tif": cv2.imencode(".hdr", np.ones((50, 60, 3), np.float32))[1].tobytes(),  # OpenCV would decode it
    }
    for name, data in broken.items():
        (photos / name).write_bytes(data)
    done = _inpaint(f"--model={export_base}", f"--image={photos}", "--box=10,20,40,30", f"--output={tmp_path / 'out'}")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["camera.png", "coins.png"]
    for name in broken:
        assert done.stderr.count(f"image {photos / name} is not a readable image file") == 1, name
    assert done.stderr.strip().splitlines()[-1] == f"error: 4 of 6 images failed (named above); the other 2 were written to {tmp_path / 'out'}"


def test_an_output_that_cannot_be_written_is_a_one_line_error(export_base, sample_folder, tmp_path):
    photo = sample_folder / "test" / "coins.png"
    (tmp_path / "a_file").write_text("")
    unknown = in_process.run("inpaint", f"--model={export_base}", f"--image={photo}", "--box=5,5,9,9", f"--output={tmp_path / 'out.xyz'}")
    assert unknown.returncode == 1 and unknown.stderr.strip().splitlines()[-1] == f"error: cannot write {tmp_path / 'out.xyz'}: name it .png or .jpg"
    assert f"{photo}: " not in unknown.stderr  # refused before the network ran (its timing line)
    inside_a_file = in_process.run("inpaint", f"--model={export_base}", f"--image={photo}", "--box=5,5,9,9", f"--output={tmp_path / 'a_file' / 'x.png'}")
    assert inside_a_file.returncode == 1 and "Traceback" not in inside_a_file.stderr
    assert inside_a_file.stderr.strip().splitlines()[-1].startswith(f"error: cannot write {tmp_path / 'a_file' / 'x.png'}: ")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]


def test_the_old_name_strategy_still_chooses_the_tiling_and_says_its_new_name(export_base, sample_folder, tmp_path):
    photo = sample_folder / "test" / "coins.png"
    common = [f"--model={export_base}", f"--image={photo}", "--box=5,5,9,9", "--max_network_pixels=1000", f"--output={tmp_path / 'out.png'}"]
    old = in_process.run("inpaint", *common, "--strategy=whole")
    assert old.returncode == 1 and "warning: --strategy is deprecated, its new name is --tiling" in old.stderr
    assert old.stderr.strip().splitlines()[-1].startswith("error: --tiling=whole would run the network on ")  # it took effect
    both = in_process.run("inpaint", *common, "--strategy=whole", "--tiling=auto")
    assert both.returncode == 1 and both.stderr.strip().splitlines()[-1] == "error: --strategy is the old name of --tiling: give --tiling alone"
    bad = in_process.run("inpaint", *common, "--strategy=everything")
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error: --strategy (now --tiling): ")
    assert not (tmp_path / "out.png").exists()


def _copy_photos(sample_folder, folder, names):
    folder.mkdir(exist_ok=True)
    for name, source in names.items():
        image = cv2.imread(str(sample_folder / "test" / source))
        cv2.imwrite(str(folder / name), image)


@pytest.mark.parametrize("hole", ["tap", "line"])
def test_postprocessing_a_tiny_hole_completes_alone_and_in_a_folder(export_base, sample_folder, tmp_path, hole):
    box = {"tap": "--box=50,50,2,2", "line": "--box=50,50,1,30"}[hole]
    photo = sample_folder / "test" / "coins.png"
    alone = _inpaint(f"--model={export_base}", f"--image={photo}", box, "--postprocess", f"--output={tmp_path / 'one.png'}")
    assert alone.returncode == 0, alone.stderr[-2000:]
    folder = _inpaint(f"--model={export_base}", f"--image={sample_folder / 'test'}", box, "--postprocess", f"--output={tmp_path / 'out'}")
    assert folder.returncode == 0, folder.stderr[-2000:]
    assert folder.stdout.strip() == f"wrote 3 completed images to {tmp_path / 'out'}"
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_images_that_would_share_an_output_name_are_refused_before_anything_is_written(export_base, sample_folder, tmp_path):
    _copy_photos(sample_folder, tmp_path / "photos", {"a.png": "coins.png", "a.jpg": "camera.png", "b.png": "chelsea.png", "B.jpg": "coins.png"})
    done = _inpaint(f"--model={export_base}", f"--image={tmp_path / 'photos'}", "--box=5,5,9,9", f"--output={tmp_path / 'out'}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "error: images would be written under one name (B.jpg and b.png; a.jpg and a.png): rename one of each, or complete them separately"
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_an_input_is_refused_and_the_photograph_kept(export_base, sample_folder, tmp_path):
    photos = tmp_path / "photos"
    _copy_photos(sample_folder, photos, {"a.png": "coins.png", "b.jpg": "camera.png"})
    before = {path.name: path.read_bytes() for path in photos.iterdir()}
    in_place = _inpaint(f"--model={export_base}", f"--image={photos / 'a.png'}", "--box=5,5,9,9", f"--output={photos / 'a.png'}")
    assert in_place.returncode == 1
    assert in_place.stderr.strip().splitlines()[-1] == f"error: --output would overwrite the input {photos / 'a.png'}: choose another output"
    same_folder = _inpaint(f"--model={export_base}", f"--image={photos}", "--box=5,5,9,9", f"--output={photos}")
    assert same_folder.returncode == 1
    assert same_folder.stderr.strip().splitlines()[-1] == f"error: --output would overwrite the input {photos / 'a.png'}: choose another output"
    assert {path.name: path.read_bytes() for path in photos.iterdir()} == before


def test_a_planted_link_under_a_temporary_name_is_not_written_through(export_base, sample_folder, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for name in (".out.png.partial", ".out.png.tmp"):  # the names a predictable writer would use
        (tmp_path / name).symlink_to(victim)
    done = _inpaint(f"--model={export_base}", f"--image={sample_folder / 'test' / 'coins.png'}", "--box=5,5,9,9", f"--output={tmp_path / 'out.png'}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert victim.read_text() == "keep me"
    assert cv2.imread(str(tmp_path / "out.png")) is not None
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.endswith(".partial") and not path.is_symlink()) == []


@pytest.mark.parametrize("case", ["dev_null", "folder_output_is_a_file", "no_hole_mask", "box_outside", "two_masks"])
def test_what_a_careless_user_gives_is_one_line_before_the_model_loads(export_base, sample_folder, tmp_path, case):
    photo = sample_folder / "test" / "coins.png"
    height, width = cv2.imread(str(photo)).shape[:2]
    cv2.imwrite(str(tmp_path / "black.png"), np.zeros((height, width), np.uint8))
    (tmp_path / "file").write_text("")
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("coins.png", "coins.jpg"):
        cv2.imwrite(str(masks / name), np.full((height, width), 255, np.uint8))
    _copy_photos(sample_folder, tmp_path / "photos", {"coins.png": "coins.png"})
    args, expected = {
        "dev_null": (["--image=/dev/null", "--box=1,1,5,5", f"--output={tmp_path / 'out.png'}"], "error: --image /dev/null is neither a file nor a folder"),
        "folder_output_is_a_file": (
            [f"--image={sample_folder / 'test'}", "--box=1,1,5,5", f"--output={tmp_path / 'file'}"],
            f"error: --image is a folder, so --output must be a folder, and {tmp_path / 'file'} is a file",
        ),
        "no_hole_mask": (
            [f"--image={photo}", f"--mask={tmp_path / 'black.png'}", f"--output={tmp_path / 'out.png'}"],
            f"error: mask {tmp_path / 'black.png'} marks no hole: white pixels (128 or more) are the hole",
        ),
        "box_outside": (
            [f"--image={photo}", f"--box={width + 5},0,10,10", f"--output={tmp_path / 'out.png'}"],
            f"error: --box {width + 5},0,10,10 lies outside image {photo} ({width}x{height})",
        ),
        "two_masks": (
            [f"--image={tmp_path / 'photos'}", f"--mask={masks}", f"--output={tmp_path / 'out'}"],
            f"error: image coins.png has several masks in {masks} (coins.jpg, coins.png): keep one",
        ),
    }[case]
    done = _inpaint("--model=/nonexistent/model", *args)  # a model that would fail to load: the input is refused first
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == expected
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "out").exists()
