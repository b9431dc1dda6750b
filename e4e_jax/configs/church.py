"""LSUN Church (StyleGAN2 256): MoCo similarity loss, lambda_sim 0.5.

Usage: e4e-jax train --config configs/church.py --workdir DIR [--config.KEY=VALUE ...]
"""
import ml_collections

from e4e_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.dataset_type = "church_encode"
    c.similarity = "moco"
    c.id_lambda = 0.5
    return c
