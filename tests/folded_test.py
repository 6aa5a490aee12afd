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


@pytest.mark.parametrize("height, width, stride, dilation, bands", [
    (13, 9, 1, 1, 2), (16, 12, 2, 1, 2), (15, 7, 2, 1, 3), (20, 8, 1, 4, 3), (3, 5, 1, 2, 5), (1, 1, 1, 16, 2), (11, 6, 1, 1, 1),
])
def test_banded_convolution_equals_one_convolution_with_torch_padding(height, width, stride, dilation, bands):
    x = tf.random.stateless_normal([2, height, width, 3], [5, height])
    kernel = tf.random.stateless_normal([3, 3, 3, 4], [6, width])
    pad = dilation
    expected = tf.nn.conv2d(x, kernel, stride, [[0, 0], [pad, pad], [pad, pad], [0, 0]], dilations=dilation)
    got = folded.banded_conv2d(x, kernel, stride, dilation, bands)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)


def test_folded_network_gives_the_same_image_whatever_the_number_of_bands():
    network = _network_with_trained_statistics(tiny.WIDTH)
    x = tf.random.stateless_uniform([2, 28, 20, 4], [7, 8])
    one = folded.FoldedCompletionNetwork(network, bands=1)(x).numpy()
    for bands in (2, 3, 8):
        np.testing.assert_allclose(folded.FoldedCompletionNetwork(network, bands=bands)(x).numpy(), one, atol=1e-6)


def test_precision_auto_is_bfloat16_only_with_amx_and_bfloat16_needs_native_support(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(folded.tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(folded, "_cpu_flags", lambda: {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"})
    assert folded.compute_dtype("auto") == tf.bfloat16 and folded.compute_dtype("float32") == tf.float32
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # AMX switched off: bfloat16 measured slower
    assert folded.compute_dtype("auto") == tf.float32 and folded.compute_dtype("bfloat16") == tf.bfloat16
    monkeypatch.setattr(folded, "_cpu_flags", lambda: {"avx2", "fma"})
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
