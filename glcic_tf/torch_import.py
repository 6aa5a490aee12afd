"""The authors' released Torch7 completion networks (.t7) as our Keras completion network.

A released file (completionnet_places2.t7, completionnet_places2_freeform.t7,
completionnet_celeba.t7) holds the Lua table {model = <completion network>, mean = <RGB mean>}.
The model is read with `torchfile` (pip install "glcic-tf[torch]"), its layers are walked in
order (inside nn.Sequential or nngraph's nn.gModule) and compared one by one with Table 1
(models.COMPLETION_NETWORK); the first layer that differs is named and nothing is written.

Layouts: Torch convolution weights are [out, in, kh, kw] and full (transposed) convolution
weights [in, out, kh, kw]; Keras wants [kh, kw, in, out] and [kh, kw, out, in]. Torch's
convolutions have a bias before each BatchNorm, ours do not (BatchNorm's offset makes it
redundant), so each bias is folded into the BatchNorm's moving mean; a Torch BatchNorm epsilon
other than ours is folded into the moving variance. Both foldings are exact in inference mode.

A broken or hostile file is refused in one line (UserError) before anything large is allocated:

- `torchfile.load` alone trusts the sizes a file declares. It allocates each storage by its
  declared element count (`np.fromfile(count=n)`: a 121-byte file declaring 2e9 floats reserves
  8 GB of address space; 1e10 floats raise MemoryError) and makes each tensor an unchecked
  `as_strided` view of its storage, so a tensor declaring more numbers than its storage holds
  reads outside it (a 121-byte file ends Python with a segmentation fault) and a stride-0 tensor
  repeats one number any number of times. The file is therefore read by `_bounded_reader()`,
  torchfile's reader whose strings, Lua functions, storages and tensors are read by checked
  code: each declared size must fit in the bytes left in the file, and each tensor must lie
  inside its storage and hold no more numbers than it. What is read is then at most about the
  file's size (Python's tables and numbers take a few times their bytes).
- Every field the conversion reads is checked for its type and range as the layers are read
  (`_checked_fields`): sizes are integers, weights, biases and running statistics float tensors
  of exactly the declared number of elements. Refusals name the Torch layer, the field, the
  value found and the value expected; `--list` prints only checked values.
- The width is the first convolution's output planes over 64, and at most MAX_WIDTH = 1 (64
  planes): the released files are width 1, and they are what this module reads (our own runs,
  at any width, need no conversion); narrower files, like the tests' width 1/16, convert too.
  At width w, Table 1 has about w² x 6.06 M weights, so a file declaring 512 planes would make
  an 8x wider network of 64 x 6.06 M weights (2.5 GB at its peak, then refused). The Torch layers
  are then compared with Table 1 at that width (`table_1`) before the Keras network is built.
"""

import functools
import math
import os
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

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

MAX_WIDTH = 1.0  # the released files' width (64 planes in the first convolution); see the module's docstring
MAX_SIZE = 2**31 - 1  # the largest plane count, kernel, stride or padding accepted (Torch's int)

_ELEMENTS = {"Byte": np.uint8, "Char": np.int8, "Short": np.int16, "Int": np.int32, "Long": np.int64,
             "Float": np.float32, "Double": np.float64}


def _classes(suffix: str) -> Dict[bytes, np.dtype]:
    """torch.FloatTensor, torch.CudaTensor (cutorch's float), torch.CudaDoubleTensor... and their element types."""
    classes = {}
    for name, dtype in _ELEMENTS.items():
        for prefix in (name, "Cuda" if name == "Float" else f"Cuda{name}"):
            classes[f"torch.{prefix}{suffix}".encode()] = np.dtype(dtype)
    return classes


_TENSORS, _STORAGES = _classes("Tensor"), _classes("Storage")  # what _BoundedReader reads itself


class TorchLayer(NamedTuple):
    """One Torch module of the network in forward order: its position, class name and checked fields."""

    number: int  # 1-based, counting every non-container module
    typename: str  # e.g. "nn.SpatialConvolution"
    fields: Dict[str, object]  # the fields the conversion reads, checked (_checked_fields)

    @property
    def kind(self) -> str:
        return self.typename.split(".")[-1]  # nn.ReLU and cudnn.ReLU alike

    def describe(self) -> str:
        if self.kind in CONVOLUTIONS | FULL_CONVOLUTIONS:
            return _convolution_text(self.typename, self.fields)
        if self.kind in BATCHNORMS:
            return f"{self.typename} of {self.fields['channels']} channels"
        return self.typename


