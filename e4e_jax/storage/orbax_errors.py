"""orbax's errors said once: a failed orbax save or restore raises its error in the calling thread, where
the command reports it as one line; its echoes (the same traceback logged from orbax's background
threads, asyncio's logs of the other writes that found no room, tensorstore's callbacks into a closed
event loop) are dropped, and nothing else is (issue 30: 90-130 lines after the one-line error).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

from e4e_jax.storage import fileio


class _BackgroundErrorFilter(logging.Filter):
    """Drops orbax's logs of an exception in its background save threads (each a full traceback): orbax
    raises the same error in the calling thread, where it is reported as one line (`fileio.naming_no_room`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or record.levelno < logging.ERROR:
            return True
        # Where absl's logger is a plain Logger (made before absl was imported), the record names absl's own
        # file as its origin: look at the traceback too.
        tb, files = record.exc_info[2], [record.pathname]
        while tb is not None:
            files.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        return not any(f"{os.sep}orbax{os.sep}" in f for f in files)


class _NoRoomTaskFilter(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" for a write that found no room: the other
    writes of a failed orbax save, logged when their tasks are collected (often after the command has
    reported the error as its one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or fileio.no_room_errno(error) is None


_NO_ROOM_TASKS = _NoRoomTaskFilter()


@contextlib.contextmanager
def raised_once() -> Iterator[None]:
    """For the block: an orbax save's error is raised in this thread only, not also logged (absl logger).
    From here on, the late echoes of a failed save are dropped too (asyncio's logs of a full disk,
    tensorstore's closed event loops)."""
    logging.getLogger("asyncio").addFilter(_NO_ROOM_TASKS)  # once: adding a filter again is a no-op
    drop_closed_loop_callbacks()
    log, quiet = logging.getLogger("absl"), _BackgroundErrorFilter()
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


def drop_closed_loop_callbacks() -> None:
    """Keep one failed orbax restore from printing dozens of tracebacks after its error.

    orbax runs a restore on an event loop that it closes as soon as one read fails (its run_sync does
    not cancel the other reads first); tensorstore completes those reads later and calls back into the
    closed loop, and Python prints each `RuntimeError: Event loop is closed` through
    sys.unraisablehook. From the first failed restore on, exactly those are dropped; every other
    unraisable exception reaches the hook that was there before.
    """
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop_callbacks", False):
        return

    def hook(unraisable):
        if not _is_closed_loop_callback(unraisable):
            previous(unraisable)

    hook.drops_closed_loop_callbacks = True
    sys.unraisablehook = hook


def _is_closed_loop_callback(unraisable) -> bool:
    if not isinstance(unraisable.exc_value, RuntimeError) or str(unraisable.exc_value) != "Event loop is closed":
        return False
    tb = unraisable.exc_traceback
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "call_soon_threadsafe":
            return True
        tb = tb.tb_next
    return False
