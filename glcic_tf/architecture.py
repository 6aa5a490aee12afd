"""The paper's networks as data (Tables 1 and 2) and what follows from them alone: the receptive
field, the FLOPs, the size multiple, the channels at a width.

Nothing here needs TensorFlow: `glcic_tf.models` builds the Keras networks from these tables,
and the parts that run without TensorFlow (tiling, the LiteRT completer) read them too.
"""

from typing import NamedTuple, Sequence, Tuple

# Per-channel RGB mean in [0, 1] stored in the authors' completionnet_places2.t7 (as read
# out of it by public ports of the released model). The hole is filled with it.
PLACES2_MEAN_PIXEL = (0.4560, 0.4472, 0.4155)

# Torch's BatchNorm defaults, which the authors trained with (Torch momentum 0.1 is Keras 0.9).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


class ConvSpec(NamedTuple):
    """One row of Table 1. For a "deconv" row, stride 2 means upsampling by 2 (stride 1/2)."""

    kind: str  # "conv", "dilated_conv" or "deconv"
    kernel: int
    dilation: int
    stride: int
    filters: int


# Paper Table 1. Every row but the last is followed by BatchNorm + ReLU; the last by a sigmoid.
COMPLETION_NETWORK = (
    ConvSpec("conv", 5, 1, 1, 64),
    ConvSpec("conv", 3, 1, 2, 128),
    ConvSpec("conv", 3, 1, 1, 128),
    ConvSpec("conv", 3, 1, 2, 256),
    ConvSpec("conv", 3, 1, 1, 256),
    ConvSpec("conv", 3, 1, 1, 256),
    ConvSpec("dilated_conv", 3, 2, 1, 256),
    ConvSpec("dilated_conv", 3, 4, 1, 256),
    ConvSpec("dilated_conv", 3, 8, 1, 256),
    ConvSpec("dilated_conv", 3, 16, 1, 256),
    ConvSpec("conv", 3, 1, 1, 256),
    ConvSpec("conv", 3, 1, 1, 256),
    ConvSpec("deconv", 4, 1, 2, 128),
    ConvSpec("conv", 3, 1, 1, 128),
    ConvSpec("deconv", 4, 1, 2, 64),
    ConvSpec("conv", 3, 1, 1, 32),
    ConvSpec("conv", 3, 1, 1, 3),  # output
)

# Paper Table 2: every conv is 5x5, stride 2, followed by BatchNorm + ReLU, then one FC layer.
DISCRIMINATOR_KERNEL = 5
DISCRIMINATOR_STRIDE = 2
LOCAL_DISCRIMINATOR_FILTERS = (64, 128, 256, 512, 512)
GLOBAL_DISCRIMINATOR_FILTERS = (64, 128, 256, 512, 512, 512)
DISCRIMINATOR_FC_UNITS = 1024

# Input sizes of the discriminators (paper: 256x256 image, 128x128 patch around the hole).
GLOBAL_SIZE = 256
LOCAL_SIZE = 128

# The completion network halves the size twice, so its input sides must be multiples of this.
SIZE_MULTIPLE = 4


def receptive_radius(table: Sequence[ConvSpec] = COMPLETION_NETWORK) -> int:
    """How far (input pixels, in each direction) one output pixel of the network can see: 153 for Table 1.

    A convolution adds (kernel - 1) / 2 x dilation of its input's spacing (jump, in input
    pixels); a stride-2 convolution doubles the spacing. A transposed convolution (kernel 4,
    stride 2, padding 1) reads at most one input position to either side, `jump` before it
    halves the spacing. Most of the 153 comes from the dilated rows (2 + 4 + 8 + 16 at a
    spacing of 4). Pixels farther than this from every hole cannot change the completion, so a
    crop around the holes with this margin, aligned to SIZE_MULTIPLE, completes them exactly as
    the whole image would.
    """
    radius, jump = 0, 1
    for spec in table:
        if spec.kind == "deconv":
            radius += (spec.kernel // spec.stride - 1) * jump
            jump //= spec.stride
        else:
            radius += (spec.kernel - 1) // 2 * spec.dilation * jump
            jump *= spec.stride
    return radius


def completion_flops(height: int, width: int = None, table: Sequence[ConvSpec] = COMPLETION_NETWORK) -> int:
    """Forward FLOPs of the completion network on a height x width input, 2 per multiply-add.

    A convolution does kernel² x C_in x C_out multiply-adds per *output* pixel; a stride-2
    transposed convolution the same per *input* pixel (each input pixel is spread over a
    kernel x kernel window). BatchNorm, ReLU and the sigmoid are not counted. Table 1 at
    256x256: 32.55 G multiply-adds, 65.1 GFLOP.
    """
    width = height if width is None else width
    total, pixels, channels = 0, height * width, 4
    for spec in table:
        if spec.kind == "deconv":
            total += 2 * spec.kernel**2 * channels * spec.filters * pixels
            pixels *= spec.stride**2
        else:
            pixels //= spec.stride**2
            total += 2 * spec.kernel**2 * channels * spec.filters * pixels
        channels = spec.filters
    return total


def discriminator_flops(global_size: int = GLOBAL_SIZE, local_size: int = LOCAL_SIZE) -> int:
    """Forward FLOPs of both context discriminators and the final layer (Table 2), 2 per multiply-add."""
    total = 0
    for size, filters in ((global_size, GLOBAL_DISCRIMINATOR_FILTERS), (local_size, LOCAL_DISCRIMINATOR_FILTERS)):
        channels = 3
        for out in filters:
            size = -(-size // DISCRIMINATOR_STRIDE)  # "same" padding: ceil
            total += 2 * DISCRIMINATOR_KERNEL**2 * channels * out * size * size
            channels = out
        total += 2 * channels * size * size * DISCRIMINATOR_FC_UNITS
    return total + 2 * 2 * DISCRIMINATOR_FC_UNITS


def discriminator_last_conv_inputs(global_size: int = GLOBAL_SIZE, local_size: int = LOCAL_SIZE) -> Tuple[int, int]:
    """The side of the input each discriminator's last convolution sees (global, local): 8 and 8
    at the paper's sizes ("same" padding, stride 2 each)."""
    sides = []
    for size, filters in ((global_size, GLOBAL_DISCRIMINATOR_FILTERS), (local_size, LOCAL_DISCRIMINATOR_FILTERS)):
        for _ in filters[:-1]:
            size = -(-size // DISCRIMINATOR_STRIDE)
        sides.append(size)
    return tuple(sides)


def scaled_filters(filters: int, width: float) -> int:
    """A layer's channels at channel-width factor `width` (at least one)."""
    return max(1, round(filters * width))
