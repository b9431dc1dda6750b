"""`align_folder(options)`: FFHQ-align the faces of a folder of photos (the `align` command; needs the
`align` extra).

Writes OUTPUT/<stem>.png (largest face of each photo), or OUTPUT/<stem>_face<K>.png for every face
with faces="all" (K = 0 for the largest, then by size); OUTPUT/landmarks/<stem>.json per photo
(detection box, 68 landmarks, crop quad in the photo's pixels; written last, it marks the photo
done); OUTPUT/skipped.txt and OUTPUT/report.json. A photo that cannot be aligned or a folder entry that
cannot be one is skipped with its reason and never stops the run; resume finishes an interrupted run.
Workers (e4e_jax/runtime/worker_pool.py) end with the main process, even when it is killed.

Returns the exit code (e4e_jax/errors.py); bad inputs raise UserError before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Optional

from e4e_jax import choices
from e4e_jax.inference import alignment
from e4e_jax.options import option
from e4e_jax.storage import manifest, outdir

LANDMARKS_DIR = "landmarks"
# Everything align writes into OUTPUT (e4e_jax/storage/outdir.py): all that --overwrite removes, and all an output
# folder may hold. (An unfinished run of a version before the mark is not adopted: landmark JSONs and PNGs
# do not prove whose they are.)
OUTPUTS = outdir.Outputs("align", ("*.png", f"{LANDMARKS_DIR}/*.json", manifest.SKIPPED, manifest.REPORT))
# zlib level of the PNGs: lossless at any level; 1 encodes a 1024² crop 5x faster than PIL's
# default 6 (60 vs 300 ms) for files 20% larger (BUILD_NOTES.md, "Face alignment").
PNG_COMPRESS_LEVEL = 1
SUBMIT_AHEAD = 2  # tasks queued per worker: keeps workers busy without reading far ahead


@dataclasses.dataclass(frozen=True)
class AlignOptions:
    """One align run; each field is an `e4e-jax align` option, declared once (e4e_jax/options.py)."""

    images: Path = option(type="path", help="folder of photos (jpg, png, bmp, webp, tif)")
    output: Path = option(type="path", help="output folder (created; must not overlap --images)")
    faces: str = option(
        choices.FACES[0],
        choices=choices.FACES,
        help="align the largest face of each photo (default), or every face found",
    )
    output_size: int = option(
        alignment.DEFAULT_OUTPUT_SIZE,
        type=("int_in", 1, alignment.MAX_OUTPUT_SIZE),
        help=f"side of the aligned images in px (default {alignment.DEFAULT_OUTPUT_SIZE}, as FFHQ; at most "
        f"{alignment.MAX_OUTPUT_SIZE}: the memory grows with its square)",
    )
    workers: Optional[int] = option(
        None, type="positive_int", help="worker processes (default: the CPUs available; 1 = in this process)"
    )
    landmarks: Optional[Path] = option(
        None,
        type="path",
        metavar="FILE",
        help="dlib 68-point shape-predictor file (default: the one in face-recognition-models)",
    )
    detect_size: int = option(
        alignment.DEFAULT_DETECT_SIZE,
        type="non_negative_int",
        metavar="PX",
        help="look for faces in a copy at most this long (px), then in the full photo if none is "
        f"found (default {alignment.DEFAULT_DETECT_SIZE}; 0 = always at full resolution, slower, "
        "finds faces down to ~40 px); landmarks are always fitted at full resolution",
    )
    resume: bool = option(
        False, group="again", help="finish an earlier run into --output: photos already done are kept, not redone"
    )
    overwrite: bool = option(
        False,
        group="again",
        help="allow an --output an earlier align wrote: its files are removed, every photo is redone",
    )


# ----------------------------------------------------------------------------- one photo
def output_stems(paths: list[Path]) -> dict[Path, str]:
    """Output stem per input: its file stem, or its whole name with dots made underscores when two
    inputs share a stem (a.jpg and a.png -> a_jpg, a_png)."""
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    return {p: p.stem if counts[p.stem] == 1 else p.name.replace(".", "_") for p in paths}


def face_name(stem: str, face_index: int, all_faces: bool) -> str:
    return f"{stem}_face{face_index}.png" if all_faces else f"{stem}.png"


def _settings_record(settings, all_faces: bool) -> dict:
    return {
        "output_size": settings.output_size,
        "faces": "all" if all_faces else "largest",
        "detect_size": settings.detect_size,
        "landmarks_model": Path(settings.landmarks).name if settings.landmarks else "face-recognition-models",
    }


_ALIGNER = None  # this process's Aligner (set by _worker_init, or by align_folder() for --workers 1)


def _worker_init(settings) -> None:
    global _ALIGNER
    from e4e_jax.inference import alignment

    _ALIGNER = alignment.Aligner.from_settings(settings).load()


def align_file(path: str, stem: str, output: str, all_faces: bool) -> dict:
    """Align one photo and write its PNGs, then its landmarks JSON (atomic writes). Runs in a
    worker. Returns {"file", "outputs": [names], "skipped": reason or None, "faces_found": n}."""
    import json

    from PIL import Image

    from e4e_jax.inference import alignment
    from e4e_jax.storage import fileio

    out = Path(output)
    record = {"file": path, "outputs": [], "skipped": None}
    try:
        faces = _ALIGNER.align(path, max_faces=None if all_faces else 1)
    except alignment.UnreadableImage as e:
        return dict(record, skipped=e.reason)  # no JSON: a fixed file is retried by --resume
    except alignment.NoFaceFound as e:
        faces, record["skipped"] = [], e.reason
    except Exception as e:  # noqa: BLE001 - one bad photo never stops the run; --resume retries it
        return dict(record, skipped=f"alignment failed: {type(e).__name__}: {e}")
    json_path = out / LANDMARKS_DIR / f"{stem}.json"
    old_outputs = _previous_outputs(json_path)
    entries = []
    for face in faces:
        name = face_name(stem, face.face_index, all_faces)
        fileio.write_atomic(
            out / name,
            lambda f, img=face.image: Image.fromarray(img).save(f, format="PNG", compress_level=PNG_COMPRESS_LEVEL),
        )
        entries.append(dict(output=name, **face.record()))
    names = [e["output"] for e in entries]
    for stale in set(old_outputs) - set(names):  # an --overwrite run found fewer faces than before
        (out / stale).unlink(missing_ok=True)
    w, h = faces[0].source_size if faces else (None, None)
    doc = dict(
        file=path,
        image_size=[w, h] if faces else None,
        skipped=record["skipped"],
        settings=_settings_record(_ALIGNER.settings, all_faces),
        faces=entries,
    )
    fileio.write_text(json_path, json.dumps(doc) + "\n")
    return dict(record, outputs=names)


def _previous_outputs(json_path: Path) -> list[str]:
    import json

    try:
        return [f["output"] for f in json.loads(json_path.read_text())["faces"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _done_record(out: Path, stem: str, expected_settings: dict) -> dict | None:
    """The record of a photo an earlier run finished (its JSON and all its PNGs exist), else None.
    Raises UserError if it was made with other settings."""
    import json

    from e4e_jax.errors import UserError

    json_path = out / LANDMARKS_DIR / f"{stem}.json"
    try:
        doc = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return None
    if doc.get("settings") != expected_settings:
        raise UserError(
            f"--resume: {json_path} was made with {doc.get('settings')}, not {expected_settings}; "
            "rerun with the same settings, or pass --overwrite to redo everything"
        )
    names = [f.get("output") for f in doc.get("faces", [])]
    if not all(n and (out / n).is_file() for n in names):
        return None
    return {"file": doc.get("file"), "outputs": names, "skipped": doc.get("skipped")}


# ----------------------------------------------------------------------------- the run
def _iter_results(jobs: list[tuple], settings, workers: int):
    """Yield align_file's result for each job, in completion order."""
    if workers <= 1 or len(jobs) <= 1:
        if _ALIGNER is None or _ALIGNER.settings != settings:
            _worker_init(settings)
        for job in jobs:
            yield align_file(*job)
        return
    import concurrent.futures as cf

    from e4e_jax.runtime import worker_pool

    # Workers that end with this process, even when it is killed (e4e_jax/runtime/worker_pool.py).
    with worker_pool.process_pool(workers, _worker_init, (settings,), preload=(__name__,)) as pool:
        pending: set[cf.Future] = set()
        it = iter(jobs)
        try:
            for job in it:
                pending.add(pool.submit(align_file, *job))
                if len(pending) >= SUBMIT_AHEAD * workers:
                    break
            while pending:
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    job = next(it, None)
                    if job is not None:
                        pending.add(pool.submit(align_file, *job))
                    yield fut.result()
        except BaseException:  # Ctrl-C, a dead worker: the photos in progress finish, nothing else starts
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _check(opts: AlignOptions):
    """Every check before anything is written; returns (photos, unusable folder entries, Aligner)."""
    from e4e_jax.data import folder
    from e4e_jax.errors import UserError
    from e4e_jax.inference import alignment

    if not opts.images.is_dir():
        raise UserError(f"--images {opts.images} is not a folder")
    if opts.output.exists() and not opts.output.is_dir():
        raise UserError(f"--output {opts.output} is a file; choose a folder")
    outdir.refuse_input_overlap(opts.output, [opts.images])
    if opts.landmarks is not None and not opts.landmarks.is_file():
        raise UserError(f"--landmarks {opts.landmarks} does not exist")
    try:
        paths, unusable = folder.scan_images(opts.images)
    except OSError as e:
        raise UserError(f"cannot list --images {opts.images}: {e}") from e
    aligner = alignment.Aligner(
        opts.output_size, opts.landmarks.resolve() if opts.landmarks else None, opts.detect_size or None
    )
    return paths, unusable, aligner


