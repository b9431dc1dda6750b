"""Safe reader for PyTorch checkpoints: needs no torch and never runs code from the file.

    obj = load_checkpoint(path)

Formats read (chosen by the file's first bytes, not its name):
  * zip archives written by ``torch.save`` (default since torch 1.6): ``<prefix>/data.pkl`` whose
    persistent ids ``('storage', StorageType, key, location, numel)`` name raw records
    ``<prefix>/data/<key>``; ``<prefix>/byteorder`` says 'little' or 'big' (big is byteswapped).
  * legacy (non-zip) ``torch.save`` files: magic-number pickle, protocol 1001, sys_info pickle,
    the main pickle (persistent ids ``('storage', StorageType, root_key, location, numel[, view])``),
    the pickled list of storage keys, then per key an int64 little-endian element count and the
    raw little-endian bytes. Any location tag ('cpu', 'cuda:0', ...) is accepted and ignored.
  * plain pickles (``pickle.dump``) holding tensors: storages there reduce to
    ``torch.storage._load_from_bytes(bytes)`` whose bytes are themselves a torch.save file,
    parsed recursively. NVlabs stylegan2-ada / stylegan3 network pickles are of this kind.

What comes back:
  * tensors and ``nn.Parameter`` -> ``numpy.ndarray`` with the tensor's shape (storage offset and
    strides honoured). float16 and bfloat16 come back as **float32** (numpy has no bfloat16;
    the conversion is exact). Other dtypes keep theirs (float32/64, int8..64, uint8..64, bool,
    complex64/128). A tensor covering its whole contiguous storage is returned as a writable view
    of the bytes read for that storage (no second copy); other views are copied. So two tensors
    that share one whole storage share memory, as they do in torch.
  * dict / ``collections.OrderedDict`` / list / tuple / set / str / int / float / None ... as is;
    ``argparse.Namespace`` -> `NamespaceDict` (a dict); ``dnnlib.EasyDict`` -> `EasyDict` (a dict);
    ``torch.Size`` -> tuple; ``torch.device`` -> str ('cuda:0'); ``torch.float32`` -> `TorchDtype`.
  * NVlabs persistent objects (``torch_utils.persistence._reconstruct_persistent_obj(meta)``) and
    pickled ``torch.nn.modules.*`` instances -> `PersistentObject`. The embedded ``module_src`` is
    kept as text only: it is never compiled or executed.
  * numpy arrays / scalars pickled through numpy's own reduce functions -> numpy objects.

Safety: unpickling goes through an allow-list of *data constructors*. Any other global
(``os.system``, ``builtins.eval``, unknown classes, ...) raises `UnsafePickleError` before anything
is called; nothing is imported by name from the file. Corrupt, truncated, empty or foreign files
raise `CheckpointError`. Both name the file and are ``ValueError`` subclasses.
"""
from __future__ import annotations

import _compat_pickle
import collections
import dataclasses
import io
import math
import operator
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

__all__ = [
    "load_checkpoint",
    "CheckpointError",
    "UnsafePickleError",
    "PersistentObject",
    "NamespaceDict",
    "EasyDict",
    "TorchDtype",
    "PERSISTENT_MODULE",
]

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # first pickle of a legacy torch.save file
PROTOCOL_VERSION = 1001  # second pickle of a legacy torch.save file
PERSISTENT_MODULE = "<torch_utils.persistence>"  # PersistentObject.module_name of NVlabs objects
_MAX_NESTING = 4  # _load_from_bytes inside _load_from_bytes ... (real files nest once)
_CHUNK = 64 << 20  # bytes per readinto call on compressed zip members


# ----------------------------------------------------------------------------------------- errors
class CheckpointError(ValueError):
    """The file is not a readable checkpoint (corrupt, truncated, empty, unsupported content).

    The message starts with the file's path once `load_checkpoint` has attached it.
    """

    def __init__(self, message: str, path: str | None = None):
        self.message = message
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)

    def located(self, path: str) -> "CheckpointError":
        return CheckpointError(self.message, path)


class UnsafePickleError(CheckpointError):
    """The pickle references a global outside the allow-list; nothing was called.

    Attribute ``global_name`` is the refused ``module.name``.
    """

    def __init__(self, global_name: str, path: str | None = None, detail: str | None = None):
        self.global_name = global_name
        self.detail = detail
        message = (
            f"refused to load global '{global_name}': "
            + (detail or "it is not a tensor-rebuilding or plain-data constructor")
            + ". Nothing from the file was executed; if the file is trusted and this type is "
            "harmless, teach tools/convert_weights/safe_torch.py about it (never unpickle it with "
            "plain pickle/torch.load)"
        )
        super().__init__(message, path)

    def located(self, path: str) -> "UnsafePickleError":
        return UnsafePickleError(self.global_name, path, self.detail)


