"""`e4e-jax edit`: edit inverted latents (InterFaceGAN, GANSpace, SeFa), render them, write a grid.

    e4e-jax edit --model E4E_BUNDLE --latents INVERT_OUT --output EDITS \
        --interfacegan age.pt --strengths -3 0 3
    e4e-jax edit ... --ganspace ffhq_pca.pt --component 54 --layers 7-8 --strengths -5 5
    e4e-jax edit ... --sefa 0 --layers 0-5 --strengths -5 5

Writes EDITS/latents.npy (F, N, n_latent, 512) for F strengths, EDITS/images/NNNNN_sS.png and
EDITS/grid.png whose rows are (source | inversion | one column per strength).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

GRID_MIN_CELL = 128  # pixels: cells of grid.png are at least this large


def add_parser(sub, help_text: str) -> None:
    p = sub.add_parser("edit", help=help_text, description=__doc__.split("\n\n")[0] + ".",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", required=True, help="e4e (or stylegan2) bundle whose generator renders the edits")
    p.add_argument("--latents", required=True, type=Path,
                   help="an `invert` output folder (latents.npy + files.txt) or a .npy of W+ codes (N, n_latent, 512)")
    p.add_argument("--output", required=True, type=Path, help="output folder")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--interfacegan", type=Path, metavar="DIRECTION.pt", help="InterFaceGAN direction file")
    kind.add_argument("--ganspace", type=Path, metavar="PCA.pt", help="GANSpace PCA file (mean/comp/std)")
    kind.add_argument("--sefa", type=int, metavar="INDEX", help="SeFa eigenvector index (0 = strongest)")
    p.add_argument("--component", type=int, help="GANSpace principal component index")
    p.add_argument("--layers", default=None,
                   help="GANSpace: START-END (end exclusive, as the official (pc, start, end, strength)); "
                        "SeFa: w indices to factorise and edit, e.g. 'all', '0-5' (inclusive), '0,2,4'")
    p.add_argument("--strengths", type=float, nargs="+", required=True,
                   help="edit strengths (InterFaceGAN factor, GANSpace target coordinate in stds, SeFa step)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-grid-rows", type=int, default=8, help="images shown in grid.png")
    p.set_defaults(run=run)


def _read_latents(path: Path):
    import numpy as np

    if path.is_dir():
        latents = np.load(path / "latents.npy")
        files_txt = path / "files.txt"
        sources = files_txt.read_text().splitlines() if files_txt.is_file() else []
        return latents, sources
    return np.load(path), []


def edited_latents(args: argparse.Namespace, latents, gen_params):
    """(F, N, n, D) edited codes for the chosen method."""
    from e4e_jax import editing

    if args.interfacegan:
        try:
            return editing.interfacegan_sweep(latents, editing.load_interfacegan_direction(args.interfacegan),
                                              args.strengths)
        except ValueError as e:
            raise ValueError(f"{args.interfacegan}: {e}; use a direction made for this generator") from e
    if args.ganspace:
        if args.component is None or not args.layers or "-" not in args.layers:
            raise ValueError("--ganspace needs --component N and --layers START-END")
        start, end = (int(v) for v in args.layers.split("-"))
        pca = editing.load_ganspace_pca(args.ganspace)
        return editing.ganspace_sweep(latents, pca, args.component, start, end, args.strengths)
    factors = editing.sefa_factorize(gen_params, args.layers or "all")
    if not 0 <= args.sefa < factors.eigvecs.shape[0]:
        raise ValueError(f"--sefa index {args.sefa} out of range 0..{factors.eigvecs.shape[0] - 1}")
    return editing.sefa_sweep(latents, factors.eigvecs[args.sefa], factors.layers, args.strengths)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from e4e_jax import generate
    from e4e_jax.bundle import BundleError
    from e4e_jax.data.folder import load_image, save_png, Skipped
    from e4e_jax.visualize import make_grid

    try:
        cfg, variables = generate.load_generator(args.model)
        latents, sources = _read_latents(args.latents)
        latents = generate.as_wplus(latents, cfg, str(args.latents))
        edits = np.asarray(edited_latents(args, latents, variables["params"]))
    except (BundleError, ValueError, KeyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_f, n = edits.shape[:2]
    (args.output / "images").mkdir(parents=True, exist_ok=True)
    tmp = args.output / "latents.partial.npy"
    np.save(tmp, edits.astype(np.float32))
    os.replace(tmp, args.output / "latents.npy")
    # Render inversions (strength-free) and every edit in one stream of batches.
    stream = np.concatenate([latents, edits.reshape((-1,) + latents.shape[1:])])
    rendered = []
    with tqdm(total=len(stream), desc="edit", unit="img") as bar:
        for imgs in generate.iter_synthesize(cfg, variables, stream, batch_size=args.batch_size):
            rendered.append(imgs)
            bar.update(len(imgs))
    rendered = np.concatenate(rendered)
    inversions, edited = rendered[:n], rendered[n:].reshape((n_f, n) + rendered.shape[1:])
    for f, s in enumerate(args.strengths):
        for i in range(n):
            save_png(args.output / "images" / f"{i:05d}_s{s:+g}.png", edited[f, i])
    rows = []
    for i in range(min(n, args.max_grid_rows)):
        row = []
        if i < len(sources):
            src = load_image(sources[i], inversions.shape[1:3])
            row.append(src if not isinstance(src, Skipped) else np.zeros_like(inversions[i]))
        row.append(inversions[i])
        row.extend(edited[f, i] for f in range(n_f))
        rows.append(row)
    h, w = inversions.shape[1:3]
    zoom = max(1, -(-GRID_MIN_CELL // max(h, w)))  # small generators: enlarge cells so the grid is viewable
    save_png(args.output / "grid.png", make_grid(rows, cell_hw=(h * zoom, w * zoom)))
    print(f"wrote {n_f} x {n} edited images, latents and grid.png to {args.output}")
    return 0