class Converted(NamedTuple):
    network: object  # keras.Model
    mean_pixel: Tuple[float, float, float]
    width: float


def _convolution_text(typename: str, f: Dict[str, object]) -> str:
    return (
        f"{typename} {f['nInputPlane']}->{f['nOutputPlane']}, {f['kH']}x{f['kW']}, stride {f['dH']}x{f['dW']}, "
        f"dilation {f['dilationH']}x{f['dilationW']}, padding {f['padH']}x{f['padW']}"
    )


# --- reading the file, every declared size checked ------------------------------------------------


class _Malformed(Exception):
    """A size declared in the file that the file cannot hold."""


def _torchfile():
    try:
        import torchfile  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise UserError('reading .t7 files needs torchfile: pip install "glcic-tf[torch]"') from None
    return torchfile


@functools.lru_cache(maxsize=None)
def _bounded_reader():
    """torchfile.T7Reader whose strings, functions, storages and tensors are read by checked code."""
    torchfile = _torchfile()
    objects = (torchfile.TYPE_TORCH, torchfile.TYPE_FUNCTION, torchfile.TYPE_RECUR_FUNCTION,
               torchfile.LEGACY_TYPE_RECUR_FUNCTION)

    class BoundedReader(torchfile.T7Reader):
        def __init__(self, file):
            super().__init__(file)
            self.file_size = os.fstat(file.fileno()).st_size
            self.storages = set()  # ids of the storages read: what a tensor may view

        def _fits(self, count: int, item_bytes: int, what: str, unit: str) -> int:
            """`count` if that many items of `item_bytes` fit in the rest of the file."""
            left = self.file_size - self.f.tell()
            if count < 0 or count * item_bytes > left:
                size = f"{count} {unit}" + (f" of {item_bytes} bytes" if item_bytes > 1 else "")
                raise _Malformed(f"{what} declares {size}, and {left} bytes are left in the file")
            return count

        def read_string(self, disable_utf8=False):
            start = self.f.tell()
            data = self.f.read(self._fits(self.read_int(), 1, f"a string at byte {start}", "bytes"))
            return data if disable_utf8 or not self.utf8_decode_strings else data.decode("utf8")

        def read_obj(self):
            start = self.f.tell()
            typeidx = self.read_int()
            if typeidx in objects:
                index = self.read_int()
                if index not in self.objects:
                    if typeidx != torchfile.TYPE_TORCH:
                        self._fits(self.read_int(), 1, f"a Lua function at byte {start}", "bytes")  # torchfile reads it
                    else:
                        version = self.read_string(disable_utf8=True)
                        class_name = self.read_string(disable_utf8=True) if version.startswith(b"V ") else version
                        read = self._tensor if class_name in _TENSORS else None
                        read = self._storage if class_name in _STORAGES else read
                        if read is not None:
                            self.objects[index] = None  # as torchfile: a storage cannot hold itself
                            self.objects[index] = read(class_name.decode(), start)
                            return self.objects[index]
            self.f.seek(start)
            return super().read_obj()

        def _storage(self, class_name: str, start: int) -> np.ndarray:
            dtype = _STORAGES[class_name.encode()]
            count = self._fits(self.read_long(), dtype.itemsize, f"a {class_name} at byte {start}", "numbers")
            data = np.fromfile(self.f, dtype, count)
            if data.size != count:  # the file shrank while it was read
                raise _Malformed(f"a {class_name} holds {data.size} of its {count} numbers")
            self.storages.add(id(data))
            return data

        def _tensor(self, class_name: str, start: int) -> np.ndarray:
            dtype, what = _TENSORS[class_name.encode()], f"a {class_name} at byte {start}"
            ndim = self._fits(self.read_int(), 16, what, "dimensions")  # a size and a stride each
            sizes, strides = self.read_long_array(ndim), self.read_long_array(ndim)
            offset = self.read_long() - 1
            storage = self.read_obj()
            if storage is None or ndim == 0:
                return np.empty(0, dtype)
            if id(storage) not in self.storages or storage.dtype != dtype:
                raise _Malformed(f"{what}: its storage is not a {class_name.replace('Tensor', 'Storage')}")
            if min(sizes) < 0 or min(strides) < 0 or offset < 0:
                raise _Malformed(f"{what} declares a negative size, stride or offset")
            if 0 in sizes:
                return np.empty(0, dtype)
            last = offset + sum((size - 1) * stride for size, stride in zip(sizes, strides))
            count = math.prod(sizes)
            if last >= storage.size or count > storage.size:
                raise _Malformed(f"{what} declares {count} numbers up to number {last + 1} of its storage, "
                                 f"which holds {storage.size}")
            strides = [0 if size == 1 else stride * dtype.itemsize for size, stride in zip(sizes, strides)]
            return np.lib.stride_tricks.as_strided(storage[offset:], sizes, strides, writeable=False)

    return BoundedReader


