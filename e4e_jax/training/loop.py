"""The training loop: `train_and_evaluate(config, workdir, resume=False) -> final metrics`.

Per step: one jitted update (state donated, batch sharded P('data'), state and frozen networks
replicated P()), a lagged finiteness check (the host reads step t's losses while step t+1 runs), and the
periodic actions of the official coach: scalars every `board_interval`, an image grid every
`image_interval`, validation every `val_interval` and at the end, a checkpoint every `save_interval` and
at the end. A checkpoint is only written after the losses of every step up to it were found finite, so
a NaN/Inf stops the run with `NonFiniteLossError` and the last good checkpoint intact. At the end an
'e4e' bundle of the trained encoder (+ generator, latent_avg; a 'restyle' bundle for a ReStyle encoder,
training/export.py) is written to WORKDIR/model (for `e4e-jax invert`) and the final metrics to
WORKDIR/final_metrics.json.

Before any work: the config is validated (`config_rules.validate`), the process group is joined
(`config.distributed`, e4e_jax.distributed), and WORKDIR is locked (`outdir.lock`, held by process 0 for
the whole run; every process learns the outcome, so a refused run stops everywhere with one message).

Several processes (docs/architecture.md): every process runs every jitted computation — the step, the grids'
and validation's eval steps — and host copies of batch-sharded arrays go through
`multihost_utils.process_allgather`; only process 0 writes metrics, images, config.json,
final_metrics.json and the bundle (a single-process save); every process takes part in the orbax
checkpoint saves. WORKDIR must be one folder that all processes see (a shared file system). At the end
the processes compare fingerprints of their replicated states (`state_sha256` of the final metrics).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from e4e_jax import distributed, errors, fileio, outdir, sharding
from e4e_jax.training import checkpoint, config_rules, networks, optim, writers
from e4e_jax.training.export import export_bundle as _export_bundle
from e4e_jax.training.state import (
    TrainState,
    abstract_state,
    encoder_variables,
    fingerprint,
    init_train_state,
    param_count,
)
from e4e_jax.training.step import eval_step, train_step

log = logging.getLogger(__name__)

# Metrics whose non-finite value stops the run.
CHECKED = ("loss", "grad_norm", "discriminator_loss", "discriminator_r1_loss")


GRID_ROWS = 4  # rows (input | reconstruction) of an image grid
DISTRIBUTED_FLAGS = tuple(f"--config.distributed.{k}" for k in ("coordinator_address", "num_processes", "process_id"))


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/Inf; the message names the step, the terms and the last good checkpoint."""


class NothingToTrain(errors.UserError):
    """--resume found a checkpoint at or past the steps asked for: nothing trained, nothing written."""

    exit_code = errors.EXIT_NOTHING


def join_process_group(config) -> bool:
    """e4e_jax.distributed.initialize from `config.distributed` (a ConfigDict of coordinator_address,
    num_processes, process_id, auto; a bare bool, as configs before it had, means `auto`). True when
    running multi-process."""
    d = config.get("distributed", False)
    if isinstance(d, bool):
        return distributed.initialize(auto=d, flags=DISTRIBUTED_FLAGS)
    return distributed.initialize(
        d.coordinator_address or None, d.num_processes, d.process_id, auto=bool(d.auto), flags=DISTRIBUTED_FLAGS
    )


@contextlib.contextmanager
def _workdir_lock(workdir: Path) -> Iterator[None]:
    """Hold WORKDIR's lock for the block: process 0 takes it (one lock per run, however many processes;
    the file is the same one `invert` and the other commands use), and tells every process whether it got
    it, so a refused run stops on all processes instead of leaving them waiting in a collective."""
    with contextlib.ExitStack() as stack:
        refused: Optional[errors.UserError] = None
        if distributed.is_main():
            try:
                stack.enter_context(outdir.lock(workdir, command="e4e-jax train"))
            except errors.UserError as e:
                refused = e
        if jax.process_count() > 1:
            got = bool(multihost_utils.broadcast_one_to_all(np.int32(refused is None)))
            if not got and refused is None:
                refused = outdir.LockedError(f"{workdir}: process 0 could not lock it (its message says why)")
        if refused is not None:
            raise refused
        yield


