"""JAX's persistent compilation cache, on by default for the commands (a second run of the same model
and batch size loads its executables from disk instead of compiling them for tens of seconds).

Directory: `$E4E_JAX_CACHE_DIR`, else `$XDG_CACHE_HOME/e4e-jax/xla`, else `~/.cache/e4e-jax/xla`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

ENV_DIR = "E4E_JAX_CACHE_DIR"


def default_dir() -> Path:
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "e4e-jax" / "xla"


def enable(directory: Optional[str | os.PathLike] = None) -> Optional[Path]:
    """Point JAX's persistent cache at `directory` (default: `default_dir()`); returns it, or None when
    it cannot be created (the run then compiles as usual: a cache is an optimisation, never an error)."""
    import jax

    path = Path(directory) if directory is not None else default_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Cache every executable: inversion's big ones take seconds, and the small ones cost nothing to keep.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
