"""`e4e-jax train` stopped at an unlucky moment and continued with `--resume` ends with what the
uninterrupted run gives (issue 30, item 2): the same bundle, the same final metrics (best_val_loss too),
metrics.jsonl without duplicated rows, the loss curves, no temporary folder or lock left behind.

Each run is a real CLI process. It is stopped deterministically: the test hook (e4e_jax/testhooks.py)
makes it wait at a named point, and the test kills (-9) or interrupts (SIGINT, as Ctrl-C) it only once it
is there; no timing is involved.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from e4e_jax import bundle, errors, fileio, outdir, testhooks
from e4e_jax.training import loss_curve

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4
RUN_TIMEOUT_S = 600  # one CLI run (start-up, compilation, 4 steps) on a loaded 2-core machine: a minute or two

# An exportable encoder (the W encoder at toy widths) on the small test config; validation after every step
# so that best_val_loss depends on steps both before and after the checkpoint at step 2.
CONFIG_FILE = f"""
import ml_collections

from e4e_jax.configs import ffhq_w
from tests.training_helpers import small_config


def get_config():
    toy = ml_collections.ConfigDict(dict(widths=(8, 8, 16, 16), units=(1, 1, 1, 1)))
    return ffhq_w.w_encoder(
        small_config(
            batch_size=4, max_steps={STEPS}, save_interval=2, val_interval=1, board_interval=1,
            image_interval=1000, **{{"encoder.arch": "e4e", "encoder.kwargs": toy}},
        )
    )
