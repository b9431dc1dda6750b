"""`e4e-jax invert`: a folder of images → latents.npy, files.txt, inversions/, skipped report.

The job itself (streaming pipeline, chunk commits, resume, several processes) is
`e4e_jax.jobs.invert`; this module is its command line. Exit status (e4e_jax.errors): 0 every image
inverted; 3 partial success (some files skipped, see skipped.txt); 1 nothing could be inverted;
2 bad arguments, model or output folder.
"""

from __future__ import annotations

import argparse
import errno

from e4e_jax.commands import job_options

DESCRIPTION = """. Writes OUTPUT/latents.npy (N, n_latent, 512) float32 in the sorted order of OUTPUT/files.txt,
reconstructions OUTPUT/inversions/{row:05d}_{name}.jpg listed in OUTPUT/inversions.txt, and OUTPUT/skipped.txt +
report.json for files that could not be used. Results are committed every --chunk-size files: after a kill,
--resume finishes the run with the same outputs. Exit status 3 means partial success (some files skipped).
A ReStyle bundle (python -m tools.convert_weights restyle ...) refines its latents over --iterations steps
from the average image; latents.npy holds the last step's, --save-iterations keeps every step's."""


def add_parser(sub, help_text: str) -> None:
    from e4e_jax.jobs.invert.options import InvertOptions

    p = sub.add_parser("invert", help=help_text, description=help_text + DESCRIPTION)
    job_options.add_options(p, InvertOptions)
    p.set_defaults(run=run, on_interrupt=RESUME_HINT)


# What an interrupted or failed run keeps, and how to finish it (Ctrl-C: e4e_jax/cli.py).
RESUME_HINT = "the committed chunks are kept: finish with the same command and --resume"
# Write failures caused by the machine, not by a bug (the disk full, read-only, failing): one line and
# the way to finish the run, not a traceback.
_ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM)


def run(args: argparse.Namespace) -> int:
    from e4e_jax.jobs.invert import job

    if args.resume and args.overwrite:
        from e4e_jax.errors import UserError

        raise UserError("--resume and --overwrite contradict each other; pass one")
    opts = job_options.options_from_args(job.InvertOptions, args)
    import concurrent.futures.process

    from e4e_jax.errors import UserError

    try:
        return job.invert_folder(opts)
    except OSError as e:
        if e.errno not in _ENVIRONMENT_ERRNOS:
            raise
        raise UserError(f"{e.filename or args.output}: {e.strerror or e}; {RESUME_HINT} once that is fixed") from e
    except concurrent.futures.process.BrokenProcessPool as e:
        raise UserError(
            f"a decoder or writer process died ({e}; killed, or out of memory?); {RESUME_HINT} "
            "(with fewer --workers / --writers if memory is short)"
        ) from e
