"""Joining a multi-process JAX run (TPU pods, several GPU hosts): one place for every command.

`initialize(...)` calls `jax.distributed.initialize` once, before any device is touched, with the
coordinator / process count / process id taken from (in order) the explicit arguments, the environment
(`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`, the names JAX itself reads), or JAX's
own cluster auto-detection (Cloud TPU, SLURM, Open MPI, Kubernetes) when `auto=True`. See README
"Training on a TPU pod / several hosts".
"""

from __future__ import annotations

import itertools
import os
from typing import Optional

import jax

from e4e_jax.errors import UserError

ENV_ADDRESS, ENV_NUM, ENV_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def _env_int(name: str) -> Optional[int]:
    text = os.environ.get(name)
    if text in (None, ""):
        return None
    try:
        return int(text)
    except ValueError:
        raise UserError(f"environment variable {name}={text!r} is not a whole number") from None


def initialize(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    *,
    auto: bool = False,
    timeout_s: int = 300,
    flags: tuple[str, str, str] = ("--coordinator-address", "--num-processes", "--process-id"),
) -> bool:
    """Join the process group if one is asked for; returns True when running multi-process.

    Asked for means: a coordinator address (argument or JAX_COORDINATOR_ADDRESS), or `auto` (JAX then
    detects TPU pods / SLURM / MPI by itself). With an explicit coordinator, the process count and id
    are required (arguments or JAX_NUM_PROCESSES / JAX_PROCESS_ID). Idempotent. `flags`: how the calling
    command names the three settings, for its error messages.
    """
    flag_address, flag_num, flag_id = flags
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    address = coordinator_address or os.environ.get(ENV_ADDRESS) or None
    num = num_processes if num_processes is not None else _env_int(ENV_NUM)
    pid = process_id if process_id is not None else _env_int(ENV_ID)
    if address is None and not auto:
        if num not in (None, 1) or pid not in (None, 0):
            raise UserError(
                "a process count or id was given without a coordinator address; set "
                f"{flag_address} (or {ENV_ADDRESS}) to HOST:PORT of process 0"
            )
        return False
    if address is not None:
        if num is None or pid is None:
            raise UserError(
                f"coordinator {address} given without the process count and id: set both "
                f"({flag_num}/{flag_id}, or {ENV_NUM}/{ENV_ID})"
            )
        if num < 1 or not 0 <= pid < num:
            raise UserError(f"process id {pid} is outside 0..{num - 1} (num_processes={num})")
        if num == 1:
            return False
    # CPU collectives across processes need gloo (no effect on GPU/TPU, whose collectives are native).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=address, num_processes=num, process_id=pid, initialization_timeout=timeout_s
    )
    return jax.process_count() > 1


def is_main() -> bool:
    """Process 0: the one that writes logs, reports and merged outputs."""
    return jax.process_index() == 0


_BARRIERS = itertools.count()  # a barrier id is used once per run of the coordination service


def wait_for_all(name: str, timeout_s: float) -> None:
    """Return once every process of the run has called `wait_for_all(name, ...)` (the same calls in the
    same order); a no-op in a single-process run. It waits through the coordination service, not a device
    collective, so a process may wait minutes (another still compiling, without a persistent-cache hit)
    where the CPU collectives give up after 30 s."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed as jax_distributed  # the client jax.distributed.initialize made

    jax_distributed.global_state.client.wait_at_barrier(f"e4e-jax {name} #{next(_BARRIERS)}", int(timeout_s * 1000))