def _refuse_non_empty(opts: AlignOptions) -> None:
    from e4e_jax.errors import UserError

    if not (opts.resume or opts.overwrite or outdir.is_empty_dir(opts.output)):
        raise UserError(
            f"--output {opts.output} is not empty; pass --resume to finish an earlier run, "
            "--overwrite to redo it, or choose another folder"
        )


def _finished_report(out: Path, every_input: set[str], results: dict, expected: dict) -> dict | None:
    """report.json of a finished run of these photos and settings (nothing for --resume to do), else None:
    every photo is done, or was skipped unreadable by that run; no photo was left undone."""
    import json

    try:
        report = json.loads((out / manifest.REPORT).read_text(encoding="utf-8"))
        recorded = {r["file"] for r in report["aligned"]} | {r["file"] for r in report["skipped"]}
        finished = report["n_not_done"] == 0 and report["settings"] == expected
    except (OSError, ValueError, KeyError, TypeError):
        return None
    undone = every_input - {str(p) for p in results} - {r["file"] for r in report["skipped"]}
    return report if finished and recorded == every_input and not undone else None


def _summary(n_faces: int, n_aligned: int, n_inputs: int, n_skipped: int, output: Path) -> str:
    return f"aligned {n_faces} face(s) from {n_aligned} of {n_inputs} photos into {output}" + (
        f"; skipped {n_skipped} (see {output / manifest.SKIPPED})" if n_skipped else ""
    )


