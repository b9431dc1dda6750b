"""Compile a run's jitted functions before the progress bar starts, and say so.

Compiling the training step takes from seconds (the toy config on a CPU) to minutes (FFHQ at 1024² on a
GPU); done inside the first step, it showed as a progress bar whose first ETA read hours. Here each
function is compiled ahead of time (`jit(f).lower(...).compile()`; later calls of the jitted function
reuse the executable) with a line before it,

    compiling the training step (first run only, ~40 s)

(the estimate from `compile_cache.estimate_seconds`; "first run only" when JAX's persistent compilation
cache is on, so the next run loads it) and one after it, with the time it took. The evaluation step is
compiled the same way for each batch shape the run evaluates (image grids of a training batch,
validation batches), so the first evaluation does not stall the bar either.

The compiled training step's memory (XLA's analysis: arguments, outputs and temporaries per device) is
checked against what a device holds before the first step allocates anything; `check_batch_memory`
refuses, before any work, a batch whose images alone could never fit.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp

from e4e_jax import compile_cache, distributed, errors, sharding

log = logging.getLogger(__name__)

CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
GIB = 2**30
FLOAT_BYTES = 4  # images reach the step as float32
# Shorter compiles are not taken as the device's compile rate: a function compiled earlier in this process
# comes back from JAX's in-memory cache in milliseconds, which says nothing about compiling.
MIN_RATE_SAMPLE_S = 1.0
# How long the processes of a multi-process run wait for each other to finish compiling: one may load the
# executables from the persistent cache in seconds while another compiles them for minutes.
COMPILE_WAIT_S = 3600


class _CacheHits:
    """Counts JAX's persistent-cache hits (a jax.monitoring event), to tell a load from a compile."""

    count = 0
    listening = False

    @classmethod
    def listen(cls) -> None:
        if not cls.listening:
            jax.monitoring.register_event_listener(cls._on_event)
            cls.listening = True

    @classmethod
    def _on_event(cls, event: str, **_: Any) -> None:
        if event == CACHE_HIT_EVENT:
            cls.count += 1


def _seconds(s: float) -> str:
    return f"{max(1, round(s))} s" if s < 120 else f"{s / 60:.0f} min"


def compile_now(what: str, fn, *args) -> Any:
    """Compile the jitted `fn` for `args` (arrays or ShapeDtypeStructs with shardings), logging before
    and after; returns the compiled executable (the jitted `fn` reuses it from then on)."""
    _CacheHits.listen()
    device = jax.local_devices()[0]
    lowered = fn.lower(*args)
    lines = lowered.as_text().count("\n")
    cached = compile_cache.directory() is not None
    estimate = compile_cache.estimate_seconds(device, lines)
    log.info("compiling %s (%s~%s)", what, "first run only, " if cached else "", _seconds(estimate))
    hits, t0 = _CacheHits.count, time.perf_counter()
    compiled = lowered.compile()
    took = time.perf_counter() - t0
    if _CacheHits.count > hits:
        log.info("loaded %s from the compilation cache in %.1f s", what, took)
    else:
        log.info("compiled %s in %.1f s", what, took)
        if took >= MIN_RATE_SAMPLE_S:
            compile_cache.record_rate(device, lines, took)
    return compiled


def step_bytes(compiled) -> Optional[int]:
    """Bytes one device needs to run `compiled` (XLA's memory analysis), or None where it is not told."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    return int(
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
        + m.temp_size_in_bytes
        + m.generated_code_size_in_bytes
    )


def _too_big(field: str, value: int, need: int, have: int, what: str) -> errors.UserError:
    return errors.UserError(
        f"config.{field}={value}: {what} needs {need / GIB:.1f} GiB per device, and a device here holds "
        f"{have / GIB:.1f} GiB; lower --config.{field} (or train on more devices)"
    )


def check_step_memory(compiled, config, devices: Sequence[Any]) -> None:
    """UserError if the compiled training step needs more memory than a device holds."""
    need = step_bytes(compiled)
    have = sharding.memory_per_device(devices)
    if need is not None and need > have:
        raise _too_big("batch_size", int(config.batch_size), need, have, "the training step (XLA's memory analysis)")


def check_batch_memory(config, devices: Sequence[Any]) -> None:
    """Before any work: UserError if one training batch's images alone, or the synthetic validation set
    (held on the devices for the whole run), exceed a device's memory; a lower bound of what a step
    needs, so a batch size off by orders of magnitude stops at once instead of in an allocation."""
    h, w = (int(v) for v in config.data.image_size)
    image = h * w * 3 * FLOAT_BYTES
    have, n = sharding.memory_per_device(devices), max(1, len(devices))
    per_device = -(-int(config.batch_size) // n) * image
    if per_device > have:
        raise _too_big("batch_size", int(config.batch_size), per_device, have, "one batch of input images")
    if config.data.source == "synthetic":
        tb = int(config.test_batch_size)
        batches = max(1, int(config.data.num_eval_samples) // tb)
        if int(config.max_val_batches) > 0:
            batches = min(batches, int(config.max_val_batches))
        held = batches * -(-tb // n) * image
        if held > have:
            raise _too_big("test_batch_size", tb, held, have, "the validation set")


def compile_run(step_fn, eval_fn, state, frozen, config, mesh, eval_sizes: Sequence[int]) -> None:
    """Compile the training step (and check its memory), then the evaluation step for each batch size in
    `eval_sizes`, before the progress bar starts; returns when every process has done so."""
    h, w = (int(v) for v in config.data.image_size)
    bsh = sharding.batch_sharding(mesh)

    def batch(size: int) -> dict:
        return {"image": jax.ShapeDtypeStruct((size, h, w, 3), jnp.float32, sharding=bsh)}

    compiled = compile_now("the training step", step_fn, state, frozen, batch(int(config.batch_size)))
    check_step_memory(compiled, config, mesh.local_devices)
    sizes = sorted(set(eval_sizes))
    for size in sizes:
        what = "the evaluation step" + (f" (batch {size})" if len(sizes) > 1 else "")
        compile_now(what, eval_fn, state, frozen, batch(size))
    # The first step's collectives start together on every process (their own set-up times out in 30 s).
    distributed.wait_for_all("train: steps compiled", COMPILE_WAIT_S)
