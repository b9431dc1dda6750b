"""ReStyle-e4e on FFHQ (official restyle-encoder `scripts/train_restyle_e4e.py`, README command): the
ProgressiveBackboneEncoder over IR-SE50 (every style from the 16x16 map, 6 input channels: the image and
the current reconstruction) refines its codes over 5 iterations per batch, starting from the average
image; the loss of every iteration is back-propagated (training/step.py). Every other value as
configs/ffhq.py (the README command's: λ_l2 1, λ_lpips 0.8, λ_id 0.1, λ_d-reg 2e-4, λ_adv 0.1 with the w
pool, progressive from step 20,000, one more delta every 2,000; Ranger, lr 1e-4, batch 8), validation every
1,000 steps (official default). Exports a 'restyle' bundle (e4e-jax invert / restyle.load_restyle).

Start from: the ArcFace IR-SE50 (--config.encoder.backbone_init_bundle=DIR, the official from-scratch
init: its RGB input weights in channels 0-2, N(0, 1) in 3-5), an e4e / pSp bundle
(--config.encoder.init_bundle=DIR: its backbone, widened likewise, and its coarse style blocks), or a
'restyle' bundle (--config.encoder.init_bundle=DIR, the official --checkpoint_path).

Usage: e4e-jax train --config configs/ffhq_restyle_e4e.py --workdir DIR --config.generator.bundle=G ...
"""

import ml_collections

from e4e_jax.configs import ffhq

ITERATIONS = 5  # official --n_iters_per_batch
VAL_INTERVAL = 1_000  # official --val_interval default (the ReStyle-e4e command leaves it)
BATCH_SIZE = 8  # the README command's --batch_size and --test_batch_size


def restyle_e4e(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Switch `c` to ReStyle-e4e (official --encoder_type ProgressiveBackboneEncoder, --input_nc 6):
    the iterative encoder; e4e's discriminator, progressive stages and Δ-regularisation stay as `c` has them."""
    c.encoder.mode = "restyle_e4e"
    c.n_iters_per_batch = ITERATIONS
    c.start_from_latent_avg = True
    return c


def get_config() -> ml_collections.ConfigDict:
    c = restyle_e4e(ffhq.get_config())
    c.batch_size = c.test_batch_size = BATCH_SIZE
    c.val_interval = VAL_INTERVAL
    return c
