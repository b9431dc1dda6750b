"""Batch inversion end to end: `e4e-jax invert` vs the official `scripts/inference.py`, same files, same weights.

    python benchmarks/invert_e2e.py --workdir workdir/e2e --sizes 256 2048 --sides official ours \
        --json $OUT/invert_e2e.json

Makes a folder of N 1024² JPEGs (the largest N; smaller N are its first files), an official e4e
checkpoint with random weights (the official Encoder4Editing + 1024² StyleGAN2, as
benchmarks/inversion_vs_official.py builds them) and its e4e-jax bundle (our converter), then times
each side as a user runs it: a fresh process per run, wall clock from start to exit, files in and out.
The official script runs from the fetched repository (`external/encoder4editing`, git-ignored) with a
stub `dlib` module (alignment is not used) and its CUDA ops compiled once before any timing. Our runs
start with a warm persistent compilation cache except the one marked `cold`. Two N separate start-up
from the steady rate: steady img/s = (N2 - N1) / (T2 - T1). The setup is kept in --workdir so that a
second call on the same machine skips it (`--sides ours` after `--sides official`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
IMAGE_SIZE = 1024
JPEG_QUALITY = 90


def _photo(job: tuple[Path, int, int]) -> None:
    """A smooth, photo-like JPEG (a random low-resolution field upsampled, plus grain): decodes like a
    photograph, unlike white noise."""
    from PIL import Image

    path, seed, size = job
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (24, 24, 3), np.uint8)).resize((size, size), Image.BICUBIC)
    a = np.asarray(small, np.int16) + rng.integers(-6, 7, (size, size, 3))
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path, quality=JPEG_QUALITY)


def make_photos(folder: Path, n: int, size: int = IMAGE_SIZE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("*.jpg")))
    if have >= n:
        return
    jobs = [(folder / f"photo_{i:06d}.jpg", i, size) for i in range(have, n)]
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_photo, jobs, chunksize=16))


def subset(folder: Path, n: int, dest: Path) -> Path:
    """The first n photos as symlinks in `dest` (both sides read the same bytes)."""
    if dest.is_dir() and len(list(dest.iterdir())) == n:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for p in sorted(folder.glob("*.jpg"))[:n]:
        (dest / p.name).symlink_to(p.resolve())
    return dest


def make_checkpoint(work: Path, official: Path) -> tuple[Path, Path]:
    ckpt, bundle = work / "e4e_random.pt", work / "bundle"
    if not ckpt.is_file():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from inversion_vs_official import build_official, save_official_ckpt

        enc, dec, latent_avg = build_official(official, IMAGE_SIZE)
        save_official_ckpt(enc, dec, latent_avg, IMAGE_SIZE, ckpt)
    if not bundle.is_dir():
        subprocess.run(
            [sys.executable, "-m", "tools.convert_weights", "e4e", str(ckpt), "--out", str(bundle)],
            cwd=ROOT,
            check=True,
        )
    return ckpt, bundle


def make_random_bundle(work: Path) -> Path:
    """An e4e bundle with random weights made by e4e-jax alone (full IR-SE50 encoder, 1024² generator):
    for runs of `--sides ours` on a machine without the official code. Speed does not depend on the
    weights' values."""
    bundle = work / "bundle_random"
    if bundle.is_dir():
        return bundle
    import jax
    import jax.numpy as jnp

    from e4e_jax.models.encoder_types import EncoderConfig
    from e4e_jax.models.stylegan2 import StyleGAN2Config, init_variables
    from e4e_jax.storage import e4e_bundle

    gen_cfg = StyleGAN2Config.rosinality(IMAGE_SIZE)
    enc_cfg = EncoderConfig(mode="e4e", n_styles=gen_cfg.n_latent)
    enc = enc_cfg.build()
    enc_vars = jax.jit(enc.init)(jax.random.key(1), jnp.zeros((1, *enc_cfg.input_size, 3)))
    latent_avg = np.asarray(jax.random.normal(jax.random.key(2), (gen_cfg.n_latent, gen_cfg.style_dim))) * 0.1
    variables = {"encoder": enc_vars, "generator": init_variables(gen_cfg, jax.random.key(0)), "latent_avg": latent_avg}
    return e4e_bundle.save(bundle, e4e_bundle.E4EArchitecture.create(enc_cfg, gen_cfg, "ffhq_encode"), variables)


