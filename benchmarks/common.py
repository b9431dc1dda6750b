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


def time_pipelined(
    launch: Callable[[int], object],
    sync: Callable[[object], None],
    *,
    iters: int = 10,
    repeats: int = 3,
    warmup: int = 2,
) -> dict[str, float]:
    """Steady-state seconds per call, as a batch job runs: `iters` calls dispatched back to back and
    one `sync` on the last result, so the host queues call i+1 while the device computes call i.

    `launch(i)` starts call i and returns a handle; `sync(handle)` waits for it (JAX:
    `jax.block_until_ready`; PyTorch: `torch.cuda.synchronize()`). Median and min over `repeats`.
    """
    for i in range(warmup):
        sync(launch(i))
    per_call = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        last = None
        for i in range(iters):
            last = launch(i)
        sync(last)
        per_call.append((time.perf_counter() - t0) / iters)
    return {"median_s": statistics.median(per_call), "min_s": min(per_call)}


def device_info() -> dict[str, str]:
    d = jax.devices()[0]
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": getattr(d, "device_kind", str(d)),
        "n_devices": str(jax.device_count()),
    }


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


def use_prebuilt_torch_ops(directory) -> list[str]:
    """Make `torch.utils.cpp_extension.load(name, ...)` return `directory/name/name.so` where it exists.

    The official repositories JIT-build rosinality's CUDA ops (`fused`, `upfirdn2d`) on import, which
    costs about two minutes of device time per fresh machine; a build kept from an earlier call (same
    sources: e4e's and ReStyle's ops are the same files) is loaded instead. Returns the names found."""
    import importlib.machinery
    import importlib.util
    from pathlib import Path

    import torch  # noqa: F401  (the ops link against libtorch, loaded first)
    from torch.utils import cpp_extension

    directory = Path(directory)
    found = sorted(p.name for p in directory.glob("*") if (p / f"{p.name}.so").is_file())
    build = cpp_extension.load

    def load(name, *args, **kwargs):
        so = directory / name / f"{name}.so"
        if not so.is_file():
            return build(name, *args, **kwargs)
        spec = importlib.util.spec_from_file_location(
            name, so, loader=importlib.machinery.ExtensionFileLoader(name, str(so))
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    cpp_extension.load = load
    return found
