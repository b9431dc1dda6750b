"""`invert --resume` after the inputs changed, after a kill in the final clean-up, and on a finished run.

- files added or removed since the interrupted run: refused, naming them (not two listing hashes);
- a file whose content changed since (same name): its committed chunk is redone, and the file named;
- a kill after report.json is written but before the chunk state is removed: `--resume` finishes it;
- a finished run: `--resume` does nothing, says so, and exits with the run's status (as `align`).
The runs stop at named points (tests/pausing.py), never by a timer.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np

from tests import pausing, test_invert_job
from tests.test_invert_job import BATCH, TIMEOUT_S, _cmd, _env, _outputs, _run

# The bundle, the photos and the uninterrupted run of test_invert_job, made again for this module.
small_bundle, photos, reference = test_invert_job.small_bundle, test_invert_job.photos, test_invert_job.reference


def _stopped_at(point: str, k: int, cmd: list[str], env: dict, fifo: Path) -> None:
    """Run `cmd` until it waits at `point` (k-th arrival), then kill -9 its whole process group."""
    p = subprocess.Popen(
        cmd,
        env=pausing.pause_env(env, point, k, fifo),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        pausing.wait_paused(p, fifo, TIMEOUT_S)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=TIMEOUT_S)


def _said(cmd: list[str]) -> list[str]:
    """`cmd` without --quiet: what --resume says is part of the result."""
    return [a for a in cmd if a != "--quiet"]


def _error_line(stderr: str) -> str:
    (line,) = [x for x in stderr.splitlines() if x.startswith("error:")]
    return line


def test_changed_inputs_are_named_and_redone(small_bundle, photos, reference, tmp_path):
    imgs = tmp_path / "imgs"
    shutil.copytree(photos, imgs)
    out, env = tmp_path / "out", _env(tmp_path)
    _stopped_at("invert-chunk-committed", 2, _cmd(small_bundle, imgs, out), env, tmp_path / "pause")
    assert (out / ".e4e-invert" / "chunk-000000.npz").is_file() and not (out / "report.json").exists()

    # Names added and removed: refused, naming them.
    (imgs / "im10.jpg").rename(imgs / "new.jpg")
    r = _run(_cmd(small_bundle, imgs, out, "--resume"), env)
    line = _error_line(r.stderr)
    assert r.returncode == 2 and "1 added (new.jpg)" in line and "1 removed (im10.jpg)" in line, line
    assert "listing_sha256" not in line
    (imgs / "new.jpg").rename(imgs / "im10.jpg")

    # Same names, new content in a committed chunk (im00 and im01 trade pictures): that chunk is redone.
    a, b = (imgs / "im00.jpg").read_bytes(), (imgs / "im01.jpg").read_bytes()
    (imgs / "im00.jpg").write_bytes(b)
    (imgs / "im01.jpg").write_bytes(a)
    r = _run(_said(_cmd(small_bundle, imgs, out, "--resume")), env)
    assert r.returncode == 3, r.stderr
    assert "2 file(s) changed since the run started (im00.jpg, im01.jpg); their chunks are redone" in r.stderr
    got, want = np.load(out / "latents.npy"), np.load(reference / "latents.npy")
    np.testing.assert_allclose(got[0], want[1], rtol=1e-5, atol=1e-5)  # the new contents' codes
    np.testing.assert_allclose(got[1], want[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(got[0], want[0], atol=1e-3)  # not the stale result
    np.testing.assert_array_equal(got[2:], want[2:])  # the other chunks as committed
    assert (out / "files.txt").read_text() == (reference / "files.txt").read_text().replace(str(photos), str(imgs))


def test_kill_in_the_final_clean_up_then_resume_finishes(small_bundle, photos, reference, tmp_path):
    """Killed between report.json and the removal of the chunk state: --resume recognises the finished run,
    removes the state, and reports it as finished; so does any later --resume."""
    out, env = tmp_path / "out", _env(tmp_path)
    _stopped_at("invert-finishing", 1, _cmd(small_bundle, photos, out), env, tmp_path / "pause")
    assert (out / "report.json").is_file() and (out / ".e4e-invert").is_dir()
    report = (out / "report.json").read_bytes()
    for _ in range(2):
        r = _run(_said(_cmd(small_bundle, photos, out, "--resume")), env)
        assert r.returncode == 3, r.stderr  # the run's own status: one file skipped
        assert f"nothing to resume: {out} holds the finished run; inverted 11 of 12 images" in r.stderr, r.stderr
        assert not (out / ".e4e-invert").exists()
        assert (out / "report.json").read_bytes() == report
        assert _outputs(out) == _outputs(reference)
    # Other options than the finished run's: refused, naming them.
    r = _run(_cmd(small_bundle, photos, out, "--resume", "--jpeg-quality", "90"), env)
    line = _error_line(r.stderr)
    assert r.returncode == 2 and "differs from the finished one" in line and "jpeg_quality: 75 -> 90" in line, line
    r = _run(_cmd(small_bundle, photos, out, "--resume", "--batch-size", str(2 * BATCH)), env)  # the last one counts
    assert r.returncode == 2 and f"batch_size: {BATCH} -> {2 * BATCH}" in _error_line(r.stderr)
