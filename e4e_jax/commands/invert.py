"""`e4e-jax invert`: a folder of images → latents.npy, files.txt, inversions/, skipped report.

The job itself (streaming pipeline, chunk commits, resume, several processes) is
`e4e_jax.batch_inversion`; this module is its command line. Exit status (e4e_jax.errors): 0 every image
inverted; 3 partial success (some files skipped, see skipped.txt); 1 nothing could be inverted;
2 bad arguments, model or output folder.
"""

from __future__ import annotations

import argparse
import errno
from pathlib import Path

from e4e_jax import choices, cli_args

DESCRIPTION = """. Writes OUTPUT/latents.npy (N, n_latent, 512) float32 in the sorted order of OUTPUT/files.txt,
reconstructions OUTPUT/inversions/{row:05d}_{name}.jpg listed in OUTPUT/inversions.txt, and OUTPUT/skipped.txt +
report.json for files that could not be used. Results are committed every --chunk-size files: after a kill,
--resume finishes the run with the same outputs. Exit status 3 means partial success (some files skipped).
A ReStyle bundle (python -m tools.convert_weights restyle ...) refines its latents over --iterations steps
from the average image; latents.npy holds the last step's, --save-iterations keeps every step's."""


def add_parser(sub, help_text: str) -> None:
    from e4e_jax import alignment
    from e4e_jax.batch_inversion import job, workers
    from e4e_jax.errors import install_hint

    p = sub.add_parser("invert", help=help_text, description=help_text + DESCRIPTION)
    p.add_argument(
        "--model",
        required=True,
        help="e4e or ReStyle bundle directory (python -m tools.convert_weights e4e|restyle ...)",
    )
    p.add_argument("--images", required=True, type=Path, help="folder of images (jpg, png, bmp, webp, tif)")
    p.add_argument(
        "--output",
        required=True,
        type=Path,
        help="output folder (created; must be empty unless --resume or --overwrite)",
    )
    p.add_argument(
        "--batch-size",
        type=cli_args.positive_int,
        default=8,
        help="images per device batch (default 8; 32 fills a large GPU)",
    )
    p.add_argument("--recursive", action="store_true", help="also read images in sub-folders")
    p.add_argument(
        "--no-images",
        action="store_true",
        help="latents only: skip the generator and write no reconstructions (the official --latents_only)",
    )
    p.add_argument(
        "--image-format",
        choices=sorted(workers.IMAGE_FORMATS),
        default="jpg",
        help="reconstruction format (default jpg, as the official script; png is lossless)",
    )
    p.add_argument(
        "--jpeg-quality",
        type=cli_args.int_in(1, 100),
        default=75,
        help="quality of jpg/webp reconstructions (default 75, PIL's and the official script's)",
    )
    p.add_argument(
        "--image-size",
        type=cli_args.positive_int,
        default=None,
        help="save reconstructions downscaled to this width (height keeps the aspect), e.g. 256",
    )
    p.add_argument(
        "--iterations",
        type=cli_args.positive_int,
        default=None,
        help="ReStyle bundles: refinement steps from the average image (default: the bundle's, officially 5)",
    )
    p.add_argument(
        "--save-iterations",
        action="store_true",
        help="ReStyle bundles: also write OUTPUT/latents_iterations.npy (N, iterations, n_latent, 512), "
        "every step's latents",
    )
    p.add_argument("--dtype", choices=choices.DTYPE_NAMES, default="float32", help="compute dtype")
    p.add_argument(
        "--modulation",
        choices=choices.MODULATIONS,
        default="auto",
        help="modulated-conv formulation of the generator (same maths)",
    )
    p.add_argument(
        "--workers",
        type=cli_args.positive_int,
        default=None,
        help="image decoder processes (default: CPU count)",
    )
    p.add_argument(
        "--writers",
        type=cli_args.positive_int,
        default=None,
        help="image encoder/writer processes (default: half the CPU count, at least 2)",
    )
    p.add_argument(
        "--chunk-size",
        type=cli_args.positive_int,
        default=job.DEFAULT_CHUNK,
        help=f"files per committed chunk (default {job.DEFAULT_CHUNK}): a kill loses at most the chunks in flight",
    )
    p.add_argument("--resume", action="store_true", help="finish an interrupted run into the same --output")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a non-empty --output, removing only what an earlier invert wrote there",
    )
    p.add_argument(
        "--fast-decode",
        action="store_true",
        help="decode JPEGs at reduced size before the resize "
        "(faster; NOT the official pixels: see BUILD_NOTES.md for the drift)",
    )
    p.add_argument(
        "--align", action="store_true", help=f"FFHQ-align faces first (needs the align extra: {install_hint('align')})"
    )
    p.add_argument(
        "--faces",
        choices=("largest", "all"),
        default="largest",
        help="with --align: invert the largest face of each photo, or every face",
    )
    p.add_argument(
        "--align-size",
        type=cli_args.int_in(1, alignment.MAX_OUTPUT_SIZE),
        default=alignment.DEFAULT_OUTPUT_SIZE,
        help=f"with --align: size of the aligned crop before the encoder's resize (default "
        f"{alignment.DEFAULT_OUTPUT_SIZE}, FFHQ; at most {alignment.MAX_OUTPUT_SIZE})",
    )
    p.add_argument(
        "--landmarks",
        default=None,
        help="with --align: dlib 68-point landmark model file (default: the one in face-recognition-models)",
    )
    cache = p.add_mutually_exclusive_group()
    cache.add_argument(
        "--compile-cache",
        default=None,
        metavar="DIR",
        help="JAX persistent compilation cache (default: $E4E_JAX_CACHE_DIR or ~/.cache/e4e-jax/xla)",
    )
    cache.add_argument("--no-compile-cache", action="store_true", help="compile afresh, keep nothing")
    p.add_argument(
        "--coordinator-address",
        default=None,
        help="HOST:PORT of process 0 for a multi-process run "
        "(or JAX_COORDINATOR_ADDRESS; auto-detected on Cloud TPU / SLURM with --auto-distributed)",
    )
    p.add_argument(
        "--num-processes", type=cli_args.positive_int, default=None, help="processes in the run (or JAX_NUM_PROCESSES)"
    )
    p.add_argument(
        "--process-id", type=cli_args.non_negative_int, default=None, help="this process's index (or JAX_PROCESS_ID)"
    )
    p.add_argument("--auto-distributed", action="store_true", help="let JAX detect the cluster (TPU pod, SLURM)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    p.set_defaults(run=run, on_interrupt=RESUME_HINT)


# What an interrupted or failed run keeps, and how to finish it (Ctrl-C: e4e_jax/cli.py).
RESUME_HINT = "the committed chunks are kept: finish with the same command and --resume"
# Write failures caused by the machine, not by a bug (the disk full, read-only, failing): one line and
# the way to finish the run, not a traceback.
_ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM)


