"""The allow-list of the safe checkpoint reader: which pickle globals may be loaded, and as what.

Part of `e4e_jax.torchfile`. `resolve_global` is the only door from a pickle's
GLOBAL / STACK_GLOBAL opcode to anything callable: it hands out *data constructors* (builtin
containers, tensor rebuilders, safe stand-ins for numpy / argparse / dnnlib / torch.nn / NVlabs
persistence) and refuses everything else with `UnsafePickleError` before it is called. Nothing is
imported by name from the file. To teach the reader a new harmless type, add it here.

What a constructor is about to allocate (containers, bytes and text, numpy arrays) is charged to the
file's budget before it is built (`_CHARGED`, `limits.Budget`); no constructor takes a bare size
(``bytes(10**10)``), and ``range`` is not admitted: ``frozenset(range(10**10))`` is 60 bytes of pickle,
no checkpoint needs it, and torch's own ``weights_only`` loader refuses it too.
"""

from __future__ import annotations

import _compat_pickle
import collections
import dataclasses
import math
import operator
from typing import Any, Callable

import numpy as np

from e4e_jax.torchfile.dtypes import (
    _DTYPE_ALIASES,
    _RAW_DTYPES,
    _STORAGE_DTYPES,
    _STORAGE_MODULES,
    _UNSUPPORTED_DTYPES,
    _UNSUPPORTED_STORAGES,
    TorchDtype,
)
from e4e_jax.torchfile.errors import CheckpointError, UnsafePickleError, short_repr
from e4e_jax.torchfile.limits import ITEM_BYTES
from e4e_jax.torchfile.objects import (
    PERSISTENT_MODULE,
    EasyDict,
    NamespaceDict,
    PersistentObject,
    _module_stub,
    _ModuleStub,
    _state_dict,
)
from e4e_jax.torchfile.tensors import (
    _rebuild_device_tensor,
    _rebuild_parameter,
    _rebuild_parameter_with_state,
    _rebuild_tensor,
    _rebuild_tensor_v2,
    _rebuild_tensor_v3,
)


# ------------------------------------------------------------------------------------ tensor types
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
        raise UnsafePickleError(
            short_repr(new_type), detail="_rebuild_from_type_v2 only rebuilds torch.Tensor/Parameter"
        )
    if func not in _TENSOR_REBUILDERS:
        raise UnsafePickleError(short_repr(func), detail="_rebuild_from_type_v2 may only call tensor rebuild functions")
    return func(*args)


# -------------------------------------------------------------------------------- numpy / builtins
_NP_RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]  # numpy's own _reconstruct, whatever its module
_NP_SCALAR = np.float64(0).__reduce__()[0]


class _NdarrayType:
    """What ``numpy.ndarray`` resolves to: only the subtype argument of numpy's ``_reconstruct`` (called
    directly, ``ndarray(shape)`` would allocate any shape)."""

    __slots__ = ()

    def __repr__(self):
        return "numpy.ndarray"


_NDARRAY = _NdarrayType()


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not _NDARRAY:
        raise UnsafePickleError("numpy _reconstruct", detail=f"only builds numpy.ndarray, not {short_repr(subtype)}")
    return _NP_RECONSTRUCT(np.ndarray, shape, dtype)


def _np_reconstruct_bytes(subtype, shape, dtype) -> int:
    dims = shape if isinstance(shape, (tuple, list)) else (shape,)
    return math.prod(operator.index(d) for d in dims) * np.dtype(dtype).itemsize


