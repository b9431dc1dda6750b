"""`e4e-jax invert` on a ReStyle bundle (issue 27, item 3): the batch job runs the bundle's iterations
(`e4e_jax/inverters.py`), latents.npy holds the last one's, --save-iterations keeps every one's; the rest of
the job (chunks, kill then --resume, plan checks) is the e4e job's. The studio's inversion of a photo is
`invert --batch-size 1`'s, and `edit` takes the latents.

The bundle is a random-weight toy (tests/test_restyle.py: 32x32 encoder input, 16 px generator, 3
iterations); the photos are the official samples (../shared/assets/e4e/images). The compared runs are
subprocesses with one fixed environment, stopped at an exact point (tests/pausing.py), never by a timer.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from e4e_jax import manifest, restyle
from e4e_jax.cli import main as cli_main
from e4e_jax.data import folder
from tests import assets, parity, pausing, shared_files, tiny_bundles
from tests.test_restyle import make_restyle_bundle

ROOT = Path(__file__).resolve().parents[1]
BATCH, CHUNK = 2, 1  # the four sample photos: four chunks, batches that straddle them
ITERATIONS = 3  # make_restyle_bundle's default iteration count
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def restyle_model(shared_dir) -> Path:
    return shared_files.made_once(shared_dir, "small-restyle", lambda p: make_restyle_bundle(p))


@pytest.fixture(scope="module")
def photos() -> Path:
    return assets.require("images")


def _env(tmp: Path) -> dict:
    """The fixed environment of the compared runs (the session's compilation cache, else one under tmp)."""
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        JAX_PLATFORMS="cpu",
        E4E_JAX_CACHE_DIR=os.environ.get("E4E_JAX_CACHE_DIR") or str(tmp / "xla-cache"),
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
    )
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    env.pop(pausing.pause_points.ENV, None)
    return env


