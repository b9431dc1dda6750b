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

from e4e_jax.commands import cli_args, job_options
from e4e_jax.errors import UserError


def add_parser(sub, help_text: str) -> None:
    from e4e_jax.jobs.evaluate_options import EvaluateOptions

    p = sub.add_parser(
        "evaluate",
        help=help_text,
        description=help_text + ": distortion (L2, LPIPS), perceptual "
        "quality (FID, SWD), editability (LEC) and latent measures (W+ variation, E(G(w)) distance). "
        "Writes OUTPUT/metrics.json and prints a table.",
    )
    job_options.add_options(p, EvaluateOptions)
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

    opts = job_options.options_from_args(
        EvaluateOptions,
        args,
        directions=tuple(args.directions),
        ganspace_edits=tuple(map(parse_ganspace_edit, args.ganspace_edits)),
    )
    return evaluate_folder(opts)
