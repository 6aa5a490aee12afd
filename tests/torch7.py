"""Torch7 files for the converter tests: a minimal serializer, a Torch-layout Table 1 network, and
its forward pass computed independently in NumPy (float64, NCHW, Torch's padding rules).

The serializer writes the binary format of Torch7's `torch.save` (the one `torchfile` reads):
typed values, tables and torch classes with reference indices, tensors with their storage.
"""

import struct
from typing import Dict, List, Sequence

import numpy as np

NIL, NUMBER, STRING, TABLE, TORCH, BOOLEAN = 0, 1, 2, 3, 4, 5


class TorchClass:
    """A Torch object: its class name and its field table."""

    def __init__(self, typename: str, **fields):
        self.typename = typename
        self.fields = fields


class DeclaredTensor:
    """A tensor whose file header declares other sizes than it holds, as a broken or hostile file does.

    `data` is written as its storage's numbers; the storage declares `storage_size` numbers
    (default: as many as it holds) and the tensor `sizes`, `strides` and a 1-based `offset`.
    """

    def __init__(self, data, sizes, strides=None, offset=1, storage_size=None):
        self.data = np.ascontiguousarray(data, np.float32).reshape(-1)
        self.sizes = list(sizes)
        self.strides = list(strides) if strides is not None else [1] * len(self.sizes)
        self.offset = offset
        self.storage_size = self.data.size if storage_size is None else storage_size


# Tensor classes by element type; any other array is written as a FloatTensor.
_TENSOR_CLASSES = {np.dtype(np.float64): "Double", np.dtype(np.int64): "Long"}