def _args(model: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return ["invert", "--model", str(model), "--images", str(images), "--output", str(out), "--quiet", *extra]


def _cmd(model: Path, images: Path, out: Path, *extra: str) -> list[str]:
    """The compared runs: every iteration kept, BATCH images a batch, CHUNK files a chunk."""
    job = ["--batch-size", str(BATCH), "--chunk-size", str(CHUNK), "--save-iterations", *extra]
    return [sys.executable, "-m", "e4e_jax.cli", *_args(model, images, out, *job)]


def _outputs(out: Path) -> dict[str, bytes]:
    """Every file of a finished output folder (reconstructions included; not report.json, whose timings
    differ from run to run), by relative path."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != manifest.REPORT
    }


@pytest.fixture(scope="module")
def reference(restyle_model, photos, tmp_path_factory) -> Path:
    """The uninterrupted run (every iteration kept) the other runs are compared with."""
    tmp = tmp_path_factory.mktemp("restyle-reference")
    r = subprocess.run(
        _cmd(restyle_model, photos, tmp / "out"), env=_env(tmp), capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert r.returncode == 0, r.stderr
    return tmp / "out"


def test_latents_are_the_in_memory_restyle_of_the_photos(restyle_model, photos, reference):
    """latents_iterations.npy: restyle.restyle on the same preprocessed photos, iteration by iteration (fp32
    parity tolerance); latents.npy: its last iteration, exactly."""
    files = (reference / manifest.FILES).read_text().splitlines()
    assert [Path(f).name for f in files] == sorted(p.name for p in photos.iterdir())
    model = restyle.load_restyle(str(restyle_model))
    x = np.stack([folder.load_pixels(f, model.input_hw) for f in files])
    ours = jax.jit(lambda v, x: restyle.restyle(model, v, x, images="none")[0])(model.variables, x)
    every = np.load(reference / manifest.LATENT_ITERATIONS)
    assert every.shape == (len(files), ITERATIONS, 6, 512) and every.dtype == np.float32
    for t in range(ITERATIONS):
        parity.assert_close(every[:, t], ours[t], f"iteration {t}")
    np.testing.assert_array_equal(np.load(reference / manifest.LATENTS), every[:, -1])
    report = json.loads((reference / manifest.REPORT).read_text())
    assert report["latents_iterations_shape"] == [len(files), ITERATIONS, 6, 512]
    assert report["plan"]["iterations"] == ITERATIONS and report["plan"]["save_iterations"] is True
    assert len((reference / manifest.INVERSIONS).read_text().splitlines()) == len(files)


def test_killed_then_resumed_is_byte_identical(restyle_model, photos, reference, tmp_path, capsys):
    """kill -9 after the second committed chunk; a --resume with other iteration options is refused naming
    them; the --resume of the same run gives the uninterrupted run's files, byte for byte."""
    out, env = tmp_path / "out", _env(tmp_path)
    p = subprocess.Popen(
        _cmd(restyle_model, photos, out),
        env=pausing.pause_env(env, "invert-chunk-committed", 2, tmp_path / "pause"),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        pausing.wait_paused(p, tmp_path / "pause", TIMEOUT_S)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=TIMEOUT_S)
    assert not (out / manifest.REPORT).exists(), "the run finished before the kill: the test proves nothing"
    assert len(list((out / ".e4e-invert").glob("chunk-*.npz"))) == 2

    base = _args(restyle_model, photos, out, "--batch-size", str(BATCH), "--chunk-size", str(CHUNK), "--resume")
    assert cli_main([*base, "--save-iterations", "--iterations", "2"]) == 2
    assert f"iterations: {ITERATIONS} -> 2" in tiny_bundles.error_line(capsys)
    assert cli_main(base) == 2  # the run kept every iteration
    assert "save_iterations: True -> False" in tiny_bundles.error_line(capsys)

    r = subprocess.run(_cmd(restyle_model, photos, out, "--resume"), env=env, capture_output=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    assert _outputs(out) == _outputs(reference)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_of_two_devices(restyle_model, photos, reference, tmp_path):
    """Two processes on 127.0.0.1, two CPU devices each: every iteration's latents (sharded along the
    batch inside each process, merged by process 0) are the one-device run's."""
    out, port = tmp_path / "out", _free_port()
    env = dict(_env(tmp_path), XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [
        subprocess.Popen(
            _cmd(
                restyle_model,
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
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    try:
        errs = [p.communicate(timeout=TIMEOUT_S)[1].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for e in errs]
    for name in (manifest.FILES, manifest.INVERSIONS):
        assert (out / name).read_text() == (reference / name).read_text()
    every = np.load(out / manifest.LATENT_ITERATIONS)
    parity.assert_close(every, np.load(reference / manifest.LATENT_ITERATIONS), "every iteration")
    np.testing.assert_array_equal(np.load(out / manifest.LATENTS), every[:, -1])
    assert json.loads((out / manifest.REPORT).read_text())["files_per_process"] == {"0": 2, "1": 2}


def test_iterations_option_sets_the_count(restyle_model, photos, reference, tmp_path):
    """--iterations 2 runs the first two of the bundle's iterations (latents only); without
    --save-iterations only latents.npy is written."""
    out = tmp_path / "two"
    assert cli_main(_args(restyle_model, photos, out, "--iterations", "2", "--save-iterations", "--no-images")) == 0
    two = np.load(out / manifest.LATENT_ITERATIONS)
    parity.assert_close(two, np.load(reference / manifest.LATENT_ITERATIONS)[:, :2], "two iterations")
    np.testing.assert_array_equal(np.load(out / manifest.LATENTS), two[:, -1])
    assert json.loads((out / manifest.REPORT).read_text())["plan"]["iterations"] == 2

    last = tmp_path / "last"
    assert cli_main(_args(restyle_model, photos, last, "--no-images")) == 0
    assert not (last / manifest.LATENT_ITERATIONS).exists()
    parity.assert_close(np.load(last / manifest.LATENTS), np.load(reference / manifest.LATENTS), "the last iteration")


def test_iteration_options_are_refused_for_an_e4e_bundle(shared_dir, photos, tmp_path, capsys):
    e4e_model = shared_files.small_e4e_bundle(shared_dir)
    out = tmp_path / "out"
    for extra, named in [(("--iterations", "2"), "--iterations"), (("--save-iterations",), "--save-iterations")]:
        assert cli_main(_args(e4e_model, photos, out, *extra)) == 2
        line = tiny_bundles.error_line(capsys)
        assert named in line and "'e4e' bundle" in line and "ReStyle" in line, line
        assert not out.exists()  # refused before anything is written


@pytest.mark.parametrize("value", ["0", "-1"])
def test_iterations_must_be_positive(restyle_model, photos, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as e:
        cli_main(_args(restyle_model, photos, tmp_path / "out", "--iterations", value))
    assert e.value.code == 2 and f"argument --iterations: must be ≥ 1, got {value}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_studio_inverts_as_invert_at_batch_one_and_edit_takes_the_latents(restyle_model, photos, tmp_path):
    """The editor (the studio's API) and `invert --batch-size 1` take the same kernel (inverters.py): the
    same latent and reconstruction, bit for bit; `edit` on the invert output makes the editor's edit."""
    from e4e_jax.editor import Editor

    one = tmp_path / "one"
    one.mkdir()
    photo = one / "input_img.jpg"
    photo.write_bytes((photos / photo.name).read_bytes())
    editor = Editor(restyle_model, align=False)
    inv = editor.invert(editor.prepare(photo).pixels)
    out = tmp_path / "inv"
    assert cli_main(_args(restyle_model, one, out, "--batch-size", "1", "--image-format", "png")) == 0
    np.testing.assert_array_equal(np.load(out / manifest.LATENTS)[0], inv.latent)
    (saved,) = (out / manifest.INVERSIONS).read_text().splitlines()
    np.testing.assert_array_equal(np.asarray(Image.open(out / saved)), inv.image)

    edited = tmp_path / "edited"
    argv = ["edit", "--model", str(restyle_model), "--latents", str(out), "--output", str(edited)]
    assert cli_main([*argv, "--sefa", "0", "--strengths", "2"]) == 0
    np.testing.assert_array_equal(np.load(edited / "latents.npy")[0, 0], editor.edit(inv.latent, {"sefa_0": 2.0}))
