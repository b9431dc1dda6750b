"""How far a bfloat16 training step lands from the float32 one: every loss term, the gradient norm, and
the two regularisers' alternatives, on the same weights, batches and noise (runs on the CPU).

    python benchmarks/bf16_drift.py --size 256 --batch 2 --batches 3 --json benchmarks/results/bf16_drift.json

Setup: the FFHQ config with every loss (benchmarks/train_step.py `build_config(..., 'full')`: L2 + LPIPS
alex + ArcFace ID + latent discriminator with R1 + Δ-regularisation), random weights, a --size
generator; every delta unlocked (progressive stage n_styles − 1) and R1 applied at each compared step.
`--small` swaps in the tiny config's encoder sizes and narrower generator channels (seconds per step).

Step variants (one `train_step` from the same float32 state and batch each, compared with float32):
  bf16                compute_dtype='bfloat16' as the library builds it: encoder, generator and loss
                      networks compute in bf16; D_W, R1, L_d-reg and every reduction stay float32
  bf16-loss-nets-f32  the same with LPIPS / ArcFace in float32 (what compute_dtype did before issue 29)
  bf16-disc-bf16      the same with D_W computing in bf16 too (R1 differentiates through bf16 matmuls)
Term checks (the alternatives the step does not take):
  delta_reg  L_d-reg and its gradient w.r.t. the codes with w_i − w_0 formed in bf16 instead of float32,
             at the codes the encoder gives and with the deltas scaled ×0.01 (a trained e4e's deltas are
             small next to w, which carries latent_avg)
  r1         R1 and its gradient w.r.t. D_W's parameters with D_W in bf16

Prints one JSON object: per variant and metric the relative difference |v − v_f32| / |v_f32| (mean and
max over the batches), and 'encoder_update': ‖Δθ − Δθ_f32‖ / ‖Δθ_f32‖ of the step's encoder update,
which from a fresh optimizer state is proportional to the (centralised) gradient, so this is the
gradient's error in direction and size; for the term checks ‖g − g_f32‖ / ‖g_f32‖ of their gradients.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.train_setup import initial_state, jitted_step  # noqa: E402
from benchmarks.train_step import build_config  # noqa: E402

TINY_DENOMINATOR = 1e-12  # a reference of exactly 0 (a term switched off) is compared absolutely
DELTA_SCALES = (1.0, 0.01)  # codes as the encoder gives them; deltas shrunk as training shrinks them
SMALL_CHANNEL_CAP = 128  # --small: generator channels capped here (CPU seconds per step)
UPDATE = "encoder_update"  # ‖Δθ_bf16 − Δθ_f32‖ / ‖Δθ_f32‖ of the step's encoder update (see encoder_update)


def drift_config(size: int, batch: int, dtype: str, small: bool):
    """The FFHQ 'full' config with every delta unlocked from step 1 and R1 every 16 steps."""
    from e4e_jax.configs import tiny

    c = build_config(size, batch, "full", dtype)
    c.progressive_step_every = 1  # stage = min(1 + step, n_styles - 1): all deltas at the compared steps
    if small:
        c.encoder.kwargs = tiny.get_config().encoder.kwargs
        chans = tuple(min(ch, SMALL_CHANNEL_CAP) for ch in c.generator.random_init["channels"])
        c.generator.random_init = dict(c.generator.random_init, channels=chans)
    return c


def relative(a, ref) -> float:
    """|a − ref| / |ref| for scalars, ‖a − ref‖ / ‖ref‖ for pytrees of arrays."""
    la = [np.asarray(x, np.float64) for x in jax.tree.leaves(a)]
    lr = [np.asarray(x, np.float64) for x in jax.tree.leaves(ref)]
    num = np.sqrt(sum(float(np.sum((x - y) ** 2)) for x, y in zip(la, lr)))
    den = np.sqrt(sum(float(np.sum(y**2)) for y in lr))
    return float(num / max(den, TINY_DENOMINATOR))


def summarize(rows: list[dict]) -> dict:
    """{key: {'mean', 'max'}} over a list of {key: value} rows."""
    return {
        k: {"mean": float(np.mean([r[k] for r in rows])), "max": float(np.max([r[k] for r in rows]))} for k in rows[0]
    }


def encoder_update(state, new_state):
    """The encoder's fast-weight change of one step: Ranger's first update (RAdam before rectification,
    count < 6) is −lr·GC(g)/(1 − β1), so this is the centralised gradient's direction and size."""
    from e4e_jax.training import optim

    before, after = optim.fast_params(state.encoder_params), optim.fast_params(new_state.encoder_params)
    return jax.device_get(jax.tree.map(lambda a, b: b - a, before, after))


def step_variants(run32, run16):
    """{name: Networks} of the compared steps (see the module docstring)."""
    from e4e_jax.models.latent_discriminator import LatentCodesDiscriminator

    disc16 = LatentCodesDiscriminator(style_dim=run16.gen_cfg.style_dim, dtype=jnp.bfloat16)
    return {
        "float32": run32.nets,
        "bf16": run16.nets,
        "bf16-loss-nets-f32": dataclasses.replace(run16.nets, losses=run32.nets.losses),
        "bf16-disc-bf16": dataclasses.replace(run16.nets, discriminator=disc16),
    }


