"""float32 and bfloat16 training curves from the same start (issue 29): the FFHQ config at 1024², batch 8,
every loss (benchmarks/train_step.py `--variant full`: L2 + LPIPS alex + ArcFace ID + latent discriminator
with lazy R1 + Δ-regularisation), random weights, the progressive schedule (a stage every
--progressive-every steps from step 0), --steps steps per dtype on the same batches and noise.

    XLA_PYTHON_CLIENT_PREALLOCATE=false python benchmarks/train_curves.py --json $OUT/curves.jsonl --png $OUT/curves.png
    python benchmarks/train_curves.py --size 64 --batch 2 --steps 5 --json /tmp/c.jsonl --png /tmp/c.png   # CPU smoke
    python benchmarks/train_curves.py --plot-only --json curves.jsonl --png curves.png                       # redraw

JSON lines are appended to --json as they come (a killed call keeps what it had): one 'build' line per
dtype (seconds to build and compile; the initial state's sha256, equal for both dtypes), one line per
step with every metric of the step, a 'gaps' line when both dtypes are in the file (per-window relative
difference of the smoothed curves, bf16 vs float32), and an 'error' line for a phase that overran its
limit (the process then exits with EXIT_TIMEOUT). The dtypes can be run in separate calls (--dtypes)
into the same file; the PNG (matplotlib) is drawn from every step line in the file, the last value
per (dtype, step) winning.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from benchmarks.common import device_info  # noqa: E402
from benchmarks.train_setup import initial_state, jitted_step  # noqa: E402
from benchmarks.train_step import build_config  # noqa: E402

DTYPES = ("float32", "bfloat16")
EXIT_TIMEOUT = 3
# Panels of the PNG: the total loss, each term, and the encoder's gradient norm.
PANELS = (
    "loss",
    "loss_l2",
    "loss_lpips",
    "loss_id",
    "total_delta_loss",
    "encoder_discriminator_loss",
    "discriminator_loss",
    "grad_norm",
)
COLORS = {"float32": "tab:blue", "bfloat16": "tab:orange"}


def curves_config(size: int, batch: int, dtype: str, progressive_every: int):
    c = build_config(size, batch, "full", dtype)  # progressive stages from step 0, R1 every 16 steps
    c.progressive_step_every = progressive_every
    return c


class Log:
    """Appends JSON lines to a file (and stdout) as they come."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, row: dict) -> None:
        line = json.dumps(row)
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


