"""orbax checkpoints of the train state (docs/architecture.md, "Several processes").

WORKDIR/checkpoints/<step>/{state, meta}: `state` is the whole TrainState (StandardSave), `meta` a JSON
record (step, config, e4e-jax version). Saves are asynchronous; every process calls `save` (orbax
coordinates who writes what; the replicated state is written once, so WORKDIR must be one folder that
every process sees: a shared file system on several hosts). The saved arrays are a private on-device
copy of the state, so the live state can be donated to the next step while the save is still reading
(no reliance on when orbax finishes its device-to-host transfers). Restores take an abstract target
(jax.eval_shape of the initialiser, each leaf carrying its sharding), so arrays come back already
placed; `misfits` checks a checkpoint against that target from its metadata first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

_copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))


def manager(workdir: str | os.PathLike, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(  # a save killed or failed half-way is removed by the next run
        max_to_keep=keep if keep > 0 else None,
        create=True,
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(Path(workdir).resolve() / "checkpoints", options=options)


def remove_failed_saves(workdir: str | os.PathLike) -> None:
    """Delete the temporary folders of saves that failed (a full disk) or were cut short; call it once
    the manager is closed (no save in flight). A finished checkpoint is never one of them."""
    import shutil

    for tmp in (Path(workdir).resolve() / "checkpoints").glob("*.orbax-checkpoint-tmp*"):
        shutil.rmtree(tmp, ignore_errors=True)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
    """Start an asynchronous save of `state` at `step` (returns once the copy is taken)."""
    snapshot = _copy(state)
    mngr.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(snapshot), meta=ocp.args.JsonSave(meta)), force=True
    )


def restore(mngr: ocp.CheckpointManager, step: Optional[int], abstract_state: Any) -> tuple[Any, dict]:
    """(state, meta) of `step` (default: the latest)."""
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {mngr.directory}")
    out = mngr.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
    )
    return out["state"], dict(out["meta"])


def read_meta(mngr: ocp.CheckpointManager, step: int) -> dict:
    """The JSON record of `step` alone (no arrays read)."""
    return dict(mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])


def _key(entry) -> str:
    for attr in ("name", "key", "idx"):  # GetAttrKey, DictKey, SequenceKey
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """{'a/b/c': shape} of every leaf (arrays, ShapeDtypeStructs or orbax metadata alike)."""
    return {
        "/".join(_key(k) for k in path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def misfits(mngr: ocp.CheckpointManager, step: int, abstract_state: Any) -> list[str]:
    """The leaves in which the state saved at `step` does not fit `abstract_state`: missing on either side,
    or of another shape. Read from the checkpoint's metadata (no arrays), so a misfit is found before a
    restore fails half-way."""
    saved = leaf_shapes(ocp.PyTreeCheckpointHandler().metadata(Path(mngr.directory) / str(step) / "state").tree)
    want = leaf_shapes(abstract_state)
    return sorted(k for k in set(saved) | set(want) if saved.get(k) != want.get(k))