def delta_reg_checks(run32, run16, state, frozen, x, stage) -> dict:
    """L_d-reg with w_i − w_0 in bf16 vs float32, on the bf16 encoder's codes (value and gradient)."""
    from e4e_jax import losses
    from e4e_jax.training import optim, schedule
    from e4e_jax.training.step import encoder_codes

    params = optim.fast_params(state.encoder_params)
    active = schedule.active_layers(stage, run32.step_cfg.n_styles)
    codes, _ = jax.jit(
        lambda p: encoder_codes(run16.nets, p, state.encoder_batch_stats, x, stage, frozen["latent_avg"], True)
    )(params)

    def term(c, dtype):
        return losses.delta_reg_loss(c.astype(dtype), active)[0]

    out = {}
    for scale in DELTA_SCALES:
        c = codes[:, :1] + scale * (codes - codes[:, :1])
        v32, g32 = jax.value_and_grad(term)(c, jnp.float32)
        v16, g16 = jax.value_and_grad(term)(c, jnp.bfloat16)
        out[f"delta_scale_{scale:g}_value"] = relative(v16, v32)
        out[f"delta_scale_{scale:g}_grad"] = relative(g16, g32)
    return out


def r1_checks(run32, state, frozen, key) -> dict:
    """R1 (γ/2·E‖∇_w D(w_real)‖²·d_reg_every) with D_W in bf16 vs float32: value and gradient w.r.t. D_W."""
    from e4e_jax import losses
    from e4e_jax.models.latent_discriminator import LatentCodesDiscriminator

    cfg, style_dim = run32.step_cfg, run32.gen_cfg.style_dim
    z = jax.random.normal(key, (8, style_dim), jnp.float32)
    real_w = run32.nets.generator.apply(frozen["generator"], z, method="map")

    def r1(p, dtype):
        d = LatentCodesDiscriminator(style_dim=style_dim, dtype=dtype)
        return losses.r1_loss(lambda w: d.apply({"params": p}, w), real_w, cfg.r1, cfg.d_reg_every)

    v32, g32 = jax.value_and_grad(r1)(state.disc_params, jnp.float32)
    v16, g16 = jax.value_and_grad(r1)(state.disc_params, jnp.bfloat16)
    return {"value": relative(v16, v32), "grad": relative(g16, g32)}


def measure(args) -> dict:
    from e4e_jax.data import train_input
    from e4e_jax.runtime import sharding
    from e4e_jax.training import networks, optim, schedule
    from e4e_jax.training.state import param_count

    t0 = time.perf_counter()
    config32 = drift_config(args.size, args.batch, "float32", args.small)
    config16 = drift_config(args.size, args.batch, "bfloat16", args.small)
    mesh = sharding.data_mesh()
    run32, run16 = networks.build(config32), networks.build(config16)
    frozen = sharding.replicate(run32.frozen, mesh)
    state0 = initial_state(run32, config32, mesh)
    sample = train_input.make_synthetic_sampler(run32.generator_source(), config32, mesh)
    steps = {name: jitted_step(nets, run32, config32, mesh) for name, nets in step_variants(run32, run16).items()}
    every = run32.step_cfg.d_reg_every
    rows = {name: [] for name in steps if name != "float32"}
    reference, delta_rows, r1_rows = [], [], []
    for i in range(args.batches):
        step = every * (i + 1)  # R1 is applied (step % d_reg_every == 0); every delta unlocked
        state = state0.replace(step=jnp.asarray(step, state0.step.dtype))
        batch = {"image": sample(i, args.batch)}
        outs = {name: fn(state, frozen, batch) for name, fn in steps.items()}
        metrics = {name: jax.device_get(m) for name, (_, m) in outs.items()}
        updates = {name: encoder_update(state, new) for name, (new, _) in outs.items()}
        ref, ref_update = metrics.pop("float32"), updates.pop("float32")
        keys = [k for k in ref if k not in ("progressive_stage", "discriminator_r1_applied", "nonfinite_params")]
        reference.append({k: float(ref[k]) for k in keys})
        for name, m in metrics.items():
            rows[name].append(
                {**{k: relative(m[k], ref[k]) for k in keys}, UPDATE: relative(updates[name], ref_update)}
            )
        stage = schedule.progressive_stage(step, run32.step_cfg.n_styles, 0, config32.progressive_step_every)
        delta_rows.append(delta_reg_checks(run32, run16, state, frozen, batch["image"], stage))
        r1_rows.append(r1_checks(run32, state, frozen, jax.random.key(i)))
        print(f"batch {i + 1}/{args.batches} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return {
        "bench": "bf16_drift",
        "size": args.size,
        "batch": args.batch,
        "batches": args.batches,
        "small": args.small,
        "n_styles": run32.step_cfg.n_styles,
        "encoder_params": param_count(optim.fast_params(state0.encoder_params)),
        "float32_values": summarize(reference),
        "relative_difference": {name: summarize(r) for name, r in rows.items()},
        "delta_reg_bf16_arithmetic": summarize(delta_rows),
        "r1_disc_bf16": summarize(r1_rows),
        "seconds": round(time.perf_counter() - t0, 1),
        "backend": jax.default_backend(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="generator output size")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--batches", type=int, default=3, help="compared steps, each on its own batch")
    ap.add_argument("--small", action="store_true", help="tiny-config encoder sizes, generator channels ≤ 128")
    ap.add_argument("--json", default=None, help="also write the JSON object here")
    args = ap.parse_args(argv)
    out = measure(args)
    text = json.dumps(out, indent=1)
    print(text, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