# ----------------------------------------------------------------------------------------- dtypes
@dataclasses.dataclass(frozen=True)
class TorchDtype:
    """A ``torch.<name>`` dtype global met in a pickle (e.g. ``TorchDtype('float32')``)."""

    name: str


# torch dtype name -> little-endian numpy dtype of its raw storage bytes
_RAW_DTYPES = {
    "float32": "<f4",
    "float64": "<f8",
    "float16": "<f2",  # returned as float32
    "bfloat16": "<u2",  # returned as float32 (upper half of the float32 bit pattern)
    "int64": "<i8",
    "int32": "<i4",
    "int16": "<i2",
    "int8": "|i1",
    "uint8": "|u1",
    "bool": "|b1",
    "complex64": "<c8",
    "complex128": "<c16",
    "uint16": "<u2",
    "uint32": "<u4",
    "uint64": "<u8",
}
_DTYPE_ALIASES = {
    "float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32",
    "short": "int16", "cfloat": "complex64", "cdouble": "complex128",
}
# dtypes torch has but this reader cannot turn into numpy (clear error instead of garbage)
_UNSUPPORTED_DTYPES = {
    "float8_e5m2", "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz", "float8_e8m0fnu",
    "float4_e2m1fn_x2", "complex32", "chalf", "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2",
    "qint8", "quint8", "qint32", "quint4x2", "quint2x4",
}
_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
    "UntypedStorage": "uint8", "_UntypedStorage": "uint8",
}
_UNSUPPORTED_STORAGES = {
    "QInt8Storage", "QUInt8Storage", "QInt32Storage", "QUInt4x2Storage", "QUInt2x4Storage",
    "ComplexHalfStorage",
}
_STORAGE_MODULES = {"torch", "torch.cuda", "torch.storage", "torch.cuda.storage"}


def _raw_dtype(name: str) -> np.dtype:
    if name not in _RAW_DTYPES:
        raise CheckpointError(f"tensors of dtype torch.{name} are not supported by the safe reader")
    return np.dtype(_RAW_DTYPES[name])


def _to_output_dtype(arr: np.ndarray, name: str) -> np.ndarray:
    """Raw storage values -> returned values (fp16/bf16 widen to float32; others untouched)."""
    if name == "float16":
        return arr.astype(np.float32)
    if name == "bfloat16":
        widened = arr.astype(np.uint32)
        widened <<= 16
        return widened.view(np.float32)
    return arr


# ------------------------------------------------------------------------------- returned objects
def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class _FrozenType(type):
    """Metaclass of every class the unpickler may hand out: a pickle cannot patch them."""

    def __setattr__(cls, name, value):
        raise UnsafePickleError(_qualname(cls), detail=f"pickle tried to set class attribute {name!r}")

    def __delattr__(cls, name):
        raise UnsafePickleError(_qualname(cls), detail=f"pickle tried to delete class attribute {name!r}")


class NamespaceDict(dict, metaclass=_FrozenType):
    """What a pickled ``argparse.Namespace`` becomes: a dict of its attributes."""

    def __setstate__(self, state):
        self.update(_state_dict(state, "argparse.Namespace"))


