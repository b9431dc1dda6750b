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
from pathlib import Path

from e4e_jax import cli_args

# The arguments only; the work is `e4e_jax.jobs.edit.edit_folder`.


def add_parser(sub, help_text: str) -> None:
    p = sub.add_parser(
        "edit",
        help=help_text,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--model", required=True, help="e4e (or stylegan2) bundle whose generator renders the edits")
    p.add_argument(
        "--latents",
        required=True,
        type=Path,
        help="an `invert` output folder (latents.npy + files.txt) or a .npy of W+ codes (N, n_latent, 512)",
    )
    p.add_argument(
        "--output",
        required=True,
        type=Path,
        help="output folder (new or empty unless --overwrite; never one holding an input)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --output, replacing only edit's own files there (latents.npy, "
        "grid.png, images/NNNNN_s*.png)",
    )
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--interfacegan", type=Path, metavar="DIRECTION.pt", help="InterFaceGAN direction file")
    kind.add_argument("--ganspace", type=Path, metavar="PCA.pt", help="GANSpace PCA file (mean/comp/std)")
    kind.add_argument(
        "--sefa", type=cli_args.non_negative_int, metavar="INDEX", help="SeFa eigenvector index (0 = strongest)"
    )
    p.add_argument("--component", type=cli_args.non_negative_int, help="GANSpace principal component index")
    p.add_argument(
        "--layers",
        default=None,
        help="GANSpace: START-END (end exclusive, as the official (pc, start, end, strength)); "
        "SeFa: w indices to factorise and edit, e.g. 'all', '0-5' (inclusive), '0,2,4'",
    )
    p.add_argument(
        "--strengths",
        type=cli_args.finite_float,
        nargs="+",
        required=True,
        help="edit strengths (InterFaceGAN factor, GANSpace target coordinate in stds, SeFa step)",
    )
    p.add_argument("--batch-size", type=cli_args.positive_int, default=8, help="images rendered per step (default 8)")
    p.add_argument(
        "--tuned",
        type=Path,
        default=None,
        help="output folder of `e4e-jax tune` for these latents: render each photo (and its edits) with its own "
        "tuned generator; the edits move the latents as without it",
    )
    p.add_argument(
        "--max-grid-rows", type=cli_args.positive_int, default=8, help="images (rows) shown in grid.png (default 8)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from e4e_jax.jobs.edit import EditOptions, edit_folder

    return edit_folder(
        EditOptions(
            model=args.model,
            latents=args.latents,
            output=args.output,
            strengths=tuple(args.strengths),
            interfacegan=args.interfacegan,
            ganspace=args.ganspace,
            sefa=args.sefa,
            component=args.component,
            layers=args.layers,
            batch_size=args.batch_size,
            max_grid_rows=args.max_grid_rows,
            overwrite=args.overwrite,
            tuned=args.tuned,
        )
    )
