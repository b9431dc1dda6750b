"""Deterministic stopping points for tests: a process waits at a named point while a test acts on it.

A test that must stop a command at an exact moment (kill -9 after the last checkpoint, Ctrl-C between two
writes) cannot rely on timing on a loaded machine. Instead it starts the command with

    E4E_JAX_PAUSE_AT=<point>  E4E_JAX_PAUSE_FILE=<path>

and the command, on reaching `pause(<point>)`, writes its pid to <path> (atomically) and waits until
<path> is removed: the test waits for the file, then kills or interrupts the process, or deletes the file
to let it go on. Without these variables `pause` does nothing and costs one dictionary lookup.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

from e4e_jax import fileio

ENV_POINT = "E4E_JAX_PAUSE_AT"
ENV_FILE = "E4E_JAX_PAUSE_FILE"
POLL_S = 0.05  # how often a paused process looks for the file's removal


def active(point: str) -> bool:
    """Whether the environment asks this process to pause at `point`."""
    return bool(os.environ.get(ENV_FILE)) and os.environ.get(ENV_POINT) == point


def pause(point: str, before: Optional[Callable[[], None]] = None) -> None:
    """Wait at `point` while E4E_JAX_PAUSE_FILE exists, if E4E_JAX_PAUSE_AT names it (see module doc).
    `before` runs first (e.g. wait for asynchronous saves, so the test sees what the point promises)."""
    if not active(point):
        return
    if before is not None:
        before()
    path = os.environ[ENV_FILE]
    fileio.write_text(path, f"{os.getpid()}\n")
    while os.path.exists(path):
        time.sleep(POLL_S)
