"""The authors' released Torch7 completion networks (.t7) as our Keras completion network.

A released file (completionnet_places2.t7, completionnet_places2_freeform.t7,
completionnet_celeba.t7) holds the Lua table {model = <completion network>, mean = <RGB mean>}.
The model is read with `torchfile` (pip install "glcic-tf[torch]"), its layers are walked in
order (inside nn.Sequential or nngraph's nn.gModule) and matched one by one against the Keras
network built from Table 1; the first layer that differs is named and nothing is written.

Layouts: Torch convolution weights are [out, in, kh, kw] and full (transposed) convolution
weights [in, out, kh, kw]; Keras wants [kh, kw, in, out] and [kh, kw, out, in]. Torch's
convolutions have a bias before each BatchNorm, ours do not (BatchNorm's offset makes it
redundant), so each bias is folded into the BatchNorm's moving mean; a Torch BatchNorm epsilon
other than ours is folded into the moving variance. Both foldings are exact in inference mode.
"""

import os
from typing import List, NamedTuple, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from glcic_tf import models, run_folder
from glcic_tf.errors import UserError

AUTHORS_LICENSE = "CC BY-NC-SA 4.0 (Iizuka, Simo-Serra, Ishikawa): non-commercial use only"

CONVOLUTIONS = {"SpatialConvolution", "SpatialConvolutionMM", "SpatialDilatedConvolution"}
FULL_CONVOLUTIONS = {"SpatialFullConvolution"}
BATCHNORMS = {"SpatialBatchNormalization"}
CONTAINERS = {"Sequential", "gModule"}
SKIPPED = {"Identity"}  # nngraph's input node is often an nn.Identity


class TorchLayer(NamedTuple):
    """One Torch module of the network in forward order: its position, class name and fields."""

    number: int  # 1-based, counting every non-container module
    typename: str  # e.g. "nn.SpatialConvolution"
    fields: object  # torchfile.TorchObject

    @property
    def kind(self) -> str:
        return self.typename.split(".")[-1]  # nn.ReLU and cudnn.ReLU alike

    def describe(self) -> str:
        f = self.fields
        if self.kind in CONVOLUTIONS | FULL_CONVOLUTIONS:
            return (
                f"{self.typename} {f.nInputPlane}->{f.nOutputPlane}, {f.kH}x{f.kW}, stride {f.dH}x{f.dW}, "
                f"dilation {f.dilationH or 1}x{f.dilationW or 1}, padding {f.padH}x{f.padW}"
            )
        if self.kind in BATCHNORMS:
            return f"{self.typename} of {_array(f.running_mean).size} channels"
        return self.typename


class Converted(NamedTuple):
    network: object  # keras.Model
    mean_pixel: Tuple[float, float, float]
    width: float


def _array(value) -> np.ndarray:
    return np.zeros(0, np.float32) if value is None else np.asarray(value, np.float32)


def _name(obj) -> str:
    typename = obj.torch_typename() if hasattr(obj, "torch_typename") else type(obj).__name__
    return typename.decode() if isinstance(typename, bytes) else str(typename)


def _flatten(module, layers: List[TorchLayer]) -> None:
    """Appends the non-container modules of `module` in forward order."""
    kind = _name(module).split(".")[-1]
    if kind not in CONTAINERS:
        if kind not in SKIPPED:
            layers.append(TorchLayer(len(layers) + 1, _name(module), module))
        return
    if kind == "gModule":
        _check_chain(module)
    for child in module.modules or []:  # a gModule's modules are in its forward (topological) order
        _flatten(child, layers)


def _check_chain(graph) -> None:
    """Refuses an nngraph whose forward graph branches: Table 1 is a single chain."""
    for node in graph.forwardnodes or []:
        if len(node.children or []) > 1:
            module = (node.data or {}).get(b"module")
            where = _name(module) if module is not None else "a node"
            raise UserError(f"the nngraph network branches after {where}; Table 1's completion network is one chain")


