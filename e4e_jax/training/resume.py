"""What `--resume` takes back besides the train state, so that an interrupted and resumed run ends with
what the uninterrupted run gives:

- the run record (`RunRecord`: the last training and validation metrics, the best validation loss),
  saved in every checkpoint's JSON `meta`;
- metrics.jsonl cut back to the checkpoint's step (`trim_metrics`): the rows a killed run wrote after
  its last checkpoint are written again by the resumed run, and would otherwise appear twice;
- whether a run at its last step still lacks its outputs (`outputs_complete`: killed after the last
  checkpoint, before the bundle or final_metrics.json were written), which `--resume` then finishes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any, Optional

from e4e_jax import errors, fileio
from e4e_jax.training import checkpoint, config_rules

log = logging.getLogger(__name__)

FINAL_METRICS = "final_metrics.json"  # written last by a run: its presence at the checkpoint's step = done


@dataclasses.dataclass
class RunRecord:
    """The host-side facts of a run that its final metrics report (and the train state does not hold)."""

    last_train: dict[str, float] = dataclasses.field(default_factory=dict)
    last_eval: dict[str, float] = dataclasses.field(default_factory=dict)
    best_val: float = math.inf

    def to_meta(self) -> dict[str, Any]:
        """JSON for a checkpoint's meta (an infinite best_val, no validation yet, as null)."""
        best = self.best_val if math.isfinite(self.best_val) else None
        return {"train_metrics": dict(self.last_train), "eval_metrics": dict(self.last_eval), "best_val_loss": best}

    @classmethod
    def from_meta(cls, meta: dict) -> "RunRecord":
        """The record saved by `to_meta` (a checkpoint of an older version has none: an empty record)."""
        if "best_val_loss" not in meta:
            log.warning("the checkpoint holds no run record (an older version): best_val_loss restarts")
        best = meta.get("best_val_loss")
        return cls(
            last_train=dict(meta.get("train_metrics") or {}),
            last_eval=dict(meta.get("eval_metrics") or {}),
            best_val=float(best) if best is not None else math.inf,
        )


def restore(mngr, step: int, abstract, config, workdir: Path) -> tuple[Any, RunRecord]:
    """(train state, run record) of checkpoint `step`; a UserError naming the differing config fields (one
    line each) when the checkpoint's state does not fit the one this config builds."""
    saved = checkpoint.read_meta(mngr, step).get("config", {})
    changed = config_rules.config_diff(saved, json.loads(config.to_json()))
    lines = "\n".join(f"  {k}: checkpoint {a!r}, now {b!r}" for k, a, b in changed)
    misfits = checkpoint.misfits(mngr, step, abstract)
    if misfits:
        why = (
            f"the fields that differ from its run:\n{lines}"
            if changed
            else f"no config field differs; the state's leaves that do: {', '.join(misfits[:3])}"
            f"{' …' if len(misfits) > 3 else ''}"
        )
        raise errors.UserError(
            f"--resume: the checkpoint at step {step} in {workdir / 'checkpoints'} holds a state of another "
            f"shape than this config builds; {why}\nresume with that run's config ({workdir / 'config.json'}) "
            f"or choose a new --workdir"
        )
    if changed:
        log.warning("resuming step %d with config fields changed since the checkpoint:\n%s", step, lines)
    state, meta = checkpoint.restore(mngr, step, abstract)
    return state, RunRecord.from_meta(meta)


def trim_metrics(path: Path, keep_through: Optional[int]) -> int:
    """Keep only the rows of the metrics file `path` up to step `keep_through` (None: none, a run starting
    over from step 0), atomically; a line cut by a kill is dropped too. Returns the rows dropped."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
            keep = keep_through is not None and int(row["step"]) <= keep_through
        except (ValueError, TypeError, KeyError):
            keep = False
        if keep:
            kept.append(line + "\n")
        else:
            dropped += 1
    if dropped:
        fileio.write_text(path, "".join(kept))
        log.info("%s: dropped %d rows written after the checkpoint (the resumed run writes them again)", path, dropped)
    return dropped


def outputs_complete(workdir: Path, step: int) -> bool:
    """Whether the run's outputs for `step` were all written: final_metrics.json (written last) is there,
    says `step`, and the bundle it names exists."""
    try:
        final = json.loads((workdir / FINAL_METRICS).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(final, dict) or final.get("step") != step:
        return False
    bundle = final.get("model_bundle")
    return bundle is None or Path(bundle).is_dir()
