"""Small inputs for the tests that run every command as a user would (foreign outputs, Ctrl-C, a full disk,
bad paths): tiny random bundles written by `bundle.save`, latents that fit them, photos, and helpers that
run a command in a subprocess (its own JAX, its own signals) and read what it left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from e4e_jax.models.stylegan2 import StyleGAN2Config, init_variables
from e4e_jax.storage import bundle
from tests import pausing

ROOT = Path(__file__).resolve().parents[1]
GEN_CFG = StyleGAN2Config(size=16, channels=(16, 16, 8), n_mlp=2)
RUN_TIMEOUT_S = 600  # a subprocess command on a loaded 2-core CI machine: minutes, not hours
N_PHOTOS = 4
# A training config for `e4e-jax train --config FILE` (tests.training_helpers.small_config: an 8x8
# generator and a small encoder), a checkpoint at every step.
TRAIN_CONFIG = """
from tests.training_helpers import small_config


def get_config():
    return small_config(max_steps={steps}, save_interval=1, val_interval=1000)
"""


def make_models(root: Path) -> dict[str, Path]:
    """A tiny stylegan2 bundle `g`, a small e4e bundle `e4e`, W+ latents `w` for them and a folder of
    `photos` (random pictures: no faces)."""
    from tests.test_invert_cli import SMALL_ENCODER, make_e4e_bundle

    bundle.save(root / "g", "stylegan2", GEN_CFG.to_dict(), init_variables(GEN_CFG, jax.random.key(0)))
    make_e4e_bundle(root / "e4e", encoder_sizes=SMALL_ENCODER)
    rng = np.random.default_rng(0)
    np.save(root / "w.npy", rng.standard_normal((2, GEN_CFG.n_latent, 512)).astype(np.float32))
    (root / "photos").mkdir()
    for i in range(N_PHOTOS):
        Image.fromarray(rng.integers(0, 255, (64, 48, 3), np.uint8)).save(root / "photos" / f"im{i}.jpg")
    return {"g": root / "g", "e4e": root / "e4e", "w": root / "w.npy", "photos": root / "photos"}


def train_config(folder: Path, steps: int = 2) -> Path:
    path = folder / "train_cfg.py"
    path.write_text(TRAIN_CONFIG.format(steps=steps))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too), by path relative to it: what a user would compare."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(folder: Path) -> list[str]:
    """Temporary files or folders of an interrupted write left under `folder` (fileio's and orbax's)."""
    return [p.name for p in folder.rglob("*") if ".tmp-" in p.name or "orbax-checkpoint-tmp" in p.name]


def env(tmp: Path, **extra: str) -> dict[str, str]:
    out = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        JAX_PLATFORMS="cpu",
        E4E_JAX_CACHE_DIR=str(tmp / "xla-cache"),
        TF_CPP_MIN_LOG_LEVEL="2",
        **extra,
    )
    out.pop("JAX_COORDINATOR_ADDRESS", None)
    return out


def e4e_jax(*argv: str) -> list[str]:
    return [sys.executable, "-m", "e4e_jax.cli", *map(str, argv)]


def convert(*argv: str) -> list[str]:
    return [sys.executable, "-m", "tools.convert_weights", *map(str, argv)]


def run(cmd: list[str], tmp: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env(tmp, **extra), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def stopped_at(cmd: list[str], point: str, tmp: Path, sig: int = signal.SIGINT, k: int = 1) -> tuple[int, str]:
    """Run `cmd` until it waits at the k-th arrival at the pause point `point` (e4e_jax/runtime/pause_points.py),
    then send `sig` to its whole process group, as a terminal's Ctrl-C does (or SIGKILL); returns (exit
    status, stderr).

    Deterministic: the command blocks at the point until the signal comes, and the signal is sent only once
    it is there (no timing). Its output goes to files, so a full pipe cannot stop it before the point."""
    fifo, err_path = tmp / f"pause-{point}-{k}", tmp / f"stderr-{point}-{k}.txt"
    with open(err_path, "w") as err, open(os.devnull, "w") as out:
        p = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=pausing.pause_env(env(tmp), point, k, fifo),
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    try:
        try:
            pausing.wait_paused(p, fifo, RUN_TIMEOUT_S)
        except AssertionError as e:
            raise AssertionError(f"{e}; stderr: {err_path.read_text()[-3000:]}") from None
        os.killpg(p.pid, sig)
        p.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return p.returncode, err_path.read_text()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]
