"""Stanford Cars (StyleGAN2 512): 192x256 inputs, losses on rows 32:224 of the pooled output, MoCo lambda_sim 0.5.

Usage: e4e-jax train --config configs/cars.py --workdir DIR [--config.KEY=VALUE ...]
"""
import ml_collections

from e4e_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.dataset_type = "cars_encode"
    c.data.image_size = (192, 256)
    c.crop_rows = (32, 224)
    c.similarity = "moco"
    c.id_lambda = 0.5
    c.max_steps = 200_000                  # official README command for cars
    return c