# --- checking the fields that the conversion reads ---------------------------------------------------


def _name(obj) -> str:
    """A Torch object's class name, printable and short."""
    typename = obj.torch_typename() if hasattr(obj, "torch_typename") else type(obj).__name__
    text = typename.decode("utf-8", "replace") if isinstance(typename, bytes) else str(typename)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 60 else text[:57] + "..."


def _shown(value) -> str:
    """A value from the file as a refusal shows it: one short line."""
    torchfile = _torchfile()
    if value is None:
        return "nil (missing)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return str(value) if abs(value) < 10**15 else f"{value:.3g}"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (bytes, str)):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        return repr(text if len(text) <= 40 else text[:37] + "...")
    if isinstance(value, np.ndarray):
        return f"a tensor of {value.size} {value.dtype} numbers"
    if isinstance(value, (dict, list)):
        return "a table"
    if isinstance(value, torchfile.TorchObject):
        return f"a {_name(value)} object"
    return f"a {type(value).__name__}"


def _integer(where: str, fields: dict, name: str, minimum: int, default: Optional[int] = None) -> int:
    value = fields.get(name.encode())
    if value is None and default is not None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise UserError(f"{where}: {name} is {_shown(value)}, an integer is expected")
    if not minimum <= value <= MAX_SIZE:
        raise UserError(f"{where}: {name} is {_shown(value)}, an integer from {minimum} to {MAX_SIZE} is expected")
    return value


def _floats(where: str, fields: dict, name: str, shape: Optional[Tuple[int, ...]], optional: bool = False):
    """A float tensor field as float32 of `shape` (None: one number or more); None for an optional one left out."""
    value = fields.get(name.encode())
    if optional and (value is None or isinstance(value, np.ndarray) and value.size == 0):
        return None
    if shape is None:
        expected, right_size = "one or more", isinstance(value, np.ndarray) and value.size > 0
    else:
        count = math.prod(shape)
        expected = f"{'x'.join(map(str, shape))} = {count}" if len(shape) > 1 else str(count)
        right_size = isinstance(value, np.ndarray) and value.size == count
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
        raise UserError(f"{where}: {name} is {_shown(value)}, a float tensor of {expected} numbers is expected")
    if not right_size:
        raise UserError(f"{where}: {name} holds {value.size} numbers, {expected} expected")
    if shape and value.ndim == len(shape) and value.shape != tuple(shape):
        shown = "x".join(map(str, value.shape))
        raise UserError(f"{where}: {name} is {shown}, {'x'.join(map(str, shape))} expected")
    if not np.all(np.isfinite(value)):
        raise UserError(f"{where}: {name} holds a NaN or an infinite number")
    return np.asarray(value, np.float32).reshape(shape or (-1,))


def _number(where: str, fields: dict, name: str, default: float) -> float:
    value = fields.get(name.encode())
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
        raise UserError(f"{where}: {name} is {_shown(value)}, a number of at least 0 is expected")
    return float(value)


