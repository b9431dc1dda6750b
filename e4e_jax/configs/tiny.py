"""CPU-minutes toy run: a fixed-seed 32x32 StyleGAN2 whose samples are the training data (also the
config of `e4e-jax quickstart`).

Usage: e4e-jax train --config configs/tiny.py --workdir DIR [--config.KEY=VALUE ...]
"""
import ml_collections

from e4e_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    """CPU-minutes run of the whole system: a fixed-seed 32×32 StyleGAN2 stands in for the pretrained
    generator and its samples are the training data; every loss of the paper is on, with small
    schedules (progressive stages every few steps, R1 every 4 steps)."""
    c = default.get_config()
    c.dataset_type = "tiny_synthetic"
    c.data.source = "synthetic"
    c.data.image_size = (32, 32)
    c.data.num_eval_samples = 16
    c.generator.random_init = dict(size=32, channels=(64, 64, 32, 16), style_dim=512, n_mlp=2, seed=0)
    # A small IR-SE encoder (not the official size: IR-SE50 with 512-channel style blocks is ~6 s per step
    # on 2 CPU cores): stage widths 16-128, 6 units, 128-channel FPN and style blocks (W stays 512).
    c.encoder.kwargs = ml_collections.ConfigDict(dict(widths=(16, 32, 64, 128), units=(1, 2, 2, 1),
                                                      style_channels=128))
    c.output_size = (32, 32)
    c.random_loss_networks = True
    c.lpips_lambda = 0.8
    # λ_d-reg ×100 (paper 2e-4): the toy trains for thousands of steps, not hundreds of thousands, and at
    # 2e-4 the deltas stay as large as configuration A's within that budget (BUILD_NOTES, Table-2 ablation).
    c.delta_norm_lambda = 2e-2
    c.id_lambda = 0.0                      # ArcFace/MoCo need 112-224 px inputs: off for the toy run
    c.similarity = "moco"
    c.learning_rate = 1e-4
    c.batch_size = 4
    c.test_batch_size = 4
    c.max_steps = 2000
    c.progressive_start = 20
    c.progressive_step_every = 10
    c.d_reg_every = 4
    c.w_pool_size = 8
    c.board_interval = 10
    c.image_interval = 50
    c.val_interval = 100
    c.save_interval = 100
    c.max_val_batches = 4
    return c
