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
from pathlib import Path

from e4e_jax import choices, cli_args

# What an interrupted run keeps, and how to finish it (Ctrl-C: e4e_jax/cli.py).
RESUME_HINT = "the committed batches are kept: finish with the same command and --resume"


def add_parser(sub, help_text: str) -> None:
    from e4e_jax.batch_inversion import workers

    p = sub.add_parser(
        "tune",
        help=help_text,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--model", required=True, help="the e4e bundle the photos were inverted with (its generator)")
    p.add_argument(
        "--lpips",
        required=True,
        help="lpips bundle for the objective (official PTI: alex; python -m tools.convert_weights lpips ...)",
    )
    p.add_argument(
        "--inversions",
        required=True,
        type=Path,
        help="output folder of `e4e-jax invert` (files.txt, latents.npy): its latents are the pivots",
    )
    p.add_argument(
        "--output",
        required=True,
        type=Path,
        help="output folder (created; must be empty unless --resume or --overwrite; never an input)",
    )
    p.add_argument(
        "--images", type=Path, default=None, help="folder of the photos, if they moved since `invert` listed them"
    )
    p.add_argument(
        "--steps",
        type=cli_args.positive_int,
        default=None,
        help="most tuning steps per photo (default 350, official PTI); a photo stops early once its LPIPS <= 0.06",
    )
    p.add_argument(
        "--batch-size",
        type=cli_args.positive_int,
        default=4,
        help="photos tuned together, each with its own generator (default 4); memory grows with it",
    )
    p.add_argument(
        "--locality",
        action="store_true",
        help="add PTI's locality regulariser (off by default, as official PTI): keeps the generator "
        "unchanged away from the pivot",
    )
    p.add_argument(
        "--seed", type=cli_args.seed, default=0, help="seed of the locality regulariser's samples (0 to 2**32-1)"
    )
    p.add_argument(
        "--image-format",
        choices=sorted(workers.IMAGE_FORMATS),
        default="jpg",
        help="reconstruction format (default jpg, as invert; png is lossless)",
    )
    p.add_argument(
        "--jpeg-quality", type=cli_args.int_in(1, 100), default=75, help="quality of jpg/webp reconstructions"
    )
    p.add_argument(
        "--image-size",
        type=cli_args.positive_int,
        default=None,
        help="save reconstructions downscaled to this width (height keeps the aspect), as invert",
    )
    p.add_argument(
        "--modulation",
        choices=choices.MODULATIONS,
        default="auto",
        help="modulated-conv formulation of the generator (same maths)",
    )
    p.add_argument(
        "--dtype",
        choices=choices.DTYPE_NAMES,
        default="float32",
        help="compute dtype of the generator and LPIPS (default float32, as official PTI; parameters stay float32)",
    )
    p.add_argument("--resume", action="store_true", help="finish an interrupted run into the same --output")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a non-empty --output, removing only what an earlier tune wrote there",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    p.set_defaults(run=run, on_interrupt=RESUME_HINT)


def run(args: argparse.Namespace) -> int:
    from e4e_jax.jobs.tune import TuneOptions, tune_folder

    return tune_folder(
        TuneOptions(
            model=args.model,
            lpips=args.lpips,
            inversions=args.inversions,
            output=args.output,
            images=args.images,
            steps=args.steps,
            batch_size=args.batch_size,
            locality=args.locality,
            image_format=args.image_format,
            jpeg_quality=args.jpeg_quality,
            image_size=args.image_size,
            modulation=args.modulation,
            dtype=args.dtype,
            seed=args.seed,
            resume=args.resume,
            overwrite=args.overwrite,
            quiet=args.quiet,
        )
    )
