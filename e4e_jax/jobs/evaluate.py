"""`evaluate_folder(options)`: an e4e bundle's metrics on a folder of images, or on the saved output of
`e4e-jax invert`, written to OUTPUT/metrics.json and printed as a table (the `evaluate` command).

Reads the inputs (bundles, direction / PCA files, the images or the invert manifests), streams the images
in batches through an `evaluator.Evaluator` and reports the files it had to skip. Returns the exit code
(e4e_jax/errors.py): EXIT_OK, EXIT_PARTIAL when some files were skipped, EXIT_NOTHING when no image could
be evaluated; bad inputs raise UserError.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from e4e_jax import bundle, editing, evaluation, evaluator, interrupts, inversion, manifest, outdir
from e4e_jax.data import folder
from e4e_jax.errors import EXIT_NOTHING, EXIT_OK, EXIT_PARTIAL, UserError
from e4e_jax.fileio import load_npy
from e4e_jax.variable_checks import require_finite

# A GANSpace edit for LEC: (component, first layer, end layer (exclusive), strength in stds).
GanspaceEdit = tuple[int, int, int, float]
METRICS = "metrics.json"
# What evaluate writes into --output (e4e_jax/outdir.py): a rerun replaces its own metrics.json, never a
# file it did not write.
OUTPUTS = outdir.Outputs("evaluate", (METRICS,))


@dataclasses.dataclass(frozen=True)
class EvaluateOptions:
    """What to evaluate and how; the fields are the `e4e-jax evaluate` options (see its --help)."""

    model: str | Path  # e4e bundle folder
    output: Path
    images: Optional[Path] = None  # the originals
    inversions: Optional[Path] = None  # an `e4e-jax invert` output folder
    lpips: Optional[Path] = None  # lpips bundle (None: no LPIPS)
    inception: Optional[Path] = None  # inception bundle (None: no FID)
    directions: Sequence[Path] = ()  # InterFaceGAN direction files for LEC
    factor: float = 3.0  # InterFaceGAN strength for LEC (official: 3)
    ganspace: Optional[Path] = None  # GANSpace PCA file for LEC
    ganspace_edits: Sequence[GanspaceEdit] = ()
    lec_batch: int = 1  # LEC averaging group (official metric: its batch size, 8)
    num_samples: int = 100  # random w for E(G(w)); 0 skips it
    name: Optional[str] = None  # row name in the table (default: the model folder)
    batch_size: int = 8
    seed: int = 0
    recursive: bool = False
    workers: Optional[int] = None  # decoding threads (None: CPU count; 0: the main thread)


def inversion_source(inv_dir: Path, images_dir: Path | None, n_latent: int, style_dim: int):
    """(original paths, latents (N, n_latent, style_dim), reconstruction file per index or None) of an `invert` output:
    exactly the files its manifests list (e4e_jax/manifest.py)."""
    if not inv_dir.is_dir():
        raise UserError(f"--inversions {inv_dir} is not a folder; pass the output folder of `e4e-jax invert`")
    outdir.refuse_in_use(inv_dir, "--inversions")
    files_txt, lat_path = inv_dir / manifest.FILES, inv_dir / manifest.LATENTS
    for f in (files_txt, lat_path):
        if not f.is_file():
            raise UserError(f"--inversions {inv_dir}: {f.name} is missing; pass the output folder of `e4e-jax invert`")
    listed = manifest.read_lines(files_txt)
    latents = load_npy(lat_path)
    if latents.ndim != 3 or latents.shape[0] != len(listed) or latents.shape[1:] != (n_latent, style_dim):
        raise UserError(
            f"{lat_path}: shape {latents.shape} does not fit {len(listed)} files in files.txt and "
            f"this model's {n_latent} latents of {style_dim}"
        )
    require_finite(latents, str(lat_path), "rerun `e4e-jax invert`")
    originals = []
    for p in map(Path, listed):
        cand = p if p.is_file() else (images_dir / p.name if images_dir is not None else None)
        if cand is None or not cand.is_file():
            raise UserError(
                f"{files_txt}: original image {p} not found; pass --images with the folder that was inverted"
            )
        originals.append(cand)
    return originals, latents.astype(np.float32), manifest.reconstructions(inv_dir, listed)


def lec_edits(opts: EvaluateOptions, n_latent: int, style_dim: int) -> list[evaluator.Edit]:
    """[(name, edit_fn, inverse_fn)] for LEC from the direction and PCA files (ValueError / KeyError
    naming a bad file or edit)."""
    out = []
    for path in opts.directions:
        d = editing.load_interfacegan_direction(path)
        if d.shape not in ((style_dim,), (n_latent, style_dim)):
            raise ValueError(
                f"{path}: direction of shape {d.shape} does not fit this model's W+ codes "
                f"({n_latent}, {style_dim}); expected (1, {style_dim}) or (1, {n_latent}, {style_dim})"
            )
        f, inv = evaluation.interfacegan_pair(d, opts.factor)
        out.append((f"{Path(path).stem} x{opts.factor:g}", f, inv))
    if bool(opts.ganspace_edits) != (opts.ganspace is not None):
        raise ValueError("--ganspace PCA_FILE and --ganspace-edit IDX,START,END,STRENGTH go together")
    if opts.ganspace is not None:
        pca = editing.load_ganspace_pca(opts.ganspace)
        for idx, start, end, strength in opts.ganspace_edits:
            if not 0 <= idx < pca.comp.shape[0] or not 0 <= start < end <= n_latent:
                raise ValueError(
                    f"--ganspace-edit {f'{idx},{start},{end},{strength:g}'!r}: component must be < "
                    f"{pca.comp.shape[0]} and layers 0 <= start < end <= {n_latent}"
                )
            f, inv = evaluation.ganspace_pair(pca.comp[idx], float(pca.std[idx]), start, end, strength)
            out.append((f"ganspace pc{idx} {start}:{end} {strength:g}", f, inv))
    return out


def _check_paths(opts: EvaluateOptions) -> None:
    if opts.images is None and opts.inversions is None:
        raise UserError("pass --images DIR (originals) and/or --inversions DIR (output of `e4e-jax invert`)")
    if opts.images is not None and not opts.images.is_dir():
        raise UserError(f"--images {opts.images} is not a folder")
    inputs = [
        Path(opts.model),
        opts.images,
        opts.inversions,
        opts.lpips,
        opts.inception,
        opts.ganspace,
        *opts.directions,
    ]
    outdir.refuse_input_overlap(opts.output, [p for p in inputs if p is not None], "--output")
    if opts.output.exists() and not opts.output.is_dir():
        raise UserError(f"--output {opts.output} is a file; --output names the folder for metrics.json")
    outdir.refuse_unwritable(opts.output, "--output")
    outdir.check_owned(opts.output, OUTPUTS)  # before the models load; again under the lock


def _saved_reconstructions(ev: evaluator.Evaluator, idx: list[int], codes: np.ndarray, paths, inv_pngs):
    """The reconstructions `invert` saved for rows `idx`, read as calc_losses_on_images.py reads them;
    rendered from the codes where none was saved. (b, h, w, 3)."""
    hw = ev.model.input_hw
    pngs = [inv_pngs[i] and folder.load_image(inv_pngs[i], hw) for i in idx]
    for i, im in zip(idx, pngs):
        if isinstance(im, folder.Skipped):
            raise UserError(
                f"reconstruction {im.path} of {paths[i]} cannot be read ({im.reason}); rerun `e4e-jax invert`"
            )
    if all(isinstance(im, np.ndarray) for im in pngs):
        return np.stack(pngs)
    recon = np.array(ev.generate(ev.shard(codes)))[: len(idx)]
    for j, im in enumerate(pngs):
        if isinstance(im, np.ndarray):
            recon[j] = im
    return recon


def evaluate_folder(opts: EvaluateOptions) -> int:
    """Evaluate, write OUTPUT/metrics.json, print the table; returns the exit code (module docstring)."""
    _check_paths(opts)
    # One writer per folder, which holds nothing but evaluate's metrics.json; removed again if we fail first.
    with outdir.claim(opts.output, "e4e-jax evaluate", outputs=OUTPUTS):
        return _evaluate(opts)


def _evaluate(opts: EvaluateOptions) -> int:
    model = inversion.load_e4e(opts.model)
    lpips_cfg, lpips_vars = bundle.load(opts.lpips, "lpips") if opts.lpips else (None, None)
    _, inc_vars = bundle.load(opts.inception, "inception") if opts.inception else (None, None)
    try:
        edits = lec_edits(opts, model.gen_config.n_latent, model.gen_config.style_dim)
    except (ValueError, KeyError) as e:  # a bad direction / PCA file, named in the message
        raise UserError(e.args[0] if isinstance(e, KeyError) and e.args else str(e)) from e
    listing_skipped = []
    if opts.inversions is not None:
        paths, inv_latents, inv_pngs = inversion_source(
            opts.inversions, opts.images, model.gen_config.n_latent, model.gen_config.style_dim
        )
    else:
        try:
            paths, listing_skipped = folder.scan_images(opts.images, recursive=opts.recursive)
        except OSError as e:
            raise UserError(f"--images {opts.images} cannot be listed ({e.strerror or e})") from e
        for s in listing_skipped:
            print(f"skipped {s.path}: {s.reason}", file=sys.stderr)
    if not paths:
        print(f"error: no images (jpg, png, bmp, webp, tif) in {opts.inversions or opts.images}", file=sys.stderr)
        return EXIT_NOTHING
    index = {Path(p): i for i, p in enumerate(paths)}
    ev = evaluator.Evaluator(
        model,
        lpips_variables=lpips_vars,
        lpips_net=lpips_cfg["architecture"]["net"] if lpips_cfg else "alex",
        inception_variables=inc_vars,
        edits=edits,
        lec_group=opts.lec_batch,
        recovery_samples=opts.num_samples,
        batch_size=opts.batch_size,
        seed=opts.seed,
    )
    skipped = list(listing_skipped)
    batches = folder.iter_batches(paths, ev.batch_size, model.input_hw, num_workers=opts.workers)
    with tqdm(total=len(paths), desc="evaluate", unit="img") as bar:
        for images, batch_paths, batch_skipped in batches:
            for s in batch_skipped:
                tqdm.write(f"skipped {s.path}: {s.reason}", file=sys.stderr)
            skipped.extend(batch_skipped)
            bar.update(len(batch_skipped))
            if images.shape[0] == 0:
                continue
            names = [Path(p).name for p in batch_paths]
            if opts.inversions is None:
                ev.add(images, names)
            else:
                idx = [index[Path(p)] for p in batch_paths]
                codes = inv_latents[idx]
                ev.add(images, names, codes, _saved_reconstructions(ev, idx, codes, paths, inv_pngs))
            bar.update(images.shape[0])
            interrupts.pause_at("working")
    if not ev.count:
        print("error: no image could be evaluated (all skipped)", file=sys.stderr)
        return EXIT_NOTHING

    report = {
        "model": str(opts.model),
        "images": str(opts.images or ""),
        "inversions": str(opts.inversions or ""),
        "n_images": ev.count,
        "n_skipped": len(skipped),
        "skipped": [{"file": str(s.path), "reason": s.reason} for s in skipped],
    }
    report.update(ev.report())
    out = evaluator.write_report(opts.output / METRICS, report)
    print(evaluator.format_table({opts.name or Path(opts.model).name: report}))
    for k, v in report["notes"].items():
        print(f"note ({k}): {v}")
    print(f"wrote {out}")
    return EXIT_PARTIAL if skipped else EXIT_OK
