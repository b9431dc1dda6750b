"""`e4e-jax edit`: edit inverted latents (InterFaceGAN, GANSpace, SeFa), render them, write a grid.

    e4e-jax edit --model E4E_BUNDLE --latents INVERT_OUT --output EDITS \
        --interfacegan age.pt --strengths -3 0 3
    e4e-jax edit ... --ganspace ffhq_pca.pt --component 54 --layers 7-8 --strengths -5 5
    e4e-jax edit ... --sefa 0 --layers 0-5 --strengths -5 5

Writes EDITS/latents.npy (F, N, n_latent, 512) for F strengths, EDITS/images/NNNNN_sS.png and
EDITS/grid.png whose rows are (source | inversion | one column per strength).
"""

from __future__ import annotations

import argparse

from e4e_jax.commands import job_options

# The arguments only; the work is `e4e_jax.jobs.edit.edit_folder`.


def add_parser(sub, help_text: str) -> None:
    from e4e_jax.jobs.edit_options import EditOptions

    p = sub.add_parser(
        "edit",
        help=help_text,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    job_options.add_options(p, EditOptions)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from e4e_jax.jobs.edit import EditOptions, edit_folder

    return edit_folder(job_options.options_from_args(EditOptions, args, strengths=tuple(args.strengths)))
