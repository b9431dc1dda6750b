"""`e4e-jax tune`: pivotal tuning (PTI) of the photos of an `invert` output, several at once.

    e4e-jax tune --model E4E_BUNDLE --lpips LPIPS_BUNDLE --inversions INVERT_OUT --output TUNED \\
        [--steps 350] [--batch-size 4] [--locality]

Writes invert's layout (files.txt, latents.npy: the pivots, inversions.txt + the tuned reconstructions)
plus generators.txt (each photo's tuned generator, a small bfloat16 delta bundle), metrics.json (L2 and
LPIPS before and after) and report.json. Render with the tuned generators: `e4e-jax edit ... --tuned
TUNED` or `e4e-jax synthesize ... --tuned TUNED`. The work is `e4e_jax.jobs.tune.tune_folder`.
"""

from __future__ import annotations

import argparse

from e4e_jax.commands import job_options

# What an interrupted run keeps, and how to finish it (Ctrl-C: e4e_jax/cli.py).
RESUME_HINT = "the committed batches are kept: finish with the same command and --resume"


def add_parser(sub, help_text: str) -> None:
    from e4e_jax.jobs.tune_options import TuneOptions

    p = sub.add_parser(
        "tune",
        help=help_text,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    job_options.add_options(p, TuneOptions)
    p.set_defaults(run=run, on_interrupt=RESUME_HINT)


def run(args: argparse.Namespace) -> int:
    from e4e_jax.jobs.tune import TuneOptions, tune_folder

    return tune_folder(job_options.options_from_args(TuneOptions, args))
