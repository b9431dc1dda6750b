"""Source-file handling shared by the converters that read one state-dict checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def single_source(kind: str, sources: list, options: dict, expected: str) -> Path:
    """The one source file of converter `kind`, which takes no options (clear errors otherwise)."""
    if options:
        raise ValueError(f"{kind}: unknown options {sorted(options)}; this converter takes none")
    if len(sources) != 1:
        raise ValueError(f"{kind} takes exactly one source file ({expected})")
    return Path(sources[0])


def load_state_dict(path: Path, what: str) -> dict[str, Any]:
    """The state dict of a checkpoint read by the safe reader: the object itself, or its 'state_dict'."""
    from e4e_jax.torchfile import load_checkpoint

    obj = load_checkpoint(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict ({what}), found a {type(obj).__name__}")
    return obj
