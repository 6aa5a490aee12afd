"""Tables 1 and 2 in PyTorch, the peers the TensorFlow inference and training are timed against (the bench extra).

Every number (rows, kernels, channels, the width scaling) is read from glcic_tf.models.
"""

from glcic_tf import models


def torch_network():
    """Table 1 in PyTorch (random weights), channels-last, in inference mode: (network, torch).

    The network is a Sequential of one Sequential per row of Table 1 (convolution, BatchNorm,
    ReLU; the output row convolution and sigmoid), so rows can be timed one by one.
    """
    import torch  # noqa: PLC0415

    # Same architecture and sizes as the Keras network; the time does not depend on the weights.
    return completion_network().eval().to(memory_format=torch.channels_last), torch


def completion_network(width: float = 1.0):
    """Table 1 in PyTorch (random weights), hidden channels scaled by `width` as models.scaled_filters does.

    A Sequential of one Sequential per row (convolution, BatchNorm, ReLU; the output row
    convolution and sigmoid), in training mode and channels-first until the caller moves it.
    """
    from torch import nn  # noqa: PLC0415

    rows, channels = [], 4
    for index, spec in enumerate(models.COMPLETION_NETWORK, start=1):
        last = index == len(models.COMPLETION_NETWORK)
        filters = spec.filters if last else models.scaled_filters(spec.filters, width)
        if spec.kind == "deconv":
            conv = nn.ConvTranspose2d(channels, filters, spec.kernel, stride=2, padding=1, bias=False)
        else:
            padding = spec.dilation * (spec.kernel - 1) // 2
            conv = nn.Conv2d(channels, filters, spec.kernel, spec.stride, padding, spec.dilation, bias=last)
        after = [nn.Sigmoid()] if last else [nn.BatchNorm2d(filters, eps=models.BN_EPSILON), nn.ReLU()]
        rows.append(nn.Sequential(conv, *after))
        channels = filters
    return nn.Sequential(*rows)


def discriminator(global_size: int = models.GLOBAL_SIZE, local_size: int = models.LOCAL_SIZE, width: float = 1.0):
    """Table 2 in PyTorch: module(global image, local patch) -> logit (B, 1), as models.discriminator.

    Each branch: 5x5 stride-2 convolutions with BatchNorm + ReLU, then FC 1024 + ReLU; the two
    feature vectors concatenated (local first), then FC to one logit (the sigmoid is the loss's).
    """
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    def branch(size, filters):
        layers, channels = [], 3
        for out in filters:
            out = models.scaled_filters(out, width)
            kernel = models.DISCRIMINATOR_KERNEL
            layers += [
                nn.Conv2d(channels, out, kernel, models.DISCRIMINATOR_STRIDE, (kernel - 1) // 2, bias=False),
                nn.BatchNorm2d(out, eps=models.BN_EPSILON),
                nn.ReLU(),
            ]
            channels, size = out, -(-size // models.DISCRIMINATOR_STRIDE)
        units = models.scaled_filters(models.DISCRIMINATOR_FC_UNITS, width)
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * size * size, units), nn.ReLU()), units

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.local, local_units = branch(local_size, models.LOCAL_DISCRIMINATOR_FILTERS)
            self.global_, global_units = branch(global_size, models.GLOBAL_DISCRIMINATOR_FILTERS)
            self.logit = nn.Linear(local_units + global_units, 1)

        def forward(self, image, patch):
            return self.logit(torch.cat([self.local(patch), self.global_(image)], dim=1))

    return Discriminator()