def read_t7(path: str) -> Tuple[List[TorchLayer], Tuple[float, float, float]]:
    """The network's layers in forward order and the stored per-channel mean of a released .t7."""
    try:
        import torchfile  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise UserError('reading .t7 files needs torchfile: pip install "glcic-tf[torch]"') from None
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist")
    try:
        contents = torchfile.load(path)
    except Exception as error:  # torchfile raises whatever struct/numpy raise on a broken file
        raise UserError(f"{path} is not a readable Torch7 file ({type(error).__name__}: {error})") from None
    if not isinstance(contents, dict) or contents.model is None:
        raise UserError(f"{path} does not hold the table {{model = ..., mean = ...}} that the authors' files hold")
    mean = _array(contents.mean).reshape(-1)
    if mean.size != 3 or not np.all((mean >= 0) & (mean <= 1)):
        raise UserError(f"{path}: 'mean' should be three numbers in [0, 1] (the RGB mean), not {mean.tolist()}")
    layers: List[TorchLayer] = []
    _flatten(contents.model, layers)
    return layers, tuple(float(str(value)) for value in mean)  # the shortest decimal of each float32


def _expected(network) -> List[Tuple[str, object]]:
    """Our network's layers in order, as the Torch modules they should come from: (kind, Keras layer)."""
    kinds = (  # padding and input layers have no Torch module of their own
        (keras.layers.Conv2DTranspose, "full"),
        (keras.layers.Conv2D, "conv"),
        (models.BatchNormalization, "bn"),
        (keras.layers.ReLU, "ReLU"),
        (keras.layers.Activation, "Sigmoid"),  # the output's
    )
    return [(kind, layer) for layer in network.layers for cls, kind in kinds if type(layer) is cls]


def _describe_keras(kind: str, layer) -> str:
    if kind == "bn":
        return f"SpatialBatchNormalization of {layer.gamma.shape[0]} channels ({layer.name})"
    if kind in ("conv", "full"):
        size, stride, dilation = layer.kernel_size[0], layer.strides[0], layer.dilation_rate[0]
        padding = (size - stride) // 2 if kind == "full" else (size - 1) // 2 * dilation
        inputs = layer.kernel.shape[3 if kind == "full" else 2]
        torch_class = "SpatialFullConvolution" if kind == "full" else (
            "SpatialDilatedConvolution" if dilation > 1 else "SpatialConvolution")
        return (
            f"{torch_class} {inputs}->{layer.filters}, {size}x{size}, stride {stride}x{stride}, "
            f"dilation {dilation}x{dilation}, padding {padding}x{padding} ({layer.name})"
        )
    return f"nn.{kind}"


