"""`invert_folder(options)`: the whole batch inversion job (what `e4e-jax invert` runs).

Steps: join the process group if asked; process 0 locks OUTPUT, checks it (empty, `--overwrite`n
or a `--resume`-able run of the same plan: plan.py) and writes the plan; every process lists the same sorted
files, takes chunks j ≡ process_index (mod process_count) that are not committed yet, and inverts
them (pipeline.py); after a barrier process 0 merges the chunks into the final files (layout.py).
Architecture: docs/inversion_job.md.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from e4e_jax import errors
from e4e_jax.errors import UserError
from e4e_jax.jobs.invert import layout as layout_lib
from e4e_jax.jobs.invert import memory, pipeline
from e4e_jax.jobs.invert import plan as plan_lib
from e4e_jax.jobs.invert import workers as workers_lib
from e4e_jax.jobs.invert.options import DEFAULT_CHUNK, InvertOptions  # noqa: F401 (the job's API)
from e4e_jax.runtime import pause_points
from e4e_jax.storage import manifest, outdir


def _say(opts: InvertOptions, msg: str) -> None:
    if not opts.quiet:
        print(msg, file=sys.stderr, flush=True)


def _check_args(
    opts: InvertOptions, batch_size: int, n_devices: int
) -> tuple[Optional[tuple[int, int]], Optional[int]]:
    """Every check that needs no listing and no weights, before anything is written (the host memory of
    `batch_size` included); returns the saved reconstructions' (height, width) for --image-size (None:
    full size) and the ReStyle iteration count the run uses (None for an e4e bundle)."""
    if not opts.images.is_dir():
        raise UserError(f"--images {opts.images} is not a folder")
    if not os.access(opts.images, os.R_OK | os.X_OK):
        raise UserError(f"--images {opts.images} is not readable")
    if opts.output.exists() and not opts.output.is_dir():
        raise UserError(f"--output {opts.output} is a file; choose a folder")
    outdir.refuse_input_overlap(opts.output, [opts.images, opts.model])
    outdir.check_owned(opts.output, layout_lib.OUTPUTS, resume=opts.resume)  # again under the lock
    from e4e_jax.inference import inverters

    arch = inverters.read_architecture(opts.model)  # A wrong --model fails here, before any file is made.
    iterations = inverters.resolve_iterations(arch, opts.iterations, opts.save_iterations)
    if opts.align:
        from e4e_jax.inference import alignment

        alignment.Aligner(opts.align_size, opts.landmarks).check(load_landmarks=False)  # dlib + model present
    if opts.image_format is not None and opts.image_format not in workers_lib.IMAGE_FORMATS:
        raise UserError(f"--image-format {opts.image_format!r}: choose one of {sorted(workers_lib.IMAGE_FORMATS)}")
    size, cars = arch.generator.size, arch.domain == "cars"
    out_hw = saved_hw = None  # without images, --image-size has nothing to size
    if opts.image_format is not None:
        out_hw = _out_hw(size, cars, opts.image_size)
        saved_hw = out_hw or _out_hw(size, cars, size)
    latent_shape = (arch.generator.n_latent, arch.generator.style_dim)
    row_shape = _row_shape(latent_shape, iterations if opts.save_iterations else None)
    memory.check_host(batch_size, n_devices, tuple(arch.encoder.input_size), saved_hw, row_shape)
    return out_hw, iterations


def _row_shape(latent_shape: tuple[int, int], saved_iterations: Optional[int]) -> tuple[int, ...]:
    """The latents of one image as the kernel returns them and the chunks keep them: (n_latent, 512), or
    (iterations, n_latent, 512) with --save-iterations."""
    return latent_shape if saved_iterations is None else (saved_iterations, *latent_shape)


def _make_prepare(opts: InvertOptions, input_hw: tuple[int, int]):
    """The per-file decode step (run in worker processes: picklable): path -> [(face, (H, W, 3) uint8)]
    or Skipped."""
    if opts.align:
        from e4e_jax.jobs.invert import align_step

        return functools.partial(
            align_step.prepare,
            input_hw=input_hw,
            output_size=opts.align_size,
            faces=opts.faces,
            landmarks=opts.landmarks,
        )
    return functools.partial(_prepare_plain, input_hw=input_hw, fast_decode=opts.fast_decode)


def _prepare_plain(path: str, input_hw, fast_decode: bool):
    from e4e_jax.data import folder

    out = folder.load_pixels(path, input_hw, fast_decode=fast_decode)
    return out if isinstance(out, folder.Skipped) else [(layout_lib.NO_FACE, out)]


def _out_hw(size: int, is_cars: bool, image_size: Optional[int]) -> Optional[tuple[int, int]]:
    """Saved reconstruction (height, width) for `--image-size W` of a generator of `size` (aspect kept;
    cars are 4:3)."""
    if image_size is None:
        return None
    from e4e_jax import domains

    h, _ = domains.output_hw("cars" if is_cars else None, size)
    if image_size > size:
        raise UserError(f"--image-size {image_size} is larger than the generator's {size}; pass at most {size}")
    return int(round(h * image_size / size)), image_size


reconstruction_hw = _out_hw  # public: `tune` sizes its reconstructions as invert does


@dataclasses.dataclass(frozen=True)
class _Job:
    """The state of a run once its plan is made, shared by the steps after it. `files`: the sorted
    listing, `unlisted`: (path, reason) of the entries it cannot use; `bs`: the batch size rounded to the
    local devices; `out_hw`: saved reconstructions' (height, width), None for full size; `multi`: several
    processes; `cache_dir`: the compilation cache in use, if any."""

    opts: InvertOptions
    lay: layout_lib.Layout
    plan: dict[str, Any]
    files: list[str]
    unlisted: list[tuple[str, str]]
    all_chunks: list
    bs: int
    out_hw: Optional[tuple[int, int]]
    multi: bool
    t_start: float
    cache_dir: Optional[str]


def invert_folder(opts: InvertOptions) -> int:
    """Run the job; returns the exit code (errors.EXIT_*). Raises UserError for bad input."""
    t_start = time.perf_counter()
    from e4e_jax.runtime import distributed as dist

    multi = dist.initialize(**opts.distributed())
    import jax

    from e4e_jax.runtime import compile_cache, sharding

    cache_dir = compile_cache.enable(opts.compile_cache) if opts.compile_cache != "" else None
    if opts.compile_cache != "" and cache_dir is None:
        _say(opts, f"note: cannot use {opts.compile_cache or compile_cache.default_dir()} as the compilation cache")
    pid, n_devices = jax.process_index(), len(jax.local_devices())
    bs = sharding.round_up(opts.batch_size, n_devices)
    out_hw, iterations = _check_args(opts, bs, n_devices)
    opts = dataclasses.replace(opts, iterations=iterations)  # the count used, in the plan (a --resume compares it)
    files, unlisted = _listing(opts, multi)
    lay = layout_lib.Layout(opts.output)
    plan = plan_lib.make_plan(opts, files, bs, n_devices)
    all_chunks = layout_lib.chunks(len(files), opts.chunk_size)
    job = _Job(opts, lay, plan, files, unlisted, all_chunks, bs, out_hw, multi, t_start, cache_dir)
    with outdir.lock(opts.output, "e4e-jax invert") if pid == 0 else contextlib.nullcontext():
        finished = _prepare(opts, lay, plan, files, unlisted, multi)
        if finished is not None:
            if pid != 0:
                return errors.EXIT_OK
            _say(opts, f"nothing to resume: {opts.output} holds the finished run; {summary(finished, opts.output)}")
            return exit_status(finished)
        if pid == 0:
            for path, reason in unlisted:
                _say(opts, manifest.skip_message(path, reason))
        # A fresh run that fails before its first commit leaves the folder as it found it: its plan would
        # otherwise turn a corrected rerun into a refused "--resume of a different run".
        fresh = pid == 0 and not multi and not opts.resume
        try:
            report = _run_chunks(job)
        except BaseException:
            if fresh and not any(lay.chunk_path(c.index).is_file() for c in all_chunks):
                lay.clear_owned()
                outdir.disown_if_empty(lay.root)
            raise
    if report is None:
        return errors.EXIT_OK
    _say(opts, summary(report, opts.output))
    return exit_status(report)


def _run_chunks(job: _Job) -> Optional[dict[str, Any]]:
    """Invert this process's uncommitted chunks, then (process 0, after every process is done) merge all
    of them; returns the report (None on the other processes)."""
    import jax

    from e4e_jax.inference import inverters

    opts, pid, nproc = job.opts, jax.process_index(), jax.process_count()
    # The weights load in a thread while the decoder processes start (compiling alongside did not
    # pay: both hold the GIL; BUILD_NOTES.md, issue 13 second pass).
    loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="e4e-load")
    t_load = time.perf_counter()
    model_future = loader.submit(inverters.load, opts.model, modulation=opts.modulation, dtype=opts.dtype)
    loader.shutdown(wait=False)
    mine = [c for c in job.all_chunks if c.index % nproc == pid]
    done = {c.index for c in mine if job.lay.is_committed(c.index)}
    todo = [c for c in mine if c.index not in done]
    n_done_files = sum(c.stop - c.start for c in mine if c.index in done)
    if done:
        _say(opts, f"resuming: {len(done)} of {len(mine)} chunks already committed")
    n_todo = sum(c.stop - c.start for c in todo)
    workers = min(opts.workers or os.cpu_count() or 1, max(1, -(-n_todo // pipeline.DECODE_GROUP)))
    # Decoder processes start now, while the model loads and compiles.
    with workers_lib.decoder_pool(workers) as decode_pool:
        for _ in range(workers if n_todo else 0):
            decode_pool.submit(int)
        model = model_future.result()
        load_s = time.perf_counter() - t_load  # to the model being ready, overlapped with the above
        stats = _invert_chunks(job, model, todo, n_done_files, decode_pool, workers)
    stats["timing"]["load_s"] = round(load_s, 3)
    if job.multi:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("e4e-invert-chunks-done")
    if pid != 0:
        return None
    return _merge(job, model, nproc, stats)


def _listing(opts: InvertOptions, multi: bool) -> tuple[list[str], list[tuple[str, str]]]:
    """(sorted input files, (path, reason) of the folder entries the listing cannot use)."""
    from e4e_jax.data import folder

    try:
        paths, unusable = folder.scan_images(opts.images, recursive=opts.recursive)
    except OSError as e:
        raise UserError(f"cannot list --images {opts.images}: {e}") from e
    files = [str(p) for p in paths]
    unlisted = [(str(u.path), u.reason) for u in unusable]
    if multi:
        _same_listing_everywhere(files)
    if not files:
        if unlisted:
            path, reason = unlisted[0]
            raise UserError(
                f"no usable images in {opts.images}: {len(unlisted)} unusable, e.g. {manifest.one_line(path)}: {reason}"
            )
        raise UserError(f"no images (jpg, png, bmp, webp, tif) in {opts.images}")
    return files, unlisted


_FINISHED = -1  # what process 0 broadcasts when --resume finds the run finished


def _prepare(opts, lay, plan, files, unlisted, multi: bool) -> Optional[dict[str, Any]]:
    """Process 0 makes OUTPUT ready (plan.prepare_output) and tells the others; returns the report of a
    finished run --resume has nothing to add to ({} on the other processes), else None."""
    import jax

    status, message, finished = 0, "", None
    if jax.process_index() == 0:
        try:
            finished, changed = plan_lib.prepare_output(opts, lay, plan, files, [path for path, _ in unlisted])
            if changed:
                _say(
                    opts,
                    f"resuming: {len(changed)} file(s) changed since the run started "
                    f"({plan_lib.name_list(changed, opts.images)}); their chunks are redone",
                )
        except UserError as e:
            status, message = e.exit_code, str(e)
    code = status or (_FINISHED if finished is not None else 0)
    if multi:
        code = _broadcast_int(code)
    if code > 0:
        raise UserError(message or "process 0 refused the output folder (see its message)")
    return (finished or {}) if code == _FINISHED else None


def _merge(job: _Job, model, nproc: int, stats: dict[str, Any]) -> dict[str, Any]:
    """Process 0: the final files from every committed chunk, report.json last; returns the report."""
    opts, lay, files, unlisted, all_chunks = job.opts, job.lay, job.files, job.unlisted, job.all_chunks
    missing = [c.index for c in all_chunks if not lay.chunk_path(c.index).is_file()]
    if missing:
        raise UserError(f"chunks {missing[:5]}... were not committed (a process failed); rerun with --resume")
    latent_shape = pipeline.latent_shape(model)
    saved = opts.iterations if opts.save_iterations else None
    n, n_inverted_files, skipped, per_process = lay.merge(
        len(all_chunks), latent_shape, opts.image_format is not None, unlisted, iterations=saved
    )
    report = {
        "model": str(opts.model),
        "images": str(opts.images),
        "n_files": len(files) + len(unlisted),
        "n_inverted": n,  # rows of latents.npy: faces with --align --faces all
        "n_inverted_files": n_inverted_files,
        "n_skipped": len(skipped),
        "skipped": [{"file": f, "reason": r} for f, r in skipped],
        "latents_shape": [n, *latent_shape],
        **({"latents_iterations_shape": [n, saved, *latent_shape]} if saved else {}),
        "processes": nproc,
        "files_per_process": {str(k): v for k, v in sorted(per_process.items())},
        "seconds": round(time.perf_counter() - job.t_start, 2),
        **stats,
        "plan": job.plan,  # what --resume of the finished run compares
    }
    lay.finish(report)
    return report


def summary(report: dict[str, Any], output: Path) -> str:
    """The closing line of a run (or of a --resume that found it finished)."""
    n, n_files = report.get("n_inverted", 0), report.get("n_files", 0)
    if (report.get("plan") or {}).get("align"):
        text = f"inverted {n} face(s) from {report.get('n_inverted_files', n)} of {n_files} photos into {output}"
    else:
        text = f"inverted {n} of {n_files} images into {output}"
    skipped = report.get("n_skipped", 0)
    return text + (f"; skipped {skipped} (see {output / manifest.SKIPPED})" if skipped else "")


def exit_status(report: dict[str, Any]) -> int:
    if not report.get("n_inverted"):
        return errors.EXIT_NOTHING
    return errors.EXIT_PARTIAL if report.get("n_skipped") else errors.EXIT_OK


def _invert_chunks(job: _Job, model, todo: list, n_done_files: int, decode_pool, workers: int) -> dict:
    """Invert the files of `todo` (this process's uncommitted chunks; `n_done_files` of its files are
    committed already) in batches of `job.bs` (a multiple of the local devices) with `workers` decoder
    processes of `decode_pool`; returns the stage timings."""
    import jax

    from e4e_jax.runtime import sharding

    opts, bs = job.opts, job.bs
    mesh = sharding.data_mesh(jax.local_devices())
    invert_fn, variables, compile_s = _compile(job, model, mesh)
    clock = pipeline.StageClock()
    jobs = [(job.files[i], c.index) for c in todo for i in range(c.start, c.stop)]
    sizes = {c.index: c.stop - c.start for c in todo}
    known_rows = None
    if not job.multi:
        known_rows = {c.index: job.lay.committed_rows(c.index) for c in job.all_chunks if c.index not in sizes}
    writers = opts.writers or max(2, (os.cpu_count() or 1) // 2)
    first_batch = {}
    from tqdm import tqdm

    with tqdm(
        total=n_done_files + len(jobs),
        initial=n_done_files,
        desc="invert",
        unit="img",
        disable=opts.quiet or (jax.process_index() != 0 and job.multi),
    ) as bar:
        pipeline.run(
            pipeline.Run(
                model,
                job.lay,
                jobs,
                sizes,
                known_rows,
                prepare=_make_prepare(opts, model.input_hw),
                batch_size=bs,
                workers=workers,
                writers=writers if opts.image_format else 0,
                image_format=opts.image_format,
                quality=opts.jpeg_quality,
                invert_fn=invert_fn,
                variables=variables,
                mesh=mesh,
                clock=clock,
                row_shape=_row_shape(pipeline.latent_shape(model), opts.iterations if opts.save_iterations else None),
                decode_pool=decode_pool,
                on_first_batch=lambda: first_batch.setdefault("s", time.perf_counter() - job.t_start),
                on_progress=bar.update,
                on_commit=lambda j: pause_points.reached("invert-chunk-committed"),
                on_skip=lambda path, reason: (
                    opts.quiet or tqdm.write(manifest.skip_message(path, reason), file=sys.stderr)
                ),
            )
        )
    return {
        "timing": {
            "compile_s": round(compile_s, 3),
            "first_batch_s": round(first_batch.get("s", float("nan")), 3),
            "stage_thread_seconds": {k: round(v, 3) for k, v in clock.seconds.items()},
            "workers": workers,
            "writers": writers,
            "batch_size": bs,
        }
    }


def _compile(job: _Job, model, mesh):
    """(the inversion compiled for batch `job.bs` on `mesh`, its variables replicated on it, the compile
    seconds); refuses a batch the devices' memory cannot hold."""
    import jax

    from e4e_jax.inference import inversion, inverters
    from e4e_jax.runtime import sharding

    opts = job.opts
    images_mode = "uint8" if opts.image_format is not None else "none"
    kernel = inverters.kernel(
        model,
        mesh,
        images=images_mode,
        out_hw=job.out_hw,
        iterations=opts.iterations,
        save_iterations=opts.save_iterations,
    )
    invert_fn, compile_s = inversion.compile_for_batch(
        kernel.fn, kernel.variables, model.input_hw, mesh, job.bs, np.uint8
    )
    what = f"the inversion ({opts.iterations} ReStyle iterations)" if opts.iterations else "the inversion"
    _say(
        opts,
        f"compiled {what} for batch {job.bs} in {compile_s:.1f} s"
        + (f" (persistent cache {job.cache_dir})" if job.cache_dir else " (no persistent cache)"),
    )
    variables = sharding.replicate(kernel.variables, mesh)
    memory.check_compiled(invert_fn, job.bs, jax.local_devices(), memory.tree_bytes(kernel.variables))
    return invert_fn, variables, compile_s


def _same_listing_everywhere(files: list[str]) -> None:
    from jax.experimental import multihost_utils

    digest = np.frombuffer(bytes.fromhex(layout_lib.listing_digest(files)), np.uint8)
    every = np.asarray(multihost_utils.process_allgather(digest))
    if not (every == every[0]).all():
        raise UserError(
            "the processes see different --images listings; every host must read the same folder (a shared file system)"
        )


def _broadcast_int(value: int) -> int:
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))
