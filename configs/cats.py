"""Cats (official data_configs 'cats_encode'): MoCo similarity loss, lambda_sim 0.5.

Usage: e4e-jax train --config configs/cats.py --workdir DIR [--config.KEY=VALUE ...]
The values live in e4e_jax/training/presets.py (importable from the installed package).
"""
from e4e_jax.training import presets


def get_config():
    return presets.cats()
