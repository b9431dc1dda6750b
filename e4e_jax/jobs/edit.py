"""`edit_folder(options)`: edit inverted latents along one direction (InterFaceGAN, GANSpace or SeFa), render
them and write OUTPUT/latents.npy (F, N, n_latent, 512) for F strengths, OUTPUT/images/NNNNN_{source}_sS.png
(NNNNN_sS.png for a bare .npy) and OUTPUT/grid.png whose rows are (source | inversion | one column per
strength), each column labelled. The source of a code from `invert --align` is its aligned face crop
(jobs/sources.py). The `edit` command and the quickstart call it.

Returns the exit code (e4e_jax/errors.py); bad inputs raise UserError before anything is written.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from e4e_jax.data.folder import Skipped
from e4e_jax.errors import EXIT_OK, UserError
from e4e_jax.images import make_grid, save_png
from e4e_jax.inference import directions, editing, render
from e4e_jax.jobs import sources
from e4e_jax.jobs.edit_options import EditOptions
from e4e_jax.runtime import memory, pause_points
from e4e_jax.storage import bundle, fileio, manifest, outdir
from e4e_jax.storage.variable_checks import require_finite

GRID_MIN_CELL = 128  # pixels: cells of grid.png are at least this large
# What edit writes into --output (e4e_jax/storage/outdir.py): all that --overwrite removes there, and all the folder
# may hold. Images are NNNNN[_{source stem}[_face{K}]]_s{strength}.png, strengths always signed
# (`strength_tag`).
IMAGE_NAME = "[0-9][0-9][0-9][0-9][0-9]_*s[+-]*.png"
OUTPUTS = outdir.Outputs("edit", ("latents.npy", "grid.png", f"images/{IMAGE_NAME}"))
BATCH_POINT = "edit-batch-done"  # pause point (pause_points.py)


@dataclasses.dataclass(frozen=True)
class Latents:
    """The codes to edit, (N, n_latent, D) float32 checked, and where they came from: the rows of an
    invert output (jobs/sources.py; [] for a bare .npy) and its alignment settings."""

    codes: np.ndarray
    rows: list
    align: Optional[object] = None


def read_latents(path: Path, cfg) -> Latents:
    """The checked W+ latents of an invert folder or a .npy, with the invert folder's rows."""
    if not path.is_dir():
        return Latents(render.check_latents(fileio.load_npy(path), cfg, str(path)), [])
    outdir.refuse_in_use(path, "--latents")
    lat_path = path / manifest.LATENTS
    if not lat_path.is_file():
        raise UserError(f"--latents {path} has no latents.npy; pass an `e4e-jax invert` output folder or a .npy")
    if not (path / manifest.FILES).is_file():  # latents.npy alone: no sources to show
        return Latents(render.check_latents(fileio.load_npy(lat_path), cfg, str(lat_path)), [])
    out = sources.read_invert_output(path, None, "--latents", require_originals=False)
    if out.align_note:
        print(f"note: {out.align_note}", file=sys.stderr)
    return Latents(render.check_latents(out.latents, cfg, str(lat_path)), out.rows, out.align)


def edit_direction(opts: EditOptions, n_latent: int, style_dim: int, gen_params) -> directions.Direction:
    """The direction the options name, in the form the studio edits with too (`directions.py`)."""
    if opts.interfacegan:
        direction = editing.load_interfacegan_direction(opts.interfacegan)
        name = Path(opts.interfacegan).stem
        return directions.interfacegan(name, direction, n_latent, style_dim, str(opts.interfacegan))
    if opts.ganspace:
        if opts.component is None or not opts.layers or "-" not in opts.layers:
            raise ValueError("--ganspace needs --component N and --layers START-END")
        try:
            start, end = (int(v) for v in opts.layers.split("-"))
        except ValueError:
            raise ValueError(f"--layers {opts.layers!r}: expected START-END, e.g. 4-8") from None
        pca = editing.load_ganspace_pca(opts.ganspace)
        return directions.ganspace(f"PC{opts.component}", pca, opts.component, start, end, n_latent)
    factors = editing.sefa_factorize(gen_params, opts.layers or "all")
    if not 0 <= opts.sefa < factors.eigvecs.shape[0]:
        raise ValueError(f"--sefa index {opts.sefa} out of range 0..{factors.eigvecs.shape[0] - 1}")
    return directions.sefa(f"sefa_{opts.sefa}", factors, opts.sefa, n_latent)


