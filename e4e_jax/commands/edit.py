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
from pathlib import Path

from e4e_jax import cli_args

GRID_MIN_CELL = 128  # pixels: cells of grid.png are at least this large
# What edit writes into --output (and so all that --overwrite removes there).
OWNED = ("latents.npy", "grid.png")
OWNED_IMAGES = ("[0-9][0-9][0-9][0-9][0-9]_s*.png", ".[0-9][0-9][0-9][0-9][0-9]_s*.png.*.tmp")


def add_parser(sub, help_text: str) -> None:
    p = sub.add_parser("edit", help=help_text, description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", required=True, help="e4e (or stylegan2) bundle whose generator renders the edits")
    p.add_argument("--latents", required=True, type=Path,
                   help="an `invert` output folder (latents.npy + files.txt) or a .npy of W+ codes (N, n_latent, 512)")
    p.add_argument("--output", required=True, type=Path,
                   help="output folder (new or empty unless --overwrite; never one holding an input)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --output, replacing only edit's own files there (latents.npy, "
                        "grid.png, images/NNNNN_s*.png)")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--interfacegan", type=Path, metavar="DIRECTION.pt", help="InterFaceGAN direction file")
    kind.add_argument("--ganspace", type=Path, metavar="PCA.pt", help="GANSpace PCA file (mean/comp/std)")
    kind.add_argument("--sefa", type=cli_args.non_negative_int, metavar="INDEX",
                      help="SeFa eigenvector index (0 = strongest)")
    p.add_argument("--component", type=cli_args.non_negative_int, help="GANSpace principal component index")
    p.add_argument("--layers", default=None,
                   help="GANSpace: START-END (end exclusive, as the official (pc, start, end, strength)); "
                        "SeFa: w indices to factorise and edit, e.g. 'all', '0-5' (inclusive), '0,2,4'")
    p.add_argument("--strengths", type=cli_args.finite_float, nargs="+", required=True,
                   help="edit strengths (InterFaceGAN factor, GANSpace target coordinate in stds, SeFa step)")
    p.add_argument("--batch-size", type=cli_args.positive_int, default=8, help="images rendered per step (default 8)")
    p.add_argument("--max-grid-rows", type=cli_args.positive_int, default=8,
                   help="images (rows) shown in grid.png (default 8)")
    p.set_defaults(run=run)


def _read_latents(path: Path, cfg):
    """(checked W+ latents (N, n_latent, D), source image paths or []) of an invert folder or a .npy."""
    from e4e_jax import generate, outdir
    from e4e_jax.errors import UserError
    from e4e_jax.fileio import load_npy

    sources = []
    lat_path = path
    if path.is_dir():
        outdir.refuse_in_use(path, "--latents")
        lat_path = path / "latents.npy"
        if not lat_path.is_file():
            raise UserError(f"--latents {path} has no latents.npy; pass an `e4e-jax invert` output folder or a .npy")
        files_txt = path / "files.txt"
        sources = files_txt.read_text().splitlines() if files_txt.is_file() else []
    return generate.check_latents(load_npy(lat_path), cfg, str(lat_path)), sources


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
        try:
            start, end = (int(v) for v in args.layers.split("-"))
        except ValueError:
            raise ValueError(f"--layers {args.layers!r}: expected START-END, e.g. 4-8") from None
        pca = editing.load_ganspace_pca(args.ganspace)
        return editing.ganspace_sweep(latents, pca, args.component, start, end, args.strengths)
    factors = editing.sefa_factorize(gen_params, args.layers or "all")
    if not 0 <= args.sefa < factors.eigvecs.shape[0]:
        raise ValueError(f"--sefa index {args.sefa} out of range 0..{factors.eigvecs.shape[0] - 1}")
    return editing.sefa_sweep(latents, factors.eigvecs[args.sefa], factors.layers, args.strengths)


def check_output(args: argparse.Namespace) -> None:
    """Refuse an --output that is or holds an input, or is a file or not writable."""
    from e4e_jax import outdir
    from e4e_jax.errors import UserError

    inputs = [args.latents, Path(args.model), args.interfacegan, args.ganspace]
    outdir.refuse_input_overlap(args.output, inputs, "--output")
    if args.output.exists() and not args.output.is_dir():
        raise UserError(f"--output {args.output} is a file; --output names a folder")
    outdir.refuse_unwritable(args.output, "--output")


def check_output_free(args: argparse.Namespace) -> None:
    """Under the folder's lock: refuse a non-empty --output without --overwrite."""
    from e4e_jax import outdir
    from e4e_jax.errors import UserError

    if not args.overwrite and not outdir.is_empty_dir(args.output):
        raise UserError(f"--output {args.output} is not empty; choose another folder or pass --overwrite "
                        f"(which replaces only edit's own files: {', '.join(OWNED)}, images/NNNNN_s*.png)")


def _write(args: argparse.Namespace, edits, inversions, edited, sources) -> None:
    """latents.npy, images/ and grid.png into --output (locked by the caller), replacing only edit's own
    files of an earlier run."""
    import numpy as np

    from e4e_jax import fileio, outdir
    from e4e_jax.data.folder import load_image, save_png, Skipped
    from e4e_jax.visualize import make_grid

    n_f, n = edits.shape[:2]
    images = args.output / "images"
    for folder in (args.output, images):
        fileio.remove_stale_temps(folder)
    if args.overwrite:
        outdir.remove_owned(args.output, OWNED)
        outdir.remove_owned(images, OWNED_IMAGES)
    fileio.save_npy(args.output / "latents.npy", edits)
    images.mkdir(exist_ok=True)
    for f, s in enumerate(args.strengths):
        for i in range(n):
            save_png(images / f"{i:05d}_s{s:+g}.png", edited[f, i])
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


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from e4e_jax import generate, outdir
    from e4e_jax.errors import UserError
    from e4e_jax.variable_checks import require_finite

    check_output(args)
    with outdir.claim(args.output, "e4e-jax edit"):  # one writer per folder; removed again if we fail first
        check_output_free(args)
        cfg, variables = generate.load_generator(args.model)
        latents, sources = _read_latents(args.latents, cfg)
        try:
            edits = np.asarray(edited_latents(args, latents, variables["params"]), np.float32)
        except (ValueError, KeyError) as e:  # bad direction / PCA file or edit arguments, each named
            raise UserError(e.args[0] if isinstance(e, KeyError) and e.args else str(e)) from e
        require_finite(edits, "the edited latents", "check the direction file and --strengths")
        n_f, n = edits.shape[:2]
        # Render inversions (strength-free) and every edit in one stream of batches; check before writing.
        stream = np.concatenate([latents, edits.reshape((-1,) + latents.shape[1:])])
        rendered = []
        with tqdm(total=len(stream), desc="edit", unit="img") as bar:
            for imgs in generate.iter_synthesize(cfg, variables, stream, batch_size=args.batch_size):
                rendered.append(imgs)
                bar.update(len(imgs))
        rendered = np.concatenate(rendered)
        require_finite(rendered, "the rendered edits", "the edits move the latents too far (lower --strengths)")
        inversions, edited = rendered[:n], rendered[n:].reshape((n_f, n) + rendered.shape[1:])
        _write(args, edits, inversions, edited, sources)
    print(f"wrote {n_f} x {n} edited images, latents and grid.png to {args.output}")
    return 0
