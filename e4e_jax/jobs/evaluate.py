"""`evaluate_folder(options)`: an e4e bundle's metrics on a folder of images, or on the saved output of
`e4e-jax invert`, written to OUTPUT/metrics.json and printed as a table (the `evaluate` command).

Each code is compared with the image it came from, row by row (jobs/sources.py: a face of an `invert
--align` run is compared with its aligned crop); per-image figures are keyed by that row's unique name.
L2 / LPIPS are measured on the saved reconstructions when invert saved them, else on the generator's
unclipped output: `distortion.measured_on` counts each, and a note says what they are.

Reads the inputs (bundles, direction / PCA files, the images or the invert manifests), streams the images
in batches through an `evaluator.Evaluator` and reports the files it had to skip. Returns the exit code
(e4e_jax/errors.py): EXIT_OK, EXIT_PARTIAL when some files were skipped, EXIT_NOTHING when no image could
be evaluated; bad inputs raise UserError.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from e4e_jax.data import folder
from e4e_jax.errors import EXIT_NOTHING, EXIT_OK, EXIT_PARTIAL, UserError
from e4e_jax.inference import editing, inverters, render
from e4e_jax.jobs import sources
from e4e_jax.jobs.evaluate_options import EvaluateOptions
from e4e_jax.metrics import definitions, evaluator
from e4e_jax.runtime import compile_cache, pause_points
from e4e_jax.storage import bundle, manifest, outdir
from e4e_jax.storage.variable_checks import require_finite

# A GANSpace edit for LEC: (component, first layer, end layer (exclusive), strength in stds).
METRICS = "metrics.json"
# What evaluate writes into --output (e4e_jax/storage/outdir.py): a rerun replaces its own metrics.json, never a
# file it did not write.
OUTPUTS = outdir.Outputs("evaluate", (METRICS,))
BATCH_POINT = "evaluate-batch-done"  # pause point (pause_points.py)


def inversion_source(opts: EvaluateOptions, n_latent: int, style_dim: int):
    """(the invert output (jobs/sources.py: rows, alignment), its latents (N, n_latent, style_dim) float32,
    the reconstruction file of each row or None): exactly the files its manifests list (e4e_jax/storage/manifest.py)."""
    out = sources.read_invert_output(opts.inversions, opts.images, "--inversions")
    lat_path, latents = opts.inversions / manifest.LATENTS, out.latents
    if latents.ndim != 3 or latents.shape[1:] != (n_latent, style_dim) or latents.dtype.kind != "f":
        raise UserError(
            f"{lat_path}: {latents.dtype} codes of shape {latents.shape} do not fit {len(out.rows)} files in "
            f"files.txt and this model's {n_latent} latents of {style_dim}"
        )
    require_finite(latents, str(lat_path), "rerun `e4e-jax invert`")
    recon = manifest.reconstructions(opts.inversions, [str(r.path) for r in out.rows])
    return out, latents.astype(np.float32), recon


def lec_edits(opts: EvaluateOptions, n_latent: int, style_dim: int) -> list[evaluator.Edit]:
    """[(name, edit_fn, inverse_fn)] for LEC from the direction and PCA files (ValueError / KeyError
    naming a bad file or edit)."""
    out = []
    editing.check_strengths([opts.factor], "--factor")
    editing.check_strengths([e[3] for e in opts.ganspace_edits], "--ganspace-edit strength")
    for path in opts.directions:
        d = editing.check_direction(editing.load_interfacegan_direction(path), n_latent, style_dim, str(path))
        f, inv = definitions.interfacegan_pair(d, opts.factor)
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
            f, inv = definitions.ganspace_pair(pca.comp[idx], float(pca.std[idx]), start, end, strength)
            out.append((f"ganspace pc{idx} {start}:{end} {strength:g}", f, inv))
    return out


def _check_paths(opts: EvaluateOptions) -> None:
    if opts.images is None and opts.inversions is None:
        raise UserError("pass --images DIR (originals) and/or --inversions DIR (output of `e4e-jax invert`)")
    inverters.kind_of(opts.model)  # a wrong --model (e.g. a work directory) before the output checks
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


def _saved_reconstructions(ev: evaluator.Evaluator, rows: list[sources.Row], codes: np.ndarray, inv_pngs):
    """The reconstructions `invert` saved for `rows`, read as calc_losses_on_images.py reads them;
    rendered from the codes where none was saved. (b, h, w, 3)."""
    hw = ev.model.input_hw
    pngs = [inv_pngs[r.index] and folder.load_image(inv_pngs[r.index], hw) for r in rows]
    for r, im in zip(rows, pngs):
        if isinstance(im, folder.Skipped):
            raise UserError(f"reconstruction {im.path} of {r.key} cannot be read ({im.reason}); rerun `e4e-jax invert`")
    if all(isinstance(im, np.ndarray) for im in pngs):
        return np.stack(pngs)
    recon = np.array(ev.generate(ev.shard(codes)))[: len(rows)]
    for j, im in enumerate(pngs):
        if isinstance(im, np.ndarray):
            recon[j] = im
    return recon


# What the distortion metrics compare the inputs with (metrics.json distortion.measured_on, and a note).
MEASURED_ON = {
    "rendered": "the generator's output G(E(x)) as it comes, unclipped (about -2.5..2), pooled to the "
    "encoder's frame (as official training's validation)",
    "saved": "the reconstructions invert saved (clipped to [-1, 1], 8-bit, in their file format: JPEG by "
    "default), read back as official calc_losses_on_images.py reads them",
}


def _measured_on(opts: EvaluateOptions, rows, inv_pngs) -> dict:
    saved = 0 if opts.inversions is None else sum(inv_pngs[r.index] is not None for r in rows)
    return {"saved": saved, "rendered": len(rows) - saved}


def _describe(counts: dict) -> str:
    parts = [f"{k} ({n} of {sum(counts.values())}): {MEASURED_ON[k]}" for k, n in counts.items() if n]
    return "; ".join(parts)


def _rows(opts: EvaluateOptions, model):
    """(rows, latents or None, reconstruction per row or None, alignment settings, files skipped in the
    listing) of the inputs; the invert output's notes are printed."""
    if opts.inversions is not None:
        out, latents, recon = inversion_source(opts, model.gen_config.n_latent, model.gen_config.style_dim)
        if out.align_note:
            print(f"note: {out.align_note}", file=sys.stderr)
        return out.rows, latents, recon, out.align, []
    try:
        paths, listing_skipped = folder.scan_images(opts.images, recursive=opts.recursive)
    except OSError as e:
        raise UserError(f"--images {opts.images} cannot be listed ({e.strerror or e})") from e
    for s in listing_skipped:
        print(f"skipped {s.path}: {s.reason}", file=sys.stderr)
    return sources.make_rows(paths, None, opts.images), None, [None] * len(paths), None, listing_skipped


