"""ReStyle vs e4e reconstruction on the quickstart's toy, end to end on CPU (issue 27, part 4).

    python benchmarks/restyle_quality.py --workdir /tmp/restyle_quality --steps 1000 --json rq.jsonl

1. trains the quickstart's e4e encoder (configs/tiny.py) and a ReStyle-e4e encoder (configs/tiny_restyle.py:
   the same generator, data, losses and schedule, 5 iterations per batch) for --steps steps each, into
   WORKDIR/e4e and WORKDIR/restyle (a finished run is reused, an interrupted one resumed);
2. inverts --heldout held-out samples (the quickstart's: z from its HELDOUT_SEED, never seen in training,
   saved as 8-bit PNGs and read back as `invert` reads them) with e4e's single pass and with ReStyle after
   each of 1..--iterations iterations;
3. reports per method and iteration the mean per-pixel L2 (MSE in [-1, 1]), LPIPS under two random-weight
   AlexNet LPIPS networks (the one the training used, and an independent one: no pretrained AlexNet can be
   downloaded here, so LPIPS is a relative measure only) and the latent recovery ||E(x) - w|| (the held-out
   w are known exactly).

Each result is one JSON line, printed and appended to --json as soon as it is known; the training phases'
wall times are reported too (a ReStyle step costs about n_iters e4e steps).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EVAL_LPIPS_SEED = 20_000  # the independent LPIPS network (the training's is config.seed + 1)
EVAL_BATCH = 16


def _emit(row: dict, path: Path | None) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def train(name: str, config, workdir: Path, json_path: Path | None) -> Path:
    """Train `config` into WORKDIR/name (reused when finished, resumed when interrupted); its model bundle."""
    from e4e_jax.training import train_and_evaluate
    from e4e_jax.training.resume import FINAL_METRICS

    run_dir = workdir / name
    model = run_dir / "model"
    if (run_dir / FINAL_METRICS).is_file() and model.is_dir():
        final = json.loads((run_dir / FINAL_METRICS).read_text())
        if final.get("step") == config.max_steps:
            _emit({"phase": f"train_{name}", "reused": str(run_dir), "step": final["step"]}, json_path)
            return model
    t0 = time.time()
    final = train_and_evaluate(config, run_dir, resume=(run_dir / "checkpoints").is_dir())
    _emit(
        {"phase": f"train_{name}", "steps": int(final["step"]), "wall_s": round(time.time() - t0, 1)},
        json_path,
    )
    return model


def heldout(model: Path, workdir: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The quickstart's held-out samples (PNGs in WORKDIR/heldout), read back: (images (n, h, w, 3) in
    [-1, 1], their true W+ codes (n, n_latent, 512))."""
    from e4e_jax.commands.quickstart import write_heldout_samples
    from e4e_jax.data.folder import load_image

    ws = write_heldout_samples(model, workdir / "heldout", n)
    files = sorted((workdir / "heldout").glob("*.png"))[:n]
    from PIL import Image

    with Image.open(files[0]) as im:
        hw = (im.height, im.width)
    return np.stack([load_image(f, hw) for f in files]), ws


def metrics_of(images, codes, x, ws, lpips_nets: dict) -> dict:
    """Mean L2, LPIPS (per network) and latent recovery of reconstructions `images` of `x` from `codes`."""
    from e4e_jax.metrics import definitions

    out = {"l2": float(np.mean(np.asarray(definitions.l2_per_image(images, x))))}
    for name, variables in lpips_nets.items():
        d = [
            np.asarray(definitions.lpips_per_image(variables, images[i : i + EVAL_BATCH], x[i : i + EVAL_BATCH]))
            for i in range(0, len(x), EVAL_BATCH)
        ]
        out[f"lpips_{name}"] = float(np.mean(np.concatenate(d)))
    out["latent_recovery"] = float(np.mean(np.asarray(definitions.latent_distance(codes, ws))))
    return out


def evaluate(e4e_model: Path, restyle_model: Path, x, ws, iterations: int, lpips_nets, json_path) -> list[dict]:
    """e4e's single pass and ReStyle's iterations 1..`iterations` on the held-out images `x`."""
    import jax
    import jax.numpy as jnp

    from e4e_jax.inference import inversion, restyle

    rows = []
    m = inversion.load_e4e(str(e4e_model), precision="highest")
    codes, images = inversion.make_invert_fn(m)(m.variables, jnp.asarray(x))
    rows.append({"method": "e4e", "iterations": 1, **metrics_of(images, codes, x, ws, lpips_nets)})
    _emit(rows[-1], json_path)

    r = restyle.load_restyle(str(restyle_model), precision="highest")
    variables = restyle.with_average_image(r, r.variables)
    latents, last = restyle.make_restyle_fn(r, n_iters=iterations)(variables, jnp.asarray(x))
    render = jax.jit(
        lambda v, c: inversion.crop_output(
            r, r.generator.apply(v["generator"], c, input_is_latent=True, noise_mode="const")
        )
    )
    for t in range(iterations):
        images = render(variables, latents[t])
        if t == iterations - 1:  # the per-iteration rendering is restyle's own
            assert float(jnp.abs(images - last).max()) < 1e-4
        rows.append({"method": "restyle_e4e", "iterations": t + 1, **metrics_of(images, latents[t], x, ws, lpips_nets)})
        _emit(rows[-1], json_path)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, required=True, help="runs, held-out samples (reused when present)")
    p.add_argument("--steps", type=int, default=1000, help="training steps of each encoder (quickstart: 1000)")
    p.add_argument("--heldout", type=int, default=64, help="held-out samples")
    p.add_argument("--iterations", type=int, default=5, help="ReStyle iterations evaluated (1..N)")
    p.add_argument("--json", type=Path, default=None, help="append each JSON line to this file as well")
    args = p.parse_args(argv)

    from e4e_jax.configs import tiny, tiny_restyle
    from e4e_jax.training.networks import random_loss_network

    args.workdir.mkdir(parents=True, exist_ok=True)
    configs = {"e4e": tiny.get_config(), "restyle": tiny_restyle.get_config()}
    for c in configs.values():
        c.max_steps = args.steps
    _emit({"phase": "start", "steps": args.steps, "heldout": args.heldout, "iterations": args.iterations}, args.json)
    models = {name: train(name, c, args.workdir, args.json) for name, c in configs.items()}
    x, ws = heldout(models["e4e"], args.workdir, args.heldout)
    c = configs["e4e"]
    lpips_nets = {
        "train_net": random_loss_network("lpips", int(c.seed) + 1, c.lpips_type),  # as networks.build_losses
        "other_net": random_loss_network("lpips", EVAL_LPIPS_SEED, c.lpips_type),
    }
    rows = evaluate(models["e4e"], models["restyle"], x, ws, args.iterations, lpips_nets, args.json)
    e4e_row, last = rows[0], rows[-1]
    _emit(
        {
            "summary": f"restyle after {last['iterations']} iterations / e4e",
            **{k: round(last[k] / e4e_row[k], 3) for k in e4e_row if k not in ("method", "iterations")},
        },
        args.json,
    )


if __name__ == "__main__":
    main()
