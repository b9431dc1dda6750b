"""compute_dtype='bfloat16' learns like float32 (issue 29): `e4e-jax train --config configs/tiny.py` run twice
from the same seed (same initial weights, batches and noise), once per dtype, as two CLI processes side by side.

The training-loss curves are compared window by window (the mean of each WINDOW-step window, bf16 against
float32) and so is the final held-out L2 (validation on the synthetic test samples after the last step).
A bf16 run that loses its updates (parameters held in bf16) fails both (BUILD_NOTES.md, "Training in
bfloat16", shows it).

STEPS: the issue asks for 1000. Measured on the 2-core machine under the load of other jobs (BUILD_NOTES.md):
one run's start-up and compilation take ~85 s and each step ~0.16 s, so two 1000-step runs take ~10 min;
300 steps, run side by side, take about 3 min there. Over 1000 steps the gaps stay as small as over the
first 300 (worst 50-step window 0.25 % for the loss, 0.45 % for L2; held-out L2 0.4 %).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from e4e_jax.training.loss_curve import window_gaps, window_means

pytestmark = pytest.mark.long_module  # minutes long: run first (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.py"
DTYPES = ("float32", "bfloat16")
STEPS = 300
WINDOW = 50
CURVES = ("loss", "loss_l2")  # the total training loss and the reconstruction term
# Measured at these settings (BUILD_NOTES.md): worst window 0.12 % (loss) and 0.19 % (L2) of float32's,
# held-out L2 0.4 %; the bounds leave 10x for other CPUs' rounding. Parameters kept in bf16 miss them
# by far (BUILD_NOTES.md).
CURVE_RTOL = 0.02
HELDOUT_RTOL = 0.03
LEARNED = 0.7  # float32's last L2 window is below this fraction of its first: the comparison means something
RUN_TIMEOUT_S = 1500  # both runs, side by side, on a loaded 2-core machine (~3 min unloaded)


def _overrides() -> list[str]:
    every_step, at_end = 1, STEPS  # every step's losses in metrics.jsonl; one validation and checkpoint
    values = dict(
        max_steps=STEPS,
        board_interval=every_step,
        image_interval=at_end,
        val_interval=at_end,
        save_interval=at_end,
        export_bundle="false",
    )
    return [f"--config.{k}={v}" for k, v in values.items()]


def _start(work: Path, dtype: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "e4e_jax.cli", "train", "--config", str(TINY), "--workdir", str(work / dtype)]
    cmd += [*_overrides(), f"--config.compute_dtype={dtype}"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), E4E_JAX_CACHE_DIR=str(work / f"xla-{dtype}"))
    log = open(work / f"{dtype}.log", "w")  # a file, not a pipe: a full pipe would stall the run
    try:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    finally:
        log.close()


def _results(workdir: Path) -> tuple[dict[str, list[float]], float]:
    """({term: per-step training values (STEPS,)} for CURVES, final held-out L2) of a finished run."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    rows = {r["step"]: r for r in rows if "train/loss" in r}
    assert sorted(rows) == list(range(1, STEPS + 1))
    curves = {k: [float(rows[s][f"train/{k}"]) for s in range(1, STEPS + 1)] for k in CURVES}
    final = json.loads((workdir / "final_metrics.json").read_text())
    return curves, float(final["test/loss_l2"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("bf16")
    procs = {dtype: _start(work, dtype) for dtype in DTYPES}
    try:
        for dtype, proc in procs.items():
            rc = proc.wait(timeout=RUN_TIMEOUT_S)
            assert rc == 0, f"{dtype} run failed ({rc}):\n" + (work / f"{dtype}.log").read_text()[-3000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {dtype: _results(work / dtype) for dtype in DTYPES}


@pytest.mark.parametrize("term", CURVES)
def test_bf16_loss_curve_follows_float32(runs, term):
    c32, c16 = runs["float32"][0][term], runs["bfloat16"][0][term]
    assert np.all(np.isfinite(c16))
    gaps = window_gaps(c32, c16, WINDOW)
    assert max(gaps) < CURVE_RTOL, gaps


def test_float32_run_learned(runs):
    l2 = window_means(runs["float32"][0]["loss_l2"], WINDOW)
    assert l2[-1] < LEARNED * l2[0], l2


def test_bf16_final_heldout_l2_matches_float32(runs):
    h32, h16 = runs["float32"][1], runs["bfloat16"][1]
    assert abs(h16 - h32) / h32 < HELDOUT_RTOL, (h16, h32)