def edited_latents(opts: EditOptions, latents: np.ndarray, gen_params) -> np.ndarray:
    """(F, N, n, D) edited codes, one edit per strength: `directions.apply`, the studio's edit."""
    direction = edit_direction(opts, *latents.shape[1:], gen_params)
    return np.stack([directions.apply(latents, [direction], [s]) for s in opts.strengths])


def check_output(opts: EditOptions) -> None:
    """Refuse an --output that is or holds an input, or is a file or not writable."""
    inputs = [opts.latents, Path(opts.model), opts.interfacegan, opts.ganspace, opts.tuned]
    outdir.refuse_input_overlap(opts.output, inputs, "--output")
    if opts.output.exists() and not opts.output.is_dir():
        raise UserError(f"--output {opts.output} is a file; --output names a folder")
    outdir.refuse_unwritable(opts.output, "--output")
    outdir.check_owned(opts.output, OUTPUTS)  # before the model loads; again under the lock


def check_output_free(opts: EditOptions) -> None:
    """Under the folder's lock: refuse a non-empty --output without --overwrite."""
    if not opts.overwrite:
        outdir.refuse_not_empty(
            opts.output, "--output", "replaces only edit's own files: latents.npy, grid.png, images/NNNNN_s*.png"
        )


def image_stem(i: int, row) -> str:
    """The start of edited image i's names: NNNNN, then the source's stem (and face) when known."""
    if row is None:
        return f"{i:05d}"
    return f"{i:05d}_{manifest.short_stem(row.path.stem)}" + (f"_face{row.face}" if row.face is not None else "")


def column_labels(opts: EditOptions) -> list[str]:
    """The grid's header over each strength's column, e.g. 'age +3', 'PC54 -5', 'SeFa 0 +5'."""
    if opts.interfacegan:
        method = Path(opts.interfacegan).stem
    elif opts.ganspace:
        method = f"PC{opts.component}"
    else:
        method = f"SeFa {opts.sefa}"
    return [f"{method} {strength_tag(s)}" for s in opts.strengths]


def grid_sources(lat: Latents, n: int, hw: tuple[int, int]) -> list:
    """The first `n` rows' sources (uint8 (h, w, 3), None where there is none); the crop each code came
    from for an aligned output (re-aligned here: without dlib a note, and blank cells)."""
    rows = lat.rows[:n]
    if lat.align is not None:
        print(f"re-aligning the faces of {len(rows)} rows for the grid's source column", file=sys.stderr)
    try:
        with sources.SourceLoader(rows, lat.align, workers=0) as loader:
            out = [loader.pixels(r, hw) for r in rows]
    except UserError as e:  # the align extra is missing: the edits do not need it, only this column
        print(f"note: the grid's source column is left blank: {e}", file=sys.stderr)
        return [None] * len(rows)
    return [None if isinstance(p, Skipped) else p for p in out]


def _write(opts: EditOptions, edits, inversions, edited, lat: Latents) -> None:
    """latents.npy, images/ and grid.png into --output (locked by the caller), replacing only edit's own
    files of an earlier run; a run that fails or is interrupted half-way removes what it wrote."""
    images = opts.output / "images"
    for folder in (opts.output, images):
        fileio.remove_stale_temps(folder)
    if opts.overwrite:
        OUTPUTS.remove(opts.output)
    try:
        _write_files(opts, edits, inversions, edited, lat)
    except BaseException:
        OUTPUTS.remove(opts.output)  # only this run's files are left to remove: the folder held no others
        raise


