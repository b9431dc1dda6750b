"""Paper Table 2 on the tiny config (CPU): configuration A (pSp-style W+ encoder, no L_d-reg, no
L_adv) vs D (e4e: progressive Δ with L_d-reg + latent discriminator), same data, steps and seed; and W,
the W encoder (official SingleStyleCodeEncoder: one w for every layer, latent discriminator), the other
end of the trade-off (its latent variation is 0 by construction).

    python benchmarks/tiny_ablation.py --workdir /tmp/ablation --steps 400 [--configs A D W]

For each configuration: the L2 reconstruction loss at the start and end of training (from the run's
metrics.jsonl), then on held-out samples G(w) of the fixed-seed generator (w from unseen z): the
latent variation of the codes E(G(w)) (mean over layers of ‖w_i − mean_j w_j‖) and the latent
recovery ‖E(G(w)) − w‖ (over all layers and channels, the official norm(2, dim=(1, 2))), next to
the recovery of the trivial answer latent_avg. The paper's claim: D gives lower values of both; W is the
variation's lower bound (0), expected at a higher distortion.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def heldout_latents(model_dir: Path, n: int, seed: int = 10_000) -> dict:
    import jax
    import numpy as np

    from e4e_jax.inference import inversion
    from e4e_jax.metrics import definitions
    from e4e_jax.models.stylegan2 import Generator

    model = inversion.load_e4e(str(model_dir))
    gen_vars = model.variables["generator"]
    cfg = model.gen_config
    z = jax.random.normal(jax.random.key(seed), (n, cfg.mapping_in_dim))
    w = Generator(cfg).apply(gen_vars, z, method=Generator.map)
    ws = np.repeat(np.asarray(w)[:, None], cfg.n_latent, axis=1)
    images = model.generator.apply(gen_vars, ws, input_is_latent=True, noise_mode="const")
    if tuple(images.shape[1:3]) != tuple(model.input_hw):  # toy generators already match the encoder input
        images = definitions.to_encoder_frame(images, model.input_hw)
    codes = inversion.encode(model, model.variables, images)
    latent_avg = np.asarray(model.variables["latent_avg"]).reshape(-1, ws.shape[-1])[: ws.shape[1]]
    avg = np.broadcast_to(latent_avg, ws.shape)  # the trivial answer, every image -> latent_avg
    return {
        "latent_recovery_of_latent_avg": float(np.mean(definitions.latent_distance(avg, ws))),
        "latent_variation": float(np.mean(definitions.latent_variation(codes))),
        "latent_recovery": float(np.mean(definitions.latent_distance(codes, ws))),
        "n_heldout": n,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--heldout", type=int, default=64)
    p.add_argument("--configs", nargs="+", default=["A", "D", "W"])
    args = p.parse_args(argv)
    from e4e_jax.configs import tiny
    from e4e_jax.jobs.quickstart import l2_curve
    from e4e_jax.training import train_and_evaluate

    rows = {}
    for abl in args.configs:
        config = tiny.get_config()
        config.ablation = abl
        config.max_steps = args.steps
        work = args.workdir / abl
        train_and_evaluate(config, work)
        curve = l2_curve(work / "metrics.jsonl")
        rows[abl] = {
            "l2_first_quarter": curve["train_l2_first_quarter"],
            "l2_last_quarter": curve["train_l2_last_quarter"],
            **heldout_latents(work / "model", args.heldout),
        }
        print(abl, json.dumps(rows[abl]), flush=True)
    (args.workdir / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"{'config':8}{'L2 first':>10}{'L2 last':>10}{'variation':>12}{'recovery':>12}{'avg recovery':>14}")
    for abl, r in rows.items():
        print(
            f"{abl:8}{r['l2_first_quarter']:10.4f}{r['l2_last_quarter']:10.4f}{r['latent_variation']:12.4f}"
            f"{r['latent_recovery']:12.4f}{r['latent_recovery_of_latent_avg']:14.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
