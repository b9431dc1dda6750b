"""CPU-minutes ReStyle-e4e toy run: configs/tiny.py (a fixed-seed 32x32 StyleGAN2 whose samples are the
training data, the small IR-SE encoder, every loss of the paper on small schedules) with the ReStyle-e4e
encoder (6 input channels, every style from the last map) refining over 5 iterations per batch.

Usage: e4e-jax train --config configs/tiny_restyle.py --workdir DIR [--config.KEY=VALUE ...]
(ReStyle-pSp: --config.encoder.mode=restyle_psp --config.w_discriminator_lambda=0
--config.use_progressive=false --config.use_delta_reg=false, as configs/ffhq_restyle_psp.py switches.)
"""

import ml_collections

from e4e_jax.configs import ffhq_restyle_e4e, tiny


def get_config() -> ml_collections.ConfigDict:
    return ffhq_restyle_e4e.restyle_e4e(tiny.get_config())
