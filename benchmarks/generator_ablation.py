"""Generator implementation choices, one at a time, in one run: ToRGB and skip up-sampling.

    python benchmarks/generator_ablation.py --batch 32 --dtype bfloat16 --json $OUT/gen_ablation.json

Variants (each in its own process; random weights, 1024² rosinality config-f, const noise, the GPU
defaults `modulation=activation`, `upsample=subpixel`):
  * torgb   `matmul` (default: per-sample matmul with the modulated 1×1 weight) or `conv` (scale the
            activation by the style, then a shared 1×1 convolution: the activation path's general form);
  * skip_up `polyphase` (default: per-phase 2-tap sums) or `zero_stuff` (upfirdn2d over the zero-inserted
            image, the official formulation);
  * upsample `subpixel` (GPU default) or `transpose`;
  * an optional 4th field names an XLA flag set (XLA_FLAG_SETS), e.g. `matmul/polyphase/subpixel/cmdbuf`;
  * an optional 5th field, the encoder's last style conv (output 1x1): `matmul` (default: one batched
            matmul per level, fused_styles._tail_as_matmul) or `conv` (one 3x3 stride-2 conv per block).
Times the generator alone and the whole inversion (official-size encoder with fused style heads ->
+ latent_avg -> generator). `--trace` adds the top GPU kernels of the generator and of the whole inversion.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = [
    "matmul/polyphase/subpixel",
    "conv/polyphase/subpixel",
    "matmul/zero_stuff/subpixel",
    "conv/zero_stuff/subpixel",
]

# XLA flag sets tried beside the code variants (the 4th field of a variant, default none).
XLA_FLAG_SETS = {
    "none": "",
    "cmdbuf": "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN "
    "--xla_gpu_graph_min_graph_size=1",
    "nocmdbuf": "--xla_gpu_enable_command_buffer=",
    # NHWC for every cuDNN conv, whatever XLA's layout heuristic picks (float32 included).
    "nhwc": "--xla_gpu_force_conv_nhwc=true",
}


def parse_variant(variant: str) -> list[str]:
    """'TORGB/SKIP_UP/UPSAMPLE[/FLAG_SET[/TAIL]]' -> the five fields, defaults filled in."""
    fields = variant.split("/")
    if not 3 <= len(fields) <= 5:
        raise ValueError(f"variant {variant!r}: expected TORGB/SKIP_UP/UPSAMPLE[/FLAG_SET[/TAIL]]")
    return fields + ["none", "matmul"][len(fields) - 3 :]


def apply_variant(torgb: str, skip_up: str, tail: str = "matmul") -> None:
    """Swap the chosen formulations into e4e_jax.models.layers / fused_styles (this process only)."""
    from e4e_jax.models import fused_styles, layers

    if tail == "conv":

        def tail_as_convs(parts, kernels, biases, dtype, precision):
            return [
                fused_styles._conv_s2(x, k.astype(dtype), bb.astype(dtype), precision)
                for x, k, bb in zip(parts, kernels, biases)
            ]

        fused_styles._tail_as_matmul = tail_as_convs
    elif tail != "matmul":
        raise ValueError(tail)

    if torgb == "conv":

        def conv_1x1(x, weight, styles, demodulate, precision):
            y = layers._conv(
                x * styles[:, None, None, :].astype(x.dtype), weight[None, None].astype(x.dtype), 0, precision=precision
            )
            if demodulate:
                y = y * layers._demod(weight[None, None], styles, precision)[:, None, None, :].astype(x.dtype)
            return y

        layers._modulated_matmul = conv_1x1
    elif torgb != "matmul":
        raise ValueError(torgb)
    if skip_up == "zero_stuff":

        def zero_stuffed(x, taps, factor=2):
            p = len(taps) - factor
            return layers.upfirdn2d(x, taps, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2), gain=factor**2)

        layers.upsample2d = zero_stuffed
    elif skip_up != "polyphase":
        raise ValueError(skip_up)


def run_one(variant: str, dtype: str, batch: int, iters: int, trace: bool) -> dict:
    import jax
    import numpy as np

    from benchmarks.common import time_fn, time_pipelined
    from benchmarks.inversion_profile import INPUT, build, log, profile_calls
    from e4e_jax.inference import inversion

    torgb, skip_up, upsample, _, tail = parse_variant(variant)
    apply_variant(torgb, skip_up, tail)
    model = build(dtype, True, upsample=upsample)
    v = jax.device_put(model.variables, jax.devices()[0])
    rng = np.random.default_rng(0)
    xs = [
        jax.device_put(rng.uniform(-1, 1, (batch, INPUT, INPUT, 3)).astype(np.float32), jax.devices()[0])
        for _ in range(3)
    ]
    enc = jax.jit(lambda v, x: inversion.encode(model, v, x))
    gen = jax.jit(lambda v, w: model.generator.apply(v["generator"], w, input_is_latent=True, noise_mode="const"))
    ws = [enc(v, x) for x in xs]
    tg = time_fn(lambda i: jax.block_until_ready(gen(v, ws[i % 3])), iters=iters)
    log(f"{variant}: generator {tg['median_s'] * 1e3:.2f} ms")
    invert = inversion.make_invert_fn(model)
    ti = time_fn(lambda i: jax.block_until_ready(invert(v, xs[i % 3])), iters=iters)
    tp = time_pipelined(lambda i: invert(v, xs[i % 3]), jax.block_until_ready, iters=iters)
    row = {
        "variant": variant,
        "dtype": dtype,
        "batch": batch,
        "generator_ms": round(tg["median_s"] * 1e3, 2),
        "generator_compile_s": round(tg["first_call_s"], 1),
        "inversion_ms": round(ti["median_s"] * 1e3, 2),
        "inversion_img_per_s": round(batch / ti["median_s"], 1),
        "inversion_ms_pipelined": round(tp["median_s"] * 1e3, 2),
        "inversion_img_per_s_pipelined": round(batch / tp["median_s"], 1),
    }
    img = np.asarray(gen(v, ws[0]), np.float32)
    np.save(os.path.join(tempfile.gettempdir(), f"gen_{variant.replace('/', '_')}_{dtype}.npy"), img[:4])
    print("ROW " + json.dumps(row), flush=True)
    if trace:
        for k in profile_calls(lambda i: gen(v, ws[i % 3]), n=15):
            print("KERNEL " + json.dumps(k), flush=True)
        for k in profile_calls(lambda i: invert(v, xs[i % 3])):
            print("KERNEL inversion " + json.dumps(k), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--variants", nargs="+", default=VARIANTS, help="TORGB/SKIP_UP/UPSAMPLE")
    p.add_argument("--trace", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--dump", default=None, help="XLA HLO dump folder for the first variant")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        run_one(args.one, args.dtype, args.batch, args.iters, args.trace)
        return
    import numpy as np

    from benchmarks.common import device_info

    print(device_info(), flush=True)
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    rows = []
    for k, name in enumerate(args.variants):
        if args.dump:
            env = {**env, "XLA_FLAGS": f"--xla_dump_to={args.dump} --xla_dump_hlo_as_text" if k == 0 else ""}
        flags = XLA_FLAG_SETS[parse_variant(name)[3]]
        env_k = {**env, "XLA_FLAGS": " ".join(f for f in (env.get("XLA_FLAGS", ""), flags) if f)}
        cmd = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--dtype",
            args.dtype,
            "--batch",
            str(args.batch),
            "--iters",
            str(args.iters),
        ] + (["--trace"] if args.trace else [])
        out = subprocess.run(cmd, env=env_k, capture_output=True, text=True)
        lines = out.stdout.splitlines()
        found = [json.loads(l[4:]) for l in lines if l.startswith("ROW ")]
        if out.returncode or not found:
            print(f"{name} failed:\n{out.stderr[-3000:]}", flush=True)
            continue
        rows.append(found[-1])
        print(json.dumps(found[-1]), flush=True)
        for l in lines:
            if l.startswith("KERNEL "):
                print("   ", l[7:], flush=True)

    # Same images whatever the formulation (bf16 rounding differs by the order of sums only).
    def saved(row):
        return np.load(os.path.join(tempfile.gettempdir(), f"gen_{row['variant'].replace('/', '_')}_{args.dtype}.npy"))

    if rows:
        ref = saved(rows[0])
        for r in rows[1:]:
            r["max_abs_diff_vs_first"] = float(np.abs(saved(r) - ref).max())
            print(f"{r['variant']} vs first: max |diff| {r['max_abs_diff_vs_first']:.4f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
