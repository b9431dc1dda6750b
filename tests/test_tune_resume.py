"""`e4e-jax tune`: kill -9 at a named point of a run (e4e_jax/pause_points.py, never a timed kill), then
--resume, gives the outputs of an uninterrupted run.

The runs are subprocesses with one fixed environment (CPU, one device, one compilation cache), so they do
not depend on what earlier tests did to this process's JAX. orbax names the data files of a bundle at
random, so the tuned generators are compared by their config.json and their loaded arrays (bundle.load
checks each against its checksums.json, which names those files); every other file byte for byte
(report.json, which holds timings, aside).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from e4e_jax import bundle, pause_points, pti_bundle
from tests import pausing
from tests.test_tune_cli import make_inputs, tune_argv

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600
BATCH = 2  # 4 photos: two batches


def _env(tmp: Path, **extra: str) -> dict:
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        JAX_PLATFORMS="cpu",
        E4E_JAX_CACHE_DIR=str(tmp / "xla-cache"),
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
    )
    env.pop(pause_points.ENV, None)
    env.update(extra)
    return env


def _cmd(inputs, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "e4e_jax.cli", *tune_argv(inputs, out, "--batch-size", str(BATCH), *extra)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune-resume")
    inputs = make_inputs(root)
    r = subprocess.run(_cmd(inputs, root / "ref"), env=_env(root), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    return root, inputs


def _outputs(out: Path) -> tuple[dict[str, bytes], dict[str, list]]:
    """(every file by relative path but report.json and bundle params and checksums, each generator's delta
    arrays)."""
    skip = ("report.json", bundle.CHECKSUMS_FILE)
    files = {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in skip and "params" not in p.relative_to(out).parts
    }
    _, bundles = pti_bundle.tuned_generators(out)
    arrays = {b.name: [np.asarray(x) for x in jax.tree.leaves(pti_bundle.load(b)[1])] for b in bundles}
    return files, arrays


def _kill_at(point: str, cmd: list[str], env: dict, tmp: Path) -> None:
    """Run `cmd` until it waits at the first arrival at `point` (tests/pausing.py), then kill -9 its
    process group there."""
    fifo = tmp / "pause"
    p = subprocess.Popen(
        cmd,
        env=pausing.pause_env(env, point, 1, fifo),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        pausing.wait_paused(p, fifo, TIMEOUT_S)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=TIMEOUT_S)


@pytest.mark.parametrize("point", ["tune-batch-written", "tune-committed"])
def test_kill9_then_resume_gives_the_uninterrupted_outputs(reference, tmp_path, point):
    """Killed with batch 0's generators and reconstructions on disk but not committed (it is redone), or
    right after its commit (only batch 1 is tuned again)."""
    root, inputs = reference
    out = tmp_path / "out"
    _kill_at(point, _cmd(inputs, out), _env(root), tmp_path)
    assert not (out / "metrics.json").exists() and (out / ".e4e-tune" / "plan.json").is_file()
    assert (out / ".e4e-tune" / "batch-000000.json").is_file() == (point == "tune-committed")

    other = _cmd(inputs, out, "--resume", "--steps", "7")  # the last --steps counts: another run
    changed = subprocess.run(other, env=_env(root), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert changed.returncode == 2 and "max_steps" in changed.stderr, changed.stderr

    r = subprocess.run(_cmd(inputs, out, "--resume"), env=_env(root), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    ref_files, ref_arrays = _outputs(root / "ref")
    files, arrays = _outputs(out)
    assert sorted(files) == sorted(ref_files)
    assert [k for k in files if files[k] != ref_files[k]] == []
    assert sorted(arrays) == sorted(ref_arrays)
    for name in arrays:
        assert all(np.array_equal(a, b) for a, b in zip(arrays[name], ref_arrays[name])), name
