"""Named points where a test can hold a running command, to stop it there deterministically.

A kill test must not race a poll against the work it interrupts. Instead the test starts the command
with `E4E_JAX_PAUSE_AT=NAME=DIR`; when the command first reaches `reached(NAME)` it writes
`DIR/NAME.reached` (its pid) and waits until `DIR/NAME.go` exists. The test waits for the first file,
then kills the process (or creates the second to let it go on), so it always stops at that point.
Without the variable (every real run) `reached` returns at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = "E4E_JAX_PAUSE_AT"
POLL_S = 0.05
_passed: set[str] = set()


def reached(name: str) -> None:
    """Pause here if the environment names this point (the first arrival only); see the module doc."""
    spec = os.environ.get(ENV)
    if not spec or name in _passed:
        return
    point, _, folder = spec.partition("=")
    if point != name or not folder:
        return
    _passed.add(name)
    folder = Path(folder)
    tmp = folder / f".{name}.reached.tmp"
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, folder / f"{name}.reached")  # the test sees the whole file or none
    while not (folder / f"{name}.go").exists():
        time.sleep(POLL_S)
