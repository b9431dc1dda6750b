"""The training loop: `train_and_evaluate(config, workdir, resume=False) -> final metrics`.

Per step: one jitted update (state donated, batch sharded P('data'), state and frozen networks
replicated P()), a lagged finiteness check (the host reads step t's losses while step t+1 runs), and the
periodic actions of the official coach: scalars every `board_interval`, an image grid every
`image_interval`, validation every `val_interval` and at the end, a checkpoint every `save_interval` and
at the end. A checkpoint is only written after the losses of every step up to it were found finite, so
a NaN/Inf stops the run with `NonFiniteLossError` and the last good checkpoint intact. At the end an
'e4e' bundle of the trained encoder (+ generator, latent_avg) is written to WORKDIR/model (for
`e4e-jax invert`) and the final metrics to WORKDIR/final_metrics.json.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np

from e4e_jax import sharding
from e4e_jax.models.encoder_types import TYPE_OF_MODE
from e4e_jax.training import checkpoint, networks, optim, presets, writers
from e4e_jax.training.state import TrainState, abstract_state, encoder_variables, init_train_state, param_count
from e4e_jax.training.step import eval_step, train_step

log = logging.getLogger(__name__)

# Metrics whose non-finite value stops the run.
CHECKED = ("loss", "grad_norm", "discriminator_loss", "discriminator_r1_loss")


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/Inf; the message names the step, the terms and the last good checkpoint."""