"""
# Scalars that measure the clock, not the run.
CLOCK_FIELDS = ("time", "train/steps_per_sec")


def _env(**extra: str) -> dict:
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), **extra)


def _cmd(cfg: Path, work: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "e4e_jax.cli", "train", "--config", str(cfg), "--workdir", str(work), *extra]


def _run(cfg: Path, work: Path, *extra: str) -> subprocess.CompletedProcess:
    out = subprocess.run(
        _cmd(cfg, work, *extra), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    return out


def _stopped_at(cfg: Path, work: Path, point: str, sig: int, tmp: Path) -> tuple[int, str]:
    """Start a run that pauses at `point`; once it waits there, send it `sig`; (exit status, stderr)."""
    ready = tmp / "paused"
    proc = subprocess.Popen(
        _cmd(cfg, work),
        cwd=ROOT,
        env=_env(**{testhooks.ENV_POINT: point, testhooks.ENV_FILE: str(ready)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not ready.exists():
            assert proc.poll() is None, f"the run ended before reaching {point}: {proc.communicate()[1][-3000:]}"
            assert time.monotonic() < deadline, f"the run did not reach {point} in {RUN_TIMEOUT_S} s"
            time.sleep(0.1)
        assert int(ready.read_text()) == proc.pid
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


def _killed_pid(work: Path) -> int:
    """The pid the killed run wrote in its lock file (a name a killed bundle save of that run would use)."""
    return int(json.loads((work / outdir.LOCK_NAME).read_text())["pid"])


def _rows(work: Path) -> list[dict]:
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in CLOCK_FIELDS} for r in rows]


def _final(work: Path) -> dict:
    final = json.loads((work / "final_metrics.json").read_text())
    assert Path(final.pop("model_bundle")) == work / "model"
    return final


def _assert_same_outputs(ref: Path, got: Path) -> None:
    """`got` holds what the uninterrupted run `ref` wrote: final metrics, bundle, metrics rows, loss curves."""
    assert _final(got) == _final(ref)
    assert json.loads((got / "model" / "config.json").read_text()) == json.loads(
        (ref / "model" / "config.json").read_text()
    )
    (_, a), (_, b) = bundle.load(ref / "model", "e4e"), bundle.load(got / "model", "e4e")
    leaves_a, leaves_b = _leaves(a), _leaves(b)
    assert leaves_a.keys() == leaves_b.keys() and len(leaves_a) > 10
    for k in leaves_a:
        np.testing.assert_array_equal(leaves_b[k], leaves_a[k], err_msg=k)
    assert _rows(got) == _rows(ref)
    # The same curves (the header above them names the work directory).
    a, b = (np.asarray(Image.open(w / loss_curve.FILE_NAME))[loss_curve.HEADER_H :] for w in (ref, got))
    np.testing.assert_array_equal(b, a)
    assert not [p.name for p in got.iterdir() if fileio.is_temp_name(p.name)]
    assert not (got / outdir.LOCK_NAME).exists()


def _leaves(tree, prefix: str = "") -> dict[str, np.ndarray]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_leaves(v, f"{prefix}/{k}"))
        return out
    return {prefix: np.asarray(tree)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """(config file, work directory) of the uninterrupted run."""
    root = tmp_path_factory.mktemp("resume_export")
    cfg = root / "cfg.py"
    cfg.write_text(CONFIG_FILE)
    work = root / "uninterrupted"
    out = _run(cfg, work)
    assert out.returncode == 0, out.stderr[-3000:]
    # Issue 24, item 10: the compilation is said (the cache is on) and timed before the progress bar starts.
    said = out.stderr.index("compiling the training step (first run only, ~")
    assert re.search(
        r"(compiled the training step in|loaded the training step from the compilation cache in) [\d.]+ s", out.stderr
    )
    assert said < re.search(r"train:\s+0%", out.stderr).start(), out.stderr[-3000:]
    final = _final(work)
    assert final["step"] == STEPS and (work / "model" / "config.json").is_file()
    # The run must tell the test something: validation was best before the checkpoint at step 2, so a
    # resumed run that forgot it would report another best_val_loss.
    tests = [r["test/loss"] for r in _rows(work) if "test/loss" in r]
    assert len(tests) == STEPS and final["best_val_loss"] == min(tests) < min(tests[2:]), tests
    return cfg, work


@pytest.mark.parametrize(
    "point, sig",
    [("train.before_export", signal.SIGKILL), ("train.before_final_metrics", signal.SIGINT)],
    ids=["kill_before_bundle", "ctrl_c_before_final_metrics"],
)
def test_resume_of_a_run_stopped_after_its_last_checkpoint_finishes_the_export(reference, tmp_path, point, sig):
    cfg, ref = reference
    work = tmp_path / "work"
    code, err = _stopped_at(cfg, work, point, sig, tmp_path)
    if sig == signal.SIGINT:
        assert code == errors.EXIT_INTERRUPTED and err.strip().splitlines()[-1].startswith("interrupted"), err[-3000:]
    else:
        assert code == -signal.SIGKILL
    assert not (work / "final_metrics.json").exists()
    assert (work / "model").is_dir() == (point == "train.before_final_metrics")
    if sig == signal.SIGKILL:  # as a kill in the middle of the bundle's save leaves it (bundle.save's temp name)
        half = work / f"{fileio.temp_prefix('model')}{_killed_pid(work)}-0badc0de"
        (half / "params").mkdir(parents=True)

    out = _run(cfg, work, "--resume")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "nothing trained" not in out.stderr and "compiling the training step" not in out.stderr
    _assert_same_outputs(ref, work)
    if sig == signal.SIGKILL:  # finished now: a further --resume at the same step has nothing to do, and says so
        again = _run(cfg, work, "--resume")
        assert again.returncode == errors.EXIT_NOTHING and "nothing trained" in again.stderr, again.stderr[-3000:]


def test_run_interrupted_between_checkpoints_resumes_to_the_uninterrupted_outputs(reference, tmp_path):
    """Ctrl-C after step 3 (checkpoint at 2, rows of step 3 written): the resumed run writes no row twice
    and keeps the best validation loss of the steps before its checkpoint."""
    cfg, ref = reference
    work = tmp_path / "work"
    code, err = _stopped_at(cfg, work, "train.after_step.3", signal.SIGINT, tmp_path)
    assert code == errors.EXIT_INTERRUPTED, err[-3000:]
    assert max(r["step"] for r in _rows(work)) == 3

    out = _run(cfg, work, "--resume")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from step 2" in out.stderr
    _assert_same_outputs(ref, work)
