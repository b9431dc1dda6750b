"""The model bundle of a finished run (WORKDIR/model): an 'e4e' bundle of an e4e / pSp / W encoder, a
'restyle' bundle of a ReStyle one (its default iteration count = the run's n_iters_per_batch), written as
the converters write theirs, so `e4e-jax invert` and `restyle.load_restyle` read it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import jax
import numpy as np

from e4e_jax import e4e_bundle, restyle_bundle
from e4e_jax.training.state import TrainState, encoder_variables

log = logging.getLogger(__name__)

MODEL_DIR = "model"  # in WORKDIR


def export_bundle(run, state: TrainState, config, workdir: Path) -> Optional[Path]:
    """Write the bundle of the trained encoder (+ generator, latent_avg) to WORKDIR/model; None (and a log
    line) for an encoder.arch without a bundle schema (models/encoder_types.py)."""
    enc = run.encoder_config
    if enc is None:
        log.info(
            "encoder.arch=%s: no model bundle exported (only the encoders of models/encoder_types.py load)",
            config.encoder.arch,
        )
        return None
    opts = {"dataset_type": config.dataset_type, "start_from_latent_avg": bool(config.start_from_latent_avg)}
    if enc.iterative:
        iterations = int(run.step_cfg.n_iters)
        opts["n_iters_per_batch"] = iterations
        arch = restyle_bundle.RestyleArchitecture.create(enc, run.gen_cfg, config.dataset_type, opts, iterations)
        save = restyle_bundle.save
    else:
        arch = e4e_bundle.E4EArchitecture.create(enc, run.gen_cfg, config.dataset_type, opts=opts)
        save = e4e_bundle.save
    la = run.frozen["latent_avg"]
    latent_avg = np.zeros((enc.n_styles, run.gen_cfg.style_dim), np.float32) if la is None else np.asarray(la)
    variables = {
        "encoder": jax.device_get(encoder_variables(state)),
        "generator": run.frozen["generator"],
        "latent_avg": latent_avg,
    }
    return save(
        Path(workdir) / MODEL_DIR,
        arch,
        variables,
        extra={"trained_steps": int(state.step), "training_config": json.loads(config.to_json())},
        overwrite=True,
    )
