"""The batch inversion job (`e4e-jax invert`): kill -9 then --resume, two processes, output-folder rules.

The runs whose outputs are compared byte for byte are subprocesses with one fixed environment (CPU,
fixed device count), so they do not depend on what earlier tests did to this process's JAX. They share
the session's persistent compilation cache (the same executables, compiled once), and the bundle, the
photos and the uninterrupted run are made once per session (tests/shared_files.py). A run is stopped at
an exact point (tests/pausing.py: it waits after its second committed chunk), never by a timer.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from e4e_jax import outdir
from e4e_jax.cli import main as cli_main
from tests import pausing, shared_files

ROOT = Path(__file__).resolve().parents[1]
N_GOOD, BATCH, CHUNK = shared_files.N_GOOD, 2, 2
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def small_bundle(shared_dir):
    return shared_files.small_e4e_bundle(shared_dir)


@pytest.fixture(scope="module")
def photos(shared_dir) -> Path:
    return shared_files.invert_photos(shared_dir)


def _env(tmp: Path, devices: int = 1) -> dict:
    """The fixed environment of the compared runs; the compilation cache is the test session's
    (tests/conftest.py), else one under `tmp`."""
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        JAX_PLATFORMS="cpu",
        E4E_JAX_CACHE_DIR=os.environ.get("E4E_JAX_CACHE_DIR") or str(tmp / "xla-cache"),
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    env.pop(pausing.pause_points.ENV, None)
    return env


def _cmd(bundle: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "e4e_jax.cli",
        "invert",
        "--model",
        str(bundle),
        "--images",
        str(images),
        "--output",
        str(out),
        "--batch-size",
        str(BATCH),
        "--chunk-size",
        str(CHUNK),
        "--quiet",
        *extra,
    ]


def _run(cmd, env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def _outputs(out: Path) -> dict[str, bytes]:
    """Every file of a finished output folder (reconstructions included), by relative path."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "report.json"
    }


@pytest.fixture(scope="module")
def reference(small_bundle, photos, shared_dir) -> Path:
    """The uninterrupted run every stopped-and-resumed run must equal (made once per session)."""

    def make(tmp: Path) -> None:
        r = _run(_cmd(small_bundle, photos, tmp / "out"), _env(tmp))
        assert r.returncode == 3, r.stderr  # one bad file: partial success

    return shared_files.made_once(shared_dir, "invert-reference", make) / "out"


def test_reference_run_outputs(reference):
    files = [Path(f).name for f in (reference / "files.txt").read_text().splitlines()]
    assert files == [f"im{i:02d}.jpg" for i in range(N_GOOD)]
    assert np.load(reference / "latents.npy").shape == (N_GOOD, 6, 512)
    names = (reference / "inversions.txt").read_text().splitlines()
    assert names == [f"inversions/{i:05d}_im{i:02d}.jpg" for i in range(N_GOOD)]
    (skipped,) = (reference / "skipped.txt").read_text().splitlines()
    assert Path(skipped.split("\t")[0]).name == "im05_bad.jpg" and "not a readable image" in skipped
    assert not (reference / ".e4e-invert").exists() and not list(reference.rglob(".*tmp-*"))
    report = json.loads((reference / "report.json").read_text())
    assert report["n_inverted"] == N_GOOD and report["n_skipped"] == 1 and report["timing"]["compile_s"] > 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill9", "ctrl_c"])
