"""Issue 30, group 4: a full disk is one `error:` line naming the file that did not fit, exit status 2, and
nothing half-written, for every command that writes (invert has its own test in test_invert_job.py).

The disk is made "full" for the command alone by a file size limit (RLIMIT_FSIZE, `ulimit -f`): a write
past it fails with EFBIG as one past the end of a disk fails with ENOSPC (Python ignores SIGXFSZ).
"""

from __future__ import annotations

import pytest

from e4e_jax.storage import outdir
from tests import command_fixtures as fx
from tests.assets import E4E_ASSETS
from tests.test_invert_job import _with_file_size_limit

FACE = E4E_ASSETS / "images" / "input_img.jpg"
# Room for the small files (the folder's mark, a config) and none for the results: every limit below is
# larger than the mark and smaller than the first result (a latents .npy, a PNG, a checkpoint).
SMALL_FILE_LIMIT = 1000


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return fx.make_models(tmp_path_factory.mktemp("models"))


def _no_room(cmd: list[str], tmp_path, limit: int, names: str) -> str:
    """`cmd` under a file size limit of `limit` bytes: exit 2 and one line saying which file had no room
    (returned)."""
    r = fx.run(_with_file_size_limit(cmd, limit), tmp_path)
    lines = fx.error_lines(r.stderr)
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert lines[0].startswith("error: no room to write") and names in lines[0], lines[0]
    return lines[0]


def test_synthesize(models, tmp_path):
    out = tmp_path / "out"
    cmd = fx.e4e_jax("synthesize", "--model", models["g"], "--latents", models["w"], "--output", out / "x.npy")
    _no_room(cmd + ["--png", str(out / "png")], tmp_path, SMALL_FILE_LIMIT, "x.npy")
    assert not (out / "x.npy").exists() and not (out / "png").exists() and not fx.temporaries(out)


def test_edit(models, tmp_path):
    out = tmp_path / "out"
    cmd = fx.e4e_jax(
        "edit", "--model", models["g"], "--latents", models["w"], "--output", out, "--sefa", "0", "--strengths", "1"
    )
    _no_room(cmd, tmp_path, SMALL_FILE_LIMIT, "latents.npy")
    assert not out.exists()


def test_evaluate(models, tmp_path):
    out = tmp_path / "out"
    cmd = fx.e4e_jax(
        "evaluate", "--model", models["e4e"], "--images", models["photos"], "--output", out, "--num-samples", "0"
    )
    _no_room(cmd, tmp_path, 200, "metrics.json")  # metrics.json is a few KB
    assert not out.exists()


def test_convert(tmp_path):
    torch = pytest.importorskip("torch")
    from tests.refs.rosinality_stylegan2 import Generator, channel_table

    torch.manual_seed(0)
    g = Generator(16, style_dim=16, n_mlp=2, channels={r: 8 for r in channel_table(1)}).randomize_()
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(16)}, tmp_path / "g.pt")
    _no_room(fx.convert("stylegan2", tmp_path / "g.pt", "--out", tmp_path / "b"), tmp_path, 3000, str(tmp_path / "b"))
    assert not [p.name for p in tmp_path.iterdir() if p.name == "b" or p.name.startswith(".b.")]


@pytest.mark.skipif(not FACE.is_file(), reason=f"needs {FACE}")
def test_align(tmp_path):
    """The aligned PNG does not fit: the photos done so far are kept whole, and the hint is --resume."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "p0.jpg").write_bytes(FACE.read_bytes())
    out = tmp_path / "out"
    cmd = fx.e4e_jax("align", "--images", photos, "--output", out, "--output-size", "64", "--workers", "1")
    assert "--resume" in _no_room(cmd, tmp_path, SMALL_FILE_LIMIT, "p0.png")
    assert outdir.owner(out) == "align" and not (out / "p0.png").exists() and not fx.temporaries(out)


def test_train(tmp_path):
    """The first checkpoint does not fit (the config and the metrics do): one line naming the checkpoints,
    not orbax's tracebacks from its writer threads; the failed save leaves no temporary folder."""
    out = tmp_path / "out"
    cmd = fx.e4e_jax("train", "--config", fx.train_config(tmp_path), "--workdir", out)
    _no_room(cmd, tmp_path, 64_000, "checkpoints")
    assert (out / "config.json").is_file() and not fx.temporaries(out)


def test_tune(tmp_path):
    """The first batch's outputs do not fit (the mark and the plan do): one line naming the file; a fresh run
    that failed before its first commit leaves nothing behind."""
    from tests.test_tune_cli import make_inputs, tune_argv

    out = tmp_path / "out"
    cmd = fx.e4e_jax(*tune_argv(make_inputs(tmp_path / "inputs"), out, "--batch-size", "2"))
    _no_room(cmd, tmp_path, 4000, str(out))
    assert not out.exists()
