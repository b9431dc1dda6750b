"""`EditOptions`: the options of the edit job (jobs/edit.py), declared once (e4e_jax/options.py) for the job and
`e4e-jax edit`'s parser. Apart from the job so that building the parser imports no JAX."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

from e4e_jax.options import option


@dataclasses.dataclass(frozen=True, kw_only=True)  # keywords only: --strengths (required) comes late in --help
class EditOptions:
    """One edit sweep; the fields are the `e4e-jax edit` options (see its --help). Exactly one of
    interfacegan, ganspace, sefa names the direction."""

    model: str | Path = option(type="path_text", help="e4e (or stylegan2) bundle whose generator renders the edits")
    latents: Path = option(
        type="path",
        help="an `invert` output folder (latents.npy + files.txt) or a .npy of W+ codes (N, n_latent, 512)",
    )
    output: Path = option(
        type="path", help="output folder (new or empty unless --overwrite; never one holding an input)"
    )
    overwrite: bool = option(
        False,
        help="write into a non-empty --output, replacing only edit's own files there (latents.npy, "
        "grid.png, images/NNNNN_s*.png)",
    )
    interfacegan: Optional[Path] = option(
        None,
        type="path",
        metavar="DIRECTION.pt",
        group="direction",
        group_required=True,
        help="InterFaceGAN direction file",
    )
    ganspace: Optional[Path] = option(  # PCA file, with component and layers 'START-END'
        None, type="path", metavar="PCA.pt", group="direction", help="GANSpace PCA file (mean/comp/std)"
    )
    sefa: Optional[int] = option(
        None,
        type="non_negative_int",
        metavar="INDEX",
        group="direction",
        help="SeFa eigenvector index (0 = strongest)",
    )
    component: Optional[int] = option(None, type="non_negative_int", help="GANSpace principal component index")
    layers: Optional[str] = option(
        None,
        help="GANSpace: START-END (end exclusive, as the official (pc, start, end, strength)); "
        "SeFa: w indices to factorise and edit, e.g. 'all', '0-5' (inclusive), '0,2,4'",
    )
    strengths: Sequence[float] = option(
        type="finite_float",
        nargs="+",
        help="edit strengths (InterFaceGAN factor, GANSpace target coordinate in stds, SeFa step)",
    )
    batch_size: int = option(8, type="positive_int", help="images rendered per step (default 8)")
    tuned: Optional[Path] = option(
        None,
        type="path",
        help="output folder of `e4e-jax tune` for these latents: render each photo (and its edits) with its own "
        "tuned generator; the edits move the latents as without it",
    )
    max_grid_rows: int = option(8, type="positive_int", help="images (rows) shown in grid.png (default 8)")