def stub_dlib(work: Path) -> Path:
    d = work / "stubs"
    d.mkdir(exist_ok=True)
    (d / "dlib.py").write_text("# alignment is not used by these runs; the official script imports dlib anyway\n")
    return d


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode not in (0, 3):
        raise RuntimeError(f"{cmd[:4]} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return wall, r.stderr


def run_official(official: Path, ckpt: Path, images: Path, out: Path, batch: int, latents_only: bool, env) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = [
        sys.executable,
        "scripts/inference.py",
        "--images_dir",
        str(images),
        "--save_dir",
        str(out),
        "--batch",
        str(batch),
        *(["--latents_only"] if latents_only else []),
        str(ckpt),
    ]
    wall, _ = timed(cmd, official, env)
    return wall


def run_ours(
    bundle: Path, images: Path, out: Path, batch: int, latents_only: bool, dtype: str, env, extra: list[str] = ()
) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "e4e_jax.cli",
        "invert",
        "--model",
        str(bundle),
        "--images",
        str(images),
        "--output",
        str(out),
        "--batch-size",
        str(batch),
        "--dtype",
        dtype,
        "--quiet",
        *(["--no-images"] if latents_only else []),
        *extra,
    ]
    wall, _ = timed(cmd, ROOT, env)
    report = json.loads((out / "report.json").read_text())
    t = report["timing"]
    # Time to the first batch counted from the process start (the report's clock starts after imports).
    t["first_batch_from_start_s"] = round(t["first_batch_s"] + (wall - report["seconds"]), 2)
    return {"wall_s": round(wall, 2), **t}


def steady(n1, t1, n2, t2) -> float:
    return round((n2 - n1) / (t2 - t1), 1)


