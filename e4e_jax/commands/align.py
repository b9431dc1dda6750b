"""`e4e-jax align`: FFHQ-align the faces of a folder of photos (needs the `align` extra).

    e4e-jax align --images photos/ --output aligned/
    e4e-jax align --images photos/ --output aligned/ --faces all --output-size 256 --workers 8

Writes OUTPUT/<stem>.png (largest face of each photo), or OUTPUT/<stem>_face<K>.png for every face
with --faces all (K = 0 for the largest, then by size); OUTPUT/landmarks/<stem>.json per photo
(detection box, 68 landmarks, crop quad in the photo's pixels; written last, it marks the photo
done); OUTPUT/skipped.txt and OUTPUT/report.json. A photo without a face, a file that is not an
image, or a folder entry that cannot be one (a folder named x.png, a broken link or a link loop, a
name with a line break or not in UTF-8) is skipped with its reason, printed and in skipped.txt, and
never stops the run. --resume finishes an interrupted run (photos already done are kept); on a finished
run it does nothing and says so, as `invert --resume`. Workers end with the main process, even when it
is killed.
Exit status: 0 every photo gave a face; 3 some were skipped; 1 none gave a face; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses

from e4e_jax import choices
from e4e_jax.commands import cli_args
from e4e_jax.commands.cli_args import int_in, non_negative_int, positive_int


def add_parser(sub, help_text: str) -> None:
    from e4e_jax.errors import install_hint
    from e4e_jax.inference import alignment

    p = sub.add_parser(
        "align",
        help=help_text,
        description=f"FFHQ-align the faces of a folder of photos (needs the align extra: {install_hint('align')}).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--images", required=True, type=cli_args.path, help="folder of photos (jpg, png, bmp, webp, tif)")
    p.add_argument(
        "--output", required=True, type=cli_args.path, help="output folder (created; must not overlap --images)"
    )
    p.add_argument(
        "--faces",
        choices=choices.FACES,
        default=choices.FACES[0],
        help="align the largest face of each photo (default), or every face found",
    )
    p.add_argument(
        "--output-size",
        type=int_in(1, alignment.MAX_OUTPUT_SIZE),
        default=alignment.DEFAULT_OUTPUT_SIZE,
        help=f"side of the aligned images in px (default {alignment.DEFAULT_OUTPUT_SIZE}, as FFHQ; at most "
        f"{alignment.MAX_OUTPUT_SIZE}: the memory grows with its square)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="worker processes (default: the CPUs available; 1 = in this process)",
    )
    p.add_argument(
        "--landmarks",
        type=cli_args.path,
        default=None,
        metavar="FILE",
        help="dlib 68-point shape-predictor file (default: the one in face-recognition-models)",
    )
    p.add_argument(
        "--detect-size",
        type=non_negative_int,
        default=alignment.DEFAULT_DETECT_SIZE,
        metavar="PX",
        help="look for faces in a copy at most this long (px), then in the full photo if none is "
        f"found (default {alignment.DEFAULT_DETECT_SIZE}; 0 = always at full resolution, slower, "
        "finds faces down to ~40 px); landmarks are always fitted at full resolution",
    )
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="finish an earlier run into --output: photos already done are kept, not redone",
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="allow an --output an earlier align wrote: its files are removed, every photo is redone",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from e4e_jax.jobs.align import AlignOptions, align_folder

    return align_folder(AlignOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(AlignOptions)}))
