"""Converting the authors' Torch7 completion networks: synthetic .t7 files with known random weights,
compared with a forward pass computed independently in NumPy from the same Torch-layout weights."""

import re
import struct

import in_process
import numpy as np
import pytest
import tensorflow as tf

import tiny
import torch7
from glcic_tf import completers, inference, models, torch_import, train_lib
from glcic_tf.errors import UserError

CHANNELS_PER_64 = 4  # width 1/16: 4, 8, 16 and 2 channels where the paper has 64, 128, 256 and 32
MEAN = (0.46, 0.45, 0.42)
SIZES = [(16, 16), (20, 28)]  # one square, one not


def _inputs(height, width, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 1, (2, height, width, 3)).astype(np.float32)
    mask = np.zeros((2, height, width, 1), np.float32)
    mask[0, 3:11, 5:13] = 1
    mask[1, height // 2:, width // 2:] = 1  # a hole at the bottom-right border
    return image, mask


def _reference(modules, image, mask):
    """The authors' inpaint.lua input (image - mean, hole 0, mask channel) through the NumPy forward."""
    centred = (image - np.array(MEAN, np.float32)) * (1 - mask)
    network_input = np.concatenate([centred, mask], axis=-1).transpose(0, 3, 1, 2)
    return torch7.forward(modules, network_input).transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def modules():
    return torch7.completion_modules(CHANNELS_PER_64, seed=0)


@pytest.fixture(scope="module")
def sequential_t7(modules, tmp_path_factory):
    path = tmp_path_factory.mktemp("t7") / "completionnet_sequential.t7"
    torch7.save(path, {"model": torch7.sequential(modules), "mean": np.array(MEAN, np.float32)})  # mean as a tensor
    return path


@pytest.mark.parametrize("container", ["sequential", "gmodule"])
def test_converted_network_equals_the_numpy_reference_at_two_sizes(container, modules, sequential_t7, tmp_path):
    path = sequential_t7
    if container == "gmodule":
        path = tmp_path / "completionnet_gmodule.t7"
        torch7.save(path, {"model": torch7.gmodule(modules), "mean": list(MEAN)})  # mean as a Lua table
    converted = torch_import.convert(str(path))
    assert converted.width == CHANNELS_PER_64 / 64
    assert np.allclose(converted.mean_pixel, MEAN)
    for height, width in SIZES:
        image, mask = _inputs(height, width)
        expected = _reference(modules, image, mask)
        assert expected.std() > 0.1  # the output is spread over (0, 1), so a misalignment shows
        network_input = models.completion_input(image, mask, converted.mean_pixel)
        output = converted.network(network_input, training=False).numpy()
        assert output.shape == (2, height, width, 3)
        np.testing.assert_allclose(output, expected, rtol=0, atol=2e-6)


@pytest.mark.slow
def test_the_command_writes_a_run_that_export_inpainting_and_training_load(modules, sequential_t7, sample_folder, tmp_path):
    run, export = tmp_path / "authors_run", tmp_path / "export"
    command = [f"--t7={sequential_t7}", f"--output={run}"]
    done = in_process.run("convert_torch_weights", *command, f"--export_dir={export}")
    assert done.returncode == 0, done.stderr
    assert "CC BY-NC-SA 4.0" in done.stdout

    image, mask = _inputs(*SIZES[1], seed=1)
    expected = np.where(mask > 0.5, _reference(modules, image, mask), image)  # the hole from the network
    network, mean_pixel, step = completers.load_completion_network(str(run))
    assert step == 0 and np.allclose(mean_pixel, MEAN)
    np.testing.assert_allclose(inference.Inpainter(network, mean_pixel)(image, mask).numpy(), expected, atol=2e-6)
    served = tf.saved_model.load(str(export / "1")).signatures["serving_default"]
    np.testing.assert_allclose(served(image=image, mask=mask)["inpainted"].numpy(), expected, atol=2e-6)

    # Fine-tuning starts from it too (celeba.flags with --init_checkpoint=<converted run>).
    config = train_lib.Config(source=f"folder:{sample_folder}/train", sizes=tiny.SIZES, width=CHANNELS_PER_64 / 64,
                              init_checkpoint=str(run))
    tuned = train_lib.Trainer(config, str(tmp_path / "tuned"))
    for ours, converted in zip(tuned.completion.weights, network.weights):
        np.testing.assert_array_equal(ours.numpy(), converted.numpy())

    listed = in_process.run("convert_torch_weights", command[0], "--list")
    assert listed.returncode == 0 and " 50 nn.Sigmoid" in listed.stdout and "mean pixel (0.46, 0.45, 0.42)" in listed.stdout

    exported = in_process.run("export", f"--model_dir={run}", f"--export_dir={tmp_path / 'cli'}")
    assert exported.returncode == 0 and (tmp_path / "cli" / "1" / "saved_model.pb").exists()  # step 0 -> version 1

    # Refusals: one line, exit 1, nothing written.
    (tmp_path / "a_file").write_text("keep me")
    for args, message in [
        (command, "is not empty"),
        ([command[0], f"--output={tmp_path / 'a_file'}"], "is a file, not a folder"),
        ([command[0], f"--output={tmp_path / 'new'}", f"--export_dir={export}"], "exists already"),
    ]:
        refused = in_process.run("convert_torch_weights", *args)
        assert refused.returncode == 1 and message in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert (tmp_path / "a_file").read_text() == "keep me" and not (tmp_path / "new").exists()


def _modules_with(modules, number, **fields):
    """A copy of `modules` where module `number` (1-based) has other fields."""
    changed = list(modules)
    old = changed[number - 1]
    changed[number - 1] = torch7.TorchClass(old.typename, **{**old.fields, **fields})
    return changed


def _refusal(tmp_path, model) -> str:
    path = tmp_path / "different.t7"
    torch7.save(path, {"model": model, "mean": list(MEAN)})
    with pytest.raises(UserError) as refused:
        torch_import.convert(str(path))
    return str(refused.value)


def test_a_network_that_differs_from_table_1_is_refused_naming_the_first_different_layer(modules, tmp_path):
    # Row 7 of Table 1 (Torch layers 19, 20, 21) is the first dilated convolution, dilation 2.
    message = _refusal(tmp_path, torch7.sequential(_modules_with(modules, 19, dilationW=3, dilationH=3, padW=3, padH=3)))
    assert "Torch layer 19 (nn.SpatialDilatedConvolution 16->16, 3x3, stride 1x1, dilation 3x3, padding 3x3)" in message
    assert "expects SpatialDilatedConvolution 16->16, 3x3, stride 1x1, dilation 2x2, padding 2x2 (dilated_conv7)" in message
    assert message.endswith("there: dilationH is 3, 2 expected")  # the field that differs

    message = _refusal(tmp_path, torch7.sequential(_modules_with(modules, 4, padW=0)))
    assert "Torch layer 4 (" in message and "(conv2) there: padW is 0, 1 expected" in message

    channels = {name: np.ones(5, np.float32) for name in ("running_mean", "running_var", "weight", "bias")}
    message = _refusal(tmp_path, torch7.sequential(_modules_with(modules, 2, **channels)))
    assert "Torch layer 2 (nn.SpatialBatchNormalization of 5 channels)" in message
    assert message.endswith("(conv1_bn) there: running_mean holds 5 numbers (one per channel), 4 expected")

    message = _refusal(tmp_path, torch7.sequential(_modules_with(modules, 37, adjW=1)))
    assert message.endswith("(deconv13) there: adjW is 1, 0 expected")

    message = _refusal(tmp_path, torch7.sequential([*modules[:2], torch7.TorchClass("nn.Tanh"), *modules[3:]]))
    assert message.endswith("which expects nn.ReLU there: its class is nn.Tanh, nn.ReLU expected")

    message = _refusal(tmp_path, torch7.sequential(modules[:-1]))  # no sigmoid
    assert "Torch layer 50 (the end of the network)" in message and "nn.Sigmoid" in message
    assert message.endswith("the file has 49 layers, Table 1 50")

    message = _refusal(tmp_path, torch7.sequential([*modules, torch7.TorchClass("nn.ReLU")]))
    assert "Torch layer 51 (nn.ReLU) follows Table 1's last layer" in message

    assert "branches after nn.SpatialBatchNormalization" in _refusal(tmp_path, torch7.gmodule(modules, branch_after=2))


def test_files_that_are_not_the_authors_format_give_one_line(tmp_path):
    garbage = tmp_path / "garbage.t7"
    garbage.write_bytes(b"\x07\x00\x00\x00 not torch")
    with pytest.raises(UserError, match="is not a readable Torch7 file"):
        torch_import.read_t7(str(garbage))
    with pytest.raises(UserError, match="does not exist"):
        torch_import.read_t7(str(tmp_path / "missing.t7"))
    bare = tmp_path / "bare.t7"
    torch7.save(bare, torch7.sequential([]))
    with pytest.raises(UserError, match=r"does not hold the table \{model = \.\.\., mean = \.\.\.\}"):
        torch_import.read_t7(str(bare))
    no_mean = tmp_path / "no_mean.t7"
    torch7.save(no_mean, {"model": torch7.sequential([])})
    with pytest.raises(UserError, match="'mean' should be three numbers"):
        torch_import.read_t7(str(no_mean))


# --- broken and hostile files: every declared size and type checked before anything big is allocated ---


def _refused_by_the_command(path, *flags) -> str:
    """The command's one line for `path` (exit status 1, no traceback), without the `error: ` prefix."""
    done = in_process.run("convert_torch_weights", f"--t7={path}", *flags)
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0][len("error: "):]


