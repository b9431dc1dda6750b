"""FFHQ faces (StyleGAN2 1024): ArcFace identity loss, lambda_sim 0.1 — the defaults as they are.

Usage: e4e-jax train --config configs/ffhq.py --workdir DIR [--config.KEY=VALUE ...]
"""
import ml_collections

from e4e_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    return default.get_config()
