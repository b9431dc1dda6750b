"""Named points where a command can be made to wait, so that a test stops it at an exact moment instead
of guessing one with a timer (a loaded CI machine runs 2-3x slower; docs/inversion_job.md, "Tests").
The one mechanism for every command (tests/pausing.py is its test side).

    E4E_JAX_PAUSE_AT="POINT:K:FIFO"

The K-th time the main process reaches `reached(POINT)` it writes `FIFO.ready` (its pid; atomically) and
waits until something opens the named pipe FIFO for writing and closes it (`tests/pausing.release`).
Meanwhile the test does what it came for (`kill -9` of the main process alone, SIGINT to the group as a
terminal's Ctrl-C, ...); a signal that interrupts the wait acts there as anywhere else (SIGINT raises
KeyboardInterrupt). Worker processes (multiprocessing children) never wait: one waiting would hold up
its pool's shutdown. Without the variable (always, outside tests) `reached` costs a dictionary look-up.

Points (the K-th arrival counts from the process's start):
- `command-started`: a command line's arguments are parsed, nothing done yet (`interrupts.run_command`).
- `write-before-rename`: inside an atomic write (`fileio`, `bundle.save`), the temporary file or folder
  is written and not yet renamed into place.
- `synthesize-batch-done`, `edit-batch-done`, `evaluate-batch-done`: a batch is rendered (its files
  written where the command writes them as it goes).
- `invert-chunk-committed` (after each committed chunk), `invert-finishing` (report.json written, the
  chunk state not yet removed).
- `align-photo-done`: after each photo's result, in the main process.
- `tune-batch-written` (a batch's generators and reconstructions written, not committed),
  `tune-committed` (after each committed batch).
- `convert-loaded`: a converter has read the checkpoint, nothing written yet.
- `train-after-step-N`: training step N is done and its checkpoint, if any, saved; `train-before-export`
  (the last checkpoint saved, the bundle not yet written); `train-before-final-metrics` (the bundle is
  written, nothing after it).
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Callable, Optional

ENV = "E4E_JAX_PAUSE_AT"
READY_SUFFIX = ".ready"
_counts: dict[str, int] = {}


def _setting() -> Optional[tuple[str, int, Path]]:
    value = os.environ.get(ENV)
    if not value:
        return None
    point, k, fifo = value.split(":", 2)
    return point, int(k), Path(fifo)


def _write_ready(path: Path) -> None:
    """The pid in `path`, renamed into place whole (this module is below fileio: fileio calls it)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)


def reached(point: str, before: Optional[Callable[[], None]] = None) -> None:
    """Count an arrival at `point`; wait there if E4E_JAX_PAUSE_AT names this arrival (module doc).
    `before` runs first when it waits (e.g. wait for asynchronous saves, so the test sees what the point
    promises)."""
    setting = _setting()
    if setting is None or setting[0] != point or multiprocessing.parent_process() is not None:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] != setting[1]:
        return
    if before is not None:
        before()
    fifo = setting[2]
    _write_ready(fifo.with_name(fifo.name + READY_SUFFIX))
    with open(fifo, "rb") as f:  # blocks until the test opens the pipe for writing
        f.read()
