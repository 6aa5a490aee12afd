"""The completion network for inference: every BatchNorm folded into the convolution before it.

In inference mode a BatchNorm is a fixed per-channel scale and offset, so it can be moved into
the convolution's weights and a bias: the same function with one pass over each activation
map fewer, and each layer becomes convolution + bias + ReLU (which TensorFlow fuses into one
kernel where it runs oneDNN's). The two upsampling rows run as the transposed convolution where TensorFlow runs
oneDNN's kernels and as a sub-pixel convolution where it runs Eigen's (`subpixel_upsample`),
and the arithmetic can be bfloat16 where that is the faster (`compute_dtype`). `Inpainter` (so `inpaint.py`, evaluation and every export) runs this form;
training keeps the Keras network of `glcic_tf.models`, whose weights are the ones saved.
docs/performance.md ("Inference") has what each form measured.
"""

import os
from typing import Optional, Sequence

import keras
import tensorflow as tf

from glcic_tf import cpu, models
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


PRECISIONS = cpu.PRECISIONS  # "auto" is bfloat16 where it is the faster (see below)
# oneDNN instruction-set limits (ONEDNN_MAX_CPU_ISA) that still allow AMX.
_AMX_ISAS = ("", "ALL", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16")


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
    flags = cpu.flags()
    if precision == "bfloat16" and not {"avx512_bf16", "amx_bf16"} & flags:
        raise UserError("this processor has no native bfloat16 (AVX512_BF16 or AMX), where bfloat16 is slower: use --precision=float32 or auto")
    if precision == "bfloat16" and not cpu.onednn_on():
        raise UserError("TensorFlow runs Eigen's kernels here (oneDNN is off), whose bfloat16 convolutions are about 9x slower than float32: use --precision=float32 or auto")
    # Only oneDNN computes bfloat16 convolutions with AMX; Eigen's took 2.61 s against 0.30 s
    # in float32 at 256 px (TF_ENABLE_ONEDNN_OPTS=0 on the AMX machine).
    amx = "amx_bf16" in flags and os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _AMX_ISAS and cpu.onednn_on()
    if precision == "auto":
        return tf.bfloat16 if amx and not tf.config.list_physical_devices("GPU") else tf.float32
    return tf.as_dtype(precision)


def torch_padded_conv2d(x, kernel, stride: int, dilation: int) -> tf.Tensor:
    """tf.nn.conv2d with Torch's padding: (kernel - 1) / 2 x dilation on every side."""
    pad = (int(kernel.shape[0]) - 1) // 2 * dilation
    return tf.nn.conv2d(x, kernel, stride, [[0, 0], [pad, pad], [pad, pad], [0, 0]], dilations=dilation)


# How the two upsampling rows (Table 1's deconvolutions: kernel 4, stride 2, padding 1) run.
UPSAMPLINGS = ("transposed", "subpixel")


def subpixel_kernel(kernel) -> tf.Tensor:
    """The (2, 2, in, 4 x out) kernel of `subpixel_upsample` for a (4, 4, out, in) transposed kernel.

    A transposed convolution with kernel 4, stride 2 and padding 1 gives output row 2m + a
    (a = 0 or 1) from input rows m - 1 + a and m + a only, with kernel rows 3 - a and 1 - a:
    each of the four output phases (a, b) is a 2x2 convolution, and the four are one 2x2
    convolution with four times the output channels (phase-major), the same multiply-adds.
    """
    taps = [[tf.concat([tf.transpose(kernel[3 - a - 2 * i, 3 - b - 2 * j]) for a in (0, 1) for b in (0, 1)], axis=1)
             for j in (0, 1)] for i in (0, 1)]
    return tf.stack([tf.stack(row) for row in taps])


def subpixel_upsample(x, kernel, bias, out_channels: int) -> tf.Tensor:
    """The transposed convolution (kernel 4, stride 2, padding 1) + bias + ReLU, as one 2x2
    convolution of `subpixel_kernel` and an interleave of its four phases.

    Why: Eigen's transposed convolution ran at a third of its ordinary convolution's rate (57.8
    against 19.6 ms for row 15 at 256 px, TF_ENABLE_ONEDNN_OPTS=0; PyTorch 18.2); oneDNN's is
    fast (see FoldedCompletionNetwork's `upsampling`).
    """
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    y = tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), kernel, 1, "VALID")
    y = tf.nn.relu(tf.nn.bias_add(y, tf.tile(bias, [4])))
    # Phase (a, b) is y[m + a, n + b] for output pixel (2m + a, 2n + b).
    phases = [tf.stack([y[:, a : a + height, b : b + width, (2 * a + b) * out_channels : (2 * a + b + 1) * out_channels] for b in (0, 1)], axis=3)
              for a in (0, 1)]
    return tf.reshape(tf.stack(phases, axis=2), [tf.shape(x)[0], 2 * height, 2 * width, out_channels])


