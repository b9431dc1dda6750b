"""Stopping a command at a named point (e4e_jax/pause_points.py) and watching its processes, for tests that
kill or interrupt a job at an exact moment: the process waits at the point until released, so no test
races a timer against the job. Waits here are bounded conditions (generous bounds), never sleeps that
guess how long the job takes.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from e4e_jax import pause_points

POLL_S = 0.05


def pause_env(env: dict, point: str, k: int, fifo: Path) -> dict:
    """`env` with the command made to wait at the k-th arrival at `point` (a named pipe is made at `fifo`)."""
    os.mkfifo(fifo)
    return dict(env, **{pause_points.ENV: f"{point}:{k}:{fifo}"})


def wait_paused(proc: subprocess.Popen, fifo: Path, timeout: float) -> int:
    """Wait until `proc` is waiting at its pause point; returns the pid that wrote the ready file."""
    ready = fifo.with_name(fifo.name + pause_points.READY_SUFFIX)
    deadline = time.monotonic() + timeout
    while not ready.is_file():
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else b""
            raise AssertionError(f"the command ended (exit {proc.returncode}) before its pause point: {err[-3000:]}")
        assert time.monotonic() < deadline, "the command did not reach its pause point in time"
        time.sleep(POLL_S)
    return int(ready.read_text())


def release(fifo: Path) -> None:
    """Let the paused process go on."""
    with open(fifo, "wb"):
        pass


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state letter, parent pid, start time) of a process, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def start_time(pid: int) -> int | None:
    st = _stat(pid)
    return None if st is None else st[2]


def alive(pid: int, started: int | None = None) -> bool:
    """Running (a zombie has exited: it only waits for a parent to collect its status); with `started`,
    only if it is still the process that started then (not a new one given the same pid)."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X") and (started is None or st[2] == started)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, their children, ...)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[0] not in ("Z", "X"):
                parents[int(entry.name)] = st[1]
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, parent in parents.items() if parent == p]
        out += kids
        frontier += kids
    return out


def identities(pids: list[int]) -> dict[int, int]:
    """{pid: start time} of the processes that run now (what `wait_gone` and `kill_left` take)."""
    return {p: t for p in pids if (t := start_time(p)) is not None}


def wait_gone(procs: dict[int, int], timeout: float) -> list[int]:
    """Wait until none of `procs` ({pid: start time}) runs, at most `timeout` s; returns those still running."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p, t in procs.items() if alive(p, t)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(POLL_S)


def shared_memory_of(pids: list[int]) -> set[Path]:
    """The /dev/shm files (by name, not yet unlinked) that these processes have mapped."""
    out = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            path = line.split(maxsplit=5)[5] if len(line.split(maxsplit=5)) == 6 else ""
            if path.startswith("/dev/shm/") and not path.endswith("(deleted)"):
                out.add(Path(path))
    return out


def kill_left(procs: dict[int, int]) -> None:
    """Clean-up of a failed test: end the processes it started ({pid: start time}) that still run. The
    resource tracker goes last, on its own once the others are gone, so it still unlinks the shared
    memory they used."""

    def is_tracker(pid: int) -> bool:
        try:
            return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    trackers = {p: t for p, t in procs.items() if is_tracker(p)}
    for group in ({p: t for p, t in procs.items() if p not in trackers}, trackers):
        for pid, started in group.items():
            if alive(pid, started):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        wait_gone(trackers, timeout=5)
