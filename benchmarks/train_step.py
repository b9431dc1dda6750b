"""Speed of the e4e train step at real shapes (random weights; run on a GPU, results to BUILD_NOTES.md).

    python benchmarks/train_step.py --size 1024 --batch 8 --variant l2 --dtype float32
    python benchmarks/train_step.py --size 1024 --batch 8 --variant full --dtype bfloat16

Variants:
  l2    encoder (IR-SE50 e4e, 256x256 input) fwd+bwd through the frozen generator with an L2 loss only, no
        discriminator, all deltas: the setting of the official PyTorch figure in BUILD_NOTES.md (182 ms at
        batch 8 on an H100).
  full  every loss of the FFHQ config: L2 + LPIPS(alex) + ArcFace ID + latent discriminator (with R1 every
        16 steps: the timed loop covers whole 16-step periods) + Δ-regularisation in a progressive stage.
Prints one JSON line: ms/step, images/s, first-call seconds (compile), peak device memory.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import device_info, peak_memory_bytes  # noqa: E402


def build_config(size: int, batch: int, variant: str, dtype: str):
    from e4e_jax.configs import ffhq
    from e4e_jax.models.stylegan2 import rosinality_channels

    c = ffhq.get_config()
    c.generator.random_init = dict(size=size, channels=rosinality_channels(size, 2), style_dim=512, n_mlp=8, seed=0)
    c.random_loss_networks = True
    c.data.source = "synthetic"
    c.batch_size = batch
    c.compute_dtype = dtype
    if variant == "l2":
        c.lpips_lambda = 0.0
        c.id_lambda = 0.0
        c.w_discriminator_lambda = 0.0
        c.use_progressive = False
    else:
        c.progressive_start = 0  # a progressive stage with Δ-regularisation from the first step
    return c


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024, help="generator output size")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--variant", choices=("l2", "full"), default="full")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--iters", type=int, default=32)
    ap.add_argument("--cache-dir", default=None, help="JAX persistent compilation cache (default: none)")
    ap.add_argument("--compile-only", action="store_true", help="lower and compile, print the times, stop")
    ap.add_argument("--tag", default="", help="a label copied into the JSON line (e.g. the XLA_FLAGS variant)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    if args.cache_dir:
        from e4e_jax.runtime import compile_cache

        compile_cache.enable(args.cache_dir)

    from e4e_jax.data import train_input
    from e4e_jax.runtime import sharding
    from e4e_jax.training import networks, optim
    from e4e_jax.training.state import init_train_state, param_count
    from e4e_jax.training.step import train_step

    config = build_config(args.size, args.batch, args.variant, args.dtype)
    mesh = sharding.data_mesh()
    repl, bsh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    run = networks.build(config)
    enc_tx = optim.encoder_optimizer(config.optim_name, config.learning_rate)
    disc_tx = optim.discriminator_optimizer(config.w_discriminator_lr)
    state = jax.jit(
        lambda: init_train_state(
            encoder=run.nets.encoder,
            discriminator=run.nets.discriminator,
            encoder_tx=enc_tx,
            disc_tx=disc_tx,
            optim_name=config.optim_name,
            seed=0,
            input_shape=(1, 256, 256, 3),
            style_dim=512,
            pool_size=config.w_pool_size,
        ),
        out_shardings=repl,
    )()
    frozen = sharding.replicate(run.frozen, mesh)
    sample = train_input.make_synthetic_sampler(run.generator_source(), config, mesh)
    batches = [{"image": sample(i, args.batch)} for i in range(4)]
    step = jax.jit(
        functools.partial(train_step, run.nets, run.step_cfg, enc_tx, disc_tx),
        in_shardings=(repl, repl, bsh),
        out_shardings=(repl, repl),
        donate_argnums=(0,),
    )

    t0 = time.perf_counter()
    lowered = step.lower(state, frozen, batches[0])
    lower_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    step = lowered.compile()
    compile_s = time.perf_counter() - t0
    timing = {"lower_s": round(lower_s, 1), "compile_s": round(compile_s, 1)}
    if args.compile_only:
        print(json.dumps({"bench": "train_step_compile", "tag": args.tag, "dtype": args.dtype, **timing}), flush=True)
        return 0
    t0 = time.perf_counter()
    state, m = step(state, frozen, batches[0])
    jax.block_until_ready(m["loss"])
    first = time.perf_counter() - t0
    timing["first_step_s"] = round(time.perf_counter() - t_start, 1)  # process start-up to the first step done
    for i in range(1, 16):  # warm-up to a step count with step % 16 == 0
        state, m = step(state, frozen, batches[i % 4])
    jax.block_until_ready(m["loss"])
    iters = max(16, args.iters // 16 * 16)
    t0 = time.perf_counter()
    for i in range(iters):
        state, m = step(state, frozen, batches[i % 4])
    jax.block_until_ready((state, m))
    dt = (time.perf_counter() - t0) / iters
    out = {
        "bench": "train_step",
        "variant": args.variant,
        "size": args.size,
        "batch": args.batch,
        "dtype": args.dtype,
        "ms_per_step": round(dt * 1e3, 2),
        "images_per_s": round(args.batch / dt, 1),
        "first_call_s": round(first, 1),
        **timing,
        "tag": args.tag,
        "iters": iters,
        "loss": float(m["loss"]),
        "encoder_params": param_count(optim.fast_params(state.encoder_params)),
        "peak_mem_gib": round((peak_memory_bytes() or 0) / 2**30, 2),
        **device_info(),
    }
    print(json.dumps(out), flush=True)
    return 0 if np.isfinite(out["loss"]) else 1


if __name__ == "__main__":
    sys.exit(main())