def _checked_fields(where: str, kind: str, fields: dict) -> Dict[str, object]:
    """The fields of one Torch layer that the conversion reads, each checked for its type and range."""
    checked: Dict[str, object] = {}
    if kind in CONVOLUTIONS | FULL_CONVOLUTIONS:
        for name in ("nInputPlane", "nOutputPlane", "kH", "kW", "dH", "dW"):
            checked[name] = _integer(where, fields, name, 1)
        for name in ("dilationH", "dilationW"):  # only SpatialDilatedConvolution has them
            checked[name] = _integer(where, fields, name, 1, default=1)
        for name in ("padH", "padW") + (("adjH", "adjW") if kind in FULL_CONVOLUTIONS else ()):
            checked[name] = _integer(where, fields, name, 0, default=0)  # Torch reads nil padding as 0
        planes = (checked["nInputPlane"], checked["nOutputPlane"])
        shape = (*(planes if kind in FULL_CONVOLUTIONS else planes[::-1]), checked["kH"], checked["kW"])
        checked["weight"] = _floats(where, fields, "weight", shape)
        checked["bias"] = _floats(where, fields, "bias", (checked["nOutputPlane"],), optional=True)
    elif kind in BATCHNORMS:
        checked["running_mean"] = _floats(where, fields, "running_mean", None)
        channels = checked["channels"] = checked["running_mean"].size
        if fields.get(b"running_var") is not None or fields.get(b"running_std") is None:
            checked["running_var"] = _floats(where, fields, "running_var", (channels,))
        else:  # nn before 2016 stored running_std = 1 / sqrt(var + eps)
            checked["running_std"] = _floats(where, fields, "running_std", (channels,))
            if not np.all(checked["running_std"] > 0):
                raise UserError(f"{where}: running_std holds a number below or equal to 0, all above 0 expected")
        checked["weight"] = _floats(where, fields, "weight", (channels,), optional=True)
        checked["bias"] = _floats(where, fields, "bias", (channels,), optional=True)
        checked["eps"] = _number(where, fields, "eps", models.BN_EPSILON)
    return checked


def _fields(module, number: int) -> dict:
    if not isinstance(module, _torchfile().TorchObject):
        raise UserError(f"Torch layer {number} is {_shown(module)}, a Torch module is expected")
    fields = module._obj  # pylint: disable=protected-access  (torchfile keeps the field table there)
    if isinstance(fields, list) and not fields:  # torchfile reads an empty table as an empty list
        return {}
    if not isinstance(fields, dict):
        raise UserError(f"Torch layer {number} ({_name(module)}): its fields are {_shown(fields)}, a table is expected")
    return fields


def _flatten(module, layers: List[TorchLayer], containers: set) -> None:
    """Appends the non-container modules of `module` in forward order, their fields checked."""
    number = len(layers) + 1
    fields, typename = _fields(module, number), _name(module)
    kind = typename.split(".")[-1]
    if kind not in CONTAINERS:
        if kind not in SKIPPED:
            checked = _checked_fields(f"Torch layer {number} ({typename})", kind, fields)
            layers.append(TorchLayer(number, typename, checked))
        return
    where = f"the {typename} before Torch layer {number}"
    if id(module) in containers:  # shared containers would repeat their layers, exponentially
        raise UserError(f"{where} appears twice in the network; Table 1 is one chain of modules")
    containers.add(id(module))
    children = fields.get(b"modules")
    if children is not None and not isinstance(children, list):
        raise UserError(f"{where}: modules is {_shown(children)}, a list of modules is expected")
    if kind == "gModule":
        _check_chain(fields.get(b"forwardnodes"), where)
    for child in children or []:  # a gModule's modules are in its forward (topological) order
        _flatten(child, layers, containers)


def _check_chain(nodes, where: str) -> None:
    """Refuses an nngraph whose forward graph branches: Table 1 is a single chain."""
    if nodes is not None and not isinstance(nodes, list):
        raise UserError(f"{where}: forwardnodes is {_shown(nodes)}, a list of nngraph nodes is expected")
    for number, node in enumerate(nodes or [], start=1):
        fields = node._obj if isinstance(node, _torchfile().TorchObject) else None  # pylint: disable=protected-access
        fields = {} if isinstance(fields, list) and not fields else fields
        if not isinstance(fields, dict):
            raise UserError(f"{where}: forward node {number} is {_shown(node)}, an nngraph.Node is expected")
        children, data = fields.get(b"children"), fields.get(b"data")
        if children is not None and not isinstance(children, list):
            raise UserError(f"{where}: forward node {number}'s children is {_shown(children)}, a list is expected")
        if len(children or []) > 1:
            module = data.get(b"module") if isinstance(data, dict) else None
            after = _name(module) if module is not None else "a node"
            raise UserError(f"the nngraph network branches after {after}; Table 1's completion network is one chain")


