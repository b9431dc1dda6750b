"""The training loop: `train_and_evaluate(config, workdir, resume=False) -> final metrics`.

Per step: one jitted update (state donated, batch sharded P('data'), state and frozen networks
replicated P()), a lagged finiteness check (the host reads step t's losses while step t+1 runs), and the
periodic actions of the official coach: scalars every `board_interval`, an image grid every
`image_interval`, validation every `val_interval` and at the end, a checkpoint every `save_interval` and
at the end. A checkpoint is only written after the losses of every step up to it were found finite, so
a NaN/Inf stops the run with `NonFiniteLossError` and the last good checkpoint intact. Checkpoints also
hold the run record (training/resume.py: last metrics, best validation loss). At the end (training/
finish.py) an 'e4e' bundle of the trained encoder (+ generator, latent_avg; a 'restyle' bundle of a
ReStyle encoder) is written to WORKDIR/model (for `e4e-jax invert`), the loss curves to
WORKDIR/loss_curve.png and the final metrics to WORKDIR/final_metrics.json; `--resume` of a run killed after its last checkpoint writes them from it.

Before any work: the config is validated (`config_rules.validate`), the process group is joined
(`config.distributed`, e4e_jax.runtime.distributed), a batch no device could hold and a training folder without a
readable image are refused, and WORKDIR is locked (`outdir.lock`, held by process 0 for the whole run;
every process learns the outcome, so a refused run stops everywhere with one message). Before the first
step, the jitted steps are compiled, said with an estimate and the time taken (training/precompile.py),
and the compiled step's memory is checked against the devices'.

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
from tqdm import tqdm

from e4e_jax import errors
from e4e_jax.data import train_files, train_input
from e4e_jax.runtime import distributed, pause_points, sharding
from e4e_jax.storage import bundle, fileio, orbax_errors, outdir
from e4e_jax.training import checkpoint, config_rules, finish, loss_curve, networks, optim, precompile, writers
from e4e_jax.training import resume as resume_lib
from e4e_jax.training.state import (
    TrainState,
    abstract_state,
    encoder_variables,
    init_train_state,
    param_count,
)
from e4e_jax.training.step import eval_step, train_step

log = logging.getLogger(__name__)

# Metrics whose non-finite value stops the run.
CHECKED = ("loss", "grad_norm", "discriminator_loss", "discriminator_r1_loss")


GRID_ROWS = 4  # rows (input | reconstruction) of an image grid
# Pause points (pause_points.py: tests stop a run there deterministically): after step n (its checkpoint, if
# any, saved); after the last step and checkpoint, before the bundle and final metrics.
PAUSE_AFTER_STEP = "train-after-step-"
PAUSE_BEFORE_EXPORT = "train-before-export"
# use_w_pool=False: the state's pools are never read, but orbax cannot checkpoint a zero-size array.
UNUSED_POOL_ROWS = 1
DISTRIBUTED_FLAGS = tuple(f"--config.distributed.{k}" for k in ("coordinator_address", "num_processes", "process_id"))


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/Inf; the message names the step, the terms and the last good checkpoint."""


class NothingToTrain(errors.UserError):
    """--resume found a checkpoint at or past the steps asked for: nothing trained, nothing written."""

    exit_code = errors.EXIT_NOTHING


def join_process_group(config) -> bool:
    """e4e_jax.runtime.distributed.initialize from `config.distributed` (a ConfigDict of coordinator_address,
    num_processes, process_id, auto; a bare bool, as configs before it had, means `auto`). True when
    running multi-process."""
    d = config.get("distributed", False)
    if isinstance(d, bool):
        return distributed.initialize(auto=d, flags=DISTRIBUTED_FLAGS)
    return distributed.initialize(
        d.coordinator_address or None, d.num_processes, d.process_id, auto=bool(d.auto), flags=DISTRIBUTED_FLAGS
    )


# Everything train writes into WORKDIR (e4e_jax/storage/outdir.py): all the folder may hold. A run of a version
# before the mark (its orbax checkpoints) is adopted by --resume.
OUTPUTS = outdir.Outputs(
    "train",
    (
        "config.json",
        "checkpoints",
        writers.METRICS_FILE,
        "images/*/*.png",
        "tensorboard/events.out.tfevents.*",
        *(f"{finish.MODEL_DIR}/{name}" for name in bundle.OUTPUTS.names),
        loss_curve.FILE_NAME,
        resume_lib.FINAL_METRICS,
    ),
    legacy=("checkpoints/[0-9]*",),
)


