"""Random-weight official ReStyle checkpoints (the four encoders + a tiny rosinality decoder), for parity and
converter tests.

The official coaches save (training/coach_restyle_psp.py, coach_restyle_e4e.py `__get_save_dict`):
  ReStyle-pSp: {'state_dict': net.state_dict() (encoder.*, decoder.*), 'opts': vars(opts), 'latent_avg'}
  ReStyle-e4e: the same and 'global_step', 'optimizer' (its state dict), 'best_val_loss'
               (+ 'discriminator_state_dict', 'discriminator_optimizer_state_dict' when w_discriminator_lambda > 0)
latent_avg is the decoder's mean w repeated per style: (n_styles, 512).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from tests.refs import restyle_encoders as ref
from tests.refs.psp_encoders import randomize_
from tests.refs.rosinality_stylegan2 import Generator as TorchGenerator

# The style heads' weights are scaled down: with full-scale random weights the iterations diverge (|w| about
# doubles per step, the generator's output and so the encoder's input grow with it), which amplifies float
# round-off well beyond what a trained encoder, whose residuals shrink, ever shows.
RESIDUAL_SCALE = 0.2
# opts.encoder_type -> (reference class, whether its coach is ReStyle-e4e's).
REFERENCE_ENCODERS = {
    "BackboneEncoder": (ref.BackboneEncoder, False),
    "ProgressiveBackboneEncoder": (ref.ProgressiveBackboneEncoder, True),
    "ResNetBackboneEncoder": (ref.ResNetBackboneEncoder, False),
    "ResNetProgressiveBackboneEncoder": (ref.ResNetProgressiveBackboneEncoder, True),
}


def official_opts(encoder_type: str, output_size: int, dataset_type: str = "ffhq_encode", **more) -> dict:
    """A subset of vars(opts) of the official TrainOptions (their names and default values)."""
    return {
        "exp_dir": "experiments/restyle",
        "dataset_type": dataset_type,
        "encoder_type": encoder_type,
        "input_nc": 6,
        "output_size": output_size,
        "batch_size": 8,
        "learning_rate": 0.0001,
        "optim_name": "ranger",
        "train_decoder": False,
        "start_from_latent_avg": False,
        "lpips_lambda": 0.8,
        "l2_lambda": 1.0,
        "id_lambda": 0.1,
        "stylegan_weights": "pretrained_models/stylegan2-ffhq-config-f.pt",
        "checkpoint_path": None,
        "save_interval": None,
        "n_iters_per_batch": 5,
        "device": "cuda:0",
        **more,
    }


def build_reference(
    encoder_type: str, size: int, seed: int = 0, n_mlp: int = 2, channel_multiplier: int = 1
) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """(encoder, decoder, latent_avg) with seeded random weights, in eval mode: the official encoder class
    of `encoder_type` (input_nc 6) and a `size`² rosinality generator (tests: channel_multiplier 1, n_mlp 2;
    the official nets build 2 and 8, as benchmarks/restyle_vs_official.py asks)."""
    n_styles = 2 * int(math.log2(size)) - 2
    cls, _ = REFERENCE_ENCODERS[encoder_type]
    torch.manual_seed(seed)
    enc = randomize_(cls(n_styles=n_styles, input_nc=6), seed=seed).eval()
    with torch.no_grad():  # small residuals, as trained ReStyle encoders predict (see RESIDUAL_SCALE)
        for style in enc.styles:
            style.linear.weight.mul_(RESIDUAL_SCALE)
    dec = TorchGenerator(size, 512, n_mlp=n_mlp, channel_multiplier=channel_multiplier).randomize_(seed=seed + 1).eval()
    latent_avg = (0.5 * torch.randn(512, generator=torch.Generator().manual_seed(seed + 2))).repeat(n_styles, 1)
    return enc, dec, latent_avg


def checkpoint_dict(encoder_type: str, enc, dec, latent_avg, opts: dict) -> dict:
    """What the official coach of `encoder_type` saves (module docstring)."""
    state = {
        **{f"encoder.{k}": v for k, v in enc.state_dict().items()},
        **{f"decoder.{k}": v for k, v in dec.state_dict().items()},
    }
    ckpt = {"state_dict": state, "opts": dict(opts), "latent_avg": latent_avg}
    if REFERENCE_ENCODERS[encoder_type][1]:  # ReStyle-e4e's coach also keeps its training state
        param = torch.nn.Parameter(torch.ones(3))
        optim = torch.optim.Adam([param], lr=1e-4)
        param.sum().backward()
        optim.step()
        ckpt.update(global_step=1234, optimizer=optim.state_dict(), best_val_loss=0.25)
    return ckpt


def save_random_restyle(path: Path, encoder_type: str, size: int, opts: dict | None = None, seed: int = 0) -> dict:
    """torch.save a random official ReStyle checkpoint at `path`; returns dict(enc, dec, latent_avg, opts)."""
    enc, dec, latent_avg = build_reference(encoder_type, size, seed)
    opts = opts if opts is not None else official_opts(encoder_type, size)
    torch.save(checkpoint_dict(encoder_type, enc, dec, latent_avg, opts), path)
    return dict(enc=enc, dec=dec, latent_avg=latent_avg, opts=opts)
