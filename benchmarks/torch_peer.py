"""Table 1 in PyTorch, the peer the TensorFlow inference is timed against (the bench extra)."""

from glcic_tf import models


def torch_network():
    """Table 1 in PyTorch (random weights), channels-last, in inference mode: (network, torch).

    The network is a Sequential of one Sequential per row of Table 1 (convolution, BatchNorm,
    ReLU; the output row convolution and sigmoid), so rows can be timed one by one.
    """
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    rows, channels = [], 4
    for index, spec in enumerate(models.COMPLETION_NETWORK, start=1):
        last = index == len(models.COMPLETION_NETWORK)
        if spec.kind == "deconv":
            conv = nn.ConvTranspose2d(channels, spec.filters, spec.kernel, stride=2, padding=1, bias=False)
        else:
            padding = spec.dilation * (spec.kernel - 1) // 2
            conv = nn.Conv2d(channels, spec.filters, spec.kernel, spec.stride, padding, spec.dilation, bias=last)
        after = [nn.Sigmoid()] if last else [nn.BatchNorm2d(spec.filters, eps=models.BN_EPSILON), nn.ReLU()]
        rows.append(nn.Sequential(conv, *after))
        channels = spec.filters
    # Same architecture and sizes as the Keras network; the time does not depend on the weights.
    return nn.Sequential(*rows).eval().to(memory_format=torch.channels_last), torch
