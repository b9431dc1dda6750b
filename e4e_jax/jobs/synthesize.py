"""`synthesize_file(options)`: W or W+ latents (.npy) in, the generator's images out: OUTPUT.npy (N, H, W, 3)
float32 in the generator's raw range (about [-1, 1]) and optionally one PNG per image, PNG/NNNNNN.png (the
`synthesize` command).

The .npy is written through a memory map beside the target and renamed into place at the end; a failed
run leaves neither it nor a partial set of PNGs. Returns the exit code (e4e_jax/errors.py); bad inputs
raise UserError before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from e4e_jax import choices
from e4e_jax.errors import EXIT_OK, UserError
from e4e_jax.images import save_png
from e4e_jax.options import option
from e4e_jax.runtime import pause_points
from e4e_jax.storage import bundle, fileio, outdir
from e4e_jax.storage.variable_checks import require_finite

# What synthesize writes into --png (NNNNNN.png; e4e_jax/storage/outdir.py): all that --overwrite removes there, and
# all the folder may hold.
PNG_NAME = "[0-9][0-9][0-9][0-9][0-9][0-9].png"
PNG_OUTPUTS = outdir.Outputs("synthesize", (PNG_NAME,))
NPY_SUFFIX = ".npy"  # what --output holds, so what its name must say
BATCH_POINT = "synthesize-batch-done"  # pause point (pause_points.py)


@dataclasses.dataclass(frozen=True)
class SynthesizeOptions:
    """The `e4e-jax synthesize` options (see its --help)."""

    model: str | Path = option(type="path_text", help="stylegan2 (or e4e) bundle directory")
    latents: Path = option(type="path", help=".npy of W (N, 512) or W+ (N, n_latent, 512) codes")
    output: Path = option(type="path", help="output .npy (N, H, W, 3) float32; must not exist unless --overwrite")
    png: Optional[Path] = option(
        None, type="path", help="also write one PNG per image into this folder (new or empty unless --overwrite)"
    )
    overwrite: bool = option(
        False, help="replace an existing --output and the PNGs (NNNNNN.png) of an earlier run in --png"
    )
    noise: str = option(
        "const",
        choices=choices.NOISE_MODES,
        help="noise inputs: the stored per-layer buffers (default), fresh random, or none",
    )
    truncation: float = option(  # psi towards w_avg (1: off)
        1.0, type="finite_float", help="truncation psi towards w_avg (default 1: off; 0 renders w_avg)"
    )
    batch_size: int = option(8, type="positive_int", help="images rendered per step (default 8)")
    modulation: str = option(
        "auto",
        choices=choices.MODULATIONS,
        help="modulated-conv formulation (same maths; 'auto' picks the faster one for the backend)",
    )
    dtype: str = option("float32", choices=choices.DTYPE_NAMES, help="compute dtype")
    seed: int = option(0, type="seed", help="seed for --noise random (0 to 2**32-1)")
    tuned: Optional[Path] = option(
        None,
        type="path",
        help="output folder of `e4e-jax tune`: render row i of --latents with photo i's tuned generator",
    )


def check_outputs(opts: SynthesizeOptions) -> None:
    """Refuse outputs that are or hold an input, or are of the wrong type or not writable (UserError)."""
    inputs = [Path(opts.latents), Path(opts.model), opts.tuned]
    outdir.refuse_input_overlap(opts.output, inputs, "--output")
    if opts.output.is_dir():
        raise UserError(f"--output {opts.output} is a folder; --output names the .npy file to write")
    if opts.output.suffix.lower() != NPY_SUFFIX:  # x.png holding a NumPy array opens in no image viewer
        raise UserError(
            f"--output {opts.output}: synthesize writes a NumPy array (float32 images), so the name must end "
            f"in {NPY_SUFFIX} (e.g. {opts.output.with_suffix(NPY_SUFFIX)}); for PNG files pass --png FOLDER"
        )
    outdir.refuse_unwritable(opts.output.parent, "--output")
    if opts.png is not None:
        outdir.refuse_input_overlap(opts.png, inputs, "--png")
        if opts.png.exists() and not opts.png.is_dir():
            raise UserError(f"--png {opts.png} is a file; --png names a folder for the PNGs")
        outdir.refuse_unwritable(opts.png, "--png")
        outdir.check_owned(opts.png, PNG_OUTPUTS, flag="--png")  # before the model loads; again under the lock


def check_outputs_free(opts: SynthesizeOptions) -> None:
    """Under the outputs' locks: refuse an earlier result without --overwrite."""
    if opts.overwrite:
        return
    if opts.output.exists():
        raise UserError(f"--output {opts.output} exists; choose another file or pass --overwrite")
    if opts.png is not None:
        outdir.refuse_not_empty(opts.png, "--png", "replaces only synthesize's NNNNNN.png files there")