class EasyDict(dict, metaclass=_FrozenType):
    """What a pickled ``dnnlib.EasyDict`` becomes: a dict that also allows ``d.key`` reads."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setstate__(self, state):
        self.update(_state_dict(state, "dnnlib.EasyDict"))


def _state_dict(state, what: str) -> dict:
    """BUILD state -> dict (also accepts the ``(dict, slotstate)`` form pickle uses for slots)."""
    if isinstance(state, tuple) and len(state) == 2:
        merged = {}
        for part in state:
            if part is not None:
                merged.update(_state_dict(part, what))
        return merged
    if state is None:
        return {}
    if not isinstance(state, dict):
        raise CheckpointError(f"state of a pickled {what} is a {type(state).__name__}, expected a dict")
    return state


_MISSING = object()


@dataclasses.dataclass(eq=False)
class PersistentObject:
    """A pickled object rebuilt as data: an NVlabs persistent class or a ``torch.nn`` module.

    module_name: 'torch.nn.modules.linear' etc. for torch modules; `PERSISTENT_MODULE` for NVlabs
        persistent objects (their module has no importable name: its source ships in the pickle).
    class_name:  e.g. 'Generator', 'Linear'.
    state:       the object's ``__dict__`` as pickled: for modules ``_parameters``, ``_buffers``,
                 ``_modules`` (dicts of name -> array / PersistentObject / None) plus attributes.
    module_src:  NVlabs only: the defining module's Python source, kept as text, never executed.
    version:     NVlabs only: persistence format version.
    """

    module_name: str
    class_name: str
    state: dict
    module_src: str | None = None
    version: int | None = None

    # ---- accessors
    def attr(self, name: str, default: Any = _MISSING) -> Any:
        """Attribute ``name`` as the object would expose it.

        Looks in the state, then in ``_parameters``/``_buffers``/``_modules`` (as nn.Module does),
        then ``_<name>`` (NVlabs persistent classes keep ``init_kwargs`` as ``_init_kwargs``).
        """
        if name in self.state:
            return self.state[name]
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.state.get(table)
            if isinstance(entries, dict) and name in entries:
                return entries[name]
        if "_" + name in self.state:
            return self.state["_" + name]
        if default is not _MISSING:
            return default
        public = sorted(k for k in self.state if not k.startswith("_"))
        if "_init_kwargs" in self.state:
            public += ["init_args", "init_kwargs"]
        raise KeyError(f"{self.class_name} has no attribute {name!r}; it has {public}")

    def children(self) -> dict[str, "PersistentObject"]:
        """Direct submodules (``_modules`` entries that are not None), in order."""
        modules = self.state.get("_modules") or {}
        out = {}
        for name, child in modules.items():
            if child is None:
                continue
            if not isinstance(child, PersistentObject):
                raise CheckpointError(f"{self.class_name}._modules[{name!r}] is a {type(child).__name__}, not a module")
            out[name] = child
        return out

    def submodule(self, path: str) -> "PersistentObject":
        """Nested submodule by dotted name, e.g. ``G.submodule('synthesis.b4')``."""
        node = self
        for part in path.split("."):
            kids = node.children()
            if part not in kids:
                raise KeyError(
                    f"{node.class_name} has no submodule {part!r} (looking up {path!r}); it has {sorted(kids)}"
                )
            node = kids[part]
        return node

    def parameters(self) -> "collections.OrderedDict[str, np.ndarray]":
        """All parameters with dotted names ('synthesis.b4.conv1.weight'), in state_dict order."""
        return collections.OrderedDict((k, v) for k, v, kind in self._walk("", set()) if kind == "param")

    def buffers(self, persistent_only: bool = True) -> "collections.OrderedDict[str, np.ndarray]":
        """All buffers with dotted names; non-persistent buffers only when asked (as state_dict)."""
        return collections.OrderedDict(
            (k, v) for k, v, kind in self._walk("", set(), not persistent_only) if kind == "buffer"
        )

    def state_dict(self) -> "collections.OrderedDict[str, np.ndarray]":
        """Parameters and persistent buffers in torch's ``state_dict()`` order and naming."""
        return collections.OrderedDict((k, v) for k, v, _ in self._walk("", set()))

    def _walk(self, prefix: str, seen: set, all_buffers: bool = False) -> Iterator[tuple[str, Any, str]]:
        if id(self) in seen:  # a module reachable twice would recurse forever
            return
        seen = seen | {id(self)}
        for name, value in (self.state.get("_parameters") or {}).items():
            if value is not None:
                yield prefix + name, value, "param"
        skip = self.state.get("_non_persistent_buffers_set") or set()
        for name, value in (self.state.get("_buffers") or {}).items():
            if value is not None and (all_buffers or name not in skip):
                yield prefix + name, value, "buffer"
        for name, child in self.children().items():
            yield from child._walk(f"{prefix}{name}.", seen, all_buffers)

    # ---- pickle protocol
    def __setstate__(self, state):
        # BUILD opcode after NEWOBJ of a torch.nn module stub: nn.Module.__setstate__ does the same.
        self.state.update(_state_dict(state, f"{self.module_name}.{self.class_name}"))

    def __reduce__(self):  # so copy/pickle of a PersistentObject never routes through __setstate__
        return (PersistentObject, (self.module_name, self.class_name, self.state, self.module_src, self.version))

    def __repr__(self) -> str:
        params = len(self.state.get("_parameters") or {})
        kids = list((self.state.get("_modules") or {}).keys())
        return f"PersistentObject({self.module_name}.{self.class_name}, {params} params, submodules={kids})"


class _ModuleStub(metaclass=_FrozenType):
    """Base of the stand-in classes for ``torch.nn.modules.*``: instantiating gives a PersistentObject."""

    _stub_module = ""
    _stub_name = ""

    def __new__(cls, *args, **kwargs):
        return PersistentObject(cls._stub_module, cls._stub_name, {})


def _module_stub(module: str, name: str) -> type:
    return _FrozenType(name, (_ModuleStub,), {"_stub_module": module, "_stub_name": name, "__module__": module})


