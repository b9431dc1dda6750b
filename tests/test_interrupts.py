"""Issue 30, group 4: Ctrl-C at any moment of any command is one line and exit status 130, with no
traceback (from the command or its worker processes), no crash at exit and nothing half-written.

Each command runs in a subprocess that waits at a named point (e4e_jax/runtime/pause_points.py: `command-started`
after the arguments are parsed, a command's own point once its first unit of work is done,
`write-before-rename` inside an atomic write) until the test sends SIGINT to its whole process group, as a
terminal does: no timing is involved.
"""

from __future__ import annotations

import gc
import signal

import pytest

from e4e_jax.errors import EXIT_INTERRUPTED
from e4e_jax.runtime import interrupts
from e4e_jax.storage import fileio, outdir
from tests import command_fixtures as fx
from tests.assets import E4E_ASSETS

pytestmark = pytest.mark.long_module  # minutes long: run first (tests/conftest.py)

FACE = E4E_ASSETS / "images" / "input_img.jpg"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return fx.make_models(tmp_path_factory.mktemp("models"))


def _one_line(code: int, stderr: str) -> str:
    """The command stopped with exit 130 and said so in one line: no traceback, no second message."""
    assert code == EXIT_INTERRUPTED, (code, stderr[-3000:])
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]
    said = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(said) == 1 and not fx.error_lines(stderr), stderr[-3000:]
    return said[0]


def _commands(models, tmp_path) -> dict[str, list[str]]:
    out = tmp_path / "out"
    cfg = fx.train_config(tmp_path)
    return {
        "synthesize": fx.e4e_jax(
            "synthesize", "--model", models["g"], "--latents", models["w"], "--output", out / "x.npy"
        ),
        "edit": fx.e4e_jax(
            "edit", "--model", models["g"], "--latents", models["w"], "--output", out, "--sefa", "0", "--strengths", "1"
        ),
        "invert": fx.e4e_jax(
            "invert", "--model", models["e4e"], "--images", models["photos"], "--output", out, "--chunk-size", "1"
        ),
        "align": fx.e4e_jax("align", "--images", models["photos"], "--output", out),
        "evaluate": fx.e4e_jax("evaluate", "--model", models["e4e"], "--images", models["photos"], "--output", out),
        "train": fx.e4e_jax("train", "--config", cfg, "--workdir", out),
        "quickstart": fx.e4e_jax("quickstart", "--workdir", out),
        "tune": fx.e4e_jax(
            "tune", "--model", models["e4e"], "--lpips", models["g"], "--inversions", models["photos"], "--output", out
        ),
        "convert": fx.convert("stylegan2", models["w"], "--out", out),
    }


@pytest.mark.parametrize(
    "command", ["synthesize", "edit", "invert", "align", "evaluate", "train", "quickstart", "tune", "convert"]
)
def test_ctrl_c_at_startup(models, tmp_path, command):
    """Right after the arguments are read: one line, exit 130, nothing made."""
    code, err = fx.stopped_at(_commands(models, tmp_path)[command], interrupts.STARTED_POINT, tmp_path)
    _one_line(code, err)
    assert not (tmp_path / "out").exists()


def test_ctrl_c_while_synthesizing_leaves_no_partial_result(models, tmp_path):
    """After the first batch is rendered and its PNGs written: neither the .npy nor any PNG is left."""
    out = tmp_path / "out"
    cmd = _commands(models, tmp_path)["synthesize"] + ["--png", str(out / "png"), "--batch-size", "1"]
    _one_line(*fx.stopped_at(cmd, "synthesize-batch-done", tmp_path))
    assert not (out / "x.npy").exists() and not (out / "png").exists() and not fx.temporaries(out)


@pytest.mark.parametrize("point, k", [("edit-batch-done", 1), (fileio.WRITE_POINT, 3)])
def test_ctrl_c_while_editing_leaves_no_partial_result(models, tmp_path, point, k):
    """While rendering, or inside the write of its first image: the folder is left as it was (not made)."""
    cmd = _commands(models, tmp_path)["edit"] + ["--batch-size", "1"]
    _one_line(*fx.stopped_at(cmd, point, tmp_path, k=k))
    assert not (tmp_path / "out").exists()


