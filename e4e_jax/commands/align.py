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

from e4e_jax.commands import job_options


def add_parser(sub, help_text: str) -> None:
    from e4e_jax.errors import install_hint
    from e4e_jax.jobs.align import AlignOptions

    p = sub.add_parser(
        "align",
        help=help_text,
        description=f"FFHQ-align the faces of a folder of photos (needs the align extra: {install_hint('align')}).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    job_options.add_options(p, AlignOptions)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from e4e_jax.jobs.align import AlignOptions, align_folder

    return align_folder(job_options.options_from_args(AlignOptions, args))