# ------------------------------------------------------------------------------ storages, tensors
class _Storage:
    """One storage reference: its raw little-endian bytes (None until read) and element dtype."""

    __slots__ = ("buffer", "dtype")

    def __init__(self, buffer, dtype: str):
        self.buffer = buffer  # bytearray / memoryview of one, or None (legacy first pass)
        self.dtype = dtype  # torch dtype name

    def numpy(self) -> np.ndarray:
        """The whole storage as a 1-D array (fp16/bf16 -> float32)."""
        raw = _raw_dtype(self.dtype)
        return _to_output_dtype(np.frombuffer(self.buffer, raw, count=len(self.buffer) // raw.itemsize), self.dtype)


class _Pending:
    """Stand-in for tensors during the first pass over a legacy pickle (their bytes come later)."""

    def __repr__(self):
        return "<pending tensor>"


_PENDING = _Pending()


def _ints(value, what: str) -> tuple[int, ...]:
    try:
        out = tuple(operator.index(v) for v in value)
    except TypeError:
        raise CheckpointError(f"tensor {what} is {value!r}, expected a tuple of ints") from None
    if any(v < 0 for v in out):
        raise CheckpointError(f"tensor {what} {out} has negative entries")
    return out


def _tensor(storage, storage_offset, size, stride, dtype: str | None = None):
    """numpy array for a tensor viewing ``storage`` (offset/size/stride in elements).

    The view is bounds-checked against the storage before numpy touches memory.
    """
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"tensor rebuild got a {type(storage).__name__} where a storage belongs")
    if storage.buffer is None:
        return _PENDING
    dtype = dtype or storage.dtype
    raw_dtype = _raw_dtype(dtype)
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    (offset,) = _ints((storage_offset,), "storage offset")
    if len(size) != len(stride):
        raise CheckpointError(f"tensor size {size} and stride {stride} differ in length")
    raw = np.frombuffer(storage.buffer, raw_dtype, count=len(storage.buffer) // raw_dtype.itemsize)
    numel = math.prod(size)
    if numel == 0:
        return _to_output_dtype(np.zeros(size, raw_dtype), dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= raw.size:
        raise CheckpointError(
            f"tensor (offset {offset}, size {size}, stride {stride}) reaches element {last} of a "
            f"storage holding {raw.size}: the file is corrupt"
        )
    expected, contiguous = 1, True
    for n, s in zip(reversed(size), reversed(stride)):
        if n != 1 and s != expected:
            contiguous = False
        expected *= n
    if contiguous and offset == 0 and numel == raw.size:
        arr = raw.reshape(size)  # the whole storage: hand out the bytes read, no copy
        return _to_output_dtype(arr, dtype)
    view = np.lib.stride_tricks.as_strided(
        raw[offset:], shape=size, strides=tuple(s * raw.itemsize for s in stride), writeable=False
    )
    out = _to_output_dtype(view, dtype)
    return out.copy() if out is view else out  # copy so a small view does not pin a big storage


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    if not isinstance(dtype, TorchDtype):
        raise CheckpointError(f"_rebuild_tensor_v3 got dtype {dtype!r}")
    return _tensor(storage, storage_offset, size, stride, dtype.name)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return data


class _TensorType:
    """Marker for ``torch.Tensor`` / ``torch.nn.Parameter`` globals (only used as arguments)."""

    __slots__ = ("name",)

    def __init__(self, name):
        object.__setattr__(self, "name", name)

    def __setattr__(self, key, value):
        raise UnsafePickleError(self.name, detail="pickle tried to set attributes on it")

    def __setstate__(self, state):
        raise UnsafePickleError(self.name, detail="pickle tried to set state on it")


_TENSOR_REBUILDERS: set = set()  # filled below with the _SafeCallable wrappers of _rebuild_tensor*


def _rebuild_from_type_v2(func, new_type, args, state):
    if not isinstance(new_type, _TensorType):
        raise UnsafePickleError(repr(new_type), detail="_rebuild_from_type_v2 only rebuilds torch.Tensor/Parameter")
    if func not in _TENSOR_REBUILDERS:
        raise UnsafePickleError(repr(func), detail="_rebuild_from_type_v2 may only call tensor rebuild functions")
    return func(*args)


def _rebuild_device_tensor(data, dtype, device, requires_grad):
    return data  # data is already a rebuilt (cpu tensor ->) numpy array


# ---------------------------------------------------------------------------- numpy / builtins
_NP_RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]  # numpy's own _reconstruct, whatever its module
_NP_SCALAR = np.float64(0).__reduce__()[0]


def _np_frombuffer(buf, dtype, shape, order):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise CheckpointError(f"numpy _frombuffer with dtype {dtype!r}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    # Protocol-2 pickles store bytes as codecs.encode(text, 'latin1'); allow exactly that kind.
    codec = str(encoding).lower().replace("_", "-")
    if not isinstance(obj, str) or codec not in {"latin1", "latin-1", "iso-8859-1", "utf-8", "utf8", "ascii"}:
        raise UnsafePickleError("_codecs.encode", detail=f"only latin1/utf-8 text->bytes is allowed, not {encoding!r}")
    return obj.encode(encoding, errors)


def _copyreg_reconstructor(cls, base, state):
    """Protocol 0/1 object creation, limited to the dict-like / module stand-ins handed out."""
    if isinstance(cls, type) and issubclass(cls, _ModuleStub) and base is object:
        obj = cls.__new__(cls)
        if state is not None:
            obj.__setstate__(state)
        return obj
    if cls in (NamespaceDict, EasyDict) and base in (object, dict):
        return cls(state or {})
    if cls is collections.OrderedDict and base in (dict, collections.OrderedDict):
        return collections.OrderedDict(state or {})
    raise UnsafePickleError("copyreg._reconstructor", detail=f"not allowed for {cls!r} (base {base!r})")


def _torch_size(*args):
    return tuple(*args)


def _torch_device(kind, index=None):
    return str(kind) if index is None else f"{kind}:{index}"


def _reconstruct_persistent_obj(meta):
    """NVlabs ``torch_utils.persistence._reconstruct_persistent_obj``, minus running module_src."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        kind = meta.get("type") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"persistent object meta has type {kind!r}, expected a dict with type='class'")
    class_name, module_src = meta.get("class_name"), meta.get("module_src")
    if not isinstance(class_name, str) or not isinstance(module_src, str):
        raise CheckpointError("persistent object meta lacks class_name/module_src strings")
    state = _state_dict(meta.get("state"), f"persistent {class_name}")
    version = meta.get("version")
    return PersistentObject(PERSISTENT_MODULE, class_name, dict(state), module_src, version)


class _SafeCallable:
    """An allow-listed global: callable, immutable, refuses BUILD (a pickle cannot patch it)."""

    __slots__ = ("_name", "_fn")

    def __init__(self, name: str, fn: Callable):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __setattr__(self, key, value):
        raise UnsafePickleError(self._name, detail="pickle tried to set attributes on it")

    def __setstate__(self, state):
        raise UnsafePickleError(self._name, detail="pickle tried to set state on it")

    def __repr__(self):
        return self._name


def _wrap(name: str, fn: Callable) -> _SafeCallable:
    return _SafeCallable(name, fn)


_REBUILD_V1 = _wrap("torch._utils._rebuild_tensor", _rebuild_tensor)
_REBUILD_V2 = _wrap("torch._utils._rebuild_tensor_v2", _rebuild_tensor_v2)
_REBUILD_V3 = _wrap("torch._utils._rebuild_tensor_v3", _rebuild_tensor_v3)
_REBUILD_PARAM = _wrap("torch._utils._rebuild_parameter", _rebuild_parameter)
_REBUILD_PARAM_STATE = _wrap("torch._utils._rebuild_parameter_with_state", _rebuild_parameter_with_state)
_TENSOR_REBUILDERS.update({_REBUILD_V1, _REBUILD_V2, _REBUILD_V3, _REBUILD_PARAM, _REBUILD_PARAM_STATE})
_REBUILD_FROM_TYPE = _wrap("torch._tensor._rebuild_from_type_v2", _rebuild_from_type_v2)
_TENSOR = _TensorType("torch.Tensor")
_PARAMETER = _TensorType("torch.nn.parameter.Parameter")

# (module, name) -> what the unpickler gets. Types here are builtin (immutable) or _FrozenType.
_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("builtins", "range"): range,
    ("builtins", "bytes"): bytes,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "dict"): dict,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "bool"): bool,
    ("builtins", "str"): str,
    ("builtins", "object"): object,
    ("copyreg", "_reconstructor"): _wrap("copyreg._reconstructor", _copyreg_reconstructor),
    ("_codecs", "encode"): _wrap("_codecs.encode", _codecs_encode),
    ("codecs", "encode"): _wrap("codecs.encode", _codecs_encode),
    ("torch._utils", "_rebuild_tensor"): _REBUILD_V1,
    ("torch._utils", "_rebuild_tensor_v2"): _REBUILD_V2,
    ("torch._utils", "_rebuild_tensor_v3"): _REBUILD_V3,
    ("torch._utils", "_rebuild_parameter"): _REBUILD_PARAM,
    ("torch._utils", "_rebuild_parameter_with_state"): _REBUILD_PARAM_STATE,
    ("torch._tensor", "_rebuild_from_type_v2"): _REBUILD_FROM_TYPE,
    ("torch.tensor", "_rebuild_from_type_v2"): _REBUILD_FROM_TYPE,  # module name before torch 1.9
    ("torch", "Tensor"): _TENSOR,
    ("torch._tensor", "Tensor"): _TENSOR,
    ("torch.nn.parameter", "Parameter"): _PARAMETER,
    ("torch", "Size"): _wrap("torch.Size", _torch_size),
    ("torch", "device"): _wrap("torch.device", _torch_device),
    ("argparse", "Namespace"): NamespaceDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _wrap(
        "torch_utils.persistence._reconstruct_persistent_obj", _reconstruct_persistent_obj
    ),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _name in ("_rebuild_device_tensor_from_numpy", "_rebuild_device_tensor_from_cpu_tensor"):
    _GLOBALS[("torch._utils", _name)] = _wrap(f"torch._utils.{_name}", _rebuild_device_tensor)
for _np_mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _GLOBALS[(_np_mod, "_reconstruct")] = _wrap(f"{_np_mod}._reconstruct", _NP_RECONSTRUCT)
    _GLOBALS[(_np_mod, "scalar")] = _wrap(f"{_np_mod}.scalar", _NP_SCALAR)
for _np_mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _GLOBALS[(_np_mod, "_frombuffer")] = _wrap(f"{_np_mod}._frombuffer", _np_frombuffer)

# Real torch globals for tensor kinds this reader does not rebuild: say so instead of "unsafe".
_UNSUPPORTED_TORCH = {
    ("torch._utils", "_rebuild_qtensor"): "quantized tensors",
    ("torch._utils", "_rebuild_sparse_tensor"): "sparse tensors",
    ("torch._utils", "_rebuild_sparse_csr_tensor"): "sparse tensors",
    ("torch._utils", "_rebuild_nested_tensor"): "nested tensors",
    ("torch._utils", "_rebuild_wrapper_subclass"): "tensor subclasses",
    ("torch._utils", "_rebuild_meta_tensor_no_storage"): "meta tensors (they hold no data)",
    ("torch._utils", "_rebuild_xla_tensor"): "XLA tensors",
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """A ``torch.FloatStorage``-like global: only ever the type field of a persistent id."""

    name: str
    dtype: str


# ---------------------------------------------------------------------------------- unpickling
class _Context:
    """Per-file state shared by the (possibly nested) unpicklers."""

    def __init__(self, path: str):
        self.path = path
        self.depth = 0
        self.load_from_bytes = _wrap("torch.storage._load_from_bytes", self._load_from_bytes)

    def _load_from_bytes(self, data):
        if not isinstance(data, (bytes, bytearray)):
            raise CheckpointError(f"torch.storage._load_from_bytes got {type(data).__name__}, expected bytes")
        if self.depth >= _MAX_NESTING:
            raise CheckpointError("torch.storage._load_from_bytes nested too deeply")
        self.depth += 1
        try:
            return _load_stream(io.BytesIO(data), self, "embedded torch.save bytes")
        finally:
            self.depth -= 1

    def resolve(self, module: str, name: str) -> Any:
        """The allow-list: (module, name) from a GLOBAL opcode -> safe stand-in, or refusal."""
        if not isinstance(module, str) or not isinstance(name, str):
            raise UnsafePickleError(f"{module!r}.{name!r}", detail="global names must be strings")
        # Python 2 names (protocol < 3): what pickle.Unpickler.find_class would map them to.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return self.load_from_bytes
        if module in _STORAGE_MODULES and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module in _STORAGE_MODULES and name in _UNSUPPORTED_STORAGES:
            raise CheckpointError(f"{full}: quantized/complex-half storages are not supported by the safe reader")
        if module == "torch" and (name in _RAW_DTYPES or name in _UNSUPPORTED_DTYPES):
            return TorchDtype(name)
        if module == "torch" and name in _DTYPE_ALIASES:
            return TorchDtype(_DTYPE_ALIASES[name])
        if module.startswith("torch.nn.modules.") and name.isidentifier():
            return _module_stub(module, name)
        if (module, name) in _UNSUPPORTED_TORCH:
            raise CheckpointError(f"{full}: {_UNSUPPORTED_TORCH[(module, name)]} are not supported by the safe reader")
        raise UnsafePickleError(full)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, ctx: _Context, persistent_load: Callable | None):
        super().__init__(file, encoding="utf-8")  # torch.load's encoding for Python 2 str
        self._ctx = ctx
        self._persistent = persistent_load

    def find_class(self, module, name):
        return self._ctx.resolve(module, name)

    def persistent_load(self, pid):
        if self._persistent is None:
            raise CheckpointError("a plain pickle contains a persistent id (a torch.save record without its archive)")
        return self._persistent(pid)


def _unpickle(f, ctx: _Context, persistent_load: Callable | None = None) -> Any:
    return _Unpickler(f, ctx, persistent_load).load()


def _text(value, what: str) -> str:
    if isinstance(value, bytes):  # Python 2 str read with encoding='bytes'
        value = value.decode("ascii")
    if not isinstance(value, str):
        raise CheckpointError(f"{what} is a {type(value).__name__}, expected a string")
    return value


def _parse_storage_id(pid) -> tuple[str, str, int, tuple | None]:
    """('storage', StorageType, key, location, numel[, view]) -> (key, dtype, numel, view)."""
    if not isinstance(pid, tuple) or len(pid) not in (5, 6) or _text(pid[0], "persistent id type") != "storage":
        raise CheckpointError(f"unexpected persistent id {pid!r:.200}")
    storage_type, key, location, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
        raise CheckpointError(f"persistent id names storage type {storage_type!r}")
    _text(location, "storage location")  # 'cpu', 'cuda:0', ...: irrelevant here
    (numel,) = _ints((numel,), "storage size")
    view = pid[5] if len(pid) == 6 else None
    return _text(key, "storage key"), storage_type.dtype, numel, view


def _read_exact(f, nbytes: int, what: str) -> bytearray:
    """Read exactly ``nbytes`` into a fresh (writable) bytearray, without an intermediate copy."""
    buf = bytearray(nbytes)
    view, pos = memoryview(buf), 0
    while pos < nbytes:
        got = f.readinto(view[pos : pos + _CHUNK])
        if not got:
            raise CheckpointError(f"{what} is truncated: needs {nbytes} bytes, found {pos}; re-download the file")
        pos += got
    return buf


def _stream_size(f) -> int:
    here = f.tell()
    end = f.seek(0, os.SEEK_END)
    f.seek(here)
    return end


def _byteswap(buf, dtype: str) -> None:
    raw = _raw_dtype(dtype)
    if raw.itemsize > 1:
        np.frombuffer(buf, raw, count=len(buf) // raw.itemsize).byteswap(inplace=True)


# --------------------------------------------------------------------------------------- formats
def _zip_member(f, info: zipfile.ZipInfo, zf: zipfile.ZipFile, nbytes: int | None = None) -> bytearray:
    """Bytes of one archive member (the first ``nbytes`` of it), read once, CRC-checked when whole."""
    nbytes = info.file_size if nbytes is None else nbytes
    if nbytes > info.file_size:
        raise CheckpointError(
            f"record {info.filename} holds {info.file_size} bytes but {nbytes} are needed: the file is corrupt"
        )
    what = f"record {info.filename}"
    if info.compress_type == zipfile.ZIP_STORED:
        # Read from the local header ourselves: torch pads it for alignment, and this reads
        # straight into the destination buffer.
        f.seek(info.header_offset)
        header = f.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{what}: bad local zip header (corrupt or truncated zip archive): re-download it")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        buf = _read_exact(f, nbytes, what)
    else:
        with zf.open(info) as member:
            buf = _read_exact(member, nbytes, what)
    # torch can be told to skip CRCs (they are then 0): only check real ones.
    if info.CRC and nbytes == info.file_size and zlib.crc32(buf) != info.CRC:
        raise CheckpointError(f"{what} fails its CRC check: the file is corrupt; re-download it")
    return buf


def _load_zip(f, ctx: _Context) -> Any:
    try:
        zf = zipfile.ZipFile(f)
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, struct.error, ValueError) as e:
        raise CheckpointError(
            f"truncated or corrupt zip archive ({e}); the download or save was probably cut short: re-download it"
        ) from None
    with zf:
        if not infos:
            raise CheckpointError("empty zip archive: not a torch.save checkpoint")
        names = {i.filename: i for i in infos}
        prefix = infos[0].filename.split("/", 1)[0]
        if f"{prefix}/data.pkl" not in names:
            found = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if found:
                prefix = found[0].split("/", 1)[0]
            elif any(n.endswith("constants.pkl") for n in names):
                raise CheckpointError(
                    "TorchScript archive (torch.jit.save), not a torch.save checkpoint: save a state_dict instead"
                )
            else:
                raise CheckpointError("zip archive without <prefix>/data.pkl: not a torch.save checkpoint")
        byteorder = "little"
        if f"{prefix}/byteorder" in names:
            byteorder = bytes(_zip_member(f, names[f"{prefix}/byteorder"], zf)).decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"unknown byteorder record {byteorder!r}")
        storages: dict[str, bytearray] = {}

        def persistent_load(pid):
            key, dtype, numel, _ = _parse_storage_id(pid)
            if key not in storages:
                name = f"{prefix}/data/{key}"
                if name not in names:
                    raise CheckpointError(f"archive lacks storage record {name}: the file is incomplete")
                buf = _zip_member(f, names[name], zf, numel * _raw_dtype(dtype).itemsize)
                if byteorder == "big":
                    _byteswap(buf, dtype)
                storages[key] = buf
            return _Storage(storages[key], dtype)

        data_pkl = _zip_member(f, names[f"{prefix}/data.pkl"], zf)
        return _unpickle(io.BytesIO(data_pkl), ctx, persistent_load)


def _load_legacy(f, ctx: _Context) -> Any:
    """Legacy torch.save body; ``f`` is just past the magic-number pickle."""
    protocol = _unpickle(f, ctx)
    if protocol != PROTOCOL_VERSION:
        raise CheckpointError(f"legacy torch file with protocol version {protocol!r}, expected {PROTOCOL_VERSION}")
    sys_info = _unpickle(f, ctx)
    if not isinstance(sys_info, dict):
        raise CheckpointError("legacy torch file: third record is not the sys_info dict")
    main_start = f.tell()
    roots: dict[str, str] = {}  # root key -> dtype of its first reference (sets the element size)

    def persistent_load(pid, buffers=None):
        if isinstance(pid, tuple) and pid and pid[0] in ("module", b"module"):
            return pid[1]  # a pickled nn.Module class (already vetted by find_class); its source is ignored
        key, dtype, numel, view = _parse_storage_id(pid)
        roots.setdefault(key, dtype)
        if buffers is None:  # first pass: bytes not read yet
            return _Storage(None, dtype)
        buf = buffers[key]
        if view is not None:  # pre-1.0 storage views: (view_key, offset, size) in elements
            _, start, count = view
            itemsize = _raw_dtype(dtype).itemsize
            (start, count) = _ints((start, count), "storage view")
            if (start + count) * itemsize > len(buf):
                raise CheckpointError(f"storage view {view!r} exceeds its storage: the file is corrupt")
            buf = memoryview(buf)[start * itemsize : (start + count) * itemsize]
        return _Storage(buf, dtype)

    # Pass 1 learns the storages' dtypes and where the main pickle ends (the raw bytes follow it).
    _unpickle(f, ctx, persistent_load)
    keys = _unpickle(f, ctx)
    if not isinstance(keys, list):
        raise CheckpointError("legacy torch file: storage key list missing after the main pickle")
    remaining = _stream_size(f) - f.tell()
    buffers = {}
    for key in keys:
        key = _text(key, "storage key")
        if key not in roots:
            raise CheckpointError(f"legacy torch file lists storage {key!r} that nothing references")
        header = f.read(8)
        if len(header) < 8:
            raise CheckpointError(f"truncated legacy torch file: storage {key!r} is missing; re-download it")
        numel = int.from_bytes(header, "little", signed=True)
        nbytes = numel * _raw_dtype(roots[key]).itemsize
        remaining -= 8
        if numel < 0 or nbytes > remaining:
            raise CheckpointError(
                f"truncated legacy torch file: storage {key!r} needs {nbytes} bytes but only {remaining} "
                "remain; re-download it"
            )
        buffers[key] = _read_exact(f, nbytes, f"storage {key!r}")
        remaining -= nbytes
    missing = sorted(set(roots) - set(buffers))
    if missing:
        raise CheckpointError(f"legacy torch file lacks data for storages {missing[:5]}: the file is corrupt")
    f.seek(main_start)  # pass 2: the same pickle, now with the bytes in place
    return _unpickle(f, ctx, lambda pid: persistent_load(pid, buffers))


def _load_stream(f, ctx: _Context, what: str) -> Any:
    head = f.read(512)
    f.seek(0)
    if not head:
        raise CheckpointError(f"{what} is empty (0 bytes): the download or save did not complete; re-download it")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _load_zip(f, ctx)
    if head[257:262] == b"ustar":
        raise CheckpointError("tar-format torch checkpoint (PyTorch < 0.4) is not supported: re-save it")
    first = _unpickle(f, ctx)  # a plain pickle's whole content, or a legacy file's magic number
    if type(first) is int and first == MAGIC_NUMBER:
        return _load_legacy(f, ctx)
    return first


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, EOFError) or "truncated" in str(exc):
        return f"truncated file ({text}); re-download it"
    return f"not a readable PyTorch checkpoint or pickle ({text})"


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Read a torch.save / pickle checkpoint without torch and without running its code.

    Args:
      path: .pt/.pth/.pkl file (zip torch.save, legacy torch.save, or a plain pickle).
    Returns:
      the saved object with tensors as numpy arrays (see the module docstring for the mapping).
    Raises:
      UnsafePickleError: the pickle references a global outside the allow-list (nothing ran).
      CheckpointError:   the file is empty, truncated, corrupt or not a checkpoint.
      FileNotFoundError / OSError: the file cannot be opened.
    """
    path = str(Path(path))
    ctx = _Context(path)
    with open(path, "rb") as f:
        try:
            result = _load_stream(f, ctx, "file")
        except CheckpointError as e:
            raise (e.located(path) if e.path is None else e) from None
        except RecursionError:
            raise CheckpointError("pickle nests too deeply to read", path) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
                AttributeError, struct.error, zipfile.BadZipFile, OverflowError, UnicodeDecodeError,
                MemoryError) as e:
            raise CheckpointError(_describe(e), path) from None
    if isinstance(result, _Storage):  # torch.save(storage): hand back its values
        return result.numpy()
    if result is _PENDING:
        raise CheckpointError("internal error: unresolved tensor", path)
    return result
