"""`e4e-jax synthesize`: latents .npy in, images .npy (and optional PNGs) out; the work is
`e4e_jax.jobs.synthesize.synthesize_file`."""

from __future__ import annotations

import argparse
from pathlib import Path

from e4e_jax import choices, cli_args


def add_parser(sub, help_text: str) -> None:
    p = sub.add_parser(
        "synthesize",
        help=help_text,
        description=help_text + ". Writes float32 images (N, H, W, 3) in the generator's raw range (about [-1, 1]).",
    )
    p.add_argument("--model", required=True, help="stylegan2 (or e4e) bundle directory")
    p.add_argument("--latents", required=True, type=Path, help=".npy of W (N, 512) or W+ (N, n_latent, 512) codes")
    p.add_argument(
        "--output", required=True, type=Path, help="output .npy (N, H, W, 3) float32; must not exist unless --overwrite"
    )
    p.add_argument(
        "--png",
        type=Path,
        default=None,
        help="also write one PNG per image into this folder (new or empty unless --overwrite)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --output and the PNGs (NNNNNN.png) of an earlier run in --png",
    )
    p.add_argument(
        "--noise",
        choices=choices.NOISE_MODES,
        default="const",
        help="noise inputs: the stored per-layer buffers (default), fresh random, or none",
    )
    p.add_argument(
        "--truncation",
        type=cli_args.finite_float,
        default=1.0,
        help="truncation psi towards w_avg (default 1: off; 0 renders w_avg)",
    )
    p.add_argument("--batch-size", type=cli_args.positive_int, default=8, help="images rendered per step (default 8)")
    p.add_argument(
        "--modulation",
        choices=choices.MODULATIONS,
        default="auto",
        help="modulated-conv formulation (same maths; 'auto' picks the faster one for the backend)",
    )
    p.add_argument("--dtype", choices=choices.DTYPE_NAMES, default="float32", help="compute dtype")
    p.add_argument("--seed", type=cli_args.seed, default=0, help="seed for --noise random (0 to 2**32-1)")
    p.add_argument(
        "--tuned",
        type=Path,
        default=None,
        help="output folder of `e4e-jax tune`: render row i of --latents with photo i's tuned generator",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from e4e_jax.jobs.synthesize import SynthesizeOptions, synthesize_file

    return synthesize_file(
        SynthesizeOptions(
            model=args.model,
            latents=args.latents,
            output=args.output,
            png=args.png,
            overwrite=args.overwrite,
            noise=args.noise,
            truncation=args.truncation,
            batch_size=args.batch_size,
            modulation=args.modulation,
            dtype=args.dtype,
            seed=args.seed,
            tuned=args.tuned,
        )
    )
