"""`e4e-jax quickstart`: the whole system on the embedded default, on CPU, in minutes.

1. train   – an e4e encoder (every loss of the paper; configs/tiny.py) learns to invert the samples of
             a small fixed-seed StyleGAN2 that stands in for a pretrained generator;
2. invert  – held-out samples of that generator (never seen in training) are inverted (as `e4e-jax invert`);
3. edit    – the inversions are edited along the generator's strongest SeFa direction (as `e4e-jax edit`);
4. report  – WORKDIR/quickstart_grid.png (source | inversion | edits) and WORKDIR/metrics.json
             (reconstruction L2, latent recovery ‖E(G(w)) − w‖, latent variation, training losses),
             then where the model is (WORKDIR/train/model) and the commands to run on it.

The model is a toy: a 32x32 generator of colour blobs with fixed-seed random weights, and a random-weight
LPIPS network; real photos need the official checkpoints, converted (README, "Using official checkpoints").
"""

from __future__ import annotations

import argparse

from e4e_jax.commands import job_options


def add_parser(sub, help_text: str) -> None:
    from e4e_jax.jobs.quickstart import QuickstartOptions

    p = sub.add_parser(
        "quickstart",
        help=help_text,
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    job_options.add_options(p, QuickstartOptions)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from e4e_jax.jobs.quickstart import QuickstartOptions, run_quickstart

    return run_quickstart(job_options.options_from_args(QuickstartOptions, args))
