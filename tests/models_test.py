"""The built networks against the paper's Tables 1 and 2, written out here independently."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from glcic_tf import models

# Paper Table 1, copied from the paper (not from glcic_tf.models): kind, kernel, dilation,
# stride (2 on a deconv = upsampling by 2), output channels.
PAPER_TABLE_1 = [
    ("conv", 5, 1, 1, 64),
    ("conv", 3, 1, 2, 128),
    ("conv", 3, 1, 1, 128),
    ("conv", 3, 1, 2, 256),
    ("conv", 3, 1, 1, 256),
    ("conv", 3, 1, 1, 256),
    ("conv", 3, 2, 1, 256),
    ("conv", 3, 4, 1, 256),
    ("conv", 3, 8, 1, 256),
    ("conv", 3, 16, 1, 256),
    ("conv", 3, 1, 1, 256),
    ("conv", 3, 1, 1, 256),
    ("deconv", 4, 1, 2, 128),
    ("conv", 3, 1, 1, 128),
    ("deconv", 4, 1, 2, 64),
    ("conv", 3, 1, 1, 32),
    ("conv", 3, 1, 1, 3),
]
PAPER_LOCAL_FILTERS = [64, 128, 256, 512, 512]
PAPER_GLOBAL_FILTERS = [64, 128, 256, 512, 512, 512]

# Counts stated in docs/design.md (weights alone: the paper's 6,063,200).
COMPLETION_PARAMS = 6_075_107
COMPLETION_KERNEL_WEIGHTS = 6_063_200
DISCRIMINATOR_PARAMS = 45_067_137


def _conv_layers(model):
    return [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]


def _followers(model, layer, count):
    """The `count` layers after `layer` in a chain-shaped functional model."""
    index = model.layers.index(layer)
    return model.layers[index + 1 : index + 1 + count]


@pytest.fixture(scope="module")
def completion():
    return models.completion_network()


@pytest.fixture(scope="module")
def disc():
    return models.discriminator()


def test_completion_network_matches_table_1_layer_by_layer(completion):
    convs = _conv_layers(completion)
    assert len(convs) == len(PAPER_TABLE_1)
    for layer, (kind, kernel, dilation, stride, filters) in zip(convs, PAPER_TABLE_1):
        expected_class = keras.layers.Conv2DTranspose if kind == "deconv" else keras.layers.Conv2D
        assert type(layer) is expected_class, layer.name
        assert layer.kernel_size == (kernel, kernel), layer.name
        assert layer.dilation_rate == (dilation, dilation), layer.name
        assert layer.strides == (stride, stride), layer.name
        assert layer.filters == filters, layer.name
        if stride == 1 or kind == "deconv":  # kernel 4, stride 2 "same" pads 1 everywhere, as Torch's
            assert layer.padding == "same", layer.name
        else:  # Torch's symmetric padding (Keras "same" would pad only bottom/right here)
            padding = completion.get_layer(f"{layer.name}_pad")
            assert padding.padding == ((1, 1), (1, 1)) and layer.padding == "valid", layer.name
    dilations = [layer.dilation_rate[0] for layer in convs if layer.dilation_rate[0] > 1]
    assert dilations == [2, 4, 8, 16]


def test_completion_network_batchnorm_relu_after_every_conv_but_the_sigmoid_output(completion):
    convs = _conv_layers(completion)
    for layer in convs[:-1]:
        batchnorm, relu = _followers(completion, layer, 2)
        assert isinstance(batchnorm, keras.layers.BatchNormalization), layer.name
        assert isinstance(relu, keras.layers.ReLU), layer.name
    (output_activation,) = _followers(completion, convs[-1], 1)
    assert output_activation is completion.layers[-1]
    assert output_activation.get_config()["activation"] == "sigmoid"
    assert not any(isinstance(layer, keras.layers.Dense) for layer in completion.layers), "must be fully convolutional"


def test_parameter_counts_are_the_ones_readme_states(completion, disc):
    assert completion.count_params() == COMPLETION_PARAMS
    kernels = sum(int(np.prod(w.shape)) for w in completion.weights if w.path.endswith("kernel"))
    assert kernels == COMPLETION_KERNEL_WEIGHTS
    assert disc.count_params() == DISCRIMINATOR_PARAMS


@pytest.mark.parametrize(
    "branch, size, filters",
    [("local_discriminator", 128, PAPER_LOCAL_FILTERS), ("global_discriminator", 256, PAPER_GLOBAL_FILTERS)],
)
def test_discriminator_branches_match_table_2(disc, branch, size, filters):
    model = disc.get_layer(branch)
    assert model.input_shape == (None, size, size, 3)
    convs = _conv_layers(model)
    assert [layer.filters for layer in convs] == filters
    for layer in convs:
        assert layer.kernel_size == (5, 5) and layer.strides == (2, 2), layer.name
        batchnorm, relu = _followers(model, layer, 2)
        assert isinstance(batchnorm, keras.layers.BatchNormalization)
        assert isinstance(relu, keras.layers.ReLU)
    fc = model.layers[-1]
    assert isinstance(fc, keras.layers.Dense) and fc.units == 1024
    assert model.output_shape == (None, 1024)


def test_discriminator_joins_both_branches_into_one_logit(disc):
    assert [tuple(shape) for shape in disc.input_shape] == [(None, 256, 256, 3), (None, 128, 128, 3)]
    concatenation = disc.get_layer("concatenation")
    assert concatenation.output.shape == (None, 2048)
    head = disc.layers[-1]
    assert isinstance(head, keras.layers.Dense) and head.units == 1
    # The paper's sigmoid is applied by the losses (from logits) and by real_probability.
    assert head.get_config()["activation"] == "linear"


def test_discriminator_gives_one_logit_per_image_at_small_sizes():
    disc = models.discriminator(global_size=64, local_size=32, width=0.125)
    rng = np.random.default_rng(0)
    global_images = rng.uniform(size=(3, 64, 64, 3)).astype("float32")
    local_patches = rng.uniform(size=(3, 32, 32, 3)).astype("float32")
    logit = disc([global_images, local_patches], training=False).numpy()
    assert logit.shape == (3, 1)
    probability = models.real_probability(logit).numpy()
    np.testing.assert_allclose(probability, 1 / (1 + np.exp(-logit)), rtol=1e-6)
    assert np.all((probability > 0) & (probability < 1))


def test_width_scales_hidden_channels_but_not_the_rgb_output():
    convs = _conv_layers(models.completion_network(width=0.25))
    assert [layer.filters for layer in convs] == [max(1, round(row[4] * 0.25)) for row in PAPER_TABLE_1[:-1]] + [3]


@pytest.mark.parametrize("height, width, channel_width", [(36, 52, 1.0), (256, 256, 0.125), (4, 4, 0.125)])
def test_completion_network_keeps_size_and_outputs_in_unit_range(height, width, channel_width):
    network = models.completion_network(width=channel_width)
    rng = np.random.default_rng(1)
    # Extreme inputs push the pre-sigmoid values far out; the output must still be in [0, 1].
    inputs = rng.normal(scale=50.0, size=(2, height, width, 4)).astype("float32")
    for training in (False, True):
        output = network(inputs, training=training).numpy()
        assert output.shape == (2, height, width, 3)
        assert output.min() >= 0.0 and output.max() <= 1.0


def test_completion_input_fills_the_hole_with_the_mean_and_adds_the_mask():
    rng = np.random.default_rng(2)
    image = rng.uniform(size=(2, 8, 12, 3)).astype("float32")
    mask = np.zeros((2, 8, 12, 1), "float32")
    mask[:, 2:5, 3:9] = 1.0
    mean = np.array(models.PLACES2_MEAN_PIXEL, "float32")

    inputs = models.completion_input(image, mask).numpy()

    assert inputs.shape == (2, 8, 12, 4)
    np.testing.assert_array_equal(inputs[..., 3:], mask)
    hole = mask[..., 0] == 1
    # Inside the hole the centred image holds 0, i.e. the mean pixel before centring.
    np.testing.assert_array_equal(inputs[..., :3][hole], 0.0)
    np.testing.assert_allclose(inputs[..., :3][~hole] + mean, image[~hole], atol=1e-6)


def test_composite_keeps_pixels_outside_the_hole_bit_identical():
    rng = np.random.default_rng(3)
    image = rng.uniform(size=(2, 16, 20, 3)).astype("float32")
    completed = rng.uniform(size=(2, 16, 20, 3)).astype("float32")
    completed[:, 0, 0] = np.nan  # a broken network output outside the hole must not leak
    mask = np.zeros((2, 16, 20, 1), "float32")
    mask[0, 4:10, 5:12] = 1.0
    mask[1, 12:, 15:] = 1.0  # a hole touching the border

    result = models.composite(completed, image, mask).numpy()

    hole = np.broadcast_to(mask == 1.0, image.shape)
    assert np.array_equal(result[~hole], image[~hole])  # exact, bit for bit
    assert np.array_equal(result[hole], completed[hole])


def test_without_tensorflow_what_needs_it_names_the_extra_to_install():
    # TensorFlow as if not installed: find_spec finds nothing (what glcic_tf asks).
    hide = "import importlib.util, sys; find = importlib.util.find_spec; importlib.util.find_spec = lambda name, *a: None if name == 'tensorflow' else find(name, *a); "
    result = subprocess.run([sys.executable, "-c", hide + "import glcic_tf.images, glcic_tf.photos; import glcic_tf.models"], capture_output=True, text=True)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]  # uncaught, it ends the program in one line, as the commands' errors
    assert last_line.startswith("error: this part of glcic_tf needs TensorFlow, which is not installed")
    assert "glcic-tf[cpu]" in last_line and "glcic-tf[gpu]" in last_line and "glcic-tf[litert]" in last_line
    other = subprocess.run([sys.executable, "-c", hide + "import glcic_tf; import no_such_module_here"], capture_output=True, text=True)
    assert other.returncode == 1 and "Traceback" in other.stderr and "ModuleNotFoundError: No module named 'no_such_module_here'" in other.stderr  # only ours is one line


def test_flop_counts_match_table_1_and_2_counted_by_hand():
    # Table 1 at 256x256, row by row: output side x output side x kernel² x C_in x C_out
    # multiply-adds; the transposed convolutions (rows 13 and 15) per *input* pixel.
    multiply_adds = (
        256**2 * 25 * 4 * 64
        + 128**2 * 9 * 64 * 128
        + 128**2 * 9 * 128 * 128
        + 64**2 * 9 * 128 * 256
        + 8 * 64**2 * 9 * 256 * 256  # rows 5-12: two convs, four dilated, two convs
        + 64**2 * 16 * 256 * 128  # deconv: 64x64 input pixels
        + 128**2 * 9 * 128 * 128
        + 128**2 * 16 * 128 * 64  # deconv: 128x128 input pixels
        + 256**2 * 9 * 64 * 32
        + 256**2 * 9 * 32 * 3
    )
    assert multiply_adds == 32_554_090_496
    assert models.completion_flops(256) == 2 * multiply_adds  # 65.1 GFLOP
    assert models.completion_flops(512) == 4 * 2 * multiply_adds  # 260 GFLOP
    assert models.completion_flops(512, 256) == 2 * 2 * multiply_adds
    global_branch = 128**2 * 25 * 3 * 64 + 64**2 * 25 * 64 * 128 + 32**2 * 25 * 128 * 256 + 16**2 * 25 * 256 * 512
    global_branch += 8**2 * 25 * 512 * 512 + 4**2 * 25 * 512 * 512 + 4 * 4 * 512 * 1024
    local_branch = 64**2 * 25 * 3 * 64 + 32**2 * 25 * 64 * 128 + 16**2 * 25 * 128 * 256 + 8**2 * 25 * 256 * 512
    local_branch += 4**2 * 25 * 512 * 512 + 4 * 4 * 512 * 1024
    assert models.discriminator_flops() == 2 * (global_branch + local_branch + 2048)


def _training_ops(network, x, strategy=None):
    """The op types of one training-mode call of `network` on `x` (on each replica of `strategy`)."""
    import tensorflow as tf  # noqa: PLC0415

    strategy = strategy or tf.distribute.get_strategy()
    call = tf.function(lambda x: strategy.run(lambda y: network(y, training=True), args=(x,)))
    graph = call.get_concrete_function(tf.TensorSpec(x.shape, x.dtype)).graph.as_graph_def()
    return {node.op for node in graph.node} | {node.op for function in graph.library.function for node in function.node_def}


def test_batchnorm_runs_the_fused_kernel_on_one_replica_and_synchronizes_across_several(two_replicas):
    # Built outside any strategy's scope or inside a two-replica one: on one replica, TensorFlow's
    # fused kernel; on two, Keras's synchronized statistics (an all-reduce, no fused kernel;
    # train_lib_test's two-device test checks the numbers).
    import tensorflow as tf  # noqa: PLC0415

    x = tf.zeros([2, 16, 16, 4])
    one_device = models.completion_network(0.125)
    assert "FusedBatchNormV3" in _training_ops(one_device, x)
    assert "FusedBatchNormV3" not in _training_ops(one_device, x, two_replicas)
    with two_replicas.scope():
        mirrored = models.completion_network(0.125)
    ops = _training_ops(mirrored, x, two_replicas)
    assert "FusedBatchNormV3" not in ops and any("Collective" in op or "NcclAllReduce" in op or "AllReduce" in op for op in ops), sorted(ops)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_fused_batchnorm_trains_exactly_as_keras_batchnorm(policy):
    # Outputs, gradients and moving statistics of a training step equal Keras's own layer's.
    import tensorflow as tf  # noqa: PLC0415

    keras.mixed_precision.set_global_policy(policy)
    try:
        fused, plain = models.BatchNormalization(momentum=0.9, epsilon=1e-5), keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x = tf.random.stateless_normal([4, 6, 5, 8], [1, 1]) * 3.0 + 1.0
    results = []
    for layer in (fused, plain):
        layer.build(x.shape)
        layer.gamma.assign(tf.random.stateless_uniform([8], [1, 2], 0.5, 2.0))
        layer.beta.assign(tf.random.stateless_normal([8], [3, 4]))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(layer(tf.cast(x, layer.compute_dtype), training=True), tf.float32)
            loss = tf.reduce_sum(y**3)
        gradients = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append([y, *gradients, layer.moving_mean, layer.moving_variance])
    for got, expected in zip(*results):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(results[0][-1]), 1.0)  # the moving variance moved
