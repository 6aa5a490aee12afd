"""The completion network for inference: every BatchNorm folded into the convolution before it.

In inference mode a BatchNorm is a fixed per-channel scale and offset, so it can be moved into
the convolution's weights and a bias: the same function with one pass over each activation
map fewer, and each layer becomes convolution + bias + ReLU, which TensorFlow fuses into one
oneDNN kernel. The wide convolutions run as horizontal bands stacked into the batch, one per
core (`banded_conv2d`), and the arithmetic can be bfloat16 where that is the faster
(`compute_dtype`). `Inpainter` (so `inpaint.py`, evaluation and every export) runs this form;
training keeps the Keras network of `glcic_tf.models`, whose weights are the ones saved.
BUILD.md ("Inference speed") has what each change measured.
"""

import os
from typing import Optional, Sequence

import keras
import tensorflow as tf

from glcic_tf import models
from glcic_tf.errors import UserError


def _folded_weights(network: keras.Model, spec: models.ConvSpec, index: int, last: bool):
    """(kernel, bias) of Table 1's row `index` with its BatchNorm folded in."""
    if last:
        conv = network.get_layer("output_conv")
        return conv.kernel.value, conv.bias.value
    conv = network.get_layer(f"{spec.kind}{index}")
    norm = network.get_layer(f"{spec.kind}{index}_bn")
    scale = norm.gamma.value * tf.math.rsqrt(norm.moving_variance.value + norm.epsilon)
    bias = norm.beta.value - norm.moving_mean.value * scale
    # Conv2D kernels are (k, k, in, out); Conv2DTranspose kernels (k, k, out, in).
    kernel = conv.kernel.value * (scale[:, None] if spec.kind == "deconv" else scale)
    return kernel, bias


