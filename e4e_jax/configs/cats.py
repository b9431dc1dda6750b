"""Cats (official data_configs 'cats_encode'): MoCo similarity loss, lambda_sim 0.5.

Usage: e4e-jax train --config configs/cats.py --workdir DIR [--config.KEY=VALUE ...]
"""
import ml_collections

from e4e_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.dataset_type = "cats_encode"
    c.similarity = "moco"
    c.id_lambda = 0.5
    return c
