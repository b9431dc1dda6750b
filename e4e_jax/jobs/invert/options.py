"""`InvertOptions`: every option of the invert job, declared once (e4e_jax/options.py): its flag, help,
default and type for `e4e-jax invert`, and whether a `--resume` must match it (the plan, plan.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from e4e_jax import choices
from e4e_jax.errors import install_hint
from e4e_jax.inference import alignment
from e4e_jax.options import option

DEFAULT_CHUNK = 256  # files per committed chunk: what a kill can lose, and the unit of work per process
IMAGE_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}  # reconstruction format -> PIL's name
FACES = ("largest", "all")


@dataclasses.dataclass(frozen=True)
class InvertOptions:
    model: str = option(
        type="path_text",
        plan=True,
        help="e4e or ReStyle bundle directory (python -m tools.convert_weights e4e|restyle ...)",
    )
    images: Path = option(type="path", plan=True, help="folder of images (jpg, png, bmp, webp, tif)")
    output: Path = option(type="path", help="output folder (created; must be empty unless --resume or --overwrite)")
    batch_size: int = option(  # the plan holds it rounded to the devices (plan.make_plan)
        8, type="positive_int", plan=True, help="images per device batch (default 8; 32 fills a large GPU)"
    )
    recursive: bool = option(False, plan=True, help="also read images in sub-folders")
    no_images: bool = option(
        False,
        help="latents only: skip the generator and write no reconstructions (the official --latents_only)",
    )  # sets image_format to None
    image_format: Optional[str] = option(  # None: latents only (no generator pass)
        "jpg",
        choices=tuple(sorted(IMAGE_FORMATS)),
        plan=True,
        help="reconstruction format (default jpg, as the official script; png is lossless)",
    )
    jpeg_quality: int = option(
        75,
        type=("int_in", 1, 100),
        plan=True,
        help="quality of jpg/webp reconstructions (default 75, PIL's and the official script's)",
    )
    image_size: Optional[int] = option(  # width of saved reconstructions (height follows); None: full
        None,
        type="positive_int",
        plan=True,
        help="save reconstructions downscaled to this width (height keeps the aspect), e.g. 256",
    )
    # ReStyle bundles (inverters.py): refinement iterations (None: the bundle's count; `invert_folder` sets
    # the count it uses before the plan is made, and None for an e4e bundle); keep every iteration's latents.
    iterations: Optional[int] = option(
        None,
        type="positive_int",
        plan=True,
        help="ReStyle bundles: refinement steps from the average image (default: the bundle's, officially 5)",
    )
    save_iterations: bool = option(
        False,
        plan=True,
        help="ReStyle bundles: also write OUTPUT/latents_iterations.npy (N, iterations, n_latent, 512), "
        "every step's latents",
    )
    dtype: str = option("float32", choices=choices.DTYPE_NAMES, plan=True, help="compute dtype")
    modulation: str = option(
        "auto", choices=choices.MODULATIONS, plan=True, help="modulated-conv formulation of the generator (same maths)"
    )
    workers: Optional[int] = option(  # None: one per CPU, at most one per decode group
        None, type="positive_int", help="image decoder processes (default: CPU count)"
    )
    writers: Optional[int] = option(
        None, type="positive_int", help="image encoder/writer processes (default: half the CPU count, at least 2)"
    )
    chunk_size: int = option(
        DEFAULT_CHUNK,
        type="positive_int",
        plan=True,
        help=f"files per committed chunk (default {DEFAULT_CHUNK}): a kill loses at most the chunks in flight",
    )
    resume: bool = option(False, help="finish an interrupted run into the same --output")
    overwrite: bool = option(
        False, help="start over in a non-empty --output, removing only what an earlier invert wrote there"
    )
    fast_decode: bool = option(
        False,
        plan=True,
        help="decode JPEGs at reduced size before the resize "
        "(faster; NOT the official pixels: see BUILD_NOTES.md for the drift)",
    )
    align: bool = option(
        False, plan=True, help=f"FFHQ-align faces first (needs the align extra: {install_hint('align')})"
    )
    faces: str = option(
        "largest", choices=FACES, plan=True, help="with --align: invert the largest face of each photo, or every face"
    )
    align_size: int = option(
        alignment.DEFAULT_OUTPUT_SIZE,
        type=("int_in", 1, alignment.MAX_OUTPUT_SIZE),
        plan=True,
        help=f"with --align: size of the aligned crop before the encoder's resize (default "
        f"{alignment.DEFAULT_OUTPUT_SIZE}, FFHQ; at most {alignment.MAX_OUTPUT_SIZE})",
    )
    landmarks: Optional[str] = option(
        None,
        type="path_text",
        help="with --align: dlib 68-point landmark model file (default: the one in face-recognition-models)",
    )
    compile_cache: Optional[str] = option(  # directory; "" switches the cache off
        None,
        type="path_text",
        metavar="DIR",
        group="compile_cache",
        help="JAX persistent compilation cache (default: $E4E_JAX_CACHE_DIR or ~/.cache/e4e-jax/xla)",
    )
    no_compile_cache: bool = option(False, group="compile_cache", help="compile afresh, keep nothing")  # sets ""
    coordinator_address: Optional[str] = option(
        None,
        help="HOST:PORT of process 0 for a multi-process run "
        "(or JAX_COORDINATOR_ADDRESS; auto-detected on Cloud TPU / SLURM with --auto-distributed)",
    )
    num_processes: Optional[int] = option(None, type="positive_int", help="processes in the run (or JAX_NUM_PROCESSES)")
    process_id: Optional[int] = option(None, type="non_negative_int", help="this process's index (or JAX_PROCESS_ID)")
    auto_distributed: bool = option(False, help="let JAX detect the cluster (TPU pod, SLURM)")
    quiet: bool = option(False, help="no progress bar or messages")

    def __post_init__(self):
        # The two "off" switches are stored as the value they mean (what the job reads).
        if self.no_images:
            object.__setattr__(self, "image_format", None)
        if self.no_compile_cache:
            object.__setattr__(self, "compile_cache", "")

    def distributed(self) -> dict:
        """The keyword arguments of runtime.distributed.initialize for these options."""
        return {
            "coordinator_address": self.coordinator_address,
            "num_processes": self.num_processes,
            "process_id": self.process_id,
            "auto": self.auto_distributed,
        }