@pytest.fixture
def no_network_built(monkeypatch):
    """Fails a test in which the converter builds a Keras network."""
    def build(width=1.0, name="completion_network"):
        raise AssertionError(f"models.completion_network({width}) was called")
    monkeypatch.setattr(models, "completion_network", build)


def _first_convolution(planes, weight):
    return torch7.TorchClass("nn.SpatialConvolution", nInputPlane=4, nOutputPlane=planes, kW=5, kH=5, dW=1, dH=1,
                             padW=2, padH=2, weight=weight)


def test_a_first_convolution_declaring_512_planes_is_refused_before_a_network_is_built(no_network_built, tmp_path):
    # A file of a few hundred bytes once built an 8x wider network (2.5 GB, 4 s) before it was refused.
    tiny_file = tmp_path / "declares_512_planes.t7"
    model = torch7.sequential([_first_convolution(512, np.zeros(12, np.float32))])
    torch7.save(tiny_file, {"model": model, "mean": list(MEAN)})
    assert tiny_file.stat().st_size < 1000
    expected = "Torch layer 1 (nn.SpatialConvolution): weight holds 12 numbers, 512x4x5x5 = 51200 expected"
    with pytest.raises(UserError, match=re.escape(expected)):
        torch_import.convert(str(tiny_file))
    assert _refused_by_the_command(tiny_file, f"--output={tmp_path / 'run'}") == f"{tiny_file}: {expected}"
    assert not (tmp_path / "run").exists()

    # Its 51,200 numbers all there: consistent, and still wider than the released files.
    wide = tmp_path / "width_8.t7"
    model = torch7.sequential([_first_convolution(512, np.zeros((512, 4, 5, 5), np.float32))])
    torch7.save(wide, {"model": model, "mean": list(MEAN)})
    expected = ("Torch layer 1 (nn.SpatialConvolution): nOutputPlane is 512, at most 64 expected "
                "(width 1, the released files')")
    with pytest.raises(UserError, match=re.escape(expected)):
        torch_import.convert(str(wide))