def _mean(value, path: str) -> Tuple[float, float, float]:
    numbers = None
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        numbers = value.reshape(-1)
    elif isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        numbers = np.array(value, np.float64)
    if numbers is None:
        shown = _shown(value)
    else:
        numbers = numbers.astype(np.float32)
        if numbers.size == 3 and np.all((numbers >= 0) & (numbers <= 1)):
            return tuple(float(str(number)) for number in numbers)  # the shortest decimal of each float32
        shown = str(numbers[:6].tolist())[:-1] + (", ...]" if numbers.size > 6 else "]")
    raise UserError(f"{path}: 'mean' should be three numbers in [0, 1] (the RGB mean), not {shown}")


def read_t7(path: str) -> Tuple[List[TorchLayer], Tuple[float, float, float]]:
    """The network's layers in forward order, their fields checked, and the stored per-channel mean of a released .t7."""
    reader = _bounded_reader()
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist")
    try:
        with open(path, "rb") as file:
            contents = reader(file).read_obj()
    except _Malformed as error:
        raise UserError(f"{path} is not a readable Torch7 file: {error}") from None
    except Exception as error:  # torchfile raises whatever struct/numpy raise on a broken file
        raise UserError(f"{path} is not a readable Torch7 file ({type(error).__name__}: {str(error)[:200]})") from None
    if not isinstance(contents, dict) or contents.get(b"model") is None:
        raise UserError(f"{path} does not hold the table {{model = ..., mean = ...}} that the authors' files hold")
    mean_pixel = _mean(contents.get(b"mean"), path)
    layers: List[TorchLayer] = []
    try:
        _flatten(contents[b"model"], layers, set())
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
    return layers, mean_pixel


# --- Table 1 at the file's width, compared before anything is built -------------------------------


class Expected(NamedTuple):
    """One Torch layer of Table 1: its kind, the fields Table 1 fixes and the Keras layer it fills."""

    kind: str  # "conv", "full", "bn", "ReLU" or "Sigmoid"
    fields: Dict[str, int]  # in the order they are compared
    keras_name: str  # the layer of models.completion_network that takes its weights ("" for none)

    def describe(self) -> str:
        if self.kind in ("conv", "full"):
            torch_class = "SpatialFullConvolution" if self.kind == "full" else (
                "SpatialDilatedConvolution" if self.fields["dilationH"] > 1 else "SpatialConvolution")
            return f"{_convolution_text(torch_class, self.fields)} ({self.keras_name})"
        if self.kind == "bn":
            return f"SpatialBatchNormalization of {self.fields['channels']} channels ({self.keras_name})"
        return f"nn.{self.kind}"


def table_1(width: float) -> List[Expected]:
    """Table 1 at `width` as the Torch layers that the authors' files hold, as models.completion_network names them."""
    expected: List[Expected] = []
    inputs, last = 4, len(models.COMPLETION_NETWORK)
    for index, spec in enumerate(models.COMPLETION_NETWORK, start=1):
        outputs = 3 if index == last else models.scaled_filters(spec.filters, width)
        name = "output_conv" if index == last else f"{spec.kind}{index}"
        size, stride, dilation = spec.kernel, spec.stride, spec.dilation
        fields = dict(nInputPlane=inputs, nOutputPlane=outputs, kH=size, kW=size, dH=stride, dW=stride,
                      dilationH=dilation, dilationW=dilation)
        if spec.kind == "deconv":
            padding = (size - stride) // 2  # Keras's "same" at kernel 4, stride 2
            expected.append(Expected("full", {**fields, "padH": padding, "padW": padding, "adjH": 0, "adjW": 0}, name))
        else:
            padding = (size - 1) // 2 * dilation
            expected.append(Expected("conv", {**fields, "padH": padding, "padW": padding}, name))
        if index == last:
            expected.append(Expected("Sigmoid", {}, ""))
        else:
            expected += [Expected("bn", {"channels": outputs}, f"{name}_bn"), Expected("ReLU", {}, "")]
        inputs = outputs
    return expected


_CLASSES = {"conv": CONVOLUTIONS, "full": FULL_CONVOLUTIONS, "bn": BATCHNORMS, "ReLU": {"ReLU"}, "Sigmoid": {"Sigmoid"}}


