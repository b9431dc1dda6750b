"""FFHQ faces with the W encoder (official --encoder_type SingleStyleCodeEncoder): one w for every layer,
no progressive stages, no Δ-regularisation; every other value as configs/ffhq.py.

Usage: e4e-jax train --config configs/ffhq_w.py --workdir DIR [--config.KEY=VALUE ...]
"""
import ml_collections

from e4e_jax.configs import ffhq


def w_encoder(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Switch `c` to the W encoder (official --encoder_type SingleStyleCodeEncoder): one w for every layer, so
    no progressive stages and no L_d-reg (the official W encoder has no stage to set); the latent
    discriminator stays as in the official command."""
    c.encoder.mode = "w"
    c.use_progressive = False
    c.use_delta_reg = False
    return c


def get_config() -> ml_collections.ConfigDict:
    return w_encoder(ffhq.get_config())
