"""A killed main process leaves nothing running (e4e_jax/worker_pool.py).

`kill -9` of the main `invert` or `align` process alone -- not its process group: what the OOM killer
does -- ends every process it started (the forkserver, the decoder and writer workers, the resource
tracker) within a few seconds, and removes the shared memory of the writers' slot ring; `--resume`
then finishes with the outputs of an uninterrupted run. The job waits at a named point while it is
killed (tests/pausing.py), so every worker exists at that moment; the 5 s bound on their exit is
generous (they go in well under a second), not a race.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests import pausing, test_invert_job
from tests.assets import require
from tests.test_invert_job import TIMEOUT_S, _cmd, _env, _outputs, _run

# The bundle, the photos and the uninterrupted run of test_invert_job, made again for this module.
small_bundle, photos, reference = test_invert_job.small_bundle, test_invert_job.photos, test_invert_job.reference

ROOT = Path(__file__).resolve().parents[1]
GONE_WITHIN_S = 5


def _kill_main_only(cmd: list[str], env: dict, fifo: Path, point: str, k: int):
    """Run `cmd` until it waits at `point` (k-th arrival), note its processes and shared memory, kill -9
    the main process alone; returns ({pid: start time} of the processes it had started, their command
    lines, the shared memory they had mapped)."""
    p = subprocess.Popen(
        cmd,
        env=pausing.pause_env(env, point, k, fifo),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    procs: dict[int, int] = {}
    try:
        assert pausing.wait_paused(p, fifo, TIMEOUT_S) == p.pid
        procs = pausing.identities(pausing.descendants(p.pid))
        names = _command_lines(procs)
        shm = pausing.shared_memory_of([p.pid, *procs])
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=TIMEOUT_S)
        return procs, names, shm
    except BaseException:
        pausing.kill_left(procs)
        raise
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=TIMEOUT_S)


def _command_lines(procs: dict[int, int]) -> list[str]:
    out = []
    for pid in procs:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return out


def test_invert_killed_main_process_leaves_nothing_running(small_bundle, photos, reference, tmp_path):
    out, env = tmp_path / "out", _env(tmp_path)
    procs, names, shm = _kill_main_only(
        _cmd(small_bundle, photos, out), env, tmp_path / "pause", "invert-chunk-committed", 2
    )
    try:
        assert any("forkserver" in n for n in names) and any("resource_tracker" in n for n in names), names
        assert len(procs) >= 4, names  # forkserver, tracker, at least one decoder and one writer
        assert any(s.name.startswith("psm_") for s in shm), shm  # the writers' slot ring
        left = pausing.wait_gone(procs, GONE_WITHIN_S)
        assert not left, f"still running {GONE_WITHIN_S} s after the main process was killed: {left}"
        assert not [s for s in shm if s.exists()], "shared memory outlived the job"
    finally:
        pausing.kill_left(procs)
    assert not (out / "report.json").exists()
    r = _run(_cmd(small_bundle, photos, out, "--resume"), env)
    assert r.returncode == 3, r.stderr
    assert _outputs(out) == _outputs(reference)


@pytest.fixture()
def faces(tmp_path) -> Path:
    pytest.importorskip("dlib", reason="needs the align extra (dlib-bin)")
    from e4e_jax import alignment

    try:
        alignment.default_landmarks_file()
    except alignment.AlignmentUnavailable as e:
        pytest.skip(str(e))
    src = require("images/input_img.jpg")
    d = tmp_path / "faces"
    d.mkdir()
    with Image.open(src) as im:
        for i, angle in enumerate((0, 8, -8, 15)):
            im.rotate(angle, resample=Image.BICUBIC).save(d / f"p{i}.png")
    return d


def _align_cmd(images: Path, out: Path, *extra: str) -> list[str]:
    base = [sys.executable, "-m", "e4e_jax.cli", "align", "--images", str(images), "--output", str(out)]
    return [*base, "--output-size", "64", "--workers", "2", *extra]


def test_align_killed_main_process_leaves_nothing_running(faces, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    uninterrupted = tmp_path / "ref"
    r = subprocess.run(_align_cmd(faces, uninterrupted), env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    procs, names, _ = _kill_main_only(_align_cmd(faces, out), env, tmp_path / "pause", "align-photo-done", 1)
    try:
        assert sum("forkserver" in n for n in names) >= 2, names  # the server and its workers
        left = pausing.wait_gone(procs, GONE_WITHIN_S)
        assert not left, f"still running {GONE_WITHIN_S} s after the main process was killed: {left}"
    finally:
        pausing.kill_left(procs)
    r = subprocess.run(_align_cmd(faces, out, "--resume"), env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr

    def files(d: Path) -> dict[str, bytes]:
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    got, want = files(out), files(uninterrupted)
    got.pop("report.json"), want.pop("report.json")  # timings differ
    assert got == want