def _status(n_aligned: int, n_skipped: int) -> int:
    from e4e_jax.errors import EXIT_NOTHING, EXIT_OK, EXIT_PARTIAL

    return EXIT_NOTHING if not n_aligned else EXIT_PARTIAL if n_skipped else EXIT_OK


def _align_photos(jobs: list[tuple], settings, workers: int, results: dict, paths: list[Path], t0: float):
    """Align `jobs` into `results` (by input path), saying each skip; returns (interrupted, seconds to the
    first photo or None)."""
    from tqdm import tqdm

    from e4e_jax.runtime import pause_points
    from e4e_jax.storage import fileio

    by_name = {str(p): p for p in paths}
    n_faces = sum(len(r["outputs"]) for r in results.values())
    interrupted, first = False, None
    with tqdm(total=len(paths), initial=len(results), desc="align", unit="img") as bar:
        try:
            for rec in _iter_results(jobs, settings, workers):
                results[by_name[rec["file"]]] = rec
                first = time.time() - t0 if first is None else first
                n_faces += len(rec["outputs"])
                if rec["skipped"]:
                    tqdm.write(manifest.skip_message(rec["file"], rec["skipped"]), file=sys.stderr)
                bar.update(1)
                bar.set_postfix(faces=n_faces, refresh=False)
                pause_points.reached("align-photo-done")
        except KeyboardInterrupt:
            interrupted = True
        except fileio.NoRoomError as e:  # a full disk: what is done is kept
            e.then = "finish with the same command and --resume"
            raise
        except Exception as e:  # a worker process died (BrokenProcessPool): say so, keep what is done
            import concurrent.futures.process as cfp

            if not isinstance(e, cfp.BrokenProcessPool):
                raise
            interrupted = True
            tqdm.write(f"error: a worker process died ({e})", file=sys.stderr)
    return interrupted, first


