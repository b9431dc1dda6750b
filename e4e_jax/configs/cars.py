"""Stanford Cars (StyleGAN2 512): 192x256 inputs, losses on rows 32:224 of the pooled output, MoCo lambda_sim 0.5.

Usage: e4e-jax train --config configs/cars.py --workdir DIR [--config.KEY=VALUE ...]
"""
import ml_collections

from e4e_jax import domains
from e4e_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.dataset_type = "cars_encode"
    c.data.image_size = domains.CARS_INPUT_HW
    c.crop_rows = domains.cars_rows(c.output_size[0])  # of the 256x256 pooled output: (32, 224)
    c.similarity = "moco"
    c.id_lambda = 0.5
    c.max_steps = 200_000                  # official README command for cars
    return c