def _compile(ev: evaluator.Evaluator) -> None:
    """Compile before the progress bars start (the pause is said, not shown as a bar's first ETA)."""
    cache = compile_cache.enable()
    where = f"later runs load it from {cache}" if cache else "without a persistent cache every run compiles"
    print(
        f"preparing the evaluation ({ev.describe_steps()}) for batches of {ev.batch_size}: the first run compiles "
        f"it, {where} ...",
        file=sys.stderr,
        flush=True,
    )
    print(f"ready in {ev.compile():.1f} s", file=sys.stderr, flush=True)


def _evaluate_rows(opts, ev: evaluator.Evaluator, rows, latents, inv_pngs, loader: sources.SourceLoader) -> list:
    """Stream the rows' sources (and codes / reconstructions) through `ev`; returns the skipped files."""
    hw, skipped = ev.model.input_hw, []
    batches = folder.iter_batches(rows, ev.batch_size, hw, num_workers=opts.workers, load=lambda r: loader.load(r, hw))
    with tqdm(total=len(rows), desc="evaluate", unit="img") as bar:
        for images, batch_rows, batch_skipped in batches:
            for s in batch_skipped:
                tqdm.write(f"skipped {s.path}: {s.reason}", file=sys.stderr)
            skipped.extend(batch_skipped)
            if images.shape[0]:
                names = [r.key for r in batch_rows]
                if latents is None:
                    ev.add(images, names)
                else:
                    codes = latents[[r.index for r in batch_rows]]
                    ev.add(images, names, codes, _saved_reconstructions(ev, batch_rows, codes, inv_pngs))
            bar.update(images.shape[0] + len(batch_skipped))
            pause_points.reached(BATCH_POINT)
    return skipped


def evaluate_folder(opts: EvaluateOptions) -> int:
    """Evaluate, write OUTPUT/metrics.json, print the table; returns the exit code (module docstring)."""
    _check_paths(opts)
    # One writer per folder, which holds nothing but evaluate's metrics.json; removed again if we fail first.
    with outdir.claim(opts.output, "e4e-jax evaluate", outputs=OUTPUTS):
        return _evaluate(opts)


def _evaluate(opts: EvaluateOptions) -> int:
    model = inverters.load(opts.model)  # e4e or ReStyle (the Evaluator inverts by its kind)
    lpips_cfg, lpips_vars = bundle.load(opts.lpips, "lpips") if opts.lpips else (None, None)
    _, inc_vars = bundle.load(opts.inception, "inception") if opts.inception else (None, None)
    try:
        edits = lec_edits(opts, model.gen_config.n_latent, model.gen_config.style_dim)
    except (ValueError, KeyError) as e:  # a bad direction / PCA file, named in the message
        raise UserError(e.args[0] if isinstance(e, KeyError) and e.args else str(e)) from e
    rows, latents, inv_pngs, align, listing_skipped = _rows(opts, model)
    if not rows:
        print(f"error: no images (jpg, png, bmp, webp, tif) in {opts.inversions or opts.images}", file=sys.stderr)
        return EXIT_NOTHING
    wanted = max(len(rows), opts.num_samples)  # a batch beyond the rows (and E(G(w))'s samples) is padding
    render.check_batch_fits(model.gen_config, opts.batch_size, wanted)
    ev = evaluator.Evaluator(
        model,
        lpips_variables=lpips_vars,
        lpips_net=lpips_cfg["architecture"]["net"] if lpips_cfg else "alex",
        inception_variables=inc_vars,
        edits=edits,
        lec_group=opts.lec_batch,
        recovery_samples=opts.num_samples,
        batch_size=min(opts.batch_size, wanted),
        seed=opts.seed,
    )
    # The loader first: a missing align extra is said before compiling, and re-alignment workers start meanwhile.
    with sources.SourceLoader(rows, align, workers=opts.workers) as loader:
        _compile(ev)
        skipped = list(listing_skipped) + _evaluate_rows(opts, ev, rows, latents, inv_pngs, loader)
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
    measured = _measured_on(opts, [r for r in rows if r.key in report["distortion"]["per_image"]], inv_pngs)
    report["distortion"]["measured_on"] = measured
    report["notes"]["distortion"] = f"L2 and LPIPS compare each input with {_describe(measured)}"
    out = evaluator.write_report(opts.output / METRICS, report)
    print(evaluator.format_table({opts.name or Path(opts.model).name: report}))
    for k, v in report["notes"].items():
        print(f"note ({k}): {v}")
    print(f"wrote {out}")
    return EXIT_PARTIAL if skipped else EXIT_OK
