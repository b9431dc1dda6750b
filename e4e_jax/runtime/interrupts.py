"""Ctrl-C for every command: one line, exit 130 (errors.EXIT_INTERRUPTED), no traceback, no crash.

Python's own SIGINT handling fails long JAX runs in three ways (issue 30), each fixed here once:

- The KeyboardInterrupt is raised wherever the main thread is. Inside a gc callback (JAX registers
  one), a `__del__` or a weakref callback, Python prints "Exception ignored" and goes on, so the run
  completes as if Ctrl-C had not been pressed. `handling()` remembers every Ctrl-C (`requested()`)
  and raises a swallowed KeyboardInterrupt again in the next function the main thread calls (through
  `sys.unraisablehook` and a one-shot trace function).
- Child processes (decoders, image writers, face aligners) are in the terminal's process group and get
  the signal too: each prints a traceback, or dies in its start-up before it could ignore it. Children
  started inside `quiet_children()` have SIGINT blocked from birth (e4e_jax/runtime/worker_pool.py starts its
  forkserver there, which passes that on to every worker it forks later); the main process alone stops
  them.
- Once the main thread has unwound, the interpreter's shutdown races the live threads of XLA,
  TensorFlow and orbax: segmentation faults. `exit_process` ends an interrupted process with
  `os._exit` after flushing its output, past that shutdown.

The commands' entry points (`e4e_jax.cli.entry`, the converters' `__main__`) use all three; a command's
own clean-up runs as the KeyboardInterrupt unwinds (temporary files removed, locks released). Tests press
Ctrl-C at exact moments through e4e_jax/runtime/pause_points.py (`command-started` is reached in `run_command`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterator, NoReturn

from e4e_jax.errors import EXIT_INTERRUPTED, EXIT_OK, UserError
from e4e_jax.runtime import pause_points

STARTED_POINT = "command-started"  # pause point (pause_points.py): the arguments are parsed, nothing done
CHILD_EXIT_S = 5.0  # seconds a terminated worker process gets to exit before the main process does
_requested = False


def requested() -> bool:
    """True once Ctrl-C was pressed while `handling()` was active."""
    return _requested


def _on_sigint(signum, frame) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


def _raise_at_next_call(frame, event, arg):
    """A trace function raising KeyboardInterrupt into the next Python function the thread calls
    (CPython then switches tracing off again)."""
    raise KeyboardInterrupt


def _unraisable_hook(previous):
    def hook(unraisable) -> None:
        swallowed = unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt)
        if swallowed and signal.getsignal(signal.SIGINT) is _on_sigint:  # while `handling()`
            # Swallowed where Python cannot raise (a gc callback, __del__): raise it again in the next
            # function the main thread calls, after this context (or swallowed again, and so on).
            if threading.current_thread() is threading.main_thread():
                sys.settrace(_raise_at_next_call)
            return
        previous(unraisable)

    return hook


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """For the block (in the main thread): Ctrl-C raises KeyboardInterrupt and is remembered, and one
    that Python swallowed is raised again. The previous handler and hook come back afterwards."""
    global _requested
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is _on_sigint:
        yield  # not the main thread, or already handling (an entry point around `main`)
        return
    _requested = False
    old_handler = signal.signal(signal.SIGINT, _on_sigint)
    old_hook = sys.unraisablehook
    sys.unraisablehook = ours = _unraisable_hook(old_hook)
    try:
        yield
    finally:
        if sys.unraisablehook is ours:  # else another hook chained onto ours stays (ours then passes through)
            sys.unraisablehook = old_hook
        signal.signal(signal.SIGINT, old_handler)


def settle() -> None:
    """Ignore further Ctrl-Cs until `handling()` ends: the interruption is being reported, and a second
    press must not cut that one line short into a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_command(parse: Callable[[], Any], run: Callable[[Any], int | None]) -> int:
    """The body of a command line's `main`: `args = parse()`, then `run(args)`, returning the exit code.
    A UserError is one line `error: ...` and its exit code; Ctrl-C at any moment (parsing included) one
    line `interrupted[; args.on_interrupt]` and EXIT_INTERRUPTED; any other exception is a bug and
    keeps its traceback."""
    args = None
    with handling():
        try:
            args = parse()
            pause_points.reached(STARTED_POINT)
            code = int(run(args) or EXIT_OK)
            if requested() and code != EXIT_INTERRUPTED:  # a Ctrl-C that some library swallowed
                raise KeyboardInterrupt
            return code
        except UserError as e:
            if not requested():  # else the error is the interruption's consequence
                print(f"error: {e}", file=sys.stderr)
                return e.exit_code
        except KeyboardInterrupt:
            pass
        settle()
        hint = getattr(args, "on_interrupt", None)  # what the command keeps, and how to go on
        print(f"\ninterrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry(main: Callable[[], int]) -> NoReturn:
    """A process's entry point (console script, `python -m`): `main()`, then exit with its status;
    after a Ctrl-C without the interpreter's shutdown (`exit_process`)."""
    with handling():  # from the start to the exit
        try:
            code = main()
        except KeyboardInterrupt:  # before `main` could take it (e.g. while its module was imported)
            settle()
            print("\ninterrupted", file=sys.stderr)
            code = EXIT_INTERRUPTED
        exit_process(code)


@contextlib.contextmanager
def quiet_children() -> Iterator[None]:
    """Child processes started in the block (and those a forkserver started in it forks later) never
    receive SIGINT: it is blocked in this thread meanwhile, and children inherit the mask. A Ctrl-C
    pressed meanwhile waits and is raised when the block ends."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def exit_process(code: int) -> NoReturn:
    """End the process with `code`. After a Ctrl-C: flush stdout and stderr and `os._exit`, skipping
    the interpreter's shutdown (which can crash with XLA's or TensorFlow's threads still running)."""
    if not _requested:
        sys.exit(code)
    _stop_children()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _stop_children() -> None:
    """Terminate the worker processes a command did not stop itself (they never get SIGINT, and no
    interpreter shutdown will join them)."""
    import multiprocessing

    children = multiprocessing.active_children()
    for p in children:
        p.terminate()
    for p in children:
        p.join(CHILD_EXIT_S)
