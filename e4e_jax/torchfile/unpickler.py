"""The restricted unpickler of the safe checkpoint reader, and the per-file state it shares.

Part of `e4e_jax.torchfile`. Every global a pickle names goes through
`allowlist.resolve_global` (``find_class`` is overridden); persistent ids (torch.save's
storage records) go to the container parser that started the unpickling (`containers`).
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Callable

from e4e_jax.torchfile.allowlist import _wrap, resolve_global
from e4e_jax.torchfile.errors import CheckpointError

_MAX_NESTING = 4  # _load_from_bytes inside _load_from_bytes ... (real files nest once)


class _Context:
    """Per-file state shared by the (possibly nested) unpicklers.

    ``load_stream(f, ctx, what)`` parses embedded torch.save bytes (`containers._load_stream`;
    passed in so that this module does not depend on the container parsers that depend on it).
    """

    def __init__(self, path: str, load_stream: Callable[[Any, "_Context", str], Any]):
        self.path = path
        self.depth = 0
        self._load_stream = load_stream
        self.load_from_bytes = _wrap("torch.storage._load_from_bytes", self._load_from_bytes)

    def _load_from_bytes(self, data):
        if not isinstance(data, (bytes, bytearray)):
            raise CheckpointError(f"torch.storage._load_from_bytes got {type(data).__name__}, expected bytes")
        if self.depth >= _MAX_NESTING:
            raise CheckpointError("torch.storage._load_from_bytes nested too deeply")
        self.depth += 1
        try:
            return self._load_stream(io.BytesIO(data), self, "embedded torch.save bytes")
        finally:
            self.depth -= 1

    def resolve(self, module: str, name: str) -> Any:
        """The allow-list: (module, name) from a GLOBAL opcode -> safe stand-in, or refusal."""
        return resolve_global(module, name, self.load_from_bytes)


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