def test_ctrl_c_while_converting_writes_no_bundle(tmp_path):
    """Inside the converter, and inside the bundle's write: no bundle, no temporary folder."""
    torch = pytest.importorskip("torch")
    from tests.refs.rosinality_stylegan2 import Generator, channel_table

    torch.manual_seed(0)
    g = Generator(16, style_dim=16, n_mlp=2, channels={r: 8 for r in channel_table(1)}).randomize_()
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(16)}, tmp_path / "g.pt")
    for point in ("convert-loaded", fileio.WRITE_POINT):
        line = _one_line(
            *fx.stopped_at(fx.convert("stylegan2", tmp_path / "g.pt", "--out", tmp_path / "b"), point, tmp_path)
        )
        assert "nothing was written" in line
        assert not [p.name for p in tmp_path.iterdir() if p.name == "b" or p.name.startswith(".b.")]


def test_ctrl_c_while_evaluating_writes_no_metrics(models, tmp_path):
    cmd = _commands(models, tmp_path)["evaluate"] + ["--batch-size", "1", "--num-samples", "0"]
    _one_line(*fx.stopped_at(cmd, "evaluate-batch-done", tmp_path))
    assert not (tmp_path / "out").exists()


def test_ctrl_c_while_inverting_keeps_the_committed_chunks(models, tmp_path):
    """After the first chunk is committed: the hint to --resume, which then finishes the run."""
    cmd = _commands(models, tmp_path)["invert"] + ["--batch-size", "1"]
    assert "--resume" in _one_line(*fx.stopped_at(cmd, "invert-chunk-committed", tmp_path))
    out = tmp_path / "out"
    assert list((out / ".e4e-invert").glob("chunk-*.npz")) and not fx.temporaries(out)
    r = fx.run(cmd + ["--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert len((out / "files.txt").read_text().splitlines()) == fx.N_PHOTOS


@pytest.mark.skipif(not FACE.is_file(), reason=f"needs {FACE}")
def test_ctrl_c_while_aligning_with_worker_processes(tmp_path):
    """Two worker processes: only the main process handles Ctrl-C (no worker traceback), the photos done are
    kept and --resume finishes the others."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        (photos / f"p{i}.jpg").write_bytes(FACE.read_bytes())
    out = tmp_path / "out"
    cmd = fx.e4e_jax("align", "--images", photos, "--output", out, "--output-size", "64", "--workers", "2")
    assert "--resume" in _one_line(*fx.stopped_at(cmd, "align-photo-done", tmp_path))
    assert outdir.owner(out) == "align" and not fx.temporaries(out)
    r = fx.run(cmd + ["--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("*.png")) == [f"p{i}.png" for i in range(4)]


def test_ctrl_c_while_training_keeps_whole_checkpoints(tmp_path):
    """After the second step and its checkpoint: one line and exit 130, not a segmentation fault at exit;
    the checkpoints are whole (no temporary folder)."""
    out = tmp_path / "out"
    cmd = fx.e4e_jax("train", "--config", fx.train_config(tmp_path, steps=3), "--workdir", out)
    assert "--resume" in _one_line(*fx.stopped_at(cmd, "train-after-step-2", tmp_path))
    assert (out / "checkpoints" / "1").is_dir() and not fx.temporaries(out)


def test_ctrl_c_while_tuning_keeps_the_committed_batches(tmp_path):
    """After the first of two batches is committed: the hint to --resume, which then finishes the run."""
    from tests.test_tune_cli import make_inputs, tune_argv

    inputs = make_inputs(tmp_path / "inputs")
    out = tmp_path / "out"
    cmd = fx.e4e_jax(*tune_argv(inputs, out, "--batch-size", "2"))
    assert "--resume" in _one_line(*fx.stopped_at(cmd, "tune-committed", tmp_path))
    assert outdir.owner(out) == "tune" and not fx.temporaries(out)
    r = fx.run(cmd + ["--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "report.json").is_file() and not (out / ".e4e-tune").exists()


def test_a_ctrl_c_swallowed_by_a_gc_callback_is_raised_again():
    """JAX runs a gc callback; Python swallows an exception raised in one ("Exception ignored"), so a Ctrl-C
    that lands there used to be lost and the run went on. Now it comes back in the next call."""
    hit = []

    def callback(phase, info):
        if phase == "start" and not hit:
            hit.append(phase)
            signal.raise_signal(signal.SIGINT)  # the handler runs here, inside the gc callback

    def next_call():
        return None

    gc.callbacks.append(callback)
    try:
        with interrupts.handling():
            with pytest.raises(KeyboardInterrupt):
                gc.collect()
                next_call()
            assert hit and interrupts.requested()
    finally:
        gc.callbacks.remove(callback)
