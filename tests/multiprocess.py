"""Run a command as N JAX processes on this machine (CPU devices, `jax.distributed` on 127.0.0.1).

Each process gets the standard variables (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)
that `e4e_jax.runtime.distributed.initialize` reads, `devices` simulated CPU devices, PYTHONPATH set to the
repository the tests run from, and its own session: whatever happens (timeout, a failed assertion in
the caller, Ctrl-C), every process group is killed before `launch` returns.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(devices: int, extra: Optional[dict] = None) -> dict:
    """The environment of one JAX process with `devices` CPU devices, importing this repository."""
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(ROOT),
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="2",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    env.update(extra or {})
    return env


def launch(
    argv: Sequence[str],
    processes: int,
    devices: int,
    timeout_s: float,
    extra_env: Optional[dict] = None,
    flag_prefix: Optional[str] = None,
) -> list[subprocess.CompletedProcess]:
    """Run `python ARGV...` as `processes` processes of one JAX run; returns their results in process
    order (stdout, stderr as text). Raises TimeoutError (after killing all) when they outlive `timeout_s`.
    With processes=1 no coordinator is set: a plain single-process run. `flag_prefix` (e.g.
    '--config.distributed.'): pass coordinator_address, num_processes and process_id as command-line
    flags with that prefix instead of the environment."""
    address = f"127.0.0.1:{free_port()}"
    procs, logs = [], []
    try:
        for i in range(processes):
            extra, flags = dict(extra_env or {}), []
            if processes > 1 and flag_prefix:
                flags = [
                    f"{flag_prefix}coordinator_address={address}",
                    f"{flag_prefix}num_processes={processes}",
                    f"{flag_prefix}process_id={i}",
                ]
            elif processes > 1:
                extra.update(JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(i))
            out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
            logs.append((out, err))
            procs.append(
                subprocess.Popen(
                    [sys.executable, *argv, *flags],
                    cwd=ROOT,
                    env=env_for(devices, extra),
                    stdout=out,
                    stderr=err,
                    text=True,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + timeout_s
        while any(p.poll() is None for p in procs):
            # One failed process leaves the others waiting in a collective: stop them all at once.
            if any(p.returncode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
        timed_out = any(p.poll() is None for p in procs) and time.monotonic() > deadline
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
    results = []
    for p, (out, err) in zip(procs, logs):
        out.seek(0), err.seek(0)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out.read(), err.read()))
        out.close(), err.close()
    if timed_out:
        tails = "\n".join(f"--- process {i} ---\n{r.stderr[-2000:]}" for i, r in enumerate(results))
        raise TimeoutError(f"{processes} processes did not finish within {timeout_s} s\n{tails}")
    return results


def describe(results: list[subprocess.CompletedProcess], tail: int = 3000) -> str:
    """Exit codes and stderr tails of every process (for assertion messages)."""
    return "\n".join(f"--- process {i}: exit {r.returncode} ---\n{r.stderr[-tail:]}" for i, r in enumerate(results))
