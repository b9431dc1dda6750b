"""The official e4e training step (training/coach.py), built with random weights, for side-by-side timing.

Not part of e4e-jax: it imports the official repository from the git-ignored `external/` folder at
run time (nothing of it is copied here). Pretrained files the official code would download or read
(torchvision AlexNet, LPIPS heads, ArcFace IR-SE50, the e4e checkpoint) are replaced by random
weights of the same architecture, or by the real LPIPS v0.1 heads in tests/data.

`build_official_coach(official_dir, size, batch)` returns (coach, step_fn, make_batch, ckpt_path):
step_fn(batch) runs exactly the body of `Coach.train`'s loop (discriminator step with lazy R1,
forward, calc_loss with every loss of the paper, encoder backward, Ranger step).
"""

from __future__ import annotations

import sys
import tempfile
from argparse import Namespace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _patch_downloads(lpips_heads: Path) -> None:
    import torch
    import torchvision

    orig_alexnet = torchvision.models.alexnet

    def alexnet(pretrained=False, **kw):  # random backbone: nothing can be downloaded
        return orig_alexnet(weights=None)

    torchvision.models.alexnet = alexnet
    torch.hub.load_state_dict_from_url = lambda url, **kw: torch.load(lpips_heads, map_location="cpu")


def build_official_coach(official: Path, size: int = 1024, batch: int = 8, stage: int | None = None):
    """The official Coach with random weights; stage = progressive stage (default: all deltas on)."""
    import torch

    _patch_downloads(ROOT / "tests" / "data" / "lpips_v0.1" / "alex.pth")
    sys.path.insert(0, str(official))
    from models.encoders.model_irse import Backbone
    from models.encoders.psp_encoders import Encoder4Editing, ProgressiveStage
    from models.stylegan2.model import Generator

    from configs import paths_config  # official

    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    torch.save(Backbone(112, 50, drop_ratio=0.6, mode="ir_se").state_dict(), tmp / "ir_se50.pth")
    paths_config.model_paths["ir_se50"] = str(tmp / "ir_se50.pth")

    class _O:
        stylegan_size = size

    enc, dec = Encoder4Editing(50, "ir_se", _O()), Generator(size, 512, 8, channel_multiplier=2)
    sd = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    sd.update({f"decoder.{k}": v for k, v in dec.state_dict().items()})
    n_latent = dec.n_latent
    ckpt = tmp / "e4e_random.pt"
    torch.save(
        {
            "state_dict": sd,
            "latent_avg": torch.randn(n_latent, 512) * 0.1,
            "opts": {
                "encoder_type": "Encoder4Editing",
                "stylegan_size": size,
                "dataset_type": "ffhq_encode",
                "start_from_latent_avg": True,
            },
        },
        ckpt,
    )
    opts = Namespace(
        exp_dir=str(tmp / "exp"),
        dataset_type="ffhq_encode",
        encoder_type="Encoder4Editing",
        batch_size=batch,
        learning_rate=1e-4,
        optim_name="ranger",
        train_decoder=False,
        start_from_latent_avg=True,
        lpips_type="alex",
        lpips_lambda=0.8,
        id_lambda=0.1,
        l2_lambda=1.0,
        stylegan_size=size,
        checkpoint_path=str(ckpt),
        w_discriminator_lambda=0.1,
        w_discriminator_lr=2e-5,
        r1=10.0,
        d_reg_every=16,
        use_w_pool=True,
        w_pool_size=50,
        delta_norm=2,
        delta_norm_lambda=2e-4,
        progressive_steps=[0] + [20000 + 2000 * i for i in range(n_latent - 1)],
        device="cuda:0",
    )
    from criteria import id_loss
    from criteria.lpips.lpips import LPIPS
    from models.discriminator import LatentCodesDiscriminator
    from models.latent_codes_pool import LatentCodesPool
    from models.psp import pSp
    from training.coach import Coach
    from training.ranger import Ranger

    coach = Coach.__new__(Coach)  # skip dataset/logger set-up; the step itself is the official code
    coach.opts, coach.global_step, coach.device = opts, 1, "cuda:0"
    coach.net = pSp(opts).to("cuda:0")
    coach.net.encoder.set_progressive_stage(ProgressiveStage(n_latent - 1 if stage is None else stage))
    coach.lpips_loss = LPIPS(net_type="alex").to("cuda:0").eval()
    coach.id_loss = id_loss.IDLoss().to("cuda:0").eval()
    coach.mse_loss = torch.nn.MSELoss().to("cuda:0").eval()
    coach.requires_grad(coach.net.decoder, False)
    coach.optimizer = Ranger(list(coach.net.encoder.parameters()), lr=opts.learning_rate)
    coach.discriminator = LatentCodesDiscriminator(512, 4).to("cuda:0")
    coach.discriminator_optimizer = torch.optim.Adam(coach.discriminator.parameters(), lr=opts.w_discriminator_lr)
    coach.real_w_pool, coach.fake_w_pool = LatentCodesPool(50), LatentCodesPool(50)
    coach.net.train()

    def step(batch_xy):
        """One iteration of the official `Coach.train` loop body (logging/validation excluded)."""
        loss_dict = coach.train_discriminator(batch_xy)
        x, y, y_hat, latent = coach.forward(batch_xy)
        loss, enc_dict, _ = coach.calc_loss(x, y, y_hat, latent)
        coach.optimizer.zero_grad()
        loss.backward()
        coach.optimizer.step()
        coach.global_step += 1
        return {**loss_dict, **enc_dict}

    def make_batch(seed: int):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(batch, 3, 256, 256, generator=g) * 2 - 1
        return x, x.clone()

    return coach, step, make_batch, ckpt
