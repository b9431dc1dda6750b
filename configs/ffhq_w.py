"""FFHQ faces with the W encoder (official --encoder_type SingleStyleCodeEncoder): one w for every layer,
no progressive stages, no Δ-regularisation; every other value as configs/ffhq.py.

Usage: e4e-jax train --config configs/ffhq_w.py --workdir DIR [--config.KEY=VALUE ...]
The values live in e4e_jax/training/presets.py (importable from the installed package).
"""
from e4e_jax.training import presets


def get_config():
    return presets.ffhq_w()
