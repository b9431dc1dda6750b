"""`tune_folder(options)`: pivotal tuning (PTI) of the photos of an `e4e-jax invert` output, several at
once (the `tune` command).

Each photo's pivot is its e4e latent; its target is the image that latent came from (jobs/sources.py: the
photo, or the face's aligned crop of an `invert --align` output) at the generator's resolution (the frame
e4e's reconstructions show: cars are cropped to their rows). Photos are tuned in batches of
--batch-size, each with its own generator (e4e_jax/inference/tuning.py); after a batch, every photo's tuned
generator is saved as a bfloat16 delta (e4e_jax/storage/pti_bundle.py) and its reconstruction is rendered with
that saved generator, measured and written, then the batch is committed (jobs/tune_output.py). A kill
loses at most the batch in flight; `--resume` redoes it and the outputs are those of an uninterrupted
run. Returns the exit code (e4e_jax/errors.py); bad inputs raise UserError before anything is written.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from e4e_jax import options
from e4e_jax.errors import EXIT_OK, UserError
from e4e_jax.jobs.invert import layout as invert_layout
from e4e_jax.jobs.invert import workers
from e4e_jax.jobs.tune_options import TuneOptions
from e4e_jax.jobs.tune_output import METRIC_KEYS, OUTPUTS, BatchResult, TuneOutput, row_names
from e4e_jax.runtime import pause_points
from e4e_jax.storage import manifest, outdir

# Plan fields that change the outputs: a --resume with any of them different is refused. The options among
# them are declared so in TuneOptions (plan=True); the others are facts about the inputs and the machine,
# and the PTI settings that --steps and --locality make.
PLAN_FACTS = (
    "model_config_sha256",
    "model_weights_id",
    "lpips_weights_id",
    "listing_sha256",
    "pivots_sha256",
    "n_photos",
    "local_devices",
    "pti",
)
PLAN_KEYS = options.plan_keys(TuneOptions) + PLAN_FACTS


@dataclasses.dataclass(frozen=True)
class Photos:
    """The photos of an invert output: its rows (jobs/sources.py: file, face of an --align run, key), its
    files.txt lines, the alignment settings (None: not aligned), the latents (N, n_latent, D) that are
    their pivots, and what its report.json says of the inverted folder (carried into tune's report)."""

    rows: list
    files: list[str]
    align: Optional[object]
    pivots: np.ndarray
    recorded: dict[str, Any]

    @property
    def faces(self) -> Optional[list[int]]:
        """faces.txt of an --align output (each row's face index), else None."""
        return [r.face for r in self.rows] if self.align is not None else None


def pti_config(opts: TuneOptions):
    from e4e_jax.inference import tuning

    cfg = tuning.PTIConfig(locality=opts.locality)
    return cfg if opts.steps is None else dataclasses.replace(cfg, max_steps=opts.steps)


def read_photos(opts: TuneOptions, n_latent: int, style_dim: int) -> Photos:
    """The invert output's photos and pivots, as evaluate reads them (UserError naming what is wrong)."""
    import json

    from e4e_jax.jobs.evaluate import inversion_source

    out, pivots, _ = inversion_source(opts, n_latent, style_dim)  # reads opts.inversions and opts.images
    if out.align_note:
        _say(opts, f"note: {out.align_note}")
    try:
        report = json.loads((opts.inversions / manifest.REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = {}
    recorded = {k: report[k] for k in ("images", manifest.ALIGN_RECORD) if isinstance(report, dict) and k in report}
    files = manifest.read_lines(opts.inversions / manifest.FILES)
    return Photos(out.rows, files, out.align, pivots, recorded)


def load_targets(loader, photos: Photos, rows: range, hw: tuple[int, int]) -> np.ndarray:
    """The tuning targets of `rows`: each code's source as e4e saw it (jobs/sources.py: the photo through
    the official transform, or the face's aligned crop of an --align run) at the generator's frame `hw`,
    float32 (b, h, w, 3) in [-1, 1]. `loader`: a sources.SourceLoader of the photos' rows. The one place
    targets are read."""
    from e4e_jax.data import folder

    out = []
    for r in rows:
        img = loader.load(photos.rows[r], hw)
        if isinstance(img, folder.Skipped):
            raise UserError(f"{img.path} cannot be read ({img.reason}); restore the photo, then rerun with --resume")
        out.append(img)
    return np.stack(out)


def _say(opts: TuneOptions, msg: str) -> None:
    if not opts.quiet:
        print(msg, file=sys.stderr, flush=True)


def _check_args(opts: TuneOptions) -> dict[str, Any]:
    """Every check before anything is written; returns what the run needs from its inputs."""
    from e4e_jax import domains
    from e4e_jax.jobs.invert.job import reconstruction_hw
    from e4e_jax.storage import bundle, e4e_bundle

    if opts.output.exists() and not opts.output.is_dir():
        raise UserError(f"--output {opts.output} is a file; choose a folder")
    inputs = [opts.inversions, Path(opts.model), Path(opts.lpips), opts.images]
    outdir.refuse_input_overlap(opts.output, [p for p in inputs if p is not None], "--output")
    outdir.refuse_unwritable(opts.output, "--output")
    outdir.check_owned(opts.output, OUTPUTS, resume=opts.resume)  # before the models load; again under the lock
    if opts.image_format not in workers.IMAGE_FORMATS:
        raise UserError(f"--image-format {opts.image_format!r}: choose one of {sorted(workers.IMAGE_FORMATS)}")
    arch = e4e_bundle.read_architecture(opts.model)
    lpips_cfg = bundle.read_config(opts.lpips, "lpips")
    gen = arch.generator
    crop = domains.output_rows(arch.domain, gen.size)
    photos = read_photos(opts, gen.n_latent, gen.style_dim)
    frame_hw = domains.output_hw(arch.domain, gen.size)
    return {
        "arch": arch,
        "lpips_net": lpips_cfg["architecture"]["net"],
        "photos": photos,
        "crop": crop,
        "frame_hw": frame_hw,
        "out_hw": reconstruction_hw(gen.size, crop is not None, opts.image_size),
    }


def _plan(opts: TuneOptions, photos: Photos, batch_size: int, local_devices: int) -> dict[str, Any]:
    import hashlib

    from e4e_jax.storage import bundle

    listing = [r.key for r in photos.rows] + photos.files
    return {
        "model": str(Path(opts.model).resolve()),
        "model_config_sha256": bundle.sha256_of(Path(opts.model) / "config.json"),
        "model_weights_id": bundle.weights_id(opts.model),
        "lpips": str(Path(opts.lpips).resolve()),
        "lpips_weights_id": bundle.weights_id(opts.lpips),
        "inversions": str(opts.inversions.resolve()),
        "listing_sha256": invert_layout.listing_digest(listing),
        "pivots_sha256": hashlib.sha256(np.ascontiguousarray(photos.pivots).tobytes()).hexdigest(),
        "n_photos": len(photos.files),
        "batch_size": batch_size,
        "local_devices": local_devices,
        "pti": dataclasses.asdict(pti_config(opts)),
        "seed": opts.seed,
        "dtype": opts.dtype,
        "modulation": opts.modulation,
        "image_format": opts.image_format,
        "jpeg_quality": opts.jpeg_quality if opts.image_format in ("jpg", "webp") else None,
        "image_size": opts.image_size,
    }


def _prepare_output(opts: TuneOptions, out: TuneOutput, plan: dict[str, Any]) -> None:
    """Under the lock: make OUTPUT ready for this plan (empty, --overwrite, or --resume of the same plan)."""
    old = out.read_plan()
    if opts.resume:
        if old is None:
            raise UserError(
                f"--resume: {out.root} holds no unfinished tune (no {out.state.name}/plan.json); "
                "use --overwrite or another --output"
            )
        diff = invert_layout.describe_mismatch(old, plan, [k for k in plan if k in PLAN_KEYS])  # plan.json's order
        if diff:
            raise UserError(
                f"--resume: this run differs from the one in {out.root}: {'; '.join(diff)}. "
                "Rerun with the same arguments, or --overwrite to start over"
            )
        out.clean_temps()
    elif not outdir.is_empty_dir(out.root):
        if not opts.overwrite:
            hint = outdir.UNFINISHED_HINT if old is not None else ""
            outdir.refuse_not_empty(out.root, "--output", "removes only what an earlier tune wrote there", hint)
        out.clear_owned()
    out.write_plan(plan)


def tune_folder(opts: TuneOptions) -> int:
    """Tune, write, report (module docstring); returns EXIT_OK."""
    t_start = time.perf_counter()
    if opts.resume and opts.overwrite:
        raise UserError("--resume and --overwrite contradict each other; pass one")
    ctx = _check_args(opts)
    import jax

    from e4e_jax.runtime import sharding

    photos: Photos = ctx["photos"]
    n_dev = len(jax.local_devices())
    bs = sharding.round_up(opts.batch_size, n_dev)
    plan = _plan(opts, photos, bs, n_dev)
    out = TuneOutput(opts.output)
    batches = invert_layout.chunks(len(photos.files), bs)
    # One writer per folder, which holds nothing but tune's files; removed again if we fail first.
    with outdir.claim(opts.output, "e4e-jax tune", outputs=OUTPUTS, resume=opts.resume):
        fresh = not opts.resume
        _prepare_output(opts, out, plan)
        try:
            todo = [c for c in batches if not out.is_committed(c.index)]
            if len(todo) < len(batches):
                _say(opts, f"resuming: {len(batches) - len(todo)} of {len(batches)} batches already committed")
            stats = _tune_batches(opts, ctx, out, todo, bs) if todo else {}
            summary = {"model": str(opts.model), "inversions": str(opts.inversions), "pti": plan["pti"]}
            metrics = out.merge(
                len(batches), photos.files, [r.key for r in photos.rows], photos.faces, photos.pivots, summary
            )
            out.finish(
                {
                    **photos.recorded,  # the inverted folder and its alignment: edit --latents TUNED reads them
                    "n_photos": len(photos.files),
                    "n_tuned_now": sum(c.stop - c.start for c in todo),
                    "seconds": round(time.perf_counter() - t_start, 2),
                    **stats,
                }
            )
        except BaseException:
            if fresh and not any(out.batch_path(c.index).is_file() for c in batches):
                out.clear_owned()  # a refused or failed fresh start leaves nothing behind
            raise
    m = metrics["mean"]
    _say(
        opts,
        f"tuned {len(photos.files)} photos into {opts.output}: LPIPS {m['lpips_before']:.4f} -> "
        f"{m['lpips_after']:.4f}, L2 {m['l2_before']:.4f} -> {m['l2_after']:.4f} (mean), "
        f"{m['steps']:.0f} steps on average",
    )
    return EXIT_OK


def _tune_batches(opts: TuneOptions, ctx: dict[str, Any], out: TuneOutput, todo, bs: int) -> dict[str, Any]:
    """Tune, save and commit every batch of `todo`; returns the run's timings."""
    import jax
    import jax.numpy as jnp
    from tqdm import tqdm

    from e4e_jax.choices import compute_dtype
    from e4e_jax.inference import inversion, render, tuning
    from e4e_jax.jobs import sources
    from e4e_jax.models.lpips import LPIPS
    from e4e_jax.models.stylegan2 import Generator
    from e4e_jax.runtime import compile_cache, sharding
    from e4e_jax.storage import bundle, pti_bundle

    if compile_cache.enable() is None:  # as invert: a resumed or repeated run loads its executables
        _say(opts, f"note: cannot use {compile_cache.default_dir()} as the compilation cache")
    cfg, photos = pti_config(opts), ctx["photos"]
    gen_cfg, variables = render.generator_of_bundle(opts.model)
    _, lpips_vars = bundle.load(opts.lpips, "lpips")
    modulation, dtype = render.resolve_modulation(opts.modulation), compute_dtype(opts.dtype)
    gen = Generator(gen_cfg, modulation=modulation, dtype=dtype, upsample=render.resolve_upsample("auto"))
    lpips = LPIPS(net=ctx["lpips_net"], dtype=dtype)
    devices = jax.local_devices()
    mesh = sharding.data_mesh(devices) if len(devices) > 1 else None
    crop = ctx["crop"]
    runner = tuning.make_runner(gen, lpips, cfg, seed=opts.seed, crop_rows=crop, mesh=mesh)
    render_tuned = tuning.per_photo_renderer(gen, "const", mesh=mesh)
    render_base = render.make_synthesis_fn(gen_cfg, modulation=modulation, dtype=opts.dtype, mesh=mesh)
    metric = LPIPS(net=ctx["lpips_net"])  # before / after are measured in float32 whatever --dtype
    measure = jax.jit(lambda lv, x, y: tuning.photo_distances(metric, lv, tuning.frame(x, crop), y))
    saved = jax.jit(lambda x: inversion.to_uint8(inversion.resize_output(tuning.frame(x, crop), ctx["out_hw"])))
    base_syn = variables["params"]["synthesis"]
    fingerprint = pti_bundle.synthesis_fingerprint(base_syn)
    variables, lpips_vars = jax.device_put((variables, lpips_vars))
    t_tune, first_batch_s = 0.0, None
    loader = sources.SourceLoader(photos.rows, photos.align)  # re-aligns the faces of an --align output
    with loader, tqdm(total=len(todo) * cfg.max_steps, desc="tune", unit="step", disable=opts.quiet) as bar:
        for c in todo:
            t0 = time.perf_counter()
            rows = range(c.start, c.stop)
            b = len(rows)
            targets = jnp.asarray(sharding.pad_batch(load_targets(loader, photos, rows, ctx["frame_hw"]), bs))
            pivots = jnp.asarray(sharding.pad_batch(photos.pivots[c.start : c.stop], bs))
            ids = jnp.asarray(sharding.pad_batch(np.arange(c.start, c.stop, dtype=np.int32), bs))
            state = tuning.init_state(cfg, base_syn, jnp.arange(bs) < b)
            state, ran = tuning.tune(
                runner, state, variables, lpips_vars, pivots, targets, ids, cfg.max_steps, bar.update
            )
            bar.update(cfg.max_steps - ran)  # a batch whose photos all stopped early
            deltas = jax.device_get(tuning.delta(state.synthesis, base_syn))
            tuned = tuning.apply_delta(base_syn, deltas)
            after = render_tuned(variables, tuned, pivots[:, None], jax.random.key(0))[:, 0]
            before = render_base(variables, pivots, jax.random.key(0))
            metrics = [*measure(lpips_vars, before, targets), *measure(lpips_vars, after, targets)]
            metrics = {k: np.asarray(v)[:b].astype(float).tolist() for k, v in zip(METRIC_KEYS, metrics)}
            images = np.asarray(saved(after))
            steps = np.asarray(state.steps)[:b].tolist()
            t_tune += time.perf_counter() - t0
            result = _write_batch(opts, out, photos, rows, deltas, images, steps, metrics, gen_cfg, fingerprint)
            pause_points.reached("tune-batch-written")
            out.commit(c.index, result)
            pause_points.reached("tune-committed")
            first_batch_s = first_batch_s if first_batch_s is not None else time.perf_counter() - t0
    n = sum(c.stop - c.start for c in todo)
    stats = {"batch_size": bs, "first_batch_s": round(first_batch_s, 2), "tuning_s": round(t_tune, 2)}
    stats["photos_per_minute"] = round(60 * n / t_tune, 3) if t_tune else None
    mem = devices[0].memory_stats() or {}
    if "peak_bytes_in_use" in mem:
        stats["peak_device_bytes"] = int(mem["peak_bytes_in_use"])
    return {"timing": stats}


def _write_batch(opts, out, photos, rows, deltas, images, steps, metrics, gen_cfg, fingerprint) -> BatchResult:
    """Each row's generator bundle and reconstruction (before the batch is committed)."""
    from e4e_jax.storage import pti_bundle

    names, gens = [], []
    for i, row in enumerate(rows):
        face = photos.rows[row].face
        face = invert_layout.NO_FACE if face is None else face
        image, generator = row_names(row, photos.files[row], face, opts.image_format)
        delta = _row(deltas, i)
        extra = {"pti": {"photo": photos.files[row], "row": row, "steps": steps[i]}}
        pti_bundle.save(out.root / generator, gen_cfg, fingerprint, delta, extra=extra, overwrite=True)
        (out.root / image).parent.mkdir(exist_ok=True)
        workers.write_image(str(out.root / image), images[i], opts.image_format, opts.jpeg_quality)
        names.append(image)
        gens.append(generator)
    return BatchResult(list(rows), names, gens, steps, metrics)


def _row(tree: Any, i: int) -> Any:
    """Row i of every leaf of a nested dict of arrays."""
    if isinstance(tree, dict):
        return {k: _row(v, i) for k, v in tree.items()}
    return np.asarray(tree[i])
