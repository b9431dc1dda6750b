"""Stanford Cars (StyleGAN2 512): 192x256 inputs, losses on rows 32:224 of the pooled output, MoCo lambda_sim 0.5.

Usage: e4e-jax train --config configs/cars.py --workdir DIR [--config.KEY=VALUE ...]
The values live in e4e_jax/training/presets.py (importable from the installed package).
"""
from e4e_jax.training import presets


def get_config():
    return presets.cars()
