"""Process pools whose workers end with the process that made them (`invert`'s decoders and writers,
`align`'s workers).

A `concurrent.futures.ProcessPoolExecutor` outlives a parent killed by `kill -9` or the OOM killer: its
workers wait forever on a call queue whose write end they hold themselves, they hold the forkserver's
"alive" pipe so the forkserver never sees its end of file, and all of them hold the resource tracker's
pipe, so the tracker never unlinks the shared memory it tracks. Workers made here notice the death on
their own, two ways:

- the kernel: `prctl(PR_SET_PDEATHSIG, SIGKILL)` (Linux) in every worker (its parent is the forkserver)
  and in the forkserver itself (its parent is the main process), so the main process's death kills the
  forkserver and that kills the workers, whatever they are doing (even holding the GIL in dlib);
- a lifeline pipe whose write end only the main process holds: a thread in each worker waits for its
  end of file and exits the process (the portable fallback where `prctl` does not exist).

With the workers gone the forkserver and the resource tracker see their pipes close and exit; the
tracker then unlinks every shared-memory segment still registered (the writers' slot ring). Workers also
ignore SIGINT: Ctrl-C reaches the whole process group and the parent alone handles it.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from typing import Callable, Optional, Sequence

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Set by the main process only while it starts the forkserver: the pid whose death the forkserver follows.
FORKSERVER_PARENT_ENV = "E4E_JAX_FORKSERVER_PARENT"
ORPHAN_EXIT_CODE = 1  # a worker's exit status when its main process is gone

_PRELOAD: list[str] = [__name__]  # modules imported once in the forkserver (this one first)
_LIFELINE: Optional[tuple[multiprocessing.connection.Connection, multiprocessing.connection.Connection]] = None


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send `sig` to this process when the thread that forked it exits (Linux
    `PR_SET_PDEATHSIG`); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


_PARENT = os.environ.get(FORKSERVER_PARENT_ENV)
if _PARENT == str(os.getppid()):  # Imported as the forkserver's preload: follow the main process.
    die_with_parent()
    if str(os.getppid()) != _PARENT:  # the main process died before the prctl took effect
        os._exit(ORPHAN_EXIT_CODE)


def context(preload: Sequence[str] = ()) -> multiprocessing.context.BaseContext:
    """The start method of every pool: forkserver (never fork: the parent runs JAX's and BLAS threads),
    with `preload` imported once in the server so a worker starts in a fraction of a second; spawn where
    there is no forkserver. Modules to preload must be named before the first pool of the process."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    for name in preload:
        if name not in _PRELOAD:
            _PRELOAD.append(name)
    ctx.set_forkserver_preload(list(_PRELOAD))
    if threading.current_thread() is threading.main_thread():
        # Started now, from the main thread: the forkserver's parent-death signal follows the thread that
        # started it, and the main thread lives as long as the process. The variable exists only while
        # the server starts, so no other child of this process takes it for its own.
        from multiprocessing import forkserver

        os.environ[FORKSERVER_PARENT_ENV] = str(os.getpid())
        try:
            forkserver.ensure_running()
        finally:
            del os.environ[FORKSERVER_PARENT_ENV]
    return ctx


def _lifeline_reader() -> multiprocessing.connection.Connection:
    """The read end of this process's lifeline (made once; the write end is never handed to anyone)."""
    global _LIFELINE
    if _LIFELINE is None:
        _LIFELINE = multiprocessing.Pipe(duplex=False)
    return _LIFELINE[0]


def _exit_when_closed(lifeline: multiprocessing.connection.Connection) -> None:
    try:
        while True:
            lifeline.recv_bytes()  # nothing is ever sent: returns only by EOFError, the parent's end closed
    except (EOFError, OSError):
        pass
    os._exit(ORPHAN_EXIT_CODE)


def _start_worker(lifeline, initializer: Optional[Callable], initargs: tuple) -> None:
    """Every worker's initializer: ignore Ctrl-C, die with the parent, watch the lifeline, then the
    pool's own initializer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    threading.Thread(target=_exit_when_closed, args=(lifeline,), name="e4e-lifeline", daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


def process_pool(
    workers: int,
    initializer: Optional[Callable] = None,
    initargs: tuple = (),
    preload: Sequence[str] = (),
) -> concurrent.futures.ProcessPoolExecutor:
    """A ProcessPoolExecutor of `workers` processes that end with this process (module doc);
    `initializer(*initargs)` runs in each worker after the lifetime set-up."""
    return concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=context(preload),
        initializer=_start_worker,
        initargs=(_lifeline_reader(), initializer, initargs),
    )
