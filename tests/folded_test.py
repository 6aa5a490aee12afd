"""The inference form of the completion network (BatchNorms folded) computes what the Keras one does."""

import numpy as np
import pytest
import tensorflow as tf

import tiny
from glcic_tf import folded, models
from glcic_tf.errors import UserError


def _network_with_trained_statistics(width, seed=0):
    """A completion network whose BatchNorms are far from the identity, as after training."""
    network = models.completion_network(width)
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        if layer.name.endswith("_bn"):
            channels = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 2.0, channels))
            layer.beta.assign(rng.normal(0, 0.5, channels))
            layer.moving_mean.assign(rng.normal(0, 1.0, channels))
            layer.moving_variance.assign(rng.uniform(0.1, 3.0, channels))
    return network


@pytest.mark.parametrize("width, height, image_width", [(tiny.WIDTH, 36, 44), (1.0, 32, 24)])
def test_folded_network_equals_the_keras_network_in_inference_mode(width, height, image_width):
    network = _network_with_trained_statistics(width)
    x = tf.random.stateless_uniform([2, height, image_width, 4], [1, 2], minval=-0.5, maxval=1.0)
    expected = network(x, training=False).numpy()
    got = folded.FoldedCompletionNetwork(network)(x).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.abs(expected - 0.5).max() > 0.05  # the statistics matter: outputs are not all one value


def test_folded_network_is_a_copy_and_refuses_training():
    network = _network_with_trained_statistics(tiny.WIDTH)
    x = tf.random.stateless_uniform([1, 16, 16, 4], [3, 4])
    fast = folded.FoldedCompletionNetwork(network)
    before = fast(x).numpy()
    network.get_layer("conv1_bn").beta.assign(network.get_layer("conv1_bn").beta + 1.0)
    np.testing.assert_array_equal(fast(x).numpy(), before)
    with pytest.raises(ValueError, match="inference only"):
        fast(x, training=True)
    # fold takes the trained-further weights in: the network a new build would make.
    for upsampling in folded.UPSAMPLINGS:
        refolded = folded.FoldedCompletionNetwork(_network_with_trained_statistics(tiny.WIDTH, seed=1), upsampling=upsampling)
        refolded.fold(network)
        np.testing.assert_allclose(refolded(x).numpy(), folded.FoldedCompletionNetwork(network, upsampling=upsampling)(x).numpy(), atol=1e-6)
        np.testing.assert_allclose(refolded(x).numpy(), network(x, training=False).numpy(), atol=1e-5)


@pytest.mark.parametrize("height, width, channels_in, channels_out", [(1, 1, 3, 2), (5, 3, 4, 6), (8, 12, 8, 3), (7, 16, 2, 5)])
def test_subpixel_upsampling_equals_the_transposed_convolution(height, width, channels_in, channels_out):
    x = tf.random.stateless_normal([2, height, width, channels_in], [5, height])
    kernel = tf.random.stateless_normal([4, 4, channels_out, channels_in], [6, width])  # Conv2DTranspose's layout
    bias = tf.random.stateless_normal([channels_out], [7, 7])
    out = tf.stack([2, 2 * height, 2 * width, channels_out])
    expected = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d_transpose(x, kernel, out, 2, padding="SAME"), bias))
    got = folded.subpixel_upsample(x, folded.subpixel_kernel(kernel), bias, channels_out)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)
    assert (expected.numpy() > 0).mean() > 0.3  # not all clipped away by the ReLU


@pytest.mark.parametrize("upsampling", folded.UPSAMPLINGS)
def test_each_upsampling_form_gives_the_keras_networks_image(upsampling):
    network = _network_with_trained_statistics(tiny.WIDTH)
    x = tf.random.stateless_uniform([2, 28, 20, 4], [7, 8])
    expected = network(x, training=False).numpy()
    got = folded.FoldedCompletionNetwork(network, upsampling=upsampling)(x).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_upsampling_form_follows_the_kernels_tensorflow_runs(monkeypatch):
    monkeypatch.setattr(folded.tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(folded.cpu, "onednn_on", lambda: True)
    assert folded.default_upsampling() == "transposed"
    monkeypatch.setattr(folded.cpu, "onednn_on", lambda: False)  # an AVX2-only processor: Eigen
    assert folded.default_upsampling() == "subpixel"
    monkeypatch.setattr(folded.tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"] if kind == "GPU" else [])
    assert folded.default_upsampling() == "transposed"  # cuDNN's transposed convolution
    with pytest.raises(ValueError, match="upsampling"):
        folded.FoldedCompletionNetwork(models.completion_network(tiny.WIDTH), upsampling="nearest")


def test_precision_auto_is_bfloat16_only_with_amx_and_bfloat16_needs_native_support(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(folded.tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(folded.cpu, "onednn_on", lambda: True)
    monkeypatch.setattr(folded.cpu, "flags", lambda: {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"})
    assert folded.compute_dtype("auto") == tf.bfloat16 and folded.compute_dtype("float32") == tf.float32
    monkeypatch.setattr(folded.cpu, "onednn_on", lambda: False)  # Eigen's bfloat16 measured 9x slower
    assert folded.compute_dtype("auto") == tf.float32
    with pytest.raises(UserError, match="Eigen"):
        folded.compute_dtype("bfloat16")
    monkeypatch.setattr(folded.cpu, "onednn_on", lambda: True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # AMX switched off: bfloat16 measured slower
    assert folded.compute_dtype("auto") == tf.float32 and folded.compute_dtype("bfloat16") == tf.bfloat16
    monkeypatch.setattr(folded.cpu, "flags", lambda: {"avx2", "fma"})
    assert folded.compute_dtype("auto") == tf.float32
    with pytest.raises(UserError, match="no native bfloat16"):
        folded.compute_dtype("bfloat16")
    with pytest.raises(UserError, match="precision"):
        folded.compute_dtype("float16")


def test_bfloat16_network_stays_close_to_float32():
    network = _network_with_trained_statistics(tiny.WIDTH)
    x = tf.random.stateless_uniform([1, 24, 24, 4], [9, 9])
    full = folded.FoldedCompletionNetwork(network)(x).numpy()
    half = folded.FoldedCompletionNetwork(network, dtype=tf.bfloat16)(x)
    assert half.dtype == tf.float32
    np.testing.assert_allclose(half.numpy(), full, atol=0.03)