def _matches(kind: str, keras_layer, torch_layer: TorchLayer) -> bool:
    f, torch_kind = torch_layer.fields, torch_layer.kind
    if kind == "ReLU" or kind == "Sigmoid":
        return torch_kind == kind
    if kind == "bn":
        return torch_kind in BATCHNORMS and _array(f.running_mean).size == keras_layer.gamma.shape[0]
    if kind == "full":
        if torch_kind not in FULL_CONVOLUTIONS:
            return False
        size, stride = keras_layer.kernel_size[0], keras_layer.strides[0]
        return (
            _array(f.weight).shape == (keras_layer.kernel.shape[3], keras_layer.filters, size, size)
            and (f.kH, f.kW, f.dH, f.dW) == (size, size, stride, stride)
            and (f.padH, f.padW) == ((size - stride) // 2,) * 2
            and not (f.adjH or f.adjW)
        )
    if torch_kind not in CONVOLUTIONS:
        return False
    size, stride, dilation = keras_layer.kernel_size[0], keras_layer.strides[0], keras_layer.dilation_rate[0]
    return (
        (f.nInputPlane, f.nOutputPlane) == (keras_layer.kernel.shape[2], keras_layer.filters)
        and _array(f.weight).size == np.prod(keras_layer.kernel.shape)
        and (f.kH, f.kW, f.dH, f.dW) == (size, size, stride, stride)
        and ((f.dilationH or 1), (f.dilationW or 1)) == (dilation, dilation)
        and (f.padH, f.padW) == ((size - 1) // 2 * dilation,) * 2
    )


def _width(layers: Sequence[TorchLayer], path: str) -> float:
    first = layers[0] if layers else None
    if first is None or first.kind not in CONVOLUTIONS:
        raise UserError(f"{path}: the network should start with a convolution (Table 1), not {first and first.typename}")
    return first.fields.nOutputPlane / models.COMPLETION_NETWORK[0].filters


def _batchnorm_weights(torch_bn, conv_bias: np.ndarray) -> List[np.ndarray]:
    """Keras [gamma, beta, moving_mean, moving_variance] equal in inference to Torch's conv bias + BN."""
    f = torch_bn.fields
    channels = _array(f.running_mean).size
    eps = float(f.eps if f.eps is not None else models.BN_EPSILON)
    if f.running_var is not None:
        variance = _array(f.running_var) + eps
    else:  # nn before 2016 stored running_std = 1 / sqrt(var + eps)
        variance = 1.0 / np.square(_array(f.running_std))
    gamma = _array(f.weight) if f.weight is not None and _array(f.weight).size else np.ones(channels, np.float32)
    beta = _array(f.bias) if f.bias is not None and _array(f.bias).size else np.zeros(channels, np.float32)
    bias = conv_bias if conv_bias.size else np.zeros(channels, np.float32)
    moving_variance = variance - models.BN_EPSILON
    if np.any(moving_variance < 0):
        raise UserError(f"Torch layer {torch_bn.number}: its running variance plus eps {eps} is below our epsilon")
    return [gamma, beta, _array(f.running_mean) - bias, moving_variance]


def convert(path: str) -> Converted:
    """Reads a released .t7 and returns our completion network holding its weights, and its mean."""
    layers, mean_pixel = read_t7(path)
    width = _width(layers, path)
    network = models.completion_network(width)
    expected = _expected(network)
    conv_bias = np.zeros(0, np.float32)  # of the convolution before the current BatchNorm
    for index, (kind, keras_layer) in enumerate(expected):
        torch_layer = layers[index] if index < len(layers) else None
        if torch_layer is None or not _matches(kind, keras_layer, torch_layer):
            found = torch_layer.describe() if torch_layer else "the end of the network"
            raise UserError(
                f"{path}: Torch layer {index + 1} ({found}) differs from Table 1, which expects "
                f"{_describe_keras(kind, keras_layer)} there"
            )
        f = torch_layer.fields
        if kind == "conv":
            weight = _array(f.weight).reshape(f.nOutputPlane, f.nInputPlane, f.kH, f.kW)
            conv_bias = _array(f.bias)
            kernel = weight.transpose(2, 3, 1, 0)
            if keras_layer.use_bias:  # the output layer, which has no BatchNorm after it
                keras_layer.set_weights([kernel, conv_bias if conv_bias.size else np.zeros(3, np.float32)])
            else:
                keras_layer.set_weights([kernel])
        elif kind == "full":
            keras_layer.set_weights([_array(f.weight).transpose(2, 3, 1, 0)])
            conv_bias = _array(f.bias)
        elif kind == "bn":
            keras_layer.set_weights(_batchnorm_weights(torch_layer, conv_bias))
    if len(layers) > len(expected):
        extra = layers[len(expected)]
        raise UserError(f"{path}: Torch layer {extra.number} ({extra.describe()}) follows Table 1's last layer (sigmoid)")
    return Converted(network, mean_pixel, width)


def write_run_folder(converted: Converted, output_dir: str, source: str) -> str:
    """Writes a checkpoint and config.json that export.py, evaluate.py and inpaint.py load like a run."""
    run_folder.check_folder(output_dir, "--output")
    if os.listdir(output_dir):
        raise UserError(f"--output {output_dir} is not empty; choose a new folder (nothing was written)")
    step = tf.Variable(0, dtype=tf.int64)  # no training step of ours; export.py then uses version 1
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(completion=converted.network, step=step), output_dir, 1)
    checkpoint = manager.save(checkpoint_number=0)
    config = {
        "width": converted.width,
        "mean_pixel": list(converted.mean_pixel),
        "converted_from": os.path.basename(source),
        "license": AUTHORS_LICENSE,
    }
    run_folder.write_config(output_dir, config)
    return checkpoint


def describe_layers(layers: Sequence[TorchLayer]) -> str:
    """One line per Torch layer, for --list."""
    return "\n".join(f"{layer.number:3d} {layer.describe()}" for layer in layers)
