"""ReStyle-pSp on FFHQ (official restyle-encoder `scripts/train_restyle_psp.py`, README command): the
BackboneEncoder over IR-SE50 (one style block per layer on the 16x16 map, 6 input channels) refines its
codes over 5 iterations per batch, the loss of every iteration back-propagated (training/step.py). pSp's
coach has no latent discriminator, no progressive stages and no Δ-regularisation (and λ_w-norm 0 in the
command); λ_l2 1, λ_lpips 0.8, λ_id 0.1, Ranger lr 1e-4, batch 8, validation every 5,000 steps, a
checkpoint every 10,000. Exports a 'restyle' bundle.

Start from the ArcFace IR-SE50 (--config.encoder.backbone_init_bundle), an e4e / pSp bundle or a
'restyle' bundle (--config.encoder.init_bundle), as configs/ffhq_restyle_e4e.py says.

Usage: e4e-jax train --config configs/ffhq_restyle_psp.py --workdir DIR --config.generator.bundle=G ...
"""

import ml_collections

from e4e_jax.configs import ffhq_restyle_e4e

VAL_INTERVAL = 5_000  # the README command's --val_interval
SAVE_INTERVAL = 10_000  # the README command's --save_interval


def restyle_psp(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Switch `c` to ReStyle-pSp (official --encoder_type BackboneEncoder, --input_nc 6): the iterative
    encoder with pSp's objective (no discriminator, no progressive deltas, no Δ-regularisation)."""
    c = ffhq_restyle_e4e.restyle_e4e(c)
    c.encoder.mode = "restyle_psp"
    c.w_discriminator_lambda = 0.0
    c.use_progressive = False
    c.use_delta_reg = False
    return c


def get_config() -> ml_collections.ConfigDict:
    c = restyle_psp(ffhq_restyle_e4e.get_config())
    c.val_interval = VAL_INTERVAL
    c.save_interval = SAVE_INTERVAL
    return c