def _write_report(opts, paths, unusable, results, expected, n_resumed, workers, t0, first) -> dict:
    """skipped.txt (the photos skipped and the folder entries that are not photos) and report.json."""
    import json

    from e4e_jax.storage import fileio

    ordered = [results[p] for p in paths if p in results]
    aligned = [r for r in ordered if r["outputs"]]
    skipped = sorted(
        [(r["file"], r["skipped"]) for r in ordered if r["skipped"]] + [(str(u.path), u.reason) for u in unusable],
        key=lambda fr: Path(fr[0]).relative_to(opts.images).as_posix(),
    )
    fileio.write_text(opts.output / manifest.SKIPPED, manifest.skipped_text(skipped))
    seconds = time.time() - t0
    report = {
        "images": str(opts.images),
        "settings": expected,
        "n_inputs": len(paths) + len(unusable),
        "n_aligned_inputs": len(aligned),
        "n_faces_written": sum(len(r["outputs"]) for r in ordered),
        "n_skipped": len(skipped),
        "n_resumed": n_resumed,
        "n_not_done": len(paths) - len(ordered),
        "workers": workers,
        "seconds": round(seconds, 2),
        "seconds_to_first_photo": None if first is None else round(first, 2),
        "images_per_second": round((len(ordered) - n_resumed) / seconds, 2) if seconds > 0 else None,
        "skipped": [{"file": f, "reason": r} for f, r in skipped],
        "aligned": [{"file": r["file"], "outputs": r["outputs"]} for r in aligned],
    }
    fileio.write_text(opts.output / manifest.REPORT, json.dumps(report, indent=2) + "\n")
    return report


def _resumed(opts: AlignOptions, paths: list[Path], unusable, stems: dict, expected: dict):
    """(results of the photos an earlier run finished, by input path; that run's report.json if it
    finished these photos with these settings, else None)."""
    results: dict[Path, dict] = {}
    for p in paths:
        rec = _done_record(opts.output, stems[p], expected)
        if rec is not None:
            results[p] = dict(rec, file=str(p))
    every_input = {str(p) for p in paths} | {str(u.path) for u in unusable}
    return results, _finished_report(opts.output, every_input, results, expected)


def align_folder(opts: AlignOptions) -> int:
    from e4e_jax.errors import EXIT_INTERRUPTED, EXIT_NOTHING
    from e4e_jax.storage import fileio

    paths, unusable, aligner = _check(opts)
    if not paths:
        example = f", e.g. {manifest.skip_message(str(unusable[0].path), unusable[0].reason)}" if unusable else ""
        what = f"usable images ({len(unusable)} unusable{example})" if unusable else "images (jpg, png, bmp, webp, tif)"
        print(f"error: no {what} in {opts.images}", file=sys.stderr)
        return EXIT_NOTHING
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(opts.workers or available, len(paths))
    outdir.check_owned(opts.output, OUTPUTS, resume=opts.resume)  # fail before loading; again under the lock
    _refuse_non_empty(opts)
    aligner.check(load_landmarks=False)  # dlib and the model file are there: before anything is made
    settings = aligner.settings
    all_faces = opts.faces == "all"
    expected = _settings_record(settings, all_faces)

    t0 = time.time()
    with outdir.claim(opts.output, "e4e-jax align", outputs=OUTPUTS, resume=opts.resume):
        _refuse_non_empty(opts)
        if opts.overwrite:
            OUTPUTS.remove(opts.output)
        (opts.output / LANDMARKS_DIR).mkdir(exist_ok=True)
        for d in (opts.output, opts.output / LANDMARKS_DIR):
            fileio.remove_stale_temps(d)
        stems = output_stems(paths)
        results, finished = _resumed(opts, paths, unusable, stems, expected) if opts.resume else ({}, None)
        if finished is not None:  # as `invert --resume` of a finished run: nothing redone or rewritten
            n_skipped, n_aligned = finished["n_skipped"], finished["n_aligned_inputs"]
            line = _summary(finished["n_faces_written"], n_aligned, finished["n_inputs"], n_skipped, opts.output)
            print(f"nothing to resume: {opts.output} holds the finished run; {line}", file=sys.stderr)
            return _status(n_aligned, n_skipped)
        n_resumed = len(results)
        jobs = [(str(p), stems[p], str(opts.output), all_faces) for p in paths if p not in results]
        # A file that is not a 68-point model is one clear error before any photo is done. With a
        # pool each worker loads its own models, so the parent only checks (a custom file) here.
        global _ALIGNER
        if workers <= 1 or len(jobs) <= 1:
            if _ALIGNER is None or _ALIGNER.settings != settings:  # kept for in-process callers
                _ALIGNER = aligner.load()
        elif opts.landmarks is not None:
            aligner.check(load_landmarks=True)
        for u in unusable:
            print(manifest.skip_message(str(u.path), u.reason), file=sys.stderr)
        interrupted, first = _align_photos(jobs, settings, workers, results, paths, t0)
        report = _write_report(opts, paths, unusable, results, expected, n_resumed, workers, t0, first)
    if interrupted:
        n_done = len(paths) - report["n_not_done"]
        print(
            f"interrupted after {n_done} of {len(paths)} photos; finish with the same command and --resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    n_aligned, n_skipped = report["n_aligned_inputs"], report["n_skipped"]
    print(_summary(report["n_faces_written"], n_aligned, report["n_inputs"], n_skipped, opts.output))
    return _status(n_aligned, n_skipped)
