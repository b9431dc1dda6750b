"""The end of a run: the replicas agree, the final metrics, the 'e4e' (or, for a ReStyle encoder,
'restyle') bundle of the trained encoder (WORKDIR/model, for `e4e-jax invert`), the loss curves
(WORKDIR/loss_curve.png) and WORKDIR/final_metrics.json, written last. The same code ends an uninterrupted run and a `--resume` of a
run killed after its last checkpoint (from the state and run record that checkpoint holds), so both give
the same outputs.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from e4e_jax.models import latent_avg as latent_avg_lib
from e4e_jax.runtime import pause_points
from e4e_jax.storage import e4e_bundle, fileio, restyle_bundle
from e4e_jax.training import loss_curve, writers
from e4e_jax.training.resume import FINAL_METRICS, RunRecord
from e4e_jax.training.state import TrainState, encoder_variables, fingerprint

log = logging.getLogger(__name__)

MODEL_DIR = "model"
PAUSE_BEFORE_FINAL_METRICS = "train-before-final-metrics"  # pause point: the bundle is written, nothing after


def check_replicas_agree(digest: str) -> None:
    """Raise if another process's replicated state differs from this one's (fingerprints differ)."""
    if jax.process_count() == 1:
        return
    every = np.asarray(multihost_utils.process_allgather(np.frombuffer(bytes.fromhex(digest), np.uint8)))
    differ = [i for i, row in enumerate(every) if row.tobytes().hex() != digest]
    if differ:
        raise RuntimeError(
            f"the train state of process(es) {differ} differs from that of process "
            f"{jax.process_index()}: replicas diverged (non-deterministic input or collective)"
        )


def export_bundle(run, state: TrainState, config, workdir: Path) -> Optional[Path]:
    """Write the bundle of the trained encoder (+ generator, latent_avg) to WORKDIR/model, as the converters
    write theirs: an 'e4e' bundle (e4e_jax/storage/e4e_bundle.py) of an e4e / pSp / W encoder, a 'restyle' bundle
    (e4e_jax/storage/restyle_bundle.py, its default iteration count the run's n_iters_per_batch) of a ReStyle one;
    None (and a log line) for an encoder.arch without a bundle schema (models/encoder_types.py)."""
    enc = run.encoder_config
    if enc is None:
        log.info(
            "encoder.arch=%s: no model bundle exported (only the encoders of models/encoder_types.py load)",
            config.encoder.arch,
        )
        return None
    opts = {"dataset_type": config.dataset_type, "start_from_latent_avg": bool(config.start_from_latent_avg)}
    if enc.iterative:
        iterations = int(run.step_cfg.n_iters_per_batch)
        opts["n_iters_per_batch"] = iterations
        arch = restyle_bundle.RestyleArchitecture.create(enc, run.gen_cfg, config.dataset_type, opts, iterations)
        save = restyle_bundle.save
    else:
        arch = e4e_bundle.E4EArchitecture.create(enc, run.gen_cfg, config.dataset_type, opts=opts)
        save = e4e_bundle.save
    la = run.frozen["latent_avg"]
    latent_avg = latent_avg_lib.nothing_added(enc.n_styles, run.gen_cfg.style_dim) if la is None else np.asarray(la)
    variables = {
        "encoder": jax.device_get(encoder_variables(state)),
        "generator": run.frozen["generator"],
        "latent_avg": latent_avg,
    }
    return save(
        workdir / MODEL_DIR,
        arch,
        variables,
        extra={"trained_steps": int(state.step), "training_config": json.loads(config.to_json())},
        overwrite=True,
    )


def _draw_loss_curve(workdir: Path) -> None:
    """WORKDIR/loss_curve.png from metrics.jsonl; a failure to draw is said, never the end of a run."""
    try:
        path = loss_curve.write_loss_curve(workdir / writers.METRICS_FILE, workdir / loss_curve.FILE_NAME)
    except (OSError, ValueError) as e:
        log.warning("could not draw the loss curves (%s); the metrics are in %s", e, workdir / writers.METRICS_FILE)
        return
    if path is not None:
        log.info("loss curves: %s", path)


def final_outputs(run, state: TrainState, config, workdir: Path, record: RunRecord, is_main: bool) -> dict[str, Any]:
    """The final metrics of the run ending in `state` (also written, with the bundle and the loss curves,
    by process 0); every process calls it and returns once process 0 has written them."""
    digest = fingerprint(state)
    check_replicas_agree(digest)
    final = {
        "step": int(state.step),
        "state_sha256": digest,
        **{f"train/{k}": v for k, v in record.last_train.items()},
        **{f"test/{k}": v for k, v in record.last_eval.items()},
    }
    if math.isfinite(record.best_val):
        final["best_val_loss"] = record.best_val
    if is_main:
        if config.export_bundle and int(state.step) > 0:
            path = export_bundle(run, state, config, workdir)
            if path is not None:
                final["model_bundle"] = str(path)
        pause_points.reached(PAUSE_BEFORE_FINAL_METRICS)
        _draw_loss_curve(workdir)
        fileio.write_text(workdir / FINAL_METRICS, json.dumps(final, indent=2, sort_keys=True) + "\n")
    if jax.process_count() > 1:
        # The others wait for process 0's bundle and final metrics: when any process returns, the run's
        # outputs are complete (and no process exits while another may still need the group).
        multihost_utils.sync_global_devices("e4e-jax train: outputs written")
    return final
