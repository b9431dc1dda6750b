"""Images/s of `e4e-jax synthesize` (the jitted synthesis the CLI uses) at 1024², random weights.

    python benchmarks/synthesize.py --size 1024 --batches 1 8 32 --dtypes float32 bfloat16 \
        --paths grouped activation --json $OUT/synth.json

Weights are random (a fixed seed): speed does not depend on their values. Inputs rotate among
three W+ sets so no result is served from a cache.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import device_info, emit, time_fn  # noqa: E402
from e4e_jax.inference import render  # noqa: E402
from e4e_jax.models.stylegan2 import StyleGAN2Config, init_variables  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--channel-multiplier", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--paths", nargs="+", default=["grouped", "activation"])
    p.add_argument("--upsample", nargs="+", default=["transpose"], help="transpose and/or subpixel")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    print(device_info(), flush=True)
    cfg = StyleGAN2Config.rosinality(args.size, args.channel_multiplier)
    variables = init_variables(cfg, jax.random.key(0))
    rows = []
    for path, up in [(p_, u) for p_ in args.paths for u in args.upsample]:
        for dtype in args.dtypes:
            synth = render.make_synthesis_fn(cfg, modulation=path, dtype=dtype, upsample=up)
            for b in args.batches:
                inputs = [jax.random.normal(jax.random.key(i), (b, cfg.n_latent, cfg.style_dim)) for i in range(3)]
                rng = jax.random.key(0)
                t = time_fn(lambda i: synth(variables, inputs[i % 3], rng).block_until_ready(), iters=args.iters)
                rows.append(
                    {
                        "path": path,
                        "upsample": up,
                        "dtype": dtype,
                        "batch": b,
                        "ms_per_batch": round(t["median_s"] * 1e3, 2),
                        "img_per_s": round(b / t["median_s"], 1),
                        "compile_s": round(t["first_call_s"], 1),
                    }
                )
                print(rows[-1], flush=True)
    # bf16 drift against fp32 on the same inputs (max abs, images in about [-1, 1]).
    ws = jax.random.normal(jax.random.key(7), (4, cfg.n_latent, cfg.style_dim))
    ref = np.asarray(render.make_synthesis_fn(cfg, modulation="grouped")(variables, ws, jax.random.key(0)))
    for path in args.paths:
        out = np.asarray(
            render.make_synthesis_fn(cfg, modulation=path, dtype="bfloat16")(variables, ws, jax.random.key(0))
        )
        print(f"bf16 {path}: max|bf16 - fp32| = {np.abs(out - ref).max():.4f}, mean = {np.abs(out - ref).mean():.5f}")
    emit(rows, args.json)


if __name__ == "__main__":
    main()
