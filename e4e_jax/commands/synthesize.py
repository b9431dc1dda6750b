"""`e4e-jax synthesize`: latents .npy in, images .npy (and optional PNGs) out."""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from e4e_jax import choices, cli_args, fileio
from e4e_jax.errors import EXIT_OK

# Names synthesize gives its PNGs (NNNNNN.png) and their temporary files: all --overwrite removes there.
PNG_NAME = "[0-9][0-9][0-9][0-9][0-9][0-9].png"
PNG_PATTERNS = (PNG_NAME, fileio.temp_glob(PNG_NAME))


def add_parser(sub, help_text: str) -> None:
    p = sub.add_parser("synthesize", help=help_text, description=help_text + ". Writes float32 images "
                       "(N, H, W, 3) in the generator's raw range (about [-1, 1]).")
    p.add_argument("--model", required=True, help="stylegan2 (or e4e) bundle directory")
    p.add_argument("--latents", required=True, type=Path, help=".npy of W (N, 512) or W+ (N, n_latent, 512) codes")
    p.add_argument("--output", required=True, type=Path,
                   help="output .npy (N, H, W, 3) float32; must not exist unless --overwrite")
    p.add_argument("--png", type=Path, default=None,
                   help="also write one PNG per image into this folder (new or empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --output and the PNGs (NNNNNN.png) of an earlier run in --png")
    p.add_argument("--noise", choices=("const", "random", "none"), default="const",
                   help="noise inputs: the stored per-layer buffers (default), fresh random, or none")
    p.add_argument("--truncation", type=cli_args.finite_float, default=1.0,
                   help="truncation psi towards w_avg (default 1: off; 0 renders w_avg)")
    p.add_argument("--batch-size", type=cli_args.positive_int, default=8, help="images rendered per step (default 8)")
    p.add_argument("--modulation", choices=choices.MODULATIONS, default="auto",
                   help="modulated-conv formulation (same maths; 'auto' picks the faster one for the backend)")
    p.add_argument("--dtype", choices=choices.DTYPE_NAMES, default="float32", help="compute dtype")
    p.add_argument("--seed", type=int, default=0, help="seed for --noise random")
    p.set_defaults(run=run)


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse outputs that are or hold an input, or are of the wrong type or not writable (UserError)."""
    from e4e_jax import outdir
    from e4e_jax.errors import UserError

    inputs = [args.latents, Path(args.model)]
    outdir.refuse_input_overlap(args.output, inputs, "--output")
    if args.output.is_dir():
        raise UserError(f"--output {args.output} is a folder; --output names the .npy file to write")
    outdir.refuse_unwritable(args.output.parent, "--output")
    if args.png is not None:
        outdir.refuse_input_overlap(args.png, inputs, "--png")
        if args.png.exists() and not args.png.is_dir():
            raise UserError(f"--png {args.png} is a file; --png names a folder for the PNGs")
        outdir.refuse_unwritable(args.png, "--png")


def check_outputs_free(args: argparse.Namespace) -> None:
    """Under the outputs' locks: refuse an earlier result without --overwrite."""
    from e4e_jax import outdir
    from e4e_jax.errors import UserError

    if args.overwrite:
        return
    if args.output.exists():
        raise UserError(f"--output {args.output} exists; choose another file or pass --overwrite")
    if args.png is not None and not outdir.is_empty_dir(args.png):
        raise UserError(f"--png {args.png} is not empty; choose another folder or pass --overwrite "
                        "(which replaces only synthesize's NNNNNN.png files there)")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from e4e_jax import generate, outdir
    from e4e_jax.images import save_png
    from e4e_jax.variable_checks import require_finite

    check_outputs(args)
    with contextlib.ExitStack() as stack:  # one writer per output, from here to the end
        stack.enter_context(outdir.lock_target(args.output, "e4e-jax synthesize"))
        if args.png is not None:
            stack.enter_context(outdir.claim(args.png, "e4e-jax synthesize"))
        check_outputs_free(args)
        cfg, variables = generate.load_generator(args.model)
        latents = generate.load_latents(args.latents, cfg)
        n = latents.shape[0]
        fileio.remove_stale_temps(args.output.parent, target=args.output.name)
        if args.png is not None and args.overwrite:
            outdir.remove_owned(args.png, PNG_PATTERNS)
        written: list[Path] = []
        try:
            with fileio.replacing(args.output) as tmp:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, cfg.size, cfg.size, 3))
                batches = generate.iter_synthesize(cfg, variables, latents, batch_size=args.batch_size,
                                                   seed=args.seed, modulation=args.modulation, dtype=args.dtype,
                                                   noise_mode=args.noise, truncation=args.truncation)
                done = 0
                with tqdm(total=n, desc="synthesize", unit="img") as bar:
                    for imgs in batches:
                        require_finite(imgs, f"the images rendered from {args.latents}[{done}:{done + len(imgs)}]",
                                       "the latents are too far from the generator's range (or the model is "
                                       "damaged)")
                        out[done:done + len(imgs)] = imgs
                        if args.png is not None:
                            for i, img in enumerate(imgs):
                                written.append(args.png / f"{done + i:06d}.png")
                                save_png(written[-1], img)
                        done += len(imgs)
                        bar.update(len(imgs))
                out.flush()
                del out  # closes the memmap before the rename
        except BaseException:
            for p in written:  # a failed run leaves no partial set of PNGs
                p.unlink(missing_ok=True)
            raise
    print(f"wrote {n} images to {args.output}")
    return EXIT_OK
