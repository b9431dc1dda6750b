"""`EvaluateOptions`: the options of the evaluate job (jobs/evaluate.py), declared once (e4e_jax/options.py)
for the job and `e4e-jax evaluate`'s parser. Apart from the job so that building the parser imports no JAX."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

from e4e_jax.options import option

GanspaceEdit = tuple[int, int, int, float]  # (component, start layer, end layer, strength in stds)


@dataclasses.dataclass(frozen=True, kw_only=True)  # keywords only: --output (required) comes after --images
class EvaluateOptions:
    """What to evaluate and how; the fields are the `e4e-jax evaluate` options (see its --help)."""

    model: str | Path = option(type="path_text", help="e4e bundle directory (python -m tools.convert_weights e4e ...)")
    images: Optional[Path] = option(None, type="path", help="folder of the original images")
    inversions: Optional[Path] = option(
        None,
        type="path",
        help="output folder of `e4e-jax invert` (latents.npy, files.txt, the reconstructions listed in "
        "inversions.txt): distortion is measured on those saved reconstructions, as official e4e's "
        "loss-on-images script does (without it: on the generator's unclipped output; metrics.json's "
        "distortion.measured_on says which). The source of each code of an `invert --align` run is its "
        "face's aligned crop, made again with the run's settings (needs the align extra)",
    )
    output: Path = option(type="path", help="folder for metrics.json (created; must not be or hold an input)")
    lpips: Optional[Path] = option(  # None: no LPIPS
        None, type="path_text", help="lpips bundle (without it LPIPS is not computed)"
    )
    inception: Optional[Path] = option(  # None: no FID
        None, type="path_text", help="inception bundle for FID (without it FID is not computed)"
    )
    directions: Sequence[Path] = option(  # the command passes a tuple
        (),
        type="path",
        nargs="*",
        cli_default=[],
        help="InterFaceGAN direction files (.pt) for LEC, e.g. age.pt smile.pt",
    )
    factor: float = option(3.0, type="finite_float", help="InterFaceGAN edit strength for LEC (official: 3)")
    ganspace: Optional[Path] = option(None, type="path", help="GANSpace PCA file (.pt) for LEC")
    ganspace_edits: Sequence[GanspaceEdit] = option(  # the command parses each 'IDX,START,END,STRENGTH'
        (),
        flag="--ganspace-edit",
        action="append",
        cli_default=[],
        metavar="IDX,START,END,STRENGTH",
        help="GANSpace edit for LEC: component, layers start:end (end exclusive), strength in stds; may repeat",
    )
    lec_batch: int = option(  # official metric: its batch size, 8
        1,
        type="positive_int",
        help="average LEC distances over groups of N images before the 1%%/99%% outlier filter, as "
        "official e4e's LEC metric does per batch (its default is 8); 1 = per image",
    )
    num_samples: int = option(
        100, type="non_negative_int", help="random w for the E(G(w)) recovery distance (0 skips it)"
    )
    name: Optional[str] = option(None, help="row name in the printed table (default: the model folder)")
    batch_size: int = option(8, type="positive_int", help="images per step (default 8)")
    seed: int = option(0, type="seed", help="seed for SWD patches/directions and sampled w (0 to 2**32-1)")
    recursive: bool = option(False, help="also read images in sub-folders")
    workers: Optional[int] = option(
        None,
        type="non_negative_int",
        help="image decoding threads (default: CPU count; 0 decodes in the main thread)",
    )
