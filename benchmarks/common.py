"""Shared timing helpers for the GPU benchmarks (run on the device; results go to BUILD_NOTES.md)."""
from __future__ import annotations

import json
import statistics
import time
from typing import Callable

import jax


def time_fn(fn: Callable[[int], object], *, warmup: int = 2, iters: int = 10) -> dict[str, float]:
    """Median wall time of `fn(i)` (which must block on its result), after `warmup` calls.

    `fn` receives the iteration index so callers can rotate among several inputs (no cache reuse).
    Returns {'median_s', 'min_s', 'max_s', 'first_call_s'} (first_call_s includes compilation).
    """
    t0 = time.perf_counter()
    fn(0)
    first = time.perf_counter() - t0
    for i in range(1, warmup):
        fn(i)
    times = []
    for i in range(iters):
        t0 = time.perf_counter()
        fn(i + warmup)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "first_call_s": first}


def device_info() -> dict[str, str]:
    d = jax.devices()[0]
    return {"jax": jax.__version__, "backend": jax.default_backend(), "device": getattr(d, "device_kind", str(d)),
            "n_devices": str(jax.device_count())}


def peak_memory_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def emit(rows: list[dict], path: str | None) -> None:
    """Print a fixed-width table (last in the output) and optionally write JSON."""
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)
    if not rows:
        return
    cols = list(rows[0])
    widths = [max(len(c), *(len(f"{r.get(c, '')}") for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(f"{r.get(c, '')}".ljust(w) for c, w in zip(cols, widths)))
