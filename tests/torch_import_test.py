"""Converting the authors' Torch7 completion networks: synthetic .t7 files with known random weights,
compared with a forward pass computed independently in NumPy from the same Torch-layout weights."""

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

    message = _refusal(tmp_path, torch7.sequential(_modules_with(modules, 4, padW=0, padH=0)))
    assert "Torch layer 4 (" in message and "(conv2)" in message

    message = _refusal(tmp_path, torch7.sequential(modules[:-1]))  # no sigmoid
    assert "Torch layer 50 (the end of the network)" in message and "nn.Sigmoid" in message

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
