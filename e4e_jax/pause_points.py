"""Named points where a job can be made to wait, so that a test stops it at an exact moment instead of
guessing one with a timer (a loaded CI machine runs 2-3x slower; docs/inversion_job.md, "Tests").

    E4E_JAX_PAUSE_AT="POINT:K:FIFO"

The K-th time the process reaches `reached(POINT)` it writes `FIFO.ready` (its pid) and waits until
something opens the named pipe FIFO for writing and closes it. Meanwhile the test does what it came for
(`kill -9` of the main process alone, SIGINT to the group, ...); a signal that interrupts the wait acts
there as anywhere else (SIGINT raises KeyboardInterrupt). Without the variable (always, outside tests)
`reached` costs a dictionary look-up.

Points: `invert-chunk-committed` (after each committed chunk), `invert-finishing` (report.json written,
the chunk state not yet removed), `align-photo-done` (after each photo's result, in the main process),
`tune-batch-written` (a batch's generators and reconstructions written, not committed), `tune-committed`
(after each committed batch).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from e4e_jax import fileio

ENV = "E4E_JAX_PAUSE_AT"
READY_SUFFIX = ".ready"
_counts: dict[str, int] = {}


def _setting() -> Optional[tuple[str, int, Path]]:
    value = os.environ.get(ENV)
    if not value:
        return None
    point, k, fifo = value.split(":", 2)
    return point, int(k), Path(fifo)


def reached(point: str) -> None:
    """Count an arrival at `point`; wait there if E4E_JAX_PAUSE_AT names this arrival (module doc)."""
    setting = _setting()
    if setting is None or setting[0] != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] != setting[1]:
        return
    fifo = setting[2]
    fileio.write_text(fifo.with_name(fifo.name + READY_SUFFIX), f"{os.getpid()}\n")
    with open(fifo, "rb") as f:  # blocks until the test opens the pipe for writing
        f.read()
