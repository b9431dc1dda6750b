"""`TuneOptions`: the options of the tune job (jobs/tune.py), declared once (e4e_jax/options.py) for the job,
`e4e-jax tune`'s parser and the resume plan. Apart from the job so that building the parser imports no JAX."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from e4e_jax import choices
from e4e_jax.jobs.invert.options import IMAGE_FORMATS
from e4e_jax.options import option


@dataclasses.dataclass(frozen=True)
class TuneOptions:
    """The `e4e-jax tune` options (see its --help)."""

    model: str | Path = option(  # e4e bundle (its generator is the base)
        type="path_text", plan=True, help="the e4e bundle the photos were inverted with (its generator)"
    )
    lpips: str | Path = option(
        type="path_text",
        plan=True,
        help="lpips bundle for the objective (official PTI: alex; python -m tools.convert_weights lpips ...)",
    )
    inversions: Path = option(
        type="path",
        plan=True,
        help="output folder of `e4e-jax invert` (files.txt, latents.npy): its latents are the pivots",
    )
    output: Path = option(
        type="path", help="output folder (created; must be empty unless --resume or --overwrite; never an input)"
    )
    images: Optional[Path] = option(  # where the photos are, if files.txt's paths moved
        None, type="path", help="folder of the photos, if they moved since `invert` listed them"
    )
    steps: Optional[int] = option(  # None: official 350 (in the plan as its "pti" settings)
        None,
        type="positive_int",
        help="most tuning steps per photo (default 350, official PTI); a photo stops early once its LPIPS <= 0.06",
    )
    batch_size: int = option(  # the plan holds it rounded to the devices
        4,
        type="positive_int",
        plan=True,
        help="photos tuned together, each with its own generator (default 4); memory grows with it",
    )
    locality: bool = option(  # in the plan as its "pti" settings
        False,
        help="add PTI's locality regulariser (off by default, as official PTI): keeps the generator "
        "unchanged away from the pivot",
    )
    seed: int = option(0, type="seed", plan=True, help="seed of the locality regulariser's samples (0 to 2**32-1)")
    image_format: str = option(
        "jpg",
        choices=tuple(sorted(IMAGE_FORMATS)),
        plan=True,
        help="reconstruction format (default jpg, as invert; png is lossless)",
    )
    jpeg_quality: int = option(75, type=("int_in", 1, 100), plan=True, help="quality of jpg/webp reconstructions")
    image_size: Optional[int] = option(  # width of saved reconstructions; None: full size
        None,
        type="positive_int",
        plan=True,
        help="save reconstructions downscaled to this width (height keeps the aspect), as invert",
    )
    modulation: str = option(
        "auto",
        choices=choices.MODULATIONS,
        plan=True,
        help="modulated-conv formulation of the generator (same maths)",
    )
    dtype: str = option(
        "float32",
        choices=choices.DTYPE_NAMES,
        plan=True,
        help="compute dtype of the generator and LPIPS (default float32, as official PTI; parameters stay float32)",
    )
    resume: bool = option(False, help="finish an interrupted run into the same --output")
    overwrite: bool = option(
        False, help="start over in an --output an earlier tune wrote, removing only what it wrote there"
    )
    quiet: bool = option(False, help="no progress bar or messages")