# How the network's arithmetic runs: "auto" is bfloat16 where it is the faster (see below).
PRECISIONS = ("auto", "float32", "bfloat16")
# oneDNN instruction-set limits (ONEDNN_MAX_CPU_ISA) that still allow AMX.
_AMX_ISAS = ("", "ALL", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16")


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def onednn_on() -> bool:
    """Whether TensorFlow runs its oneDNN kernels here (else Eigen's).

    TensorFlow 2.21 turns them on by default only on x86 processors with AVX-512 VNNI, BF16 or
    AMX (and similar); elsewhere, or with TF_ENABLE_ONEDNN_OPTS=0, it runs Eigen's. No public
    API says which, so this asks TensorFlow's own check.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port  # noqa: PLC0415
    except ImportError:  # a TensorFlow without it: the documented switch decides
        return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") not in ("0", "false", "False")
    return bool(_pywrap_util_port.IsMklEnabled())


def compute_dtype(precision: str = "float32") -> tf.DType:
    """The dtype the folded network computes in for a `precision` of PRECISIONS.

    bfloat16 is chosen by "auto" only on processors with AMX, the only ones where it was the
    faster: at 512 px, 0.23 s against 0.79 s in float32 with AMX, but 1.32 s against 0.81 s with
    AVX512_BF16 alone (the same machine with ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16); outputs
    differ from float32 by about 1e-3. Asking for "bfloat16" on a processor without native
    bfloat16 (AVX512_BF16 or AMX), or where TensorFlow runs Eigen's kernels, is an error; on a
    GPU "auto" is float32.
    """
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    flags = _cpu_flags()
    if precision == "bfloat16" and not {"avx512_bf16", "amx_bf16"} & flags:
        raise UserError("this processor has no native bfloat16 (AVX512_BF16 or AMX), where bfloat16 is slower: use --precision=float32 or auto")
    if precision == "bfloat16" and not onednn_on():
        raise UserError("TensorFlow runs Eigen's kernels here (oneDNN is off), whose bfloat16 convolutions are about 9x slower than float32: use --precision=float32 or auto")
    # Only oneDNN computes bfloat16 convolutions with AMX; Eigen's took 2.61 s against 0.30 s
    # in float32 at 256 px (TF_ENABLE_ONEDNN_OPTS=0 on the AMX machine).
    amx = "amx_bf16" in flags and os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _AMX_ISAS and onednn_on()
    if precision == "auto":
        return tf.bfloat16 if amx and not tf.config.list_physical_devices("GPU") else tf.float32
    return tf.as_dtype(precision)


def usable_cores() -> int:
    """The CPUs this process can keep busy: its CPU affinity, further limited by a cgroup CPU
    quota (a container given 2 CPUs of a 64-core host sees 64 in its affinity)."""
    cores = len(os.sched_getaffinity(0))
    for path in ("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"):
        try:
            with open(path) as file:
                fields = file.read().split()
            if path.endswith("cpu.max"):
                quota, period = fields[0], fields[1]
            else:
                with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as file:
                    quota, period = fields[0], file.read().strip()
            if quota not in ("max", "-1"):
                cores = min(cores, max(1, -(-int(quota) // int(period))))
            break
        except (OSError, ValueError, IndexError):
            continue
    return cores


# Convolutions whose input has at least this many channels in Table 1 (rows 3-12 and 14, at a
# half and a quarter of the image's size) run in bands: there it pays (see banded_conv2d). The
# rows at full size are left alone: copies of their 64-channel maps would raise the peak memory
# (at 2048x2048 banding every row took 5.4 GB against 3.3 GB).
BANDED_CHANNELS = 128


def banded_conv2d(x, kernel, stride: int, dilation: int, bands: int) -> tf.Tensor:
    """tf.nn.conv2d with Torch's padding ((kernel - 1) / 2 x dilation on every side), computed as
    `bands` horizontal bands of the output stacked into the batch.

    Why: oneDNN spreads one image's convolution over the cores poorly. Measured here (2 cores,
    3x3, 256 -> 256 channels at 128x128): 258 ms as one image with AVX2 kernels against 91 ms as
    two bands, 76 against 54 ms with AVX-512 ones. Each band reads the rows its outputs need
    (its halo), so the result is the same convolution; the cost is a copy of the input into the
    bands (the halo rows twice).
    """
    size = int(kernel.shape[0])
    pad = (size - 1) // 2 * dilation
    if bands == 1:
        return tf.nn.conv2d(x, kernel, stride, [[0, 0], [pad, pad], [pad, pad], [0, 0]], dilations=dilation)
    out_rows = (tf.shape(x)[1] - 1) // stride + 1
    band_rows = -(-out_rows // bands)
    window = (band_rows - 1) * stride + (size - 1) * dilation + 1  # input rows one band reads
    needed = (bands - 1) * band_rows * stride + window
    x = tf.pad(x, [[0, 0], [pad, needed - pad - tf.shape(x)[1]], [0, 0], [0, 0]])
    # Image i's band b at batch position i * bands + b, so that the output's bands of each image
    # lie one above the other in memory: putting them back is a reshape, not a copy.
    stacked = tf.stack([x[:, b * band_rows * stride : b * band_rows * stride + window] for b in range(bands)], axis=1)
    stacked = tf.reshape(stacked, tf.concat([[-1], tf.shape(stacked)[2:]], axis=0))
    out = tf.nn.conv2d(stacked, kernel, stride, [[0, 0], [0, 0], [pad, pad], [0, 0]], dilations=dilation)
    out = tf.reshape(out, tf.stack([tf.shape(x)[0], bands * band_rows, tf.shape(out)[2], tf.shape(out)[3]]))
    return out[:, :out_rows]


class FoldedCompletionNetwork(tf.Module):
    """`network(x, training=False)` of a Table 1 Keras network, with its BatchNorms folded.

    The weights are copied when this is built (later training of `network` does not show).
    Outputs equal the Keras network's to float32 rounding (about 1e-6).
    """

    def __init__(self, network: keras.Model, table: Sequence[models.ConvSpec] = models.COMPLETION_NETWORK, bands: Optional[int] = None, dtype=tf.float32):
        super().__init__(name="folded_completion_network")
        self.specs = tuple(table)
        self.dtype = tf.as_dtype(dtype)
        inputs = (4,) + tuple(spec.filters for spec in self.specs[:-1])
        self.banded = [spec.kind != "deconv" and channels >= BANDED_CHANNELS for spec, channels in zip(self.specs, inputs)]
        # One band per core on a CPU; a GPU runs one image's convolution on all its units.
        self.bands = bands or (1 if tf.config.list_physical_devices("GPU") else usable_cores())
        self.kernels, self.biases = [], []
        for index, spec in enumerate(self.specs, start=1):
            kernel, bias = _folded_weights(network, spec, index, last=index == len(self.specs))
            # Kept in the dtype the network computes in: no cast of the weights per call.
            self.kernels.append(tf.Variable(tf.cast(kernel, self.dtype), trainable=False, name=f"kernel{index}"))
            self.biases.append(tf.Variable(tf.cast(bias, self.dtype), trainable=False, name=f"bias{index}"))

    def layer(self, index: int, x) -> tf.Tensor:
        """Row `index` (from 0) of Table 1 on `x`: convolution, bias, then ReLU (sigmoid for the last)."""
        spec, kernel, bias = self.specs[index], self.kernels[index], self.biases[index]
        if spec.kind == "deconv":
            shape = tf.shape(x)
            out = tf.stack([shape[0], shape[1] * spec.stride, shape[2] * spec.stride, tf.shape(kernel)[2]])
            x = tf.nn.conv2d_transpose(x, kernel, out, spec.stride, padding="SAME")  # Torch's padding 1 at kernel 4
        else:
            x = banded_conv2d(x, kernel, spec.stride, spec.dilation, self.bands if self.banded[index] else 1)
        x = tf.nn.bias_add(x, bias)
        return tf.sigmoid(x) if index == len(self.specs) - 1 else tf.nn.relu(x)

    def __call__(self, x, training: bool = False) -> tf.Tensor:
        if training:
            raise ValueError("the folded network is for inference only; train the Keras network")
        x = tf.cast(x, self.dtype)
        for index in range(len(self.specs)):
            x = self.layer(index, x)
        return tf.cast(x, tf.float32)
