"""FFHQ faces (StyleGAN2 1024): ArcFace identity loss, lambda_sim 0.1.

Usage: e4e-jax train --config configs/ffhq.py --workdir DIR [--config.KEY=VALUE ...]
The values live in e4e_jax/training/presets.py (importable from the installed package).
"""
from e4e_jax.training import presets


def get_config():
    return presets.ffhq()