def maybe_initialize_distributed(config) -> None:
    """jax.distributed.initialize() when the config asks or a coordinator is named in the environment."""
    wanted = bool(config.get("distributed", False)) or any(
        os.environ.get(k) for k in ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS"))
    if wanted and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def _host(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def _check_finite(step: int, m: dict[str, float], mngr, workdir: Path) -> None:
    bad = {k: v for k, v in m.items() if k in CHECKED and not math.isfinite(v)}
    if m.get("nonfinite_params", 0.0) != 0.0:
        bad["nonfinite_params"] = m["nonfinite_params"]
    if bad:
        last = mngr.latest_step()
        where = (f"the last good checkpoint is step {last} in {workdir / 'checkpoints'} (left intact); continue "
                 f"from it with --resume, e.g. with a lower --config.learning_rate"
                 if last is not None else "no checkpoint had been written yet")
        terms = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
        raise NonFiniteLossError(f"training stopped at step {step}: non-finite loss or parameters ({terms}); {where}")


def _grid(x: np.ndarray, y_hat: np.ndarray, n: int = 4) -> np.ndarray:
    """(1, n·H, 2·W, 3) float in [0, 1]: input | reconstruction per row."""
    n = min(n, x.shape[0])
    rows = [np.concatenate([x[i], y_hat[i]], axis=1) for i in range(n)]
    return np.clip((np.concatenate(rows, axis=0)[None] + 1.0) / 2.0, 0.0, 1.0)


def _evaluate(eval_fn, state, frozen, batches) -> dict[str, float]:
    """Official validate: mean over batches of each batch's mean loss terms."""
    sums: dict[str, float] = {}
    for b in batches:
        m = _host(eval_fn(state, frozen, b)[0])
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v
    return {k: v / len(batches) for k, v in sums.items()} if batches else {}


def _export_bundle(run, state: TrainState, config, workdir: Path) -> Optional[Path]:
    """Write an 'e4e' bundle (same layout as tools/convert_weights/e4e.py) of the trained encoder."""
    from e4e_jax import bundle

    if config.encoder.arch != "e4e":
        log.info("encoder.arch=%s: no e4e bundle exported (only the encoders of models/encoder_types.py load)",
                 config.encoder.arch)
        return None
    n = run.step_cfg.n_styles
    arch = {"encoder": {"mode": config.encoder.mode, "encoder_type": TYPE_OF_MODE[config.encoder.mode],
                        "num_layers": 50, "backbone_mode": "ir_se",
                        "n_styles": n, "input_nc": 3, "input_size": list(config.data.image_size),
                        **dict(config.encoder.kwargs)},
            "generator": run.gen_cfg.to_dict(),
            "opts": {"dataset_type": config.dataset_type, "start_from_latent_avg": bool(config.start_from_latent_avg)},
            "dataset_type": config.dataset_type}
    domain = str(config.dataset_type).split("_")[0]
    if domain in ("ffhq", "cars", "horse", "church", "cats"):
        arch["domain"] = domain
    la = run.frozen["latent_avg"]
    latent_avg = np.zeros((n, run.gen_cfg.style_dim), np.float32) if la is None else np.asarray(la)
    variables = {"encoder": jax.device_get(encoder_variables(state)), "generator": run.frozen["generator"],
                 "latent_avg": latent_avg}
    return bundle.save(workdir / "model", "e4e", arch, variables,
                       extra={"trained_steps": int(state.step), "training_config": json.loads(config.to_json())},
                       overwrite=True)


@dataclasses.dataclass
class _Prepared:
    run: networks.Run
    init: Any       # jitted (encoder variables or None) -> TrainState, replicated
    init_fn: Any    # the same, not jitted (for eval_shape)
    step: Any       # jitted train step (state donated)
    eval: Any       # jitted eval step
    sampler: dict   # synthetic-data samplers by stream


# One prepared run per (config, devices): a second run with the same config in this process (a split
# run, or quickstart training then evaluating) reuses the networks and the compiled executables.
_PREPARED: dict[tuple, _Prepared] = {}


def _prepare(config, mesh) -> _Prepared:
    key = (config.to_json(sort_keys=True), tuple(d.id for d in mesh.devices.flat))
    if key in _PREPARED:
        return _PREPARED[key]
    repl, bsh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    run = networks.build(config)
    enc_tx = optim.encoder_optimizer(config.optim_name, float(config.learning_rate))
    disc_tx = optim.discriminator_optimizer(float(config.w_discriminator_lr))
    h, w = config.data.image_size

    def init_fn(encoder_vars=None):
        return init_train_state(encoder=run.nets.encoder, discriminator=run.nets.discriminator, encoder_tx=enc_tx,
                                disc_tx=disc_tx, optim_name=config.optim_name, seed=int(config.seed),
                                input_shape=(1, h, w, 3), style_dim=run.gen_cfg.style_dim,
                                pool_size=int(config.w_pool_size) if config.use_w_pool else 0,
                                encoder_variables=encoder_vars)

    prepared = _Prepared(
        run=run, init=jax.jit(init_fn, out_shardings=repl), init_fn=init_fn,
        step=jax.jit(functools.partial(train_step, run.nets, run.step_cfg, enc_tx, disc_tx),
                     in_shardings=(repl, repl, bsh), out_shardings=(repl, repl), donate_argnums=(0,)),
        eval=jax.jit(functools.partial(eval_step, run.nets, run.step_cfg), in_shardings=(repl, repl, bsh),
                     out_shardings=(repl, bsh)),
        sampler={})
    _PREPARED.clear()  # keep one: executables and frozen networks hold memory
    _PREPARED[key] = prepared
    return prepared


def train_and_evaluate(config, workdir: str | os.PathLike, resume: bool = False,
                       max_steps: Optional[int] = None) -> dict[str, Any]:
    """Train (or continue) an e4e encoder as `config` says; returns the final metrics.

    Args:
      config: an ml_collections config from e4e_jax.training.presets (or configs/*.py).
      workdir: where checkpoints, metrics, images and the exported model go.
      resume: continue from the latest checkpoint in `workdir` (exactly: step, RNG, both optimizers,
        progressive stage, discriminator, latent pools; batches are a function of the step).
      max_steps: stop after this many total steps (default config.max_steps) — e.g. to split a run.
    Raises NonFiniteLossError when a loss becomes NaN/Inf (the last good checkpoint stays intact).
    """
    config = presets.apply_ablation(config.copy_and_resolve_references())
    maybe_initialize_distributed(config)
    workdir = Path(workdir).resolve()
    is_main = jax.process_index() == 0
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
    total = int(config.max_steps if max_steps is None else max_steps)

    mngr = checkpoint.manager(workdir, int(config.keep_checkpoints))
    try:
        latest = mngr.latest_step()
        if latest is not None and not resume:
            raise FileExistsError(f"{workdir} already holds checkpoints (latest step {latest}); pass --resume "
                                  f"to continue that run, or choose a new --workdir")
        if resume and latest is None:
            log.warning("--resume: no checkpoint in %s yet; starting from step 0", workdir / "checkpoints")
        return _train(config, workdir, latest if resume else None, total, mngr, is_main)
    finally:
        mngr.close()


def _train(config, workdir: Path, latest: Optional[int], total: int, mngr, is_main: bool) -> dict[str, Any]:
    resume = latest is not None
    mesh = sharding.data_mesh()
    if config.generator.modulation == "grouped" and mesh.size > 1:
        raise ValueError("config.generator.modulation='grouped' cannot run on a batch sharded over "
                         f"{mesh.size} devices (XLA rejects the batch-folded grouped convolution); use "
                         "--config.generator.modulation=activation (the same maths)")
    repl = sharding.replicated(mesh)
    prep = _prepare(config, mesh)
    run, step_fn, eval_fn = prep.run, prep.step, prep.eval
    if resume:
        state, _ = checkpoint.restore(mngr, latest, abstract_state(prep.init_fn, repl))
        log.info("resumed from step %d (%s)", latest, workdir / "checkpoints")
    else:
        enc_vars = run.init_encoder_variables
        if enc_vars is None and config.encoder.backbone_init_bundle:
            from e4e_jax import bundle

            fresh = jax.jit(lambda: encoder_variables(prep.init_fn()))()
            enc_vars = networks.backbone_from_arcface(jax.device_get(fresh),
                                                      bundle.load(config.encoder.backbone_init_bundle, "arcface")[1],
                                                      config.encoder.backbone_init_bundle)
        state = prep.init(enc_vars)
    frozen = sharding.replicate(run.frozen, mesh)
    start = int(state.step)

    writer = writers.create_writer(workdir, is_main)
    if is_main:
        (workdir / "config.json").write_text(config.to_json(indent=2, sort_keys=True) + "\n")
    if start == 0:
        writer.write_hparams({"config": config.to_json(),
                              "encoder_params": param_count(encoder_variables(state)["params"])})
    from e4e_jax.data import train_input

    eval_batches = train_input.eval_batches(config, run, mesh, prep.sampler)
    batches = train_input.train_batches(config, run, mesh, start, prep.sampler)
    meta = {"config": json.loads(config.to_json())}
    last_train: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    best_val = math.inf

    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=not is_main, dynamic_ncols=True)
    pending = None  # (step number after the update, device metrics) not yet checked
    t0, done = time.time(), 0
    try:
        for step in range(start, total):
            batch = next(batches)
            state, metrics = step_fn(state, frozen, batch)
            if pending is not None:
                _check_finite(pending[0], _host(pending[1]), mngr, workdir)
            n = step + 1
            pending = (n, metrics)
            done += 1
            bar.update(1)
            log_now = n % int(config.board_interval) == 0 or n == total
            save_now = n % int(config.save_interval) == 0 or n == total
            val_now = n % int(config.val_interval) == 0 or n == total
            img_now = is_main and n % int(config.image_interval) == 0
            if log_now or save_now or val_now or img_now:
                last_train = _host(metrics)
                _check_finite(n, last_train, mngr, workdir)
                pending = None
            if log_now:
                scalars = {f"train/{k}": v for k, v in last_train.items()
                           if not (k.startswith("discriminator_r1") and not last_train.get("discriminator_r1_applied"))}
                scalars["train/steps_per_sec"] = done / max(time.time() - t0, 1e-9)
                writer.write_scalars(n, scalars)
                bar.set_postfix(loss=f"{last_train['loss']:.4f}", stage=int(last_train["progressive_stage"]))
            if img_now:
                _, y_hat = eval_fn(state, frozen, batch)
                writer.write_images(n, {"train/input_reconstruction": _grid(np.asarray(jax.device_get(
                    batch["image"])), np.asarray(jax.device_get(y_hat)))})
            if val_now and eval_batches:
                last_eval = _evaluate(eval_fn, state, frozen, eval_batches)
                writer.write_scalars(n, {f"test/{k}": v for k, v in last_eval.items()})
                best_val = min(best_val, last_eval.get("loss", math.inf))
                if is_main:
                    _, y_hat = eval_fn(state, frozen, eval_batches[0])
                    writer.write_images(n, {"test/input_reconstruction": _grid(np.asarray(jax.device_get(
                        eval_batches[0]["image"])), np.asarray(jax.device_get(y_hat)))})
            if save_now:
                checkpoint.save(mngr, n, state, {**meta, "step": n, "val_loss": last_eval.get("loss")})
        if pending is not None:
            _check_finite(pending[0], _host(pending[1]), mngr, workdir)
    finally:
        bar.close()
        mngr.wait_until_finished()
        writer.flush()
        close = getattr(batches, "close", None)
        if close:
            close()

    final = {"step": int(state.step), **{f"train/{k}": v for k, v in last_train.items()},
             **{f"test/{k}": v for k, v in last_eval.items()}}
    if math.isfinite(best_val):
        final["best_val_loss"] = best_val
    if is_main:
        if config.export_bundle and int(state.step) > 0:
            path = _export_bundle(run, state, config, workdir)
            if path is not None:
                final["model_bundle"] = str(path)
        (workdir / "final_metrics.json").write_text(json.dumps(final, indent=2, sort_keys=True) + "\n")
    writer.close()
    return final
