"""A random-weight official e4e checkpoint (IR-SE50 encoder + tiny rosinality decoder), for parity tests."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from tests.refs import psp_encoders
from tests.refs.rosinality_stylegan2 import Generator as TorchGenerator

# opts.encoder_type -> the reference class (official pSp.set_encoder); the default is e4e's TrainOptions'.
REFERENCE_ENCODERS = {
    "Encoder4Editing": psp_encoders.Encoder4Editing,
    "GradualStyleEncoder": psp_encoders.GradualStyleEncoder,
    "SingleStyleCodeEncoder": psp_encoders.BackboneEncoderUsingLastLayerIntoW,
}


def save_random_e4e(path: Path, size: int, opts: dict) -> dict:
    """Build the official encoder of opts['encoder_type'] (default Encoder4Editing; IR-SE50, 256x256 input)
    and a `size`² rosinality generator (channel_multiplier 1, n_mlp 2) with seeded random weights, and
    torch.save them at `path` as the official coach does: {'state_dict' (encoder.* / decoder.*),
    'latent_avg' (n_styles, 512), 'opts'}.

    Returns dict(enc, dec, latent_avg, state); enc and dec are in eval mode.
    """
    n_styles = 2 * int(math.log2(size)) - 2
    torch.manual_seed(0)
    enc_cls = REFERENCE_ENCODERS[opts.get("encoder_type", "Encoder4Editing")]
    enc = psp_encoders.randomize_(enc_cls(50, "ir_se", stylegan_size=size), seed=0).eval()
    dec = TorchGenerator(size, 512, n_mlp=2, channel_multiplier=1).randomize_(seed=1).eval()
    latent_avg = (0.5 * torch.randn(512)).repeat(n_styles, 1)
    state = {
        **{f"encoder.{k}": v for k, v in enc.state_dict().items()},
        **{f"decoder.{k}": v for k, v in dec.state_dict().items()},
    }
    torch.save({"state_dict": state, "latent_avg": latent_avg, "opts": dict(opts)}, path)
    return dict(enc=enc, dec=dec, latent_avg=latent_avg, state=state)