@contextlib.contextmanager
def bounded(log: Log, phase: str, dtype: str, limit_s: float):
    """Run the block with a deadline: past `limit_s` an 'error' line is logged and the process exits
    (a compile or a device computation cannot be interrupted from Python; exiting always can)."""

    def expire():
        log({"bench": "train_curves", "phase": phase, "dtype": dtype, "error": f"not done in {limit_s:.0f} s"})
        os._exit(EXIT_TIMEOUT)

    timer = threading.Timer(limit_s, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def run_dtype(args, dtype: str, log: Log) -> None:
    """Build, compile and train `args.steps` steps in `dtype`, logging each step's metrics."""
    from e4e_jax.data import train_input
    from e4e_jax.runtime import sharding
    from e4e_jax.training import networks
    from e4e_jax.training.state import fingerprint

    head = {"bench": "train_curves", "dtype": dtype, "size": args.size, "batch": args.batch}
    with bounded(log, "build", dtype, args.build_limit):
        t0 = time.perf_counter()
        config = curves_config(args.size, args.batch, dtype, args.progressive_every)
        mesh = sharding.data_mesh()
        run = networks.build(config)
        state = initial_state(run, config, mesh)
        frozen = sharding.replicate(run.frozen, mesh)
        sample = train_input.make_synthetic_sampler(run.generator_source(), config, mesh)
        start_sha = fingerprint(state)
        step_fn = jitted_step(run.nets, run, config, mesh, donate=True)
        batch0 = {"image": sample(0, args.batch)}
        t1 = time.perf_counter()
        step_fn = step_fn.lower(state, frozen, batch0).compile()
        took = {"build_s": round(t1 - t0, 1), "compile_s": round(time.perf_counter() - t1, 1)}
        log({**head, "phase": "build", **took, "initial_state_sha256": start_sha, **device_info()})
    with bounded(log, "steps", dtype, args.steps_limit):
        t0 = time.perf_counter()
        for i in range(args.steps):
            batch = batch0 if i == 0 else {"image": sample(i, args.batch)}
            state, metrics = step_fn(state, frozen, batch)
            m = {k: float(v) for k, v in jax.device_get(metrics).items()}
            log({**head, "phase": "step", "step": i + 1, "seconds": round(time.perf_counter() - t0, 2), **m})
    del state, step_fn, frozen
    jax.clear_caches()


def read_steps(path: str) -> dict[str, dict[int, dict]]:
    """{dtype: {step: metrics}} of the step lines in a curves file (later lines win)."""
    out: dict[str, dict[int, dict]] = {}
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut by a kill
            continue
        if row.get("bench") == "train_curves" and row.get("phase") == "step":
            out.setdefault(row["dtype"], {})[int(row["step"])] = row
    return out


def gaps(steps: dict[str, dict[int, dict]], window: int) -> dict:
    """Per metric: the per-window relative differences of the bf16 curve from the float32 one (the steps
    both dtypes have) and their maximum."""
    from e4e_jax.training.loss_curve import window_gaps

    common = sorted(set(steps.get("float32", {})) & set(steps.get("bfloat16", {})))
    out = {"steps": len(common), "window": window}
    for key in PANELS:
        a = [steps["float32"][s].get(key) for s in common]
        b = [steps["bfloat16"][s].get(key) for s in common]
        if common and None not in a and None not in b and len(common) >= window:
            g = window_gaps(a, b, window)
            out[key] = {"max": max(g), "per_window": [round(x, 5) for x in g]}
    return out


def plot(path: str, png: str, window: int) -> None:
    """Both dtypes' curves, one panel per metric (raw thin, window means thick), into `png` (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from e4e_jax.storage import fileio
    from e4e_jax.training.loss_curve import window_means

    steps = read_steps(path)
    keys = [k for k in PANELS if any(k in row for rows in steps.values() for row in rows.values())]
    cols = 4
    fig, axes = plt.subplots(-(-len(keys) // cols), cols, figsize=(4 * cols, 3 * -(-len(keys) // cols)), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for dtype, rows in sorted(steps.items()):
            xs = sorted(s for s in rows if key in rows[s])
            ys = [rows[s][key] for s in xs]
            ax.plot(xs, ys, color=COLORS.get(dtype), alpha=0.3, linewidth=0.8)
            means = window_means(ys, window)
            centers = [xs[k * window + window // 2] for k in range(len(means))]
            ax.plot(centers, means, color=COLORS.get(dtype), linewidth=2, label=dtype)
        ax.set_title(key)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    axes.flat[0].legend()
    fig.suptitle(f"float32 vs bfloat16 training, same start and batches (window means of {window} steps)")
    fig.tight_layout()
    fileio.write_atomic(png, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024, help="generator output size")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    ap.add_argument("--progressive-every", type=int, default=10, help="steps per progressive stage")
    ap.add_argument("--window", type=int, default=0, help="smoothing window in steps (0: steps // 10)")
    ap.add_argument("--build-limit", type=float, default=360.0, help="seconds to build and compile, per dtype")
    ap.add_argument("--steps-limit", type=float, default=180.0, help="seconds for the steps, per dtype")
    ap.add_argument("--json", required=True, help="JSON lines, appended")
    ap.add_argument("--png", default=None, help="draw both dtypes' curves here (matplotlib)")
    ap.add_argument("--plot-only", action="store_true", help="draw --png from --json, run nothing")
    args = ap.parse_args(argv)
    window = args.window or max(1, args.steps // 10)
    log = Log(args.json)
    if not args.plot_only:
        for dtype in args.dtypes:
            run_dtype(args, dtype, log)
        summary = gaps(read_steps(args.json), window)
        if summary["steps"]:
            log({"bench": "train_curves", "phase": "gaps", **summary})
    if args.png:
        plot(args.json, args.png, window)
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