def default_upsampling() -> str:
    """The faster upsampling form where this runs: oneDNN's transposed convolution, else sub-pixel."""
    return "transposed" if cpu.onednn_on() or tf.config.list_physical_devices("GPU") else "subpixel"


class FoldedCompletionNetwork(tf.Module):
    """`network(x, training=False)` of a Table 1 Keras network, with its BatchNorms folded.

    The weights are copied when this is built (later training of `network` shows after `fold`).
    Outputs equal the Keras network's to float32 rounding (about 1e-6).
    """

    def __init__(self, network: keras.Model, table: Sequence[models.ConvSpec] = models.COMPLETION_NETWORK, upsampling: Optional[str] = None, dtype=tf.float32):
        super().__init__(name="folded_completion_network")
        self.specs = tuple(table)
        self.dtype = tf.as_dtype(dtype)
        self.upsampling = upsampling or default_upsampling()
        if self.upsampling not in UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, not {self.upsampling!r}")
        # The sub-pixel form is Table 1's upsampling (kernel 4, stride 2, padding 1, then ReLU) only.
        self.subpixel = [
            self.upsampling == "subpixel" and spec.kind == "deconv" and (spec.kernel, spec.stride) == (4, 2) and position < len(self.specs) - 1
            for position, spec in enumerate(self.specs)
        ]
        # Kept in the dtype the network computes in: no cast of the weights per call.
        folded = self._folded(network)
        self.kernels = [tf.Variable(kernel, trainable=False, name=f"kernel{index}") for index, (kernel, _) in enumerate(folded, start=1)]
        self.biases = [tf.Variable(bias, trainable=False, name=f"bias{index}") for index, (_, bias) in enumerate(folded, start=1)]

    def _folded(self, network: keras.Model):
        """[(kernel, bias)] of every row of `network`, folded, in this network's form and dtype."""
        folded = []
        for index, spec in enumerate(self.specs, start=1):
            kernel, bias = _folded_weights(network, spec, index, last=index == len(self.specs))
            if self.subpixel[index - 1]:
                kernel = subpixel_kernel(kernel)
            folded.append((tf.cast(kernel, self.dtype), tf.cast(bias, self.dtype)))
        return folded

    def fold(self, network: keras.Model) -> None:
        """`network`'s current weights in place of the ones built with (the same architecture,
        trained further): what was compiled on this module runs them, with no new tracing."""
        for variables, (kernel, bias) in zip(zip(self.kernels, self.biases), self._folded(network)):
            variables[0].assign(kernel)
            variables[1].assign(bias)

    def layer(self, index: int, x) -> tf.Tensor:
        """Row `index` (from 0) of Table 1 on `x`: convolution, bias, then ReLU (sigmoid for the last)."""
        spec, kernel, bias = self.specs[index], self.kernels[index], self.biases[index]
        if self.subpixel[index]:
            return subpixel_upsample(x, kernel, bias, int(bias.shape[0]))  # filters x width
        if spec.kind == "deconv":
            shape = tf.shape(x)
            out = tf.stack([shape[0], shape[1] * spec.stride, shape[2] * spec.stride, int(bias.shape[0])])
            x = tf.nn.conv2d_transpose(x, kernel, out, spec.stride, padding="SAME")  # Torch's padding 1 at kernel 4
        else:
            x = torch_padded_conv2d(x, kernel, spec.stride, spec.dilation)
        x = tf.nn.bias_add(x, bias)
        return tf.sigmoid(x) if index == len(self.specs) - 1 else tf.nn.relu(x)

    def __call__(self, x, training: bool = False) -> tf.Tensor:
        if training:
            raise ValueError("the folded network is for inference only; train the Keras network")
        x = tf.cast(x, self.dtype)
        for index in range(len(self.specs)):
            x = self.layer(index, x)
        return tf.cast(x, tf.float32)