def _np_frombuffer(buf, dtype, shape, order):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise CheckpointError(f"numpy _frombuffer with dtype {short_repr(dtype)}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()


def _np_frombuffer_bytes(buf, *args) -> int:
    return len(memoryview(buf).cast("B"))


_ONE_BYTE_CODECS = {"latin1", "latin-1", "iso-8859-1", "ascii"}


def _codec(encoding) -> str:
    """The normalised name of a text -> bytes codec a pickle may use, or UnsafePickleError."""
    codec = encoding.lower().replace("_", "-") if isinstance(encoding, str) else None
    if codec not in _ONE_BYTE_CODECS | {"utf-8", "utf8"}:
        raise UnsafePickleError(
            "_codecs.encode", detail=f"only latin1/utf-8 text->bytes is allowed, not {short_repr(encoding)}"
        )
    return codec


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    # Protocol-2 pickles store bytes as codecs.encode(text, 'latin1'); allow exactly that kind.
    _codec(encoding)
    if not isinstance(obj, str):
        raise UnsafePickleError("_codecs.encode", detail=f"only text is encoded, not a {type(obj).__name__}")
    return obj.encode(encoding, errors)


def _encoded_bytes(obj, encoding="utf-8", errors="strict") -> int:
    return len(obj) * (1 if _codec(encoding) in _ONE_BYTE_CODECS else 4) if isinstance(obj, str) else 0


def _item_bytes(*args, **kwargs) -> int:
    """What a container / bytes / text constructor makes from its arguments: ITEM_BYTES per item they
    hold. A bare size (``bytes(10**10)``, ``bytearray(n)``) is refused: pickles store data, not sizes."""
    items = 0
    for value in (*args, *kwargs.values()):
        if isinstance(value, int):
            raise CheckpointError(
                f"a constructor was given the size {short_repr(value)}: pickles store data, not sizes"
            )
        if isinstance(value, np.ndarray):
            items += value.nbytes
        elif isinstance(value, (str, bytes, bytearray, tuple, list, dict, set, frozenset)):
            items += len(value)
        else:
            items += 1
    return items * ITEM_BYTES


def _text_bytes(*args) -> int:
    """`_item_bytes` of ``str(...)``, which may only decode bytes or copy text (a repr of any object
    could be as large as the object tree)."""
    if args and not isinstance(args[0], (str, bytes, bytearray)):
        raise CheckpointError(f"builtins.str of a {type(args[0]).__name__}: pickles store text, not reprs")
    return _item_bytes(*args)


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
    raise UnsafePickleError(
        "copyreg._reconstructor", detail=f"not allowed for {short_repr(cls)} (base {short_repr(base)})"
    )


def _torch_size(*args):
    return tuple(*args)


def _torch_device(kind, index=None):
    if not isinstance(kind, str) or not (index is None or isinstance(index, int)):
        raise CheckpointError(f"torch.device({short_repr(kind)}, {short_repr(index)}): expected a name and an index")
    return kind if index is None else f"{kind}:{index}"


def _reconstruct_persistent_obj(meta):
    """NVlabs ``torch_utils.persistence._reconstruct_persistent_obj``, minus running module_src."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        kind = meta.get("type") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"persistent object meta has type {short_repr(kind)}, expected a dict with type='class'")
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


def _charging(name: str, fn: Callable, cost: Callable[..., int], ctx) -> _SafeCallable:
    """`fn` as global `name` of one file: each call first charges ``cost(*args)`` bytes to ``ctx``."""

    def call(*args, **kwargs):
        try:
            nbytes = cost(*args, **kwargs)
        except UnsafePickleError:
            raise
        except CheckpointError as e:
            raise CheckpointError(f"refused: {name}: {e.message}") from None
        except (TypeError, ValueError, OverflowError) as e:  # arguments fn would refuse too
            raise CheckpointError(f"{name} called with bad arguments ({type(e).__name__}: {e})") from None
        ctx.charge(nbytes, name)
        return fn(*args, **kwargs)

    return _SafeCallable(name, call)


_REBUILD_V1 = _wrap("torch._utils._rebuild_tensor", _rebuild_tensor)
_REBUILD_V2 = _wrap("torch._utils._rebuild_tensor_v2", _rebuild_tensor_v2)
_REBUILD_V3 = _wrap("torch._utils._rebuild_tensor_v3", _rebuild_tensor_v3)
_REBUILD_PARAM = _wrap("torch._utils._rebuild_parameter", _rebuild_parameter)
_REBUILD_PARAM_STATE = _wrap("torch._utils._rebuild_parameter_with_state", _rebuild_parameter_with_state)
_TENSOR_REBUILDERS.update({_REBUILD_V1, _REBUILD_V2, _REBUILD_V3, _REBUILD_PARAM, _REBUILD_PARAM_STATE})
_REBUILD_FROM_TYPE = _wrap("torch._tensor._rebuild_from_type_v2", _rebuild_from_type_v2)
_TENSOR = _TensorType("torch.Tensor")
_PARAMETER = _TensorType("torch.nn.parameter.Parameter")

# (module, name) -> what the unpickler gets. Types here are builtin (immutable) or _FrozenType; none
# of them allocates more than the objects the pickle already built (`scan` bounds those).
_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("builtins", "dict"): dict,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "bool"): bool,
    ("builtins", "object"): object,
    ("copyreg", "_reconstructor"): _wrap("copyreg._reconstructor", _copyreg_reconstructor),
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
    ("torch", "device"): _wrap("torch.device", _torch_device),
    ("argparse", "Namespace"): NamespaceDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _wrap(
        "torch_utils.persistence._reconstruct_persistent_obj", _reconstruct_persistent_obj
    ),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
}
for _name in ("_rebuild_device_tensor_from_numpy", "_rebuild_device_tensor_from_cpu_tensor"):
    _GLOBALS[("torch._utils", _name)] = _wrap(f"torch._utils.{_name}", _rebuild_device_tensor)
for _np_mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _GLOBALS[(_np_mod, "scalar")] = _wrap(f"{_np_mod}.scalar", _NP_SCALAR)

# (module, name) -> (function, bytes a call will allocate): wrapped per file by `_charging`.
_CHARGED: dict[tuple[str, str], tuple[Callable, Callable[..., int]]] = {
    ("builtins", "list"): (list, _item_bytes),
    ("builtins", "tuple"): (tuple, _item_bytes),
    ("builtins", "set"): (set, _item_bytes),
    ("builtins", "frozenset"): (frozenset, _item_bytes),
    ("builtins", "bytes"): (bytes, _item_bytes),
    ("builtins", "bytearray"): (bytearray, _item_bytes),
    ("builtins", "str"): (str, _text_bytes),
    ("torch", "Size"): (_torch_size, _item_bytes),
    ("_codecs", "encode"): (_codecs_encode, _encoded_bytes),
    ("codecs", "encode"): (_codecs_encode, _encoded_bytes),
}
for _np_mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _CHARGED[(_np_mod, "_reconstruct")] = (_np_reconstruct, _np_reconstruct_bytes)
for _np_mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _CHARGED[(_np_mod, "_frombuffer")] = (_np_frombuffer, _np_frombuffer_bytes)

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


# -------------------------------------------------------------------------------------- resolution
def resolve_global(module: str, name: str, ctx) -> Any:
    """The allow-list: (module, name) from a GLOBAL opcode -> safe stand-in, or refusal.

    ``ctx`` is the file's reading state (`unpickler._Context`): ``ctx.charge(nbytes, what)`` takes what
    constructors allocate from its budget, and ``ctx.load_from_bytes`` is what
    ``torch.storage._load_from_bytes`` resolves to (the nesting-limited parser of embedded torch.save bytes).
    """
    if not isinstance(module, str) or not isinstance(name, str):
        raise UnsafePickleError(f"{short_repr(module)}.{short_repr(name)}", detail="global names must be strings")
    # Python 2 names (protocol < 3): what pickle.Unpickler.find_class would map them to.
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    full = f"{module}.{name}"
    if (module, name) in _GLOBALS:
        return _GLOBALS[(module, name)]
    if (module, name) in _CHARGED:
        return _charging(full, *_CHARGED[(module, name)], ctx)
    if (module, name) == ("torch.storage", "_load_from_bytes"):
        return ctx.load_from_bytes
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