def _write_files(opts: EditOptions, edits, inversions, edited, lat: Latents) -> None:
    n_f, n = edits.shape[:2]
    images = opts.output / "images"
    fileio.save_npy(opts.output / "latents.npy", edits)
    images.mkdir(exist_ok=True)
    for i in range(n):
        stem = image_stem(i, lat.rows[i] if lat.rows else None)
        for f, s in enumerate(opts.strengths):
            save_png(images / f"{stem}_s{strength_tag(s)}.png", edited[f, i])
    h, w = inversions.shape[1:3]
    n_rows = min(n, opts.max_grid_rows)
    srcs = grid_sources(lat, n_rows, (h, w)) if lat.rows else []
    rows = []
    for i in range(n_rows):
        row = [srcs[i] if srcs[i] is not None else np.full((h, w, 3), 255, np.uint8)] if srcs else []
        row.append(inversions[i])
        row.extend(edited[f, i] for f in range(n_f))
        rows.append(row)
    headers = (["source"] if srcs else []) + ["inversion"] + column_labels(opts)
    zoom = max(1, -(-GRID_MIN_CELL // max(h, w)))  # small generators: enlarge cells so the grid is viewable
    save_png(opts.output / "grid.png", make_grid(rows, cell_hw=(h * zoom, w * zoom), headers=headers))


def _render_stream(opts: EditOptions, cfg, variables, stream: np.ndarray, n: int, files):
    """The images of `stream` ((1 + F) * N codes: the N inversions, then each strength's N edits), in
    order: by the generator of --model, or with --tuned by each photo's own tuned generator (`files`: the
    latents' files.txt, checked against the tune output's)."""
    if opts.tuned is None:
        yield from render.iter_synthesize(cfg, variables, stream, batch_size=opts.batch_size)
        return
    from e4e_jax.jobs import tuned

    bundles = tuned.tuned_bundles(opts.tuned, n, files)
    per_photo = stream.reshape(-1, n, *stream.shape[1:]).swapaxes(0, 1)  # (N, 1 + F, n_latent, D)
    photos = max(1, opts.batch_size // per_photo.shape[1])
    out = np.concatenate(list(tuned.iter_render(cfg, variables, bundles, per_photo, batch_size=photos)))
    yield out.swapaxes(0, 1).reshape(-1, *out.shape[2:])


def strength_tag(strength: float) -> str:
    """How a strength appears in image names: images/NNNNN_..._s{tag}.png (e.g. +1, -0.5)."""
    return f"{strength:+g}"


def edit_folder(opts: EditOptions) -> int:
    """Edit, render, write (module docstring); returns EXIT_OK."""
    if sum(x is not None for x in (opts.interfacegan, opts.ganspace, opts.sefa)) != 1:
        raise UserError("pass exactly one of --interfacegan, --ganspace, --sefa")
    names = [strength_tag(s) for s in opts.strengths]
    if len(set(names)) != len(names):  # two strengths, one file name: the second would replace the first
        raise UserError(
            f"--strengths {' '.join(map(str, opts.strengths))}: some give the same image name "
            f"({', '.join(names)}); pass strengths that differ in their shortest form"
        )
    try:
        editing.check_strengths(opts.strengths)
    except ValueError as e:
        raise UserError(str(e)) from None
    bundle.read_config(opts.model)  # a wrong --model (e.g. a work directory) is said before the output checks
    check_output(opts)
    # One writer per folder, which holds nothing but edit's files; removed again if we fail first.
    with outdir.claim(opts.output, "e4e-jax edit", outputs=OUTPUTS):
        check_output_free(opts)
        cfg, variables = render.generator_of_bundle(opts.model)
        lat = read_latents(opts.latents, cfg)
        latents = lat.codes
        try:
            edits = np.asarray(edited_latents(opts, latents, variables["params"]), np.float32)
        except (ValueError, KeyError) as e:  # bad direction / PCA file or edit arguments, each named
            raise UserError(e.args[0] if isinstance(e, KeyError) and e.args else str(e)) from e
        require_finite(edits, "the edited latents", "check the direction file and --strengths")
        n_f, n = edits.shape[:2]
        # Render inversions (strength-free) and every edit in one stream of batches; check before writing.
        stream = np.concatenate([latents, edits.reshape((-1,) + latents.shape[1:])])
        render.check_batch_fits(cfg, opts.batch_size, len(stream))
        memory.require_room(  # every rendered image is held until all are checked, then written
            render.synthesis_bytes(cfg, len(stream), activations=False),
            f"editing {n} latents at {n_f} strengths ({len(stream)} images of {cfg.size}x{cfg.size} held at once)",
            "edit fewer latents at a time (split the .npy) or pass fewer --strengths",
        )
        rendered = []
        with tqdm(total=len(stream), desc="edit", unit="img") as bar:
            for imgs in _render_stream(opts, cfg, variables, stream, n, [r.path for r in lat.rows]):
                rendered.append(imgs)
                bar.update(len(imgs))
                pause_points.reached(BATCH_POINT)
        rendered = np.concatenate(rendered)
        require_finite(rendered, "the rendered edits", "the edits move the latents too far (lower --strengths)")
        inversions, edited = rendered[:n], rendered[n:].reshape((n_f, n) + rendered.shape[1:])
        _write(opts, edits, inversions, edited, lat)
    print(
        f"wrote {n_f} x {n} edited images, latents and grid.png (columns: "
        f"{'source | ' if lat.rows else ''}inversion | {' | '.join(column_labels(opts))}) to {opts.output}"
    )
    return EXIT_OK