def _batches(opts: SynthesizeOptions, cfg, variables, latents: np.ndarray):
    """Rendered (b, H, W, 3) batches of `latents`, by the --model generator or with --tuned by each row's
    tuned generator."""
    from e4e_jax.inference import render  # jax: not at import (the CLI's parser reads SynthesizeOptions)

    kw = dict(seed=opts.seed, modulation=opts.modulation, dtype=opts.dtype, noise_mode=opts.noise)
    if opts.tuned is None:
        yield from render.iter_synthesize(
            cfg, variables, latents, batch_size=opts.batch_size, truncation=opts.truncation, **kw
        )
        return
    from e4e_jax.jobs import tuned

    bundles = tuned.tuned_bundles(opts.tuned, latents.shape[0])
    for imgs in tuned.iter_render(
        cfg, variables, bundles, latents[:, None], batch_size=opts.batch_size, truncation=opts.truncation, **kw
    ):
        yield imgs[:, 0]


def synthesize_file(opts: SynthesizeOptions) -> int:
    """Render, write (module docstring); returns EXIT_OK."""
    from e4e_jax.inference import render

    bundle.read_config(opts.model)  # a wrong --model (e.g. a work directory) is said before the output checks
    check_outputs(opts)
    with contextlib.ExitStack() as stack:  # one writer per output, from here to the end
        stack.enter_context(outdir.lock_target(opts.output, "e4e-jax synthesize"))
        if opts.png is not None:
            stack.enter_context(outdir.claim(opts.png, "e4e-jax synthesize", outputs=PNG_OUTPUTS, flag="--png"))
        check_outputs_free(opts)
        cfg, variables = render.generator_of_bundle(opts.model)
        latents = render.load_latents(opts.latents, cfg)
        n = latents.shape[0]
        render.check_batch_fits(cfg, opts.batch_size, n)
        fileio.remove_stale_temps(opts.output.parent, target=opts.output.name)
        if opts.png is not None and opts.overwrite:
            PNG_OUTPUTS.remove(opts.png)
        written: list[Path] = []
        try:
            with fileio.replacing(opts.output) as tmp:
                out = fileio.allocated_memmap(tmp, (n, cfg.size, cfg.size, 3), np.float32, opts.output)
                batches = _batches(opts, cfg, variables, latents)
                done = 0
                with tqdm(total=n, desc="synthesize", unit="img") as bar:
                    for imgs in batches:
                        require_finite(
                            imgs,
                            f"the images rendered from {opts.latents}[{done}:{done + len(imgs)}]",
                            "the latents are too far from the generator's range (or the model is damaged)",
                        )
                        out[done : done + len(imgs)] = imgs
                        if opts.png is not None:
                            for i, img in enumerate(imgs):
                                written.append(opts.png / f"{done + i:06d}.png")
                                save_png(written[-1], img)
                        done += len(imgs)
                        bar.update(len(imgs))
                        pause_points.reached(BATCH_POINT)
                out.flush()
                del out  # closes the memmap before the rename
        except BaseException:
            for p in written:  # a failed run leaves no partial set of PNGs
                p.unlink(missing_ok=True)
            raise
    print(f"wrote {n} images to {opts.output}")
    return EXIT_OK
