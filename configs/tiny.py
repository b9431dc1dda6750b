"""CPU-minutes toy run: a fixed-seed 32x32 StyleGAN2 whose samples are the training data.

Usage: e4e-jax train --config configs/tiny.py --workdir DIR [--config.KEY=VALUE ...]
The values live in e4e_jax/training/presets.py (importable from the installed package).
"""
from e4e_jax.training import presets


def get_config():
    return presets.tiny()
