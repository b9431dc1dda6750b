"""Full e4e training step at 1024² output, batch 8: official PyTorch coach vs e4e-jax, one process.

    python benchmarks/train_step_vs_official.py --official external/encoder4editing --batch 8 --dtype float32

Both sides: random weights, every loss of the FFHQ config (L2 + LPIPS alex + ArcFace ID + latent
discriminator with the w pools and lazy R1 every 16 steps + Δ-regularisation, all deltas unlocked),
the encoder update with Ranger and the discriminator update with Adam. Timing is the mean over
whole 16-step periods (so R1 is amortised as in training), after warm-up. The official side runs
the body of `Coach.train`'s loop (benchmarks/official_train_step.py); ours is benchmarks/train_step.py
`--variant full`. TF32 allowed on both sides for float32.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def time_official(official: Path, size: int, batch: int, iters: int) -> dict:
    import torch

    from benchmarks.official_train_step import build_official_coach

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    t0 = time.time()
    coach, step, make_batch, _ = build_official_coach(official, size, batch)
    build_s = time.time() - t0
    batches = [make_batch(i) for i in range(4)]
    for i in range(16):  # warm-up, ending on a step count that is a multiple of 16
        step(batches[i % 4])
    torch.cuda.synchronize()
    iters = max(16, iters // 16 * 16)
    t0 = time.perf_counter()
    for i in range(iters):
        losses = step(batches[i % 4])
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / iters
    out = {
        "impl": "official-pytorch",
        "dtype": "float32(tf32)",
        "batch": batch,
        "ms_per_step": round(dt * 1e3, 2),
        "images_per_s": round(batch / dt, 1),
        "build_s": round(build_s, 1),
        "iters": iters,
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "loss": losses.get("loss"),
    }
    del coach, step, batches
    gc.collect()
    torch.cuda.empty_cache()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--official", type=Path, default=ROOT / "external" / "encoder4editing")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtypes", nargs="+", default=["float32"])
    p.add_argument("--iters", type=int, default=32)
    p.add_argument("--skip-official", action="store_true")
    p.add_argument("--official-only", action="store_true", help="time the official step alone")
    p.add_argument("--torch-ops", type=Path, default=None, help="prebuilt rosinality ops (DIR/fused/fused.so, ...)")
    p.add_argument("--json", type=Path, default=None, help="append each JSON line to this file as well")
    args = p.parse_args()
    if args.torch_ops:
        from benchmarks.common import use_prebuilt_torch_ops

        use_prebuilt_torch_ops(args.torch_ops)
    if not args.skip_official:
        row = json.dumps(time_official(args.official, args.size, args.batch, args.iters))
        print(row, flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(row + "\n")
    if args.official_only:
        return
    from benchmarks import train_step

    for dtype in args.dtypes:
        train_step.main(
            [
                "--size",
                str(args.size),
                "--batch",
                str(args.batch),
                "--variant",
                "full",
                "--dtype",
                dtype,
                "--iters",
                str(args.iters),
            ]
        )


if __name__ == "__main__":
    main()
