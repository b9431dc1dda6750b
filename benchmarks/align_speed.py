"""Face alignment speed: `e4e-jax align` against the official e4e recipe, on the same photos and CPU.

    python benchmarks/align_speed.py --n 320 --workers 16 --output-size 1024 --json $OUT/align.json
    python benchmarks/align_speed.py --n 12 --workers 2 --reference-n 2 --shift-n 2     # a quick run

Makes its own test photos from the official sample photo (../shared/assets/e4e/images/input_img.jpg,
or --photo): seeded random scale (0.45-1.1), rotation (±20°) and position, pasted on photo-sized
canvases over a blurred background (every third a tight portrait, so that the crop leaves the
photo and the padding blur runs), saved as JPEG; `--unique` different ones, copied up to `--n`.
Then times, each wall clock:
  (a) the official procedure (tests/ffhq_reference.py, written from the recipe's facts): per image
      the detector and the 68-point model are created afresh, detection at full resolution, the
      whole image shrunk, scipy's full-resolution padding blur, the quad sampled at the output size
      (as the official e4e); no file written. In `--reference-workers` processes (2: the official
      inference DataLoader's num_workers), on the first `--reference-n` photos;
  (b) `e4e-jax align --workers N` as a subprocess, start-up included, writing PNGs + JSON;
and prints images/s of each and their ratio, and (c) how far the eye centres move when faces are
detected on the reduced copy instead of the full photo (landmarks always at full resolution).

Needs numpy, PIL, scipy and dlib only (plus this repository). `--landmarks` takes the 68-point model
file or its `.pack` (benchmarks/dlib_model_pack.py), unpacked to a temporary file first.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_PHOTO = ROOT.parent / "shared" / "assets" / "e4e" / "images" / "input_img.jpg"
SCALE_RANGE = (0.45, 1.1)  # face photo side relative to the 1024² source
MAX_ROTATION = 20.0  # degrees
CANVASES = [(1600, 1200), (1200, 1600), (1920, 1080), (2048, 1536), (1280, 960)]
TIGHT_EVERY = 3  # every third photo is a tight portrait crop
BACKGROUND_BLUR = 40  # px: blurred background, no second face for the detector
JPEG_QUALITY = 90


def make_photos(photo: Path, folder: Path, n: int, unique: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    src = Image.open(photo).convert("RGB")
    background = src.filter(ImageFilter.GaussianBlur(BACKGROUND_BLUR))
    made = []
    for i in range(min(n, unique)):
        side = int(src.width * rng.uniform(*SCALE_RANGE))
        angle = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
        face = src.resize((side, side), Image.LANCZOS).rotate(angle, Image.BICUBIC, expand=True)
        mask = Image.new("L", (side, side), 255).rotate(angle, Image.BICUBIC, expand=True)
        if i % TIGHT_EVERY == TIGHT_EVERY - 1:  # a tight portrait: the crop leaves the photo, padding runs
            w, h = face.width * 3 // 4, face.height * 3 // 4
        else:
            w, h = CANVASES[i % len(CANVASES)]
            w, h = max(w, face.width + 16), max(h, face.height + 16)
        canvas = background.resize((w, h), Image.BILINEAR)
        x, y = (int(rng.integers(min(0, d), max(0, d) + 1)) for d in (w - face.width, h - face.height))
        canvas.paste(face, (x, y), mask)
        p = folder / f"photo_{i:04d}.jpg"
        canvas.save(p, quality=JPEG_QUALITY)
        made.append(p)
    for i in range(len(made), n):  # copies: same work per file, no cache in the pipeline
        p = folder / f"photo_{i:04d}.jpg"
        shutil.copyfile(made[i % len(made)], p)
        made.append(p)
    return made


def _reference_one(job: tuple[str, str, int]) -> tuple[float, bool]:
    from tests import ffhq_reference as ref

    path, predictor, size = job
    t0 = time.perf_counter()
    img = ref.official_align(path, predictor, size, transform_size=size)
    return time.perf_counter() - t0, img is not None


def run_reference(paths: list[Path], predictor: str, size: int, workers: int) -> dict:
    jobs = [(str(p), predictor, size) for p in paths]
    t0 = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        out = pool.map(_reference_one, jobs, chunksize=1)
    wall = time.perf_counter() - t0
    per_image = [t for t, _ in out]
    return {
        "n": len(paths),
        "workers": workers,
        "wall_s": round(wall, 2),
        "images_per_s": round(len(paths) / wall, 3),
        "seconds_per_image": round(float(np.mean(per_image)), 2),
        "faces": sum(ok for _, ok in out),
    }


def run_ours(images: Path, output: Path, size: int, workers: int, landmarks: str | None) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "e4e_jax.cli",
        "align",
        "--images",
        str(images),
        "--output",
        str(output),
        "--output-size",
        str(size),
        "--workers",
        str(workers),
    ]
    if landmarks:
        cmd += ["--landmarks", landmarks]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"e4e-jax align failed ({r.returncode}):\n{r.stderr[-3000:]}")
    report = json.loads((output / "report.json").read_text())
    n = report["n_inputs"]
    # steady state: after the first photo is done (worker start-up and model loading are before it)
    steady = (n - 1) / max(report["seconds"] - report["seconds_to_first_photo"], 1e-9)
    return {
        "n": n,
        "workers": workers,
        "wall_s": round(wall, 2),
        "images_per_s": round(n / wall, 3),
        "command_s": report["seconds"],
        "first_photo_s": report["seconds_to_first_photo"],
        "images_per_s_steady": round(steady, 3),
        "faces": report["n_faces_written"],
    }


def eye_shift(paths: list[Path], landmarks: str | None) -> dict:
    """Eye centres from detection on the reduced copy vs on the full photo (px, % of eye distance)."""
    from e4e_jax.inference import alignment as al
    from e4e_jax.inference import ffhq_crop

    ours = al.Aligner(landmarks=landmarks).load()
    full = al.Aligner(landmarks=landmarks, detect_size=None)
    full._detector, full._predictor = ours._detector, ours._predictor
    shifts, rel = [], []
    for p in paths:
        rgb = np.asarray(al.read_rgb(p))
        a, b = ours.detect(rgb), full.detect(rgb)
        if not a or not b:
            continue
        ea = np.stack(ffhq_crop.eye_and_mouth_points(ours.landmarks_in(rgb, a[0]))[:2])
        eb = np.stack(ffhq_crop.eye_and_mouth_points(ours.landmarks_in(rgb, b[0]))[:2])
        s = float(np.linalg.norm(ea - eb, axis=1).max())
        shifts.append(s)
        rel.append(100 * s / float(np.linalg.norm(eb[1] - eb[0])))
    return {
        "n": len(shifts),
        "detect_size": ours.settings.detect_size,
        "max_px": round(max(shifts), 2) if shifts else None,
        "mean_px": round(float(np.mean(shifts)), 2) if shifts else None,
        "max_pct_of_eye_distance": round(max(rel), 2) if rel else None,
        "mean_pct_of_eye_distance": round(float(np.mean(rel)), 2) if rel else None,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--n", type=int, default=64, help="photos aligned by e4e-jax align")
    p.add_argument("--unique", type=int, default=32, help="different photos made (the rest are copies)")
    p.add_argument(
        "--workers", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
    )
    p.add_argument("--output-size", type=int, default=1024)
    p.add_argument("--reference-n", type=int, default=8, help="photos aligned by the official procedure")
    p.add_argument("--reference-workers", type=int, default=2)
    p.add_argument("--shift-n", type=int, default=8, help="photos for the eye-shift measurement (0: skip)")
    p.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    p.add_argument(
        "--landmarks", default=None, help="68-point model file, or its .pack (default: face-recognition-models)"
    )
    p.add_argument("--keep", type=Path, default=None, help="keep the photos and outputs here")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    if not a.photo.is_file():
        raise SystemExit(
            f"{a.photo} not found (the official sample photos live in ../shared/assets/e4e/images; or pass --photo)"
        )
    work = Path(tempfile.mkdtemp(prefix="align_speed_")) if a.keep is None else a.keep
    work.mkdir(parents=True, exist_ok=True)
    landmarks = a.landmarks
    if landmarks and landmarks.endswith(".pack"):
        from dlib_model_pack import unpack  # beside this script

        unpacked = work / "shape_predictor_68_face_landmarks.dat"
        unpack(Path(landmarks), unpacked)
        landmarks = str(unpacked)
    if landmarks is None:
        from e4e_jax.inference.alignment import default_landmarks_file

        predictor = str(default_landmarks_file())
    else:
        predictor = str(Path(landmarks).resolve())
        landmarks = predictor
    t0 = time.perf_counter()
    (work / "photos").mkdir(exist_ok=True)
    photos = make_photos(a.photo, work / "photos", a.n, a.unique)
    print(f"made {len(photos)} photos in {time.perf_counter() - t0:.1f}s ({work / 'photos'})", file=sys.stderr)

    result = {
        "host": {
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.processor() or platform.machine(),
        },
        "output_size": a.output_size,
    }
    result["reference"] = run_reference(photos[: a.reference_n], predictor, a.output_size, a.reference_workers)
    print(f"(a) official procedure: {result['reference']}", file=sys.stderr)
    out = work / "aligned"
    shutil.rmtree(out, ignore_errors=True)
    result["ours"] = run_ours(work / "photos", out, a.output_size, a.workers, landmarks)
    print(f"(b) e4e-jax align: {result['ours']}", file=sys.stderr)
    result["speedup"] = round(result["ours"]["images_per_s"] / result["reference"]["images_per_s"], 1)
    # per core: ours per worker against one official process
    result["speedup_per_core"] = round(
        result["ours"]["images_per_s"] / a.workers * result["reference"]["seconds_per_image"], 1
    )
    if a.shift_n:
        result["eye_shift"] = eye_shift(photos[: a.shift_n], landmarks)
        print(f"(c) eye shift, reduced-copy vs full-resolution detection: {result['eye_shift']}", file=sys.stderr)
    print(json.dumps(result, indent=2))
    print(
        f"official procedure ({a.reference_workers} processes): {result['reference']['images_per_s']:.2f} images/s "
        f"({result['reference']['seconds_per_image']:.2f} s per image per process); e4e-jax align --workers {a.workers}: "
        f"{result['ours']['images_per_s']:.2f} images/s end to end, start-up included "
        f"({result['ours']['images_per_s_steady']:.2f} after the first photo); {result['speedup']}x, {result['speedup_per_core']}x per core"
    )
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    if a.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
