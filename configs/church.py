"""LSUN Church (StyleGAN2 256): MoCo similarity loss, lambda_sim 0.5.

Usage: e4e-jax train --config configs/church.py --workdir DIR [--config.KEY=VALUE ...]
The values live in e4e_jax/training/presets.py (importable from the installed package).
"""
from e4e_jax.training import presets


def get_config():
    return presets.church()