def drift(bundle: Path, images: Path, work: Path, env, dtype: str) -> dict:
    """--fast-decode against the exact official pixels on the same files: input L2 at 256 and latents."""
    exact, fast = work / "drift_exact", work / "drift_fast"
    run_ours(bundle, images, exact, 32, True, dtype, env)
    run_ours(bundle, images, fast, 32, True, dtype, env, ["--fast-decode"])
    from e4e_jax.data import folder

    paths = folder.list_images(images)[:64]
    a = np.stack([folder.load_image(p, (256, 256)) for p in paths])
    b = np.stack([folder.load_image(p, (256, 256), fast_decode=True) for p in paths])
    la, lb = np.load(exact / "latents.npy"), np.load(fast / "latents.npy")
    return {
        "input_mse_256": float(np.mean((a - b) ** 2)),
        "input_max_abs": float(np.abs(a - b).max()),
        "latent_mean_abs_diff": float(np.abs(la - lb).mean()),
        "latent_max_abs_diff": float(np.abs(la - lb).max()),
        "latent_mean_abs": float(np.abs(la).mean()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=ROOT / "workdir" / "e2e")
    p.add_argument("--official", type=Path, default=ROOT / "external" / "encoder4editing")
    p.add_argument("--sizes", type=int, nargs=2, default=[256, 2048])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--sides", nargs="+", default=["official", "ours"], choices=["official", "ours", "drift"])
    p.add_argument("--json", default=None)
    p.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="an existing e4e bundle (skips the official "
        "checkpoint; for a smoke run of --sides ours without the official code)",
    )
    p.add_argument(
        "--random-bundle",
        action="store_true",
        help="a random bundle made by e4e-jax (no official code needed; --sides ours only)",
    )
    p.add_argument(
        "--ours-env",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="environment of our runs (to compare variants of one build side by side)",
    )
    p.add_argument("--tag", default="ours", help="key of our results in the JSON (one per --ours-env)")
    p.add_argument("--warm", action="store_true", help="keep the compilation cache (skip the cold runs)")
    p.add_argument("--photo-size", type=int, default=IMAGE_SIZE)
    args = p.parse_args()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    # The official modules compile their CUDA ops at import (also when the checkpoint is built).
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(work / "torch_ext"))
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
    t0 = time.perf_counter()
    make_photos(work / "photos", max(args.sizes), args.photo_size)
    folders = {n: subset(work / "photos", n, work / f"in_{n}") for n in args.sizes}
    if args.random_bundle:
        ckpt, bundle = None, make_random_bundle(work)
    else:
        ckpt, bundle = (None, args.bundle) if args.bundle else make_checkpoint(work, args.official)
    print(f"setup {time.perf_counter() - t0:.1f} s", flush=True)
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if "official" in args.sides:
        oenv = dict(env, PYTHONPATH=f"{stub_dlib(work)}:{args.official}")
        # Compile its CUDA ops once, outside every timing.
        subprocess.run([sys.executable, "-c", "import models.stylegan2.op"], cwd=args.official, env=oenv, check=True)
        off = {}
        for mode in ("latents", "images"):
            for n in args.sizes:
                off[f"{mode}_{n}"] = run_official(
                    args.official, ckpt, folders[n], work / f"off_{mode}_{n}", args.batch, mode == "latents", oenv
                )
                print(f"official {mode} N={n}: {off[f'{mode}_{n}']:.1f} s", flush=True)
        results["official"] = off
    if "ours" in args.sides:
        jenv = dict(
            env,
            E4E_JAX_CACHE_DIR=str(work / "xla_cache"),
            XLA_PYTHON_CLIENT_PREALLOCATE="false",
            **dict(kv.split("=", 1) for kv in args.ours_env),
        )
        ours = {}
        if not args.warm:
            shutil.rmtree(work / "xla_cache", ignore_errors=True)
            ours["cold_images_256"] = run_ours(
                bundle, folders[min(args.sizes)], work / "ours_cold", args.batch, False, args.dtype, jenv
            )
            run_ours(bundle, folders[min(args.sizes)], work / "ours_cold_l", args.batch, True, args.dtype, jenv)
        for mode in ("latents", "images"):
            for n in args.sizes:
                ours[f"{mode}_{n}"] = run_ours(
                    bundle, folders[n], work / f"ours_{mode}_{n}", args.batch, mode == "latents", args.dtype, jenv
                )
                print(f"{args.tag} {mode} N={n}: {ours[f'{mode}_{n}']}", flush=True)
        ours["env"] = args.ours_env
        results[args.tag] = ours
    if "drift" in args.sides:
        jenv = dict(env, E4E_JAX_CACHE_DIR=str(work / "xla_cache"), XLA_PYTHON_CLIENT_PREALLOCATE="false")
        results["fast_decode_drift"] = drift(bundle, folders[min(args.sizes)], work, jenv, args.dtype)
    results_path.write_text(json.dumps(results, indent=1))
    n1, n2 = args.sizes
    rows = []
    for mode in ("latents", "images"):
        row = {"mode": mode}
        if "official" in results:
            o = results["official"]
            row.update(
                official_wall_n2=o[f"{mode}_{n2}"], official_steady=steady(n1, o[f"{mode}_{n1}"], n2, o[f"{mode}_{n2}"])
            )
        if args.tag in results:
            u = results[args.tag]
            row.update(
                ours_wall_n2=u[f"{mode}_{n2}"]["wall_s"],
                ours_steady=steady(n1, u[f"{mode}_{n1}"]["wall_s"], n2, u[f"{mode}_{n2}"]["wall_s"]),
                ours_first_batch=u[f"{mode}_{n2}"]["first_batch_from_start_s"],
            )
        if "official" in results and args.tag in results:
            row.update(
                steady_ratio=round(row["ours_steady"] / row["official_steady"], 2),
                wall_ratio=round(row["official_wall_n2"] / row["ours_wall_n2"], 2),
            )
        rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, **results}, indent=1))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import emit

    emit(rows, None)


if __name__ == "__main__":
    main()