@contextlib.contextmanager
def _workdir_lock(workdir: Path, resume: bool = False) -> Iterator[None]:
    """Hold WORKDIR's lock for the block: process 0 takes it (one lock per run, however many processes;
    the file is the same one `invert` and the other commands use) and checks that the folder holds
    nothing but train's files (`OUTPUTS`), and tells every process whether it got it, so a refused run
    stops on all processes instead of leaving them waiting in a collective."""
    with contextlib.ExitStack() as stack:
        refused: Optional[errors.UserError] = None
        if distributed.is_main():
            try:
                stack.enter_context(outdir.lock(workdir, command="e4e-jax train"))
                outdir.own(workdir, OUTPUTS, resume=resume, flag="--workdir")
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
            pool_size=int(config.w_pool_size) if config.use_w_pool else UNUSED_POOL_ROWS,
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
    run, a --resume whose checkpoint does not fit the config, a batch that cannot fit the devices;
    NoInputError (before any work) for a training folder without a readable image; NothingToTrain when
    --resume finds the run past `max_steps`, or at it with its outputs written (a run killed after its last
    checkpoint but before its bundle and final metrics gets them from that checkpoint instead).
    """
    config = config_rules.apply_ablation(config.copy_and_resolve_references())
    config_rules.validate(config)
    if max_steps is not None and not (isinstance(max_steps, int) and max_steps >= 1):
        raise errors.UserError(f"--max-steps {max_steps!r}: must be a whole number ≥ 1")
    total = int(config.max_steps if max_steps is None else max_steps)
    join_process_group(config)
    precompile.check_batch_memory(config, jax.local_devices())
    if config.data.source == "folder":
        train_files.check_usable(config)
    workdir = Path(workdir).resolve()
    # A full disk: one line naming what could not be written (a checkpoint, unless a file says), the
    # tracebacks orbax logs from its save threads left out (also those of the manager's close).
    no_room = fileio.naming_no_room(workdir / "checkpoints")
    with _workdir_lock(workdir, resume), orbax_errors.raised_once(), no_room:
        mngr = checkpoint.manager(workdir, int(config.keep_checkpoints))
        try:
            latest = _continue_from(mngr.latest_step(), resume, total, workdir)
            return _train(config, workdir, latest, total, mngr)
        finally:
            mngr.close()  # waits for the saves in flight
            checkpoint.remove_failed_saves(workdir)


def _continue_from(latest: Optional[int], resume: bool, total: int, workdir: Path) -> Optional[int]:
    """The checkpoint step a run continues from (None: a new run from step 0), given the latest one in
    WORKDIR. A checkpoint without --resume is refused; --resume past `total`, or at it with the outputs
    written, has nothing to do (NothingToTrain); at it without them, the run writes them."""
    if latest is not None and not resume:
        raise errors.UserError(
            f"{workdir} already holds checkpoints (latest step {latest}); pass --resume "
            f"to continue that run, or choose a new --workdir"
        )
    if resume and latest is None:
        log.warning("--resume: no checkpoint in %s yet; starting from step 0", workdir / "checkpoints")
    if latest is None or latest < total:
        return latest
    if latest == total and not resume_lib.outputs_complete(workdir, latest):
        log.info("--resume: step %d was reached but the run's outputs were not all written: writing them", latest)
        return latest
    raise NothingToTrain(
        f"nothing trained: the latest checkpoint in {workdir / 'checkpoints'} is at step "
        f"{latest}, {'past' if latest > total else 'already at'} the {total} steps asked "
        f"for (--max-steps / config.max_steps); nothing was written. Pass a larger "
        f"--max-steps to train further"
    )


def _fresh_state(prep: _Prepared, config, mesh) -> TrainState:
    enc_vars = prep.run.init_encoder_variables
    if enc_vars is None and config.encoder.backbone_init_bundle:
        from e4e_jax.storage import bundle

        fresh = jax.jit(lambda: encoder_variables(prep.init_fn()))()
        enc_vars = networks.backbone_from_arcface(
            jax.device_get(fresh),
            bundle.load(config.encoder.backbone_init_bundle, "arcface")[1],
            config.encoder.backbone_init_bundle,
        )
    # Host arrays become global (replicated) arrays first: every process passes the same values.
    return prep.init(None if enc_vars is None else sharding.replicate(enc_vars, mesh))


def _train(config, workdir: Path, latest: Optional[int], total: int, mngr) -> dict[str, Any]:
    is_main = distributed.is_main()
    mesh = sharding.data_mesh()
    config_rules.check_devices(config, mesh.size)
    prep = _prepare(config, mesh)
    if latest is not None:
        abstract = abstract_state(prep.init_fn, sharding.replicated(mesh))
        state, record = resume_lib.restore(mngr, latest, abstract, config, workdir)
        log.info("resumed from step %d (%s)", latest, workdir / "checkpoints")
    else:
        state, record = _fresh_state(prep, config, mesh), resume_lib.RunRecord()
    frozen = sharding.replicate(prep.run.frozen, mesh)
    start = int(state.step)
    if is_main:
        fileio.remove_stale_temps(workdir)  # of a killed run's atomic writes (the lock is held)
        resume_lib.trim_metrics(workdir / writers.METRICS_FILE, latest)
    writer = writers.create_writer(workdir, is_main)
    try:
        if is_main:
            fileio.write_text(workdir / "config.json", config.to_json(indent=2, sort_keys=True) + "\n")
        if start == 0:
            writer.write_hparams(
                {"config": config.to_json(), "encoder_params": param_count(encoder_variables(state)["params"])}
            )
        if start < total:
            state = _Steps(prep, frozen, config, workdir, mngr, writer, record, mesh).run(state, start, total)
        pause_points.reached(PAUSE_BEFORE_EXPORT)
        return finish.final_outputs(prep.run, state, config, workdir, record, is_main)
    finally:
        writer.close()


class _Steps:
    """The steps of a run from `start` to `total` and their periodic actions (scalars, grids, validation,
    checkpoints with the run record); updates `record` as it goes."""

    def __init__(self, prep: _Prepared, frozen, config, workdir: Path, mngr, writer, record, mesh):
        self.prep, self.frozen, self.config, self.workdir = prep, frozen, config, workdir
        self.mngr, self.writer, self.record, self.mesh = mngr, writer, record, mesh
        self.meta = {"config": json.loads(config.to_json())}

    def run(self, state: TrainState, start: int, total: int) -> TrainState:
        c, prep = self.config, self.prep
        self.eval_batches = train_input.eval_batches(c, prep.run.generator_source(), self.mesh, prep.sampler)
        grids = any(n % int(c.image_interval) == 0 for n in range(start + 1, total + 1))
        sizes = ([int(c.batch_size)] if grids else []) + [b["image"].shape[0] for b in self.eval_batches[:1]]
        precompile.compile_run(prep.step, prep.eval, state, self.frozen, c, self.mesh, sizes)
        batches = train_input.train_batches(c, prep.run.generator_source(), self.mesh, start, prep.sampler)
        bar = None
        try:
            batch = next(batches)  # the input's own start-up (a sampler's compilation, first decodes): before the bar
            bar = tqdm(
                total=total,
                initial=start,
                desc="train",
                unit="step",
                disable=not distributed.is_main(),
                dynamic_ncols=True,
            )
            pending, self.t0, self.done = None, time.time(), 0
            for step in range(start, total):
                batch = batch if step == start else next(batches)
                state, metrics = prep.step(state, self.frozen, batch)
                if pending is not None:
                    _check_finite(pending[0], _host(pending[1]), self.mngr, self.workdir)
                n, pending, self.done = step + 1, (step + 1, metrics), self.done + 1
                bar.update(1)
                if self._periodic(state, n, total, metrics, batch, bar):
                    pending = None  # its metrics were read and checked
                pause_points.reached(f"{PAUSE_AFTER_STEP}{n}", before=self.mngr.wait_until_finished)
            if pending is not None:
                _check_finite(pending[0], _host(pending[1]), self.mngr, self.workdir)
        finally:
            if bar is not None:
                bar.close()
            self.mngr.wait_until_finished()
            self.writer.flush()
            close = getattr(batches, "close", None)
            if close:
                close()
        return state

    def _periodic(self, state: TrainState, n: int, total: int, metrics, batch, bar) -> bool:
        """Scalars, grids, validation and the checkpoint due after step `n`; whether metrics were read."""
        c, r, w, eval_fn = self.config, self.record, self.writer, self.prep.eval
        log_now = n % int(c.board_interval) == 0 or n == total
        save_now = n % int(c.save_interval) == 0 or n == total
        val_now = n % int(c.val_interval) == 0 or n == total
        img_now = n % int(c.image_interval) == 0
        if not (log_now or save_now or val_now or img_now):
            return False
        r.last_train = _host(metrics)
        _check_finite(n, r.last_train, self.mngr, self.workdir)
        if log_now:
            scalars = {
                f"train/{k}": v
                for k, v in r.last_train.items()
                if not (k.startswith("discriminator_r1") and not r.last_train.get("discriminator_r1_applied"))
            }
            scalars["train/steps_per_sec"] = self.done / max(time.time() - self.t0, 1e-9)
            w.write_scalars(n, scalars)
            bar.set_postfix(loss=f"{r.last_train['loss']:.4f}", stage=int(r.last_train["progressive_stage"]))
        # Grids and validation: every process computes, process 0's writer writes.
        if img_now:
            w.write_images(n, {"train/input_reconstruction": _grid_of(eval_fn, state, self.frozen, batch)})
        if val_now and self.eval_batches:
            r.last_eval = _evaluate(eval_fn, state, self.frozen, self.eval_batches)
            w.write_scalars(n, {f"test/{k}": v for k, v in r.last_eval.items()})
            r.best_val = min(r.best_val, r.last_eval.get("loss", math.inf))
            grid = _grid_of(eval_fn, state, self.frozen, self.eval_batches[0])
            w.write_images(n, {"test/input_reconstruction": grid})
        if save_now:
            meta = {**self.meta, "step": n, "val_loss": r.last_eval.get("loss"), **r.to_meta()}
            checkpoint.save(self.mngr, n, state, meta)
        return True
