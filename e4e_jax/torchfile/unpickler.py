"""The restricted unpickler of the safe checkpoint reader, and the per-file state it shares.

Part of `e4e_jax.torchfile`. Every global a pickle names goes through
`allowlist.resolve_global` (``find_class`` is overridden); persistent ids (torch.save's
storage records) go to the container parser that started the unpickling (`containers`).
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Callable

from e4e_jax.torchfile import limits, scan
from e4e_jax.torchfile.allowlist import _wrap, resolve_global
from e4e_jax.torchfile.errors import CheckpointError


class _Context:
    """Per-file state shared by the (possibly nested) unpicklers.

    ``load_stream(f, ctx, what)`` parses embedded torch.save bytes (`containers._load_stream`;
    passed in so that this module does not depend on the container parsers that depend on it).
    ``file_bytes`` (the file's size) sets the `limits.Budget` of bytes the file may make; ``entries``
    and ``opcodes`` count the object-tree entries and opcodes of its pickles so far (`limits`).
    """

    def __init__(self, path: str, load_stream: Callable[[Any, "_Context", str], Any], file_bytes: int):
        self.path = path
        self.depth = 0
        self.entries = 0
        self.opcodes = 0
        self.budget = limits.Budget(file_bytes)
        self._load_stream = load_stream
        self.load_from_bytes = _wrap("torch.storage._load_from_bytes", self._load_from_bytes)

    def charge(self, nbytes: int, what: str) -> None:
        """Account for `nbytes` that `what` is about to allocate (`limits.Budget.charge`)."""
        self.budget.charge(nbytes, what)

    def check_shape(self, f) -> None:
        """Scan the pickle at `f`'s position (`scan.scan`) against what is left of the file's bounds; `f`
        is put back where it was."""
        start = f.tell()
        entries, opcodes = scan.scan(
            f, limits.MAX_ENTRIES - self.entries, limits.MAX_OPCODES - self.opcodes, limits.MAX_NESTING
        )
        self.entries += entries
        self.opcodes += opcodes
        f.seek(start)

    def _load_from_bytes(self, data):
        if not isinstance(data, (bytes, bytearray)):
            raise CheckpointError(f"torch.storage._load_from_bytes got {type(data).__name__}, expected bytes")
        if self.depth >= limits.MAX_EMBEDDED:
            raise CheckpointError("torch.storage._load_from_bytes nested too deeply")
        self.depth += 1
        try:
            return self._load_stream(io.BytesIO(data), self, "embedded torch.save bytes")
        finally:
            self.depth -= 1

    def resolve(self, module: str, name: str) -> Any:
        """The allow-list: (module, name) from a GLOBAL opcode -> safe stand-in, or refusal."""
        return resolve_global(module, name, self)


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


def _unpickle(f, ctx: _Context, persistent_load: Callable | None = None, scanned: bool = False) -> Any:
    """Unpickle one pickle from `f` with the restricted unpickler, after scanning its shape (unless the
    caller has `scanned` these very bytes before)."""
    if not scanned:
        ctx.check_shape(f)
    return _Unpickler(f, ctx, persistent_load).load()