def _host(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def _check_finite(step: int, m: dict[str, float], mngr, workdir: Path) -> None:
    bad = {k: v for k, v in m.items() if k in CHECKED and not math.isfinite(v)}
    if m.get("nonfinite_params", 0.0) != 0.0:
        bad["nonfinite_params"] = m["nonfinite_params"]
    if bad:
        last = mngr.latest_step()
        where = (
            f"the last good checkpoint is step {last} in {workdir / 'checkpoints'} (left intact); continue "
            f"from it with --resume, e.g. with a lower --config.learning_rate"
            if last is not None
            else "no checkpoint had been written yet"
        )
        terms = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
        raise NonFiniteLossError(f"training stopped at step {step}: non-finite loss or parameters ({terms}); {where}")


def _grid(x: np.ndarray, y_hat: np.ndarray, n: int = GRID_ROWS) -> np.ndarray:
    """(1, n·H, 2·W, 3) float in [0, 1]: input | reconstruction per row."""
    n = min(n, x.shape[0])
    rows = [np.concatenate([x[i], y_hat[i]], axis=1) for i in range(n)]
    return np.clip((np.concatenate(rows, axis=0)[None] + 1.0) / 2.0, 0.0, 1.0)


def _grid_of(eval_fn, state, frozen, batch) -> np.ndarray:
    """The input | reconstruction grid of `batch`. Every process must call it: the eval step is a global
    computation, and so is the gather that brings the batch-sharded rows to every host."""
    _, y_hat = eval_fn(state, frozen, batch)
    x, y = (multihost_utils.process_allgather(a, tiled=True) for a in (batch["image"], y_hat))
    return _grid(np.asarray(x), np.asarray(y))


def _check_replicas_agree(digest: str) -> None:
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


def _evaluate(eval_fn, state, frozen, batches) -> dict[str, float]:
    """Official validate: mean over batches of each batch's mean loss terms."""
    sums: dict[str, float] = {}
    for b in batches:
        m = _host(eval_fn(state, frozen, b)[0])
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v
    return {k: v / len(batches) for k, v in sums.items()} if batches else {}


@dataclasses.dataclass
class _Prepared:
    run: networks.Run
    init: Any  # jitted (encoder variables or None) -> TrainState, replicated
    init_fn: Any  # the same, not jitted (for eval_shape)
    step: Any  # jitted train step (state donated)
    eval: Any  # jitted eval step
    sampler: dict  # synthetic-data samplers by stream


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
        return init_train_state(
            encoder=run.nets.encoder,
            discriminator=run.nets.discriminator,
            encoder_tx=enc_tx,
            disc_tx=disc_tx,
            optim_name=config.optim_name,
            seed=int(config.seed),
            input_shape=(1, h, w, run.input_nc),
            style_dim=run.gen_cfg.style_dim,
            pool_size=int(config.w_pool_size) if config.use_w_pool else 0,
            encoder_variables=encoder_vars,
        )

    prepared = _Prepared(
        run=run,
        init=jax.jit(init_fn, out_shardings=repl),
        init_fn=init_fn,
        step=jax.jit(
            functools.partial(train_step, run.nets, run.step_cfg, enc_tx, disc_tx),
            in_shardings=(repl, repl, bsh),
            out_shardings=(repl, repl),
            donate_argnums=(0,),
        ),
        eval=jax.jit(
            functools.partial(eval_step, run.nets, run.step_cfg),
            in_shardings=(repl, repl, bsh),
            out_shardings=(repl, bsh),
        ),
        sampler={},
    )
    _PREPARED.clear()  # keep one: executables and frozen networks hold memory
    _PREPARED[key] = prepared
    return prepared


def train_and_evaluate(
    config, workdir: str | os.PathLike, resume: bool = False, max_steps: Optional[int] = None
) -> dict[str, Any]:
    """Train (or continue) an e4e encoder as `config` says; returns the final metrics.

    Args:
      config: an ml_collections config (e4e_jax/configs/*.py).
      workdir: where checkpoints, metrics, images and the exported model go.
      resume: continue from the latest checkpoint in `workdir` (exactly: step, RNG, both optimizers,
        progressive stage, discriminator, latent pools; batches are a function of the step).
      max_steps: stop after this many total steps (default config.max_steps) — e.g. to split a run.
    Raises NonFiniteLossError when a loss becomes NaN/Inf (the last good checkpoint stays intact);
    UserError (before any work) for a bad config value, a work directory in use or holding another
    run, a --resume whose checkpoint does not fit the config; NothingToTrain when --resume finds the run
    already at or past `max_steps`.
    """
    config = config_rules.apply_ablation(config.copy_and_resolve_references())
    config_rules.validate(config)
    if max_steps is not None and not (isinstance(max_steps, int) and max_steps >= 1):
        raise errors.UserError(f"--max-steps {max_steps!r}: must be a whole number ≥ 1")
    total = int(config.max_steps if max_steps is None else max_steps)
    join_process_group(config)
    workdir = Path(workdir).resolve()
    with _workdir_lock(workdir):
        mngr = checkpoint.manager(workdir, int(config.keep_checkpoints))
        try:
            latest = mngr.latest_step()
            if latest is not None and not resume:
                raise errors.UserError(
                    f"{workdir} already holds checkpoints (latest step {latest}); pass --resume "
                    f"to continue that run, or choose a new --workdir"
                )
            if resume and latest is None:
                log.warning("--resume: no checkpoint in %s yet; starting from step 0", workdir / "checkpoints")
            if resume and latest is not None and latest >= total:
                raise NothingToTrain(
                    f"nothing trained: the latest checkpoint in {workdir / 'checkpoints'} is at step "
                    f"{latest}, {'past' if latest > total else 'already at'} the {total} steps asked "
                    f"for (--max-steps / config.max_steps); nothing was written. Pass a larger "
                    f"--max-steps to train further"
                )
            return _train(config, workdir, latest if resume else None, total, mngr)
        finally:
            mngr.close()


def _restore(mngr, step: int, abstract, config, workdir: Path) -> TrainState:
    """The state of checkpoint `step`; a UserError naming the differing config fields (one line each)
    when the checkpoint's state does not fit the one this config builds."""
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
    state, _ = checkpoint.restore(mngr, step, abstract)
    return state


def _train(config, workdir: Path, latest: Optional[int], total: int, mngr) -> dict[str, Any]:
    resume = latest is not None
    is_main = distributed.is_main()
    mesh = sharding.data_mesh()
    if config.generator.modulation == "grouped" and mesh.size > 1:
        raise errors.UserError(
            "config.generator.modulation='grouped' cannot run on a batch sharded over "
            f"{mesh.size} devices (XLA rejects the batch-folded grouped convolution); use "
            "--config.generator.modulation=activation (the same maths)"
        )
    if int(config.batch_size) % mesh.size:
        raise errors.UserError(
            f"config.batch_size={config.batch_size} must be divisible by the number of devices "
            f"{mesh.size} ({jax.process_count()} process(es))"
        )
    repl = sharding.replicated(mesh)
    prep = _prepare(config, mesh)
    run, step_fn, eval_fn = prep.run, prep.step, prep.eval
    if resume:
        state = _restore(mngr, latest, abstract_state(prep.init_fn, repl), config, workdir)
        log.info("resumed from step %d (%s)", latest, workdir / "checkpoints")
    else:
        enc_vars = run.init_encoder_variables
        if enc_vars is None and config.encoder.backbone_init_bundle:
            from e4e_jax import bundle

            fresh = jax.jit(lambda: encoder_variables(prep.init_fn()))()
            enc_vars = networks.backbone_from_arcface(
                jax.device_get(fresh),
                bundle.load(config.encoder.backbone_init_bundle, "arcface")[1],
                config.encoder.backbone_init_bundle,
            )
        # Host arrays become global (replicated) arrays first: every process passes the same values.
        state = prep.init(None if enc_vars is None else sharding.replicate(enc_vars, mesh))
    frozen = sharding.replicate(run.frozen, mesh)
    start = int(state.step)

    writer = writers.create_writer(workdir, is_main)
    if is_main:
        fileio.write_text(workdir / "config.json", config.to_json(indent=2, sort_keys=True) + "\n")
    if start == 0:
        writer.write_hparams(
            {"config": config.to_json(), "encoder_params": param_count(encoder_variables(state)["params"])}
        )
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
            img_now = n % int(config.image_interval) == 0
            if log_now or save_now or val_now or img_now:
                last_train = _host(metrics)
                _check_finite(n, last_train, mngr, workdir)
                pending = None
            if log_now:
                scalars = {
                    f"train/{k}": v
                    for k, v in last_train.items()
                    if not (k.startswith("discriminator_r1") and not last_train.get("discriminator_r1_applied"))
                }
                scalars["train/steps_per_sec"] = done / max(time.time() - t0, 1e-9)
                writer.write_scalars(n, scalars)
                bar.set_postfix(loss=f"{last_train['loss']:.4f}", stage=int(last_train["progressive_stage"]))
            # Grids and validation: every process computes, process 0's writer writes.
            if img_now:
                writer.write_images(n, {"train/input_reconstruction": _grid_of(eval_fn, state, frozen, batch)})
            if val_now and eval_batches:
                last_eval = _evaluate(eval_fn, state, frozen, eval_batches)
                writer.write_scalars(n, {f"test/{k}": v for k, v in last_eval.items()})
                best_val = min(best_val, last_eval.get("loss", math.inf))
                writer.write_images(n, {"test/input_reconstruction": _grid_of(eval_fn, state, frozen, eval_batches[0])})
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

    digest = fingerprint(state)
    _check_replicas_agree(digest)
    final = {
        "step": int(state.step),
        "state_sha256": digest,
        **{f"train/{k}": v for k, v in last_train.items()},
        **{f"test/{k}": v for k, v in last_eval.items()},
    }
    if math.isfinite(best_val):
        final["best_val_loss"] = best_val
    if is_main:
        if config.export_bundle and int(state.step) > 0:
            path = _export_bundle(run, state, config, workdir)
            if path is not None:
                final["model_bundle"] = str(path)
        fileio.write_text(workdir / "final_metrics.json", json.dumps(final, indent=2, sort_keys=True) + "\n")
    writer.close()
    if jax.process_count() > 1:
        # The others wait for process 0's bundle and final metrics: when any process returns, the run's
        # outputs are complete (and no process exits while another may still need the group).
        multihost_utils.sync_global_devices("e4e-jax train: outputs written")
    return final
