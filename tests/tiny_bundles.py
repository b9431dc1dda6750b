"""Tiny random-weight bundles for command tests: a 16x16 stylegan2 (6 W+ codes of 512) and an e4e bundle
of it with a small IR-SE encoder at the official 256x256 input (saved through the real `bundle.save`)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.models.encoder import Encoder4Editing
from e4e_jax.models.stylegan2 import StyleGAN2Config, init_variables
from e4e_jax.storage import bundle

GEN_CFG = StyleGAN2Config(size=16, channels=(16, 16, 8), n_mlp=2)
ENC_SIZES = dict(widths=(16, 32, 64, 128), units=(1, 1, 1, 1))  # a toy encoder: fast to build
ENC_HW = (256, 256)


def save_generator(path: Path) -> Path:
    bundle.save(path, "stylegan2", GEN_CFG.to_dict(), init_variables(GEN_CFG, jax.random.key(0)))
    return path


def save_e4e(path: Path) -> Path:
    gen_vars = init_variables(GEN_CFG, jax.random.key(0))
    enc = Encoder4Editing(n_styles=GEN_CFG.n_latent, **ENC_SIZES)
    enc_vars = jax.jit(enc.init)(jax.random.key(1), jnp.zeros((1, *ENC_HW, 3)))
    arch = {
        "encoder": {
            "mode": "e4e",
            "encoder_type": "Encoder4Editing",
            "n_styles": GEN_CFG.n_latent,
            "num_layers": 50,
            "backbone_mode": "ir_se",
            "input_size": list(ENC_HW),
            **{k: list(v) for k, v in ENC_SIZES.items()},
        },
        "generator": GEN_CFG.to_dict(),
        "domain": "ffhq",
    }
    latent_avg = np.random.default_rng(3).normal(0, 0.3, (GEN_CFG.n_latent, 512)).astype(np.float32)
    bundle.save(path, "e4e", arch, {"encoder": enc_vars, "generator": gen_vars, "latent_avg": latent_avg})
    return path


def latents(n: int, seed: int = 0) -> np.ndarray:
    """(n, n_latent, 512) float32 W+ codes that fit GEN_CFG."""
    return np.random.default_rng(seed).standard_normal((n, GEN_CFG.n_latent, 512)).astype(np.float32)


def error_line(capsys) -> str:
    """The stderr of the last command: exactly one `error: ...` line, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