def run(args: argparse.Namespace) -> int:
    from e4e_jax.batch_inversion import job

    if args.resume and args.overwrite:
        from e4e_jax.errors import UserError

        raise UserError("--resume and --overwrite contradict each other; pass one")
    opts = job.InvertOptions(
        model=args.model,
        images=args.images,
        output=args.output,
        batch_size=args.batch_size,
        recursive=args.recursive,
        image_format=None if args.no_images else args.image_format,
        jpeg_quality=args.jpeg_quality,
        image_size=args.image_size,
        dtype=args.dtype,
        modulation=args.modulation,
        workers=args.workers,
        writers=args.writers,
        chunk_size=args.chunk_size,
        resume=args.resume,
        overwrite=args.overwrite,
        fast_decode=args.fast_decode,
        align=args.align,
        faces=args.faces,
        align_size=args.align_size,
        landmarks=args.landmarks,
        compile_cache="" if args.no_compile_cache else args.compile_cache,
        quiet=args.quiet,
        iterations=args.iterations,
        save_iterations=args.save_iterations,
    )
    import concurrent.futures.process

    from e4e_jax.errors import UserError

    try:
        return job.invert_folder(
            opts,
            distributed={
                "coordinator_address": args.coordinator_address,
                "num_processes": args.num_processes,
                "process_id": args.process_id,
                "auto": args.auto_distributed,
            },
        )
    except OSError as e:
        if e.errno not in _ENVIRONMENT_ERRNOS:
            raise
        raise UserError(f"{e.filename or args.output}: {e.strerror or e}; {RESUME_HINT} once that is fixed") from e
    except concurrent.futures.process.BrokenProcessPool as e:
        raise UserError(
            f"a decoder or writer process died ({e}; killed, or out of memory?); {RESUME_HINT} "
            "(with fewer --workers / --writers if memory is short)"
        ) from e
