"""Where inversion time goes: model FLOPs, fraction of the GPU's peak, peak memory and a kernel profile.

    python benchmarks/inversion_profile.py --batch 32 --dtypes float32 bfloat16 --fuse 0 1 \
        --trace --json $OUT/inversion_profile.json

Random weights (speed does not depend on their values): the official-size e4e encoder (IR-SE50, 18
style blocks, 256² input) and the 1024² StyleGAN2 (channel multiplier 2), run as `e4e-jax invert`
runs them (encoder -> + latent_avg -> generator with its stored noise).

Each configuration runs in its own process so that its peak device memory (`peak_bytes_in_use`, with
XLA_PYTHON_CLIENT_PREALLOCATE=false) is its own. Per configuration: median time of the whole
inversion and of the encoder and generator alone; model FLOPs per image from XLA's cost analysis of
the un-optimised program (`Lowered.cost_analysis()`: convolutions and matmuls as written, 2 FLOPs per
multiply-add); achieved TFLOP/s and its fraction of the chip's dense peak (H100/H200 SXM datasheet:
989 TFLOP/s bf16, 495 TFLOP/s TF32). `--trace` adds the GPU kernels that take the most time
(jax.profiler, read back with jax.profiler.ProfileData).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Dense datasheet peaks, TFLOP/s (NVIDIA H100 SXM5 / H200 SXM: the same tensor cores).
PEAK_TFLOPS = {"bfloat16": 989.4, "float32": 494.7}  # float32 runs as TF32 (XLA's default precision)
N_STYLES, SIZE, INPUT = 18, 1024, 256


def build(dtype: str, fuse: bool, modulation: str = "auto", upsample: str = "auto"):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from e4e_jax.choices import compute_dtype
    from e4e_jax.inference.inversion import E4EModel
    from e4e_jax.inference.render import resolve_modulation, resolve_upsample
    from e4e_jax.models.encoder import Encoder4Editing
    from e4e_jax.models.stylegan2 import Generator, StyleGAN2Config, init_variables

    cfg = StyleGAN2Config.rosinality(SIZE, 2)
    encoder = Encoder4Editing(n_styles=N_STYLES, dtype=compute_dtype(dtype), fuse_style_blocks=fuse)
    # Initialised on the host: on the GPU, init's forward pass would autotune every conv once more.
    with jax.default_device(jax.devices("cpu")[0]):
        enc_vars = jax.jit(Encoder4Editing(n_styles=N_STYLES).init)(jax.random.key(1), jnp.zeros((1, INPUT, INPUT, 3)))
        gen_vars = init_variables(cfg, jax.random.key(0))
    generator = Generator(
        cfg, modulation=resolve_modulation(modulation), dtype=compute_dtype(dtype), upsample=resolve_upsample(upsample)
    )
    variables = {
        "encoder": enc_vars,
        "generator": gen_vars,
        "latent_avg": jnp.asarray(np.random.default_rng(0).normal(0, 0.1, (cfg.n_latent, 512)), jnp.float32),
    }
    return E4EModel(encoder, generator, variables, (INPUT, INPUT), None, "random")


def flops_per_image(fn, *args) -> float:
    return float(fn.lower(*args).cost_analysis()["flops"])


def top_kernels(trace_dir: str, iters: int, n: int = 25) -> list[dict]:
    """GPU op time per HLO op name (summed over the traced calls, divided by `iters`)."""
    from jax.profiler import ProfileData

    totals, counts = collections.Counter(), collections.Counter()
    for path in glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True):
        for plane in ProfileData.from_file(path).planes:
            if "GPU" not in plane.name:
                continue
            lines = {line.name: line for line in plane.lines}
            line = lines.get("XLA Ops")
            chosen = [line] if line is not None else [l for name, l in lines.items() if "Stream" in name]
            for line in chosen:
                for ev in line.events:
                    totals[ev.name] += ev.duration_ns
                    counts[ev.name] += 1
    if not totals:
        names = [
            (plane.name, [l.name for l in plane.lines])
            for path in glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
            for plane in ProfileData.from_file(path).planes
        ]
        return [{"op": "no GPU op events found", "planes": str(names)[:2000]}]
    total = sum(totals.values()) or 1
    rows = [
        {
            "op": name,
            "ms_per_call": round(ns / iters / 1e6, 3),
            "share": round(ns / total, 3),
            "launches_per_call": counts[name] // iters,
        }
        for name, ns in totals.most_common(n)
    ]
    kinds = collections.Counter()
    for name, ns in totals.items():
        kind = (
            "conv"
            if "conv" in name.lower()
            else "gemm"
            if any(k in name.lower() for k in ("gemm", "dot", "matmul"))
            else "fusion"
            if "fusion" in name.lower()
            else "other"
        )
        kinds[kind] += ns
    rows.append(
        {
            "op": "TOTAL by kind",
            **{k: round(v / iters / 1e6, 2) for k, v in kinds.items()},
            "ms_per_call": round(total / iters / 1e6, 2),
        }
    )
    return rows


def profile_calls(call, n: int = 25, calls: int = 3) -> list[dict]:
    """Top GPU kernels of `calls` runs of `call(i)` (which returns a JAX result), under jax.profiler."""
    import jax

    d = tempfile.mkdtemp()
    with jax.profiler.trace(d):
        for i in range(calls):
            jax.block_until_ready(call(i))
    return top_kernels(d, calls, n)


def log(msg: str, _t0=[None]) -> None:
    import time

    _t0[0] = _t0[0] or time.time()
    print(f"[{time.time() - _t0[0]:7.1f}s] {msg}", file=sys.stderr, flush=True)


def run_one(dtype: str, fuse: bool, batch: int, iters: int, trace: bool, count_flops: bool = True) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.common import peak_memory_bytes, time_fn
    from e4e_jax.inference import inversion

    log(f"{dtype} fuse={fuse} batch={batch}: building")
    model = build(dtype, fuse)
    v = jax.device_put(model.variables, jax.devices()[0])  # built on the host: move them once
    rng = np.random.default_rng(0)
    xs = [
        jax.device_put(rng.uniform(-1, 1, (batch, INPUT, INPUT, 3)).astype(np.float32), jax.devices()[0])
        for _ in range(3)
    ]
    invert = inversion.make_invert_fn(model)
    enc = jax.jit(lambda v, x: inversion.encode(model, v, x))
    gen = jax.jit(lambda v, w: model.generator.apply(v["generator"], w, input_is_latent=True, noise_mode="const"))
    ws = [enc(v, x) for x in xs]
    log("encoder compiled and run")
    row = {"dtype": dtype, "fuse_style_blocks": fuse, "batch": batch}
    t = time_fn(lambda i: jax.block_until_ready(invert(v, xs[i % 3])), iters=iters)
    row.update(
        ms=round(t["median_s"] * 1e3, 2),
        img_per_s=round(batch / t["median_s"], 1),
        compile_s=round(t["first_call_s"], 1),
    )
    log(f"inversion timed: {row['ms']} ms")
    row["peak_mem_gib"] = round((peak_memory_bytes() or 0) / 2**30, 2)
    te = time_fn(lambda i: jax.block_until_ready(enc(v, xs[i % 3])), iters=iters)
    tg = time_fn(lambda i: jax.block_until_ready(gen(v, ws[i % 3])), iters=iters)
    log("encoder and generator timed")
    row.update(encoder_ms=round(te["median_s"] * 1e3, 2), generator_ms=round(tg["median_s"] * 1e3, 2))
    print("ROW " + json.dumps(row), flush=True)  # timings first: the rest may be cut short
    if trace:
        kernels = profile_calls(lambda i: invert(v, xs[i % 3]))
        log("traced")
        for k in kernels:
            print("KERNEL " + json.dumps(k), flush=True)
        log("trace read")
    # Model FLOPs of the official formulation (per-block style convs, transposed conv + blur), whatever
    # the timed program's implementation, so that every row divides the same work.
    ref = build("float32", False, modulation="activation", upsample="transpose")
    if not count_flops:
        return row
    x1 = jnp.zeros((1, INPUT, INPUT, 3))
    f_enc = flops_per_image(jax.jit(lambda v, x: inversion.encode(ref, v, x)), ref.variables, x1)
    f_gen = flops_per_image(
        jax.jit(lambda v, w: ref.generator.apply(v["generator"], w, input_is_latent=True, noise_mode="const")),
        ref.variables,
        jnp.zeros((1, N_STYLES, 512)),
    )
    f_all = flops_per_image(inversion.make_invert_fn(ref), ref.variables, x1)
    tflops = f_all * batch / t["median_s"] / 1e12
    row.update(
        gflop_per_img=round(f_all / 1e9, 1),
        encoder_gflop=round(f_enc / 1e9, 1),
        generator_gflop=round(f_gen / 1e9, 1),
        tflop_s=round(tflops, 1),
        frac_of_peak=round(tflops / PEAK_TFLOPS[dtype], 3),
        encoder_tflop_s=round(f_enc * batch / te["median_s"] / 1e12, 1),
        generator_tflop_s=round(f_gen * batch / tg["median_s"] / 1e12, 1),
    )
    log("FLOPs counted")
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--fuse", type=int, nargs="+", default=[0, 1], help="fuse_style_blocks values (0/1)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--trace", action="store_true", help="kernel profile of each configuration")
    p.add_argument("--json", default=None)
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count (device independent)")
    p.add_argument("--one", nargs=2, metavar=("DTYPE", "FUSE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        row = run_one(args.one[0], bool(int(args.one[1])), args.batch, args.iters, args.trace, not args.no_flops)
        print("ROW " + json.dumps(row), flush=True)
        return
    from benchmarks.common import device_info

    print(device_info(), flush=True)
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    rows = []
    for dtype in args.dtypes:
        for fuse in args.fuse:
            cmd = (
                [
                    sys.executable,
                    __file__,
                    "--one",
                    dtype,
                    str(fuse),
                    "--batch",
                    str(args.batch),
                    "--iters",
                    str(args.iters),
                ]
                + (["--trace"] if args.trace else [])
                + (["--no-flops"] if args.no_flops else [])
            )
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            lines = [l for l in out.stdout.splitlines() if l.startswith("ROW ")]
            if out.returncode or not lines:
                print(f"{dtype} fuse={fuse} failed:\n{out.stderr[-3000:]}", flush=True)
                continue
            row = json.loads(lines[-1][4:])
            kernels = [json.loads(l[7:]) for l in out.stdout.splitlines() if l.startswith("KERNEL ")]
            rows.append(row)
            print(json.dumps(row), flush=True)
            for k in kernels or []:
                print("   ", json.dumps(k), flush=True)
            if kernels:
                row["top_kernels"] = kernels
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