def test_stopped_then_resume_is_byte_identical(small_bundle, photos, reference, tmp_path, sig):
    """kill -9, or Ctrl-C (SIGINT to the whole process group, as a terminal sends it: one line and exit
    130, no traceback from the process or its workers), then --resume: the outputs of an uninterrupted run.
    The run waits after its second committed chunk (tests/pausing.py) until the signal comes."""
    out = tmp_path / "out"
    env = _env(tmp_path)
    p = subprocess.Popen(
        _cmd(small_bundle, photos, out),
        env=pausing.pause_env(env, "invert-chunk-committed", 2, tmp_path / "pause"),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        pausing.wait_paused(p, tmp_path / "pause", TIMEOUT_S)
    finally:
        os.killpg(p.pid, sig)
        try:
            p.wait(timeout=TIMEOUT_S)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert not (out / "report.json").exists(), "the run finished before the kill: the test proves nothing"
    if sig == signal.SIGINT:
        err = p.stderr.read().decode()
        assert p.returncode == 130 and "interrupted; the committed chunks are kept" in err, err
        assert "Traceback" not in err, err
    committed = sorted((out / ".e4e-invert").glob("chunk-*.npz"))
    assert 2 <= len(committed) < -(-(N_GOOD + 1) // CHUNK)
    again = _run(_cmd(small_bundle, photos, out), env)
    assert again.returncode == 2 and "--resume" in again.stderr  # an unfinished run is not overwritten
    r = _run(_cmd(small_bundle, photos, out, "--resume"), env)
    assert r.returncode == 3, r.stderr
    assert _outputs(out) == _outputs(reference)


def _with_file_size_limit(cmd: list[str], max_bytes: int) -> list[str]:
    """`cmd` (a python command) run with no file beyond `max_bytes`: writes past it fail with EFBIG, as on
    a full disk (SIGXFSZ ignored, so the write fails instead of the signal killing the process)."""
    setup = (
        "import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({max_bytes}, {max_bytes})); "
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    )
    return [cmd[0], "-c", setup, *cmd[1:]]


def test_no_room_for_latents_is_a_message_then_resume_finishes(small_bundle, photos, reference, tmp_path):
    """The chunks fit, the final latents.npy (N x 6 x 512 float32) does not: one error line with the way
    on, not a SIGBUS from the memmap; --resume with room finishes with the uninterrupted run's outputs."""
    out, env = tmp_path / "out", _env(tmp_path)
    limit = N_GOOD * 6 * 512 * 4 // 2
    r = _run(_with_file_size_limit(_cmd(small_bundle, photos, out), limit), env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert "latents.npy" in line and "--resume" in line, line
    assert not (out / "latents.npy").exists() and not list(out.glob(".latents.npy.tmp-*"))
    again = _run(_cmd(small_bundle, photos, out, "--resume"), env)
    assert again.returncode == 3, again.stderr
    assert _outputs(out) == _outputs(reference)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_invert_every_file_once(small_bundle, photos, reference, tmp_path):
    out = tmp_path / "out"
    port = _free_port()
    env = _env(tmp_path, devices=2)
    procs = [
        subprocess.Popen(
            _cmd(
                small_bundle,
                photos,
                out,
                "--coordinator-address",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ),
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    try:
        logs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert [p.returncode for p in procs] == [3, 0], [l[1].decode()[-2000:] for l in logs]
    assert (out / "files.txt").read_text() == (reference / "files.txt").read_text()
    assert (out / "inversions.txt").read_text() == (reference / "inversions.txt").read_text()
    np.testing.assert_allclose(np.load(out / "latents.npy"), np.load(reference / "latents.npy"), rtol=1e-5, atol=1e-5)
    report = json.loads((out / "report.json").read_text())
    n_chunks = -(-(N_GOOD + 1) // CHUNK)
    shares = [sum(min(CHUNK, N_GOOD + 1 - j * CHUNK) for j in range(n_chunks) if j % 2 == p) for p in range(2)]
    assert report["files_per_process"] == {"0": shares[0], "1": shares[1]}
    images = sorted(p.relative_to(out).as_posix() for p in (out / "inversions").iterdir())
    assert images == sorted((reference / "inversions.txt").read_text().splitlines())  # no staged leftovers


def _invert(bundle, photos, out, *extra) -> int:
    return cli_main(
        [
            "invert",
            "--model",
            str(bundle),
            "--images",
            str(photos),
            "--output",
            str(out),
            "--batch-size",
            str(BATCH),
            "--quiet",
            *extra,
        ]
    )


def test_overwrite_removes_only_what_invert_wrote(small_bundle, photos, tmp_path):
    out = tmp_path / "out"
    (out / "inversions").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "inversions" / "00042_stale.jpg").write_bytes(b"old run")
    (out / "inversions" / "holiday.jpg").write_bytes(b"user file")
    assert _invert(small_bundle, photos, out) == 2  # not empty, no --overwrite
    assert _invert(small_bundle, photos, out, "--overwrite", "--no-images") == 3
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "inversions" / "holiday.jpg").read_bytes() == b"user file"
    assert not (out / "inversions" / "00042_stale.jpg").exists()
    assert not (out / "inversions.txt").exists()  # latents only: no reconstruction list
    assert np.load(out / "latents.npy").shape == (N_GOOD, 6, 512)


def test_latents_only_equals_latents_with_images(small_bundle, photos, reference, tmp_path):
    assert _invert(small_bundle, photos, tmp_path / "out", "--no-images") == 3
    np.testing.assert_allclose(
        np.load(tmp_path / "out" / "latents.npy"), np.load(reference / "latents.npy"), rtol=1e-5, atol=1e-5
    )
    assert not (tmp_path / "out" / "inversions").exists()


def test_image_size_and_format(small_bundle, photos, tmp_path):
    out = tmp_path / "out"
    assert _invert(small_bundle, photos, out, "--image-size", "8", "--image-format", "png") == 3
    names = (out / "inversions.txt").read_text().splitlines()
    with Image.open(out / names[0]) as im:
        assert im.format == "PNG" and im.size == (8, 8)
    assert _invert(small_bundle, photos, tmp_path / "o2", "--image-size", "32") == 2  # larger than the generator


def test_second_writer_is_refused(small_bundle, photos, tmp_path, capsys):
    out = tmp_path / "out"
    with outdir.lock(out, "another invert"):
        assert _invert(small_bundle, photos, out) == 2
    assert "in use by pid" in capsys.readouterr().err
    assert not (out / "latents.npy").exists()


def test_resume_refuses_a_different_run(small_bundle, photos, tmp_path, capsys):
    from e4e_jax.batch_inversion import job, layout, plan
    from e4e_jax.data import folder

    out = tmp_path / "out"
    opts = job.InvertOptions(model=str(small_bundle), images=photos, output=out, dtype="bfloat16")
    files = [str(p) for p in folder.list_images(photos)]
    layout.Layout(out).write_plan(plan.make_plan(opts, files, 2 * BATCH, 1))
    assert _invert(small_bundle, photos, out, "--resume") == 2
    err = capsys.readouterr().err
    assert "dtype: 'bfloat16' -> 'float32'" in err and "--overwrite" in err
    assert f"batch_size: {2 * BATCH} -> {BATCH}" in err  # the batch shape changes the last bits of the latents
    assert _invert(small_bundle, photos, out, "--resume", "--overwrite") == 2  # contradictory flags


def test_unusable_folder_entries_are_skipped_with_reasons(small_bundle, photos, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ("im00.jpg", "im01.jpg"):
        (imgs / name).write_bytes((photos / name).read_bytes())
    (imgs / "a_broken.jpg").symlink_to("nowhere.jpg")
    (imgs / "z_folder.png").mkdir()
    out = tmp_path / "out"
    assert _invert(small_bundle, imgs, out, "--no-images") == 3  # partial: two entries unusable
    skipped = [line.split("\t") for line in (out / "skipped.txt").read_text().splitlines()]
    assert [Path(f).name for f, _ in skipped] == ["a_broken.jpg", "z_folder.png"]
    assert "broken symbolic link" in skipped[0][1] and "a folder" in skipped[1][1]
    assert [Path(f).name for f in (out / "files.txt").read_text().splitlines()] == ["im00.jpg", "im01.jpg"]
    report = json.loads((out / "report.json").read_text())
    assert report["n_files"] == 4 and report["n_skipped"] == 2 and report["n_inverted"] == 2

    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "broken.jpg").symlink_to("nowhere.jpg")
    assert _invert(small_bundle, only_bad, tmp_path / "out2") == 2
    assert "no usable images" in capsys.readouterr().err


def test_resume_refuses_weights_saved_again(small_bundle, photos, tmp_path, capsys):
    """Same config.json, other weights (the bundle saved again): not the run that was started."""
    from e4e_jax import bundle
    from e4e_jax.batch_inversion import job, layout, plan
    from e4e_jax.data import folder

    model = tmp_path / "model"
    shutil.copytree(small_bundle, model)
    assert bundle.weights_id(model) == bundle.weights_id(small_bundle)  # a copy is the same model
    out = tmp_path / "out"
    opts = job.InvertOptions(model=str(model), images=photos, output=out)
    layout.Layout(out).write_plan(plan.make_plan(opts, [str(p) for p in folder.list_images(photos)], BATCH, 1))
    config, variables = bundle.load(model)
    variables["latent_avg"] = variables["latent_avg"] + 0.5
    bundle.save(model, config["kind"], config["architecture"], variables, overwrite=True)
    assert _invert(model, photos, out, "--resume") == 2
    err = capsys.readouterr().err
    assert "model_weights_id" in err and "model_config_sha256" not in err, err


def test_awkward_file_names(small_bundle, photos, tmp_path):
    """A name that is not UTF-8 is skipped with its reason (files.txt is UTF-8); a stem too long for the
    reconstruction's name (with the row prefix and a temporary suffix) is cut in that name only."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    data = (photos / "im00.jpg").read_bytes()
    long_stem = "L" * 240
    (imgs / f"{long_stem}.jpg").write_bytes(data)
    (imgs / "plain.jpg").write_bytes(data)
    with open(os.path.join(os.fsencode(imgs), b"caf\xe9.jpg"), "wb") as f:
        f.write(data)
    out = tmp_path / "out"
    assert _invert(small_bundle, imgs, out) == 3
    assert [Path(f).name for f in (out / "files.txt").read_text().splitlines()] == [f"{long_stem}.jpg", "plain.jpg"]
    (skipped,) = (out / "skipped.txt").read_text().splitlines()
    assert skipped.startswith(f"{imgs}/caf\\xe9.jpg\t") and "not valid UTF-8" in skipped
    first, _ = (out / "inversions.txt").read_text().splitlines()
    assert first == f"inversions/00000_{long_stem[:120]}.jpg" and (out / first).is_file()


def test_a_refused_start_leaves_the_output_as_it_was(small_bundle, photos, tmp_path, capsys):
    """Refused before any commit (a flag the model cannot take, damaged weights): nothing blocks the
    corrected rerun, which needs neither --resume nor --overwrite."""
    out = tmp_path / "out"
    assert _invert(small_bundle, photos, out, "--image-size", "32") == 2  # the generator is 16 px
    assert "larger than the generator" in capsys.readouterr().err
    assert not out.exists()
    damaged = tmp_path / "damaged"
    shutil.copytree(small_bundle, damaged)
    for f in (damaged / "params").rglob("*"):
        if f.is_file() and f.stat().st_size > 4096:
            f.write_bytes(f.read_bytes()[:100])
    assert _invert(damaged, photos, out) == 2
    assert "params/" in capsys.readouterr().err
    assert outdir.is_empty_dir(out)  # the plan and the folders this run made are gone
    assert _invert(small_bundle, photos, out, "--image-size", "8", "--no-images") == 3  # size unused: no refusal