def _difference(expected: Expected, layer: TorchLayer) -> Optional[str]:
    """The first field in which a Torch layer differs from Table 1's layer at its place, or None."""
    classes = _CLASSES[expected.kind]
    if layer.kind not in classes:
        return f"its class is {layer.typename}, {' or '.join(sorted(f'nn.{c}' for c in classes))} expected"
    for name, value in expected.fields.items():
        found = layer.fields[name]
        if found != value:
            if name == "channels":
                return f"running_mean holds {found} numbers (one per channel), {value} expected"
            return f"{name} is {found}, {value} expected"
    return None


def _width(layers: Sequence[TorchLayer], path: str) -> float:
    first = layers[0] if layers else None
    if first is None or first.kind not in CONVOLUTIONS:
        raise UserError(f"{path}: the network should start with a convolution (Table 1), not {first and first.typename}")
    planes, full = first.fields["nOutputPlane"], models.COMPLETION_NETWORK[0].filters
    if planes > MAX_WIDTH * full:
        raise UserError(
            f"{path}: Torch layer 1 ({first.typename}): nOutputPlane is {planes}, at most {MAX_WIDTH * full:g} expected "
            f"(width {MAX_WIDTH:g}, the released files')"
        )
    return planes / full


def _batchnorm_weights(torch_bn: TorchLayer, conv_bias: Optional[np.ndarray]) -> List[np.ndarray]:
    """Keras [gamma, beta, moving_mean, moving_variance] equal in inference to Torch's conv bias + BN."""
    f = torch_bn.fields
    channels, eps = f["channels"], f["eps"]
    if "running_var" in f:
        variance = f["running_var"] + np.float32(eps)
    else:  # 1 / sqrt(var + eps)
        variance = 1.0 / np.square(f["running_std"])
    gamma = f["weight"] if f["weight"] is not None else np.ones(channels, np.float32)
    beta = f["bias"] if f["bias"] is not None else np.zeros(channels, np.float32)
    bias = conv_bias if conv_bias is not None else np.zeros(channels, np.float32)
    moving_variance = variance - models.BN_EPSILON
    if np.any(moving_variance < 0):
        raise UserError(
            f"Torch layer {torch_bn.number} ({torch_bn.typename}): running variance plus eps ({eps:g}) is "
            f"{float(variance.min()):g} in a channel, at least our epsilon {models.BN_EPSILON:g} expected"
        )
    return [gamma, beta, f["running_mean"] - bias, moving_variance]


def convert(path: str) -> Converted:
    """Reads a released .t7 and returns our completion network holding its weights, and its mean.

    Every layer is checked against Table 1 at the file's width before the network is built.
    """
    layers, mean_pixel = read_t7(path)
    width = _width(layers, path)
    expected = table_1(width)
    for index, want in enumerate(expected):
        if index >= len(layers):
            raise UserError(
                f"{path}: Torch layer {index + 1} (the end of the network) differs from Table 1, which expects "
                f"{want.describe()} there: the file has {len(layers)} layers, Table 1 {len(expected)}"
            )
        difference = _difference(want, layers[index])
        if difference:
            raise UserError(
                f"{path}: Torch layer {index + 1} ({layers[index].describe()}) differs from Table 1, which expects "
                f"{want.describe()} there: {difference}"
            )
    if len(layers) > len(expected):
        extra = layers[len(expected)]
        raise UserError(f"{path}: Torch layer {extra.number} ({extra.describe()}) follows Table 1's last layer (sigmoid)")

    network = models.completion_network(width)
    conv_bias = None  # of the convolution before the current BatchNorm
    for want, torch_layer in zip(expected, layers):
        f = torch_layer.fields
        if want.kind == "conv":
            keras_layer = network.get_layer(want.keras_name)
            kernel, conv_bias = f["weight"].transpose(2, 3, 1, 0), f["bias"]
            if keras_layer.use_bias:  # the output layer, which has no BatchNorm after it
                keras_layer.set_weights([kernel, conv_bias if conv_bias is not None else np.zeros(3, np.float32)])
            else:
                keras_layer.set_weights([kernel])
        elif want.kind == "full":
            network.get_layer(want.keras_name).set_weights([f["weight"].transpose(2, 3, 1, 0)])
            conv_bias = f["bias"]
        elif want.kind == "bn":
            try:
                network.get_layer(want.keras_name).set_weights(_batchnorm_weights(torch_layer, conv_bias))
            except UserError as error:
                raise UserError(f"{path}: {error}") from None
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