def test_a_network_that_differs_from_table_1_is_refused_before_a_network_is_built(modules, no_network_built, tmp_path):
    wider = dict(nOutputPlane=3, weight=np.zeros((3, 4, 3, 3), np.float32), bias=np.zeros(3, np.float32))
    message = _refusal(tmp_path, torch7.sequential(_modules_with(modules, 46, **wider)))  # row 16: 32 / 16 planes
    assert "(conv16) there: nOutputPlane is 3, 2 expected" in message


@pytest.mark.parametrize("number, field, value, expected", [
    (1, "nOutputPlane", "abc", "nOutputPlane is 'abc', an integer is expected"),
    (1, "kH", None, "kH is nil (missing), an integer is expected"),
    (4, "nInputPlane", 4.5, "nInputPlane is 4.5, an integer is expected"),
    (4, "padW", -1, "padW is -1, an integer from 0 to 2147483647 is expected"),
    (4, "dH", 0, "dH is 0, an integer from 1 to 2147483647 is expected"),
    (1, "dW", {"a": 1}, "dW is a table, an integer is expected"),
    (1, "kW", torch7.TorchClass("nn.ReLU"), "kW is a nn.ReLU object, an integer is expected"),
    (37, "adjW", True, "adjW is the boolean true, an integer is expected"),
    (19, "dilationW", 2**40, "dilationW is 1099511627776, an integer from 1 to 2147483647 is expected"),
    (1, "weight", "abc", "weight is 'abc', a float tensor of 4x4x5x5 = 400 numbers is expected"),
    (1, "weight", np.zeros(12, np.float32), "weight holds 12 numbers, 4x4x5x5 = 400 expected"),
    (1, "weight", np.zeros((4, 4, 5, 5), np.int64), "weight is a tensor of 400 int64 numbers, a float tensor of 4x4x5x5"),
    (1, "weight", np.zeros((4, 5, 4, 5), np.float32), "weight is 4x5x4x5, 4x4x5x5 expected"),
    (4, "weight", np.full((8, 4, 3, 3), np.nan, np.float32), "weight holds a NaN or an infinite number"),
    (37, "weight", np.zeros((8, 16, 4, 4), np.float32), "weight is 8x16x4x4, 16x8x4x4 expected"),  # [in, out, kh, kw]
    (1, "bias", np.zeros(5, np.float32), "bias holds 5 numbers, 4 expected"),
    (1, "bias", [1, 2, 3, 4], "bias is a table, a float tensor of 4 numbers is expected"),
    (2, "running_mean", "abc", "running_mean is 'abc', a float tensor of one or more numbers is expected"),
    (2, "running_mean", np.zeros(0, np.float32), "running_mean holds 0 numbers, one or more expected"),
    (2, "running_var", np.ones(3, np.float32), "running_var holds 3 numbers, 4 expected"),
    (8, "running_std", np.zeros(8, np.float32), "running_std holds a number below or equal to 0, all above 0 expected"),
    (2, "eps", "abc", "eps is 'abc', a number of at least 0 is expected"),
    (2, "eps", -1e-5, "eps is -1e-05, a number of at least 0 is expected"),
])
def test_a_field_of_a_wrong_type_or_range_gives_one_line_naming_it(
        modules, no_network_built, tmp_path, number, field, value, expected):
    path = tmp_path / "wrong_field.t7"
    torch7.save(path, {"model": torch7.sequential(_modules_with(modules, number, **{field: value})), "mean": list(MEAN)})
    line = f"{path}: Torch layer {number} ({modules[number - 1].typename}): {expected}"
    with pytest.raises(UserError) as refused:
        torch_import.read_t7(str(path))  # what --list prints is checked too
    assert str(refused.value).startswith(line) and "\n" not in str(refused.value)
    assert _refused_by_the_command(path, f"--output={tmp_path / 'run'}").startswith(line)
    assert _refused_by_the_command(path, "--list").startswith(line)


