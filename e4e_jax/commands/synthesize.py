"""`e4e-jax synthesize`: latents .npy in, images .npy (and optional PNGs) out; the work is
`e4e_jax.jobs.synthesize.synthesize_file`."""

from __future__ import annotations

import argparse

from e4e_jax.commands import job_options


def add_parser(sub, help_text: str) -> None:
    from e4e_jax.jobs.synthesize import SynthesizeOptions

    p = sub.add_parser(
        "synthesize",
        help=help_text,
        description=help_text + ". Writes float32 images (N, H, W, 3) in the generator's raw range (about [-1, 1]).",
    )
    job_options.add_options(p, SynthesizeOptions)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from e4e_jax.jobs.synthesize import SynthesizeOptions, synthesize_file

    return synthesize_file(job_options.options_from_args(SynthesizeOptions, args))