class _Writer:
    def __init__(self, file):
        self.file = file
        self.indices: Dict[int, int] = {}
        self.keep = []  # keeps written objects alive so that id() stays unique

    def _int(self, value):
        self.file.write(struct.pack("<i", value))

    def _long(self, value):
        self.file.write(struct.pack("<q", value))

    def _string(self, text: str):
        data = text.encode()
        self._int(len(data))
        self.file.write(data)

    def _reference(self, obj, typeidx) -> bool:
        """Writes the type and reference index; True if the object was written before."""
        self._int(typeidx)
        seen = id(obj) in self.indices
        if not seen:
            self.indices[id(obj)] = len(self.indices) + 1
            self.keep.append(obj)
        self._int(self.indices[id(obj)])
        return seen

    def _tensor(self, name, sizes, strides, offset, storage_size, data):
        """A torch.<name>Tensor's header and its storage (a new object of its own) holding `data`."""
        self._string("V 1")
        self._string(f"torch.{name}Tensor")
        self._int(len(sizes))
        for size in sizes:
            self._long(size)
        for stride in strides:
            self._long(stride)
        self._long(offset)  # 1-based
        self._reference(object(), TORCH)
        self._string("V 1")
        self._string(f"torch.{name}Storage")
        self._long(storage_size)
        self.file.write(data.tobytes())

    def write(self, obj):
        if obj is None:
            self._int(NIL)
        elif isinstance(obj, bool):
            self._int(BOOLEAN)
            self._int(int(obj))
        elif isinstance(obj, (int, float)):
            self._int(NUMBER)
            self.file.write(struct.pack("<d", float(obj)))
        elif isinstance(obj, str):
            self._int(STRING)
            self._string(obj)
        elif isinstance(obj, np.ndarray):
            if self._reference(obj, TORCH):
                return
            name = _TENSOR_CLASSES.get(obj.dtype, "Float")
            array = np.ascontiguousarray(obj, np.float32 if name == "Float" else obj.dtype)
            strides = [stride // array.itemsize for stride in array.strides]
            self._tensor(name, array.shape, strides, 1, array.size, array)
        elif isinstance(obj, DeclaredTensor):
            if self._reference(obj, TORCH):
                return
            self._tensor("Float", obj.sizes, obj.strides, obj.offset, obj.storage_size, obj.data)
        elif isinstance(obj, TorchClass):
            if self._reference(obj, TORCH):
                return
            self._string("V 1")
            self._string(obj.typename)
            self.write(obj.fields)
        elif isinstance(obj, (dict, list)):
            if self._reference(obj, TABLE):
                return
            items = list(obj.items()) if isinstance(obj, dict) else list(enumerate(obj, start=1))
            self._int(len(items))
            for key, value in items:
                self.write(key)
                self.write(value)
        else:
            raise TypeError(type(obj))


def save(path, obj) -> None:
    with open(path, "wb") as file:
        _Writer(file).write(obj)


# --- a Torch-layout completion network (Table 1) with known random weights ---------------------

# (kind, kernel, dilation, stride, filters) as in the paper's Table 1, written out again here so
# the test does not read the table it checks.
TABLE_1 = [
    ("conv", 5, 1, 1, 64), ("conv", 3, 1, 2, 128), ("conv", 3, 1, 1, 128), ("conv", 3, 1, 2, 256),
    ("conv", 3, 1, 1, 256), ("conv", 3, 1, 1, 256), ("dilated", 3, 2, 1, 256), ("dilated", 3, 4, 1, 256),
    ("dilated", 3, 8, 1, 256), ("dilated", 3, 16, 1, 256), ("conv", 3, 1, 1, 256), ("conv", 3, 1, 1, 256),
    ("deconv", 4, 1, 2, 128), ("conv", 3, 1, 1, 128), ("deconv", 4, 1, 2, 64), ("conv", 3, 1, 1, 32),
    ("conv", 3, 1, 1, 3),
]


def completion_modules(channels_per_64: int, seed: int = 0) -> List[TorchClass]:
    """Table 1 as Torch7 nn modules, channel counts scaled by channels_per_64 / 64.

    Every convolution has a bias (Torch's default); BatchNorm statistics, eps and affine weights
    are random; one BatchNorm uses the pre-2016 `running_std` field and one eps is not 1e-5, so
    the converter's foldings are exercised.
    """
    rng = np.random.default_rng(seed)
    modules, inputs = [], 4
    for row, (kind, kernel, dilation, stride, filters) in enumerate(TABLE_1, start=1):
        outputs = 3 if row == len(TABLE_1) else max(1, filters * channels_per_64 // 64)
        scale = np.sqrt(2.0 / (inputs * kernel * kernel)) * (30 if row == len(TABLE_1) else 1)  # output spread over (0, 1)
        common = dict(kW=kernel, kH=kernel, dW=stride, dH=stride, nInputPlane=inputs, nOutputPlane=outputs,
                      bias=rng.normal(0, 0.1, outputs).astype(np.float32), train=False)
        if kind == "deconv":
            weight = rng.normal(0, scale, (inputs, outputs, kernel, kernel)).astype(np.float32)
            modules.append(TorchClass("nn.SpatialFullConvolution", weight=weight, padW=1, padH=1, adjW=0, adjH=0, **common))
        else:
            weight = rng.normal(0, scale, (outputs, inputs, kernel, kernel)).astype(np.float32)
            pad = (kernel - 1) // 2 * dilation
            if kind == "dilated":
                modules.append(TorchClass("nn.SpatialDilatedConvolution", weight=weight, padW=pad, padH=pad,
                                          dilationW=dilation, dilationH=dilation, **common))
            else:
                modules.append(TorchClass("nn.SpatialConvolution", weight=weight, padW=pad, padH=pad, **common))
        if row == len(TABLE_1):
            modules.append(TorchClass("nn.Sigmoid", train=False))
            break
        eps = 1e-3 if row == 5 else 1e-5
        batchnorm = dict(weight=rng.uniform(0.5, 1.5, outputs).astype(np.float32),
                         bias=rng.normal(0, 0.1, outputs).astype(np.float32),
                         running_mean=rng.normal(0, 0.2, outputs).astype(np.float32),
                         eps=eps, momentum=0.1, affine=True, train=False)
        variance = rng.uniform(0.5, 2.0, outputs).astype(np.float32)
        if row == 3:
            batchnorm["running_std"] = (1.0 / np.sqrt(variance + eps)).astype(np.float32)
        else:
            batchnorm["running_var"] = variance
        modules.append(TorchClass("nn.SpatialBatchNormalization", **batchnorm))
        modules.append(TorchClass("nn.ReLU", inplace=True, threshold=0, val=0, train=False))
        inputs = outputs
    return modules


def sequential(modules: Sequence[TorchClass]) -> TorchClass:
    return TorchClass("nn.Sequential", modules=list(modules), train=False)


def gmodule(modules: Sequence[TorchClass], branch_after: int = 0) -> TorchClass:
    """An nngraph nn.gModule over `modules` as one chain (input node, a node per module, output node).

    branch_after=N gives node N a second child, as a graph with a skip connection would have.
    """
    nodes = [TorchClass("nngraph.Node", data={"input": []}, children=[], id=1)]
    for number, module in enumerate(modules, start=2):
        nodes.append(TorchClass("nngraph.Node", data={"module": module, "mapindex": {}}, children=[], id=number))
    nodes.append(TorchClass("nngraph.Node", data={"input": []}, children=[], id=len(nodes) + 1))
    for node, successor in zip(nodes, nodes[1:]):
        node.fields["children"].append(successor)
    if branch_after:
        nodes[branch_after].fields["children"].append(nodes[-1])
    return TorchClass("nn.gModule", modules=list(modules), forwardnodes=nodes, innode=nodes[0],
                      outnode=nodes[-1], nInputs=1, train=False)


# --- the reference forward pass -------------------------------------------------------------------


def _convolution(x, weight, bias, stride, pad, dilation):
    """Torch SpatialConvolution: x (B, C, H, W), weight (O, C, k, k), zero padding `pad` on every side."""
    kernel = weight.shape[2]
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    height = (x.shape[2] - dilation * (kernel - 1) - 1) // stride + 1
    width = (x.shape[3] - dilation * (kernel - 1) - 1) // stride + 1
    out = np.zeros((x.shape[0], weight.shape[0], height, width))
    for i in range(kernel):
        for j in range(kernel):
            window = x[:, :, i * dilation:i * dilation + stride * (height - 1) + 1:stride,
                       j * dilation:j * dilation + stride * (width - 1) + 1:stride]
            out += np.einsum("bchw,oc->bohw", window, weight[:, :, i, j])
    return out + bias.reshape(1, -1, 1, 1)


def _full_convolution(x, weight, bias, stride, pad):
    """Torch SpatialFullConvolution: each input pixel scatters weight[c, :, :, :] at stride, then crop `pad`."""
    kernel = weight.shape[2]
    batch, _, height, width = x.shape
    full = np.zeros((batch, weight.shape[1], (height - 1) * stride + kernel, (width - 1) * stride + kernel))
    for i in range(kernel):
        for j in range(kernel):
            full[:, :, i:i + stride * (height - 1) + 1:stride, j:j + stride * (width - 1) + 1:stride] += np.einsum(
                "bchw,co->bohw", x, weight[:, :, i, j])
    out_height, out_width = (height - 1) * stride - 2 * pad + kernel, (width - 1) * stride - 2 * pad + kernel
    return full[:, :, pad:pad + out_height, pad:pad + out_width] + bias.reshape(1, -1, 1, 1)


def forward(modules: Sequence[TorchClass], x: np.ndarray) -> np.ndarray:
    """The network's output for x (B, 4, H, W), as Torch7 computes it in evaluate() mode, in float64."""
    x = x.astype(np.float64)
    for module in modules:
        f, kind = module.fields, module.typename.split(".")[-1]
        if kind in ("SpatialConvolution", "SpatialDilatedConvolution"):
            x = _convolution(x, f["weight"].astype(np.float64), f["bias"], f["dH"], f["padH"], f.get("dilationH", 1))
        elif kind == "SpatialFullConvolution":
            x = _full_convolution(x, f["weight"].astype(np.float64), f["bias"], f["dH"], f["padH"])
        elif kind == "SpatialBatchNormalization":
            inverse_std = f["running_std"] if "running_std" in f else 1.0 / np.sqrt(f["running_var"] + f["eps"])
            shape = (1, -1, 1, 1)
            x = (x - f["running_mean"].reshape(shape)) * inverse_std.reshape(shape) * f["weight"].reshape(shape)
            x = x + f["bias"].reshape(shape)
        elif kind == "ReLU":
            x = np.maximum(x, 0)
        elif kind == "Sigmoid":
            x = 1.0 / (1.0 + np.exp(-x))
        else:
            raise ValueError(kind)
    return x
