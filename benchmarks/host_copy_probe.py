"""Where the batch inversion job's host time goes with 1024² reconstructions (issue 13): the ceilings of
each host stage measured alone on the machine that runs the job.

    python benchmarks/host_copy_probe.py --workdir workdir/e2e --json $OUT/host_copy_probe.json

1. Device -> host copy of one batch of uint8 reconstructions (B, 1024, 1024, 3), by route:
   `plain` np.asarray of the device array; `plain+concat` that, then np.concatenate of the one part
   (what `iter_invert` did); `pinned` device_put to the `pinned_host` memory kind, then np.asarray;
   `pinned+dlpack` the same read through np.from_dlpack; each also with the copy into a
   preallocated shared-memory slot ring (what the job does next).
2. Decode ceiling: `folder.load_pixels` (the exact official decode + resize) of the benchmark's
   1024² JPEGs in K worker processes, for several K.
3. Encode ceiling: JPEG encode of 1024² reconstructions in K worker processes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _median_s(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def copy_routes(batch: int, size: int, reps: int) -> dict:
    import jax
    import jax.numpy as jnp

    dev = jax.devices()[0]
    shape = (batch, size, size, 3)
    nbytes = int(np.prod(shape))
    x = jax.jit(lambda k: (jax.random.uniform(k, shape) * 255).astype(jnp.uint8))(jax.random.key(0))
    bump = jax.jit(lambda a: a + jnp.uint8(1))  # a fresh device array each time (JAX caches host copies)
    shm = shared_memory.SharedMemory(create=True, size=nbytes)
    ring = np.ndarray(shape, np.uint8, buffer=shm.buf)
    ring[:] = 0  # pages faulted in once, as the job's ring after its first lap
    pinned_sharding = jax.sharding.SingleDeviceSharding(dev, memory_kind="pinned_host")
    state = {"x": x}

    def fresh():
        state["x"] = bump(state["x"])
        state["x"].block_until_ready()
        return state["x"]

    def plain():
        return np.asarray(fresh())

    def plain_concat():
        return np.concatenate([np.asarray(fresh())[:batch]])

    def pinned():
        return np.asarray(jax.device_put(fresh(), pinned_sharding))

    def pinned_dlpack():
        return np.from_dlpack(jax.device_put(fresh(), pinned_sharding))

    def only_compute():
        fresh()

    out = {"bytes_per_batch": nbytes}
    base = _median_s(only_compute, reps)
    out["device_only_ms"] = round(base * 1e3, 2)
    for name, fn in (
        ("plain", plain),
        ("plain+concat", plain_concat),
        ("pinned", pinned),
        ("pinned+dlpack", pinned_dlpack),
    ):
        try:
            t = _median_s(fn, reps) - base
            t_ring = _median_s(lambda: ring.__setitem__(slice(None), fn()), reps) - base
            out[name] = {
                "ms": round(t * 1e3, 2),
                "GB_per_s": round(nbytes / t / 1e9, 2),
                "with_ring_copy_ms": round(t_ring * 1e3, 2),
                "img_per_s_main_thread": round(batch / t_ring, 1),
            }
        except Exception as e:  # noqa: BLE001 - a route this JAX does not support is reported, not fatal
            out[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
        print(name, out[name], flush=True)
    ring = None  # noqa: F841 - the shared memory closes only once no array views it
    shm.close()
    shm.unlink()
    return out


def _decode_one(path: str) -> int:
    from e4e_jax.data import folder

    return folder.load_pixels(path, (256, 256)).shape[0]


def _encode_one(seed: int) -> int:
    from e4e_jax.jobs.invert.workers import encode_image

    img = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), np.uint8)
    img = np.kron(img, np.ones((64, 64, 1), np.uint8))  # smooth-ish 1024² content, like a face
    return len(encode_image(img, "jpg", 75))


def pool_rate(fn, jobs, workers: int) -> float:
    from e4e_jax.jobs.invert.workers import context

    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context()) as pool:
        list(pool.map(fn, jobs[: workers * 2]))  # warm every worker
        t0 = time.perf_counter()
        list(pool.map(fn, jobs, chunksize=8))
        return round(len(jobs) / (time.perf_counter() - t0), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=ROOT / "workdir" / "e2e")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=8)
    p.add_argument("--workers", type=int, nargs="+", default=[8, 12, 16])
    p.add_argument("--json", default=None)
    args = p.parse_args()
    from invert_e2e import make_photos

    make_photos(args.workdir / "photos", 1024)
    photos = [str(q) for q in sorted((args.workdir / "photos").glob("*.jpg"))][:1024]
    res = {"copy": copy_routes(args.batch, 1024, args.reps)}
    res["decode_img_per_s"] = {k: pool_rate(_decode_one, photos, k) for k in args.workers}
    print("decode", res["decode_img_per_s"], flush=True)
    res["encode_jpg_img_per_s"] = {k: pool_rate(_encode_one, list(range(1024)), k) for k in args.workers}
    print("encode", res["encode_jpg_img_per_s"], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
