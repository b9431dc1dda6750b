"""The plan file of a resumable job (`<state folder>/plan.json`): what a run was asked (its options and
inputs), written before its first commit and compared by `--resume` (docs/inversion_job.md). The invert
and tune jobs each keep one in their own state folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

from e4e_jax.errors import UserError
from e4e_jax.storage import fileio

PLAN_NAME = "plan.json"


def read(state: Path) -> Optional[dict[str, Any]]:
    """The plan in the folder `state`, or None when there is none; an unreadable one is a UserError."""
    path = Path(state) / PLAN_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({e}); rerun with --overwrite to start over") from e


def write(state: Path, plan: Mapping[str, Any], version: int) -> None:
    """Write `plan` (with its format `version` first) atomically into `state`, made if missing."""
    state = Path(state)
    state.mkdir(parents=True, exist_ok=True)
    fileio.write_text(state / PLAN_NAME, json.dumps({"version": version, **plan}, indent=1) + "\n")
