"""Defaults shared by every domain (official options/train_options.py values, README training command).

Usage: e4e-jax train --config configs/default.py --workdir DIR [--config.KEY=VALUE ...]
The values live in e4e_jax/training/presets.py (importable from the installed package).
"""
from e4e_jax.training import presets


def get_config():
    return presets.base()
