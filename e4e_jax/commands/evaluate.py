"""`e4e-jax evaluate`: the paper's metrics for an e4e bundle on a folder of images -> OUTPUT/metrics.json.

Distortion (L2, LPIPS), perceptual quality (FID, SWD), editability (LEC with InterFaceGAN / GANSpace
edits) and latent-space measures (variation of the W+ codes, E(G(w)) recovery distance); see
e4e_jax/metrics/definitions.py for the definitions; the run itself is e4e_jax/jobs/evaluate.py. Per-image figures
are keyed by the image's path under the evaluated folder (`#faceK` for a face of an `invert --align` run). Exit status
(e4e_jax/errors.py): 0 done; 3 done but some files were skipped; 1 nothing could be evaluated; 2 bad
arguments, model or bundle.
"""

from __future__ import annotations

import argparse

from e4e_jax.commands import cli_args
from e4e_jax.errors import UserError


def add_parser(sub, help_text: str) -> None:
    p = sub.add_parser(
        "evaluate",
        help=help_text,
        description=help_text + ": distortion (L2, LPIPS), perceptual "
        "quality (FID, SWD), editability (LEC) and latent measures (W+ variation, E(G(w)) distance). "
        "Writes OUTPUT/metrics.json and prints a table.",
    )
    p.add_argument(
        "--model",
        required=True,
        type=cli_args.path_text,
        help="e4e bundle directory (python -m tools.convert_weights e4e ...)",
    )
    p.add_argument("--images", type=cli_args.path, default=None, help="folder of the original images")
    p.add_argument(
        "--inversions",
        type=cli_args.path,
        default=None,
        help="output folder of `e4e-jax invert` (latents.npy, files.txt, the reconstructions listed in "
        "inversions.txt): distortion is measured on those saved reconstructions, as official e4e's "
        "loss-on-images script does (without it: on the generator's unclipped output; metrics.json's "
        "distortion.measured_on says which). The source of each code of an `invert --align` run is its "
        "face's aligned crop, made again with the run's settings (needs the align extra)",
    )
    p.add_argument(
        "--output",
        required=True,
        type=cli_args.path,
        help="folder for metrics.json (created; must not be or hold an input)",
    )
    p.add_argument(
        "--lpips", default=None, type=cli_args.path_text, help="lpips bundle (without it LPIPS is not computed)"
    )
    p.add_argument(
        "--inception",
        default=None,
        type=cli_args.path_text,
        help="inception bundle for FID (without it FID is not computed)",
    )
    p.add_argument(
        "--directions",
        type=cli_args.path,
        nargs="*",
        default=[],
        help="InterFaceGAN direction files (.pt) for LEC, e.g. age.pt smile.pt",
    )
    p.add_argument(
        "--factor", type=cli_args.finite_float, default=3.0, help="InterFaceGAN edit strength for LEC (official: 3)"
    )
    p.add_argument("--ganspace", type=cli_args.path, default=None, help="GANSpace PCA file (.pt) for LEC")
    p.add_argument(
        "--ganspace-edit",
        action="append",
        default=[],
        metavar="IDX,START,END,STRENGTH",
        help="GANSpace edit for LEC: component, layers start:end (end exclusive), strength in stds; may repeat",
    )
    p.add_argument(
        "--lec-batch",
        type=cli_args.positive_int,
        default=1,
        help="average LEC distances over groups of N images before the 1%%/99%% outlier filter, as "
        "official e4e's LEC metric does per batch (its default is 8); 1 = per image",
    )
    p.add_argument(
        "--num-samples",
        type=cli_args.non_negative_int,
        default=100,
        help="random w for the E(G(w)) recovery distance (0 skips it)",
    )
    p.add_argument("--name", default=None, help="row name in the printed table (default: the model folder)")
    p.add_argument("--batch-size", type=cli_args.positive_int, default=8, help="images per step (default 8)")
    p.add_argument(
        "--seed", type=cli_args.seed, default=0, help="seed for SWD patches/directions and sampled w (0 to 2**32-1)"
    )
    p.add_argument("--recursive", action="store_true", help="also read images in sub-folders")
    p.add_argument(
        "--workers",
        type=cli_args.non_negative_int,
        default=None,
        help="image decoding threads (default: CPU count; 0 decodes in the main thread)",
    )
    p.set_defaults(run=run)


def parse_ganspace_edit(spec: str) -> tuple[int, int, int, float]:
    """'IDX,START,END,STRENGTH' -> (component, start layer, end layer, strength)."""
    parts = spec.split(",")
    try:
        if len(parts) != 4:
            raise ValueError
        return int(parts[0]), int(parts[1]), int(parts[2]), cli_args.finite_float(parts[3])
    except (ValueError, argparse.ArgumentTypeError):
        raise UserError(
            f"--ganspace-edit {spec!r}: expected IDX,START,END,STRENGTH with a finite strength, e.g. 0,0,5,-2"
        ) from None


def run(args: argparse.Namespace) -> int:
    from e4e_jax.jobs.evaluate import EvaluateOptions, evaluate_folder

    return evaluate_folder(
        EvaluateOptions(
            model=args.model,
            output=args.output,
            images=args.images,
            inversions=args.inversions,
            lpips=args.lpips,
            inception=args.inception,
            directions=tuple(args.directions),
            factor=args.factor,
            ganspace=args.ganspace,
            ganspace_edits=tuple(map(parse_ganspace_edit, args.ganspace_edit)),
            lec_batch=args.lec_batch,
            num_samples=args.num_samples,
            name=args.name,
            batch_size=args.batch_size,
            seed=args.seed,
            recursive=args.recursive,
            workers=args.workers,
        )
    )
