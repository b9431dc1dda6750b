"""`e4e-jax synthesize`: latents .npy in, images .npy (and optional PNGs) out."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_parser(sub, help_text: str) -> None:
    p = sub.add_parser("synthesize", help=help_text, description=help_text + ". Writes float32 images "
                       "(N, H, W, 3) in the generator's raw range (about [-1, 1]).")
    p.add_argument("--model", required=True, help="stylegan2 (or e4e) bundle directory")
    p.add_argument("--latents", required=True, type=Path, help=".npy of W (N, 512) or W+ (N, n_latent, 512) codes")
    p.add_argument("--output", required=True, type=Path, help="output .npy (N, H, W, 3) float32")
    p.add_argument("--png", type=Path, default=None, help="also write one PNG per image into this folder")
    p.add_argument("--noise", choices=("const", "random", "none"), default="const",
                   help="noise inputs: the stored per-layer buffers (default), fresh random, or none")
    p.add_argument("--truncation", type=float, default=1.0, help="truncation psi towards w_avg (default 1: off)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--modulation", choices=("auto", "grouped", "activation"), default="auto",
                   help="modulated-conv formulation (same maths; 'auto' picks the faster one for the backend)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    p.add_argument("--seed", type=int, default=0, help="seed for --noise random")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from e4e_jax import generate
    from e4e_jax.bundle import BundleError

    try:
        cfg, variables = generate.load_generator(args.model)
        latents = generate.as_wplus(np.load(args.latents), cfg, str(args.latents))
    except (BundleError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = latents.shape[0]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".partial.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, cfg.size, cfg.size, 3))
    if args.png:
        from e4e_jax.data.folder import save_png

        args.png.mkdir(parents=True, exist_ok=True)
    try:
        batches = generate.iter_synthesize(cfg, variables, latents, batch_size=args.batch_size, seed=args.seed,
                                           modulation=args.modulation, dtype=args.dtype, noise_mode=args.noise,
                                           truncation=args.truncation)
        done = 0
        with tqdm(total=n, desc="synthesize", unit="img") as bar:
            for imgs in batches:
                out[done:done + len(imgs)] = imgs
                if args.png:
                    for i, img in enumerate(imgs):
                        save_png(args.png / f"{done + i:06d}.png", img)
                done += len(imgs)
                bar.update(len(imgs))
        out.flush()
        del out
        os.replace(tmp, args.output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    print(f"wrote {n} images to {args.output}")
    return 0