@pytest.mark.parametrize("tensor, expected", [
    (torch7.DeclaredTensor(np.zeros(3), [3], storage_size=10**12),
     "a torch.FloatStorage at byte 64 declares 1000000000000 numbers of 4 bytes, and 12 bytes are left in the file"),
    (torch7.DeclaredTensor(np.zeros(3), [10**8]),  # torchfile alone reads past the storage: a segmentation fault
     "a torch.FloatTensor at byte 0 declares 100000000 numbers up to number 100000000 of its storage, which holds 3"),
    (torch7.DeclaredTensor(np.zeros(3), [10**6], strides=[0]),  # torchfile alone: one number a million times
     "a torch.FloatTensor at byte 0 declares 1000000 numbers up to number 1 of its storage, which holds 3"),
    (torch7.DeclaredTensor(np.zeros(3), [3], offset=3),
     "a torch.FloatTensor at byte 0 declares 3 numbers up to number 5 of its storage, which holds 3"),
    (torch7.DeclaredTensor(np.zeros(3), [-3]), "a torch.FloatTensor at byte 0 declares a negative size"),
], ids=["storage_of_1e12", "past_the_storage", "stride_0", "offset", "negative_size"])
def test_sizes_that_the_file_cannot_hold_are_refused_before_they_are_allocated(monkeypatch, tmp_path, tensor, expected):
    allocated = []
    fromfile = np.fromfile
    monkeypatch.setattr(np, "fromfile",
                        lambda file, dtype, count: allocated.append(count) or fromfile(file, dtype, count))
    path = tmp_path / "lies.t7"
    torch7.save(path, tensor)
    with pytest.raises(UserError, match=re.escape(f"{path} is not a readable Torch7 file: {expected}")):
        torch_import.read_t7(str(path))
    assert all(count * 4 <= path.stat().st_size for count in allocated)
    assert _refused_by_the_command(path, "--list").startswith(f"{path} is not a readable Torch7 file: ")


