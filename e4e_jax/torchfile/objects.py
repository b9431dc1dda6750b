"""What the safe checkpoint reader hands back for pickled objects that are not tensors.

Part of `e4e_jax.torchfile` (import the public names from there):
``argparse.Namespace`` -> `NamespaceDict`, ``dnnlib.EasyDict`` -> `EasyDict`, NVlabs persistent
objects and ``torch.nn.modules.*`` instances -> `PersistentObject` (the stand-in classes the
unpickler gets for ``torch.nn`` globals are made by `_module_stub`). Every class handed to the
unpickler has the `_FrozenType` metaclass, so a pickle cannot patch it.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Iterator

import numpy as np

from e4e_jax.torchfile.errors import CheckpointError, UnsafePickleError, short_repr

PERSISTENT_MODULE = "<torch_utils.persistence>"  # PersistentObject.module_name of NVlabs objects


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
            _check_name(name, self.class_name, "_modules")
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
                yield prefix + _check_name(name, self.class_name, "_parameters"), value, "param"
        skip = self.state.get("_non_persistent_buffers_set") or set()
        for name, value in (self.state.get("_buffers") or {}).items():
            if value is not None and (all_buffers or name not in skip):
                yield prefix + _check_name(name, self.class_name, "_buffers"), value, "buffer"
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


def _check_name(name: Any, class_name: str, table: str) -> str:
    """`name`, a key of a module's `table` ('_parameters', ...), if it is a name; CheckpointError otherwise."""
    if not isinstance(name, str):
        raise CheckpointError(
            f"{class_name}.{table} has the key {short_repr(name)} of type {type(name).__name__}, not a name: "
            "the file is not a checkpoint of torch modules"
        )
    return name


class _ModuleStub(metaclass=_FrozenType):
    """Base of the stand-in classes for ``torch.nn.modules.*``: instantiating gives a PersistentObject."""

    _stub_module = ""
    _stub_name = ""

    def __new__(cls, *args, **kwargs):
        return PersistentObject(cls._stub_module, cls._stub_name, {})


def _module_stub(module: str, name: str) -> type:
    return _FrozenType(name, (_ModuleStub,), {"_stub_module": module, "_stub_name": name, "__module__": module})
