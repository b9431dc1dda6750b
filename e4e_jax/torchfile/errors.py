"""Errors raised by the safe checkpoint reader (`e4e_jax.torchfile`).

Both are ``ValueError`` subclasses and `e4e_jax.errors.UserError`s (a command prints them as one line and
exits 2), and name the file once `load_checkpoint` has attached its path.
Import them from `e4e_jax.torchfile`; this module only keeps them apart from the reader's other parts.
"""

from __future__ import annotations

import reprlib

from e4e_jax.errors import UserError

__all__ = ["CheckpointError", "UnsafePickleError", "short_repr"]

_MAX_REPR = 200  # characters of a pickled value shown in a message


class _ShortRepr(reprlib.Repr):
    """reprlib's bounds (a few items per level, three levels) for the subclasses of containers and for
    bytes too, which reprlib would otherwise hand to the full builtin repr."""

    _KINDS = ((dict, "repr_dict"), (list, "repr_list"), (tuple, "repr_tuple"), (set, "repr_set"))

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother = 3, 80, 80

    def repr1(self, x, level):
        if isinstance(x, (bytes, bytearray)):
            return repr(bytes(x[: self.maxstring])) + ("..." if len(x) > self.maxstring else "")
        for kind, method in self._KINDS:
            if isinstance(x, kind) and type(x) is not kind:
                return f"{type(x).__name__}({getattr(self, method)(x, level)})"
        return super().repr1(x, level)


_REPR = _ShortRepr()


def short_repr(value) -> str:
    """repr of a value read from a pickle, for a message: bounded however large or deep the value is."""
    return _REPR.repr(value)[:_MAX_REPR]


class CheckpointError(UserError, ValueError):
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
            "harmless, teach e4e_jax/torchfile/allowlist.py about it (never unpickle it with "
            "plain pickle/torch.load)"
        )
        super().__init__(message, path)

    def located(self, path: str) -> "UnsafePickleError":
        return UnsafePickleError(self.global_name, path, self.detail)
