"""JAX's persistent compilation cache, on by default for the commands (a second run of the same model
and batch size loads its executables from disk instead of compiling them for tens of seconds).

Directory: `$E4E_JAX_CACHE_DIR`, else `$XDG_CACHE_HOME/e4e-jax/xla`, else `~/.cache/e4e-jax/xla`.
Beside the executables, `compile_rates.json` keeps the last measured compile speed per kind of device, from
which `estimate_seconds` tells a user how long the next compilation should take.
"""

from __future__ import annotations

import json
import math
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


# ----------------------------------------------------------------------------- how long a compile takes

RATES_FILE = "compile_rates.json"  # in the cache directory: {device kind: seconds per 1000 lines}
# Seconds of XLA compilation per 1000 lines of a jitted function's StableHLO text, until a run on the
# machine measured its own (`record_rate`). Measured: the FFHQ training step (53,840 lines; batch 8, 1024²,
# every loss) compiled in 104 s on an H100 (DESIGN.md §9), 1.9 s per 1000 lines; the test config's step
# (4,373 lines) on 2 idle CPU cores about the same, 6.5 on 2 cores under a load of 12. An estimate to tell
# a user how long to wait, not a measurement.
DEFAULT_SECONDS_PER_KLINE = 2.0


def directory() -> Optional[Path]:
    """The persistent cache directory JAX uses now, or None when the cache is off."""
    import jax

    value = jax.config.jax_compilation_cache_dir
    return Path(value) if value else None


def _rates_path() -> Optional[Path]:
    d = directory()
    return d / RATES_FILE if d is not None else None


def _read_rates() -> dict:
    path = _rates_path()
    try:
        rates = json.loads(path.read_text()) if path is not None and path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return rates if isinstance(rates, dict) else {}


def estimate_seconds(device, lines: int) -> float:
    """How long compiling a function of `lines` StableHLO lines for `device` should take: at the rate last
    measured on this kind of device (`record_rate`), else at DEFAULT_SECONDS_PER_KLINE."""
    rate = _read_rates().get(device.device_kind)
    if not isinstance(rate, (int, float)) or not 0 < rate < math.inf:
        rate = DEFAULT_SECONDS_PER_KLINE
    return rate * lines / 1000.0


def record_rate(device, lines: int, seconds: float) -> None:
    """Remember the compile rate just measured for this kind of device (beside the cache; a cache that
    cannot be written only keeps the estimate rough)."""
    path = _rates_path()
    if path is None or lines <= 0:
        return
    from e4e_jax import fileio

    rates = _read_rates()
    rates[device.device_kind] = seconds * 1000.0 / lines
    try:
        fileio.write_text(path, json.dumps(rates, indent=2, sort_keys=True) + "\n", fsync=False)
    except OSError:
        pass