def test_a_string_longer_than_the_file_is_refused(tmp_path):
    path = tmp_path / "long_string.t7"
    path.write_bytes(struct.pack("<ii", torch7.STRING, 2**31 - 1) + b"abc")
    with pytest.raises(UserError, match="a string at byte 4 declares 2147483647 bytes, and 3 bytes are left in the file"):
        torch_import.read_t7(str(path))


def test_a_malformed_structure_gives_one_line(modules, no_network_built, tmp_path):
    def refusal(model, mean=MEAN) -> str:
        path = tmp_path / "structure.t7"
        torch7.save(path, {"model": model, "mean": list(mean) if isinstance(mean, tuple) else mean})
        with pytest.raises(UserError) as refused:
            torch_import.read_t7(str(path))
        assert _refused_by_the_command(path, "--list") == str(refused.value)
        return str(refused.value).split(": ", 1)[1]

    assert refusal(torch7.sequential([*modules[:3], 7])) == "Torch layer 4 is 7, a Torch module is expected"
    assert refusal(torch7.sequential([torch7.TorchClass("nn.Sequential", modules="abc")])) == (
        "the nn.Sequential before Torch layer 1: modules is 'abc', a list of modules is expected")
    inner = torch7.sequential(modules[:3])
    assert refusal(torch7.sequential([inner, inner])) == (  # shared containers would repeat their layers exponentially
        "the nn.Sequential before Torch layer 4 appears twice in the network; Table 1 is one chain of modules")
    graph = torch7.gmodule(modules)
    graph.fields["forwardnodes"] = "abc"
    assert refusal(graph) == (
        "the nn.gModule before Torch layer 1: forwardnodes is 'abc', a list of nngraph nodes is expected")
    assert refusal(torch7.sequential(modules), "abc") == (
        "'mean' should be three numbers in [0, 1] (the RGB mean), not 'abc'")
    assert refusal(torch7.sequential(modules), ["a", "b", "c"]).endswith("not a table")
    assert refusal(torch7.sequential(modules), [0.5] * 1000).endswith("not [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, ...]")
