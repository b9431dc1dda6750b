"""Why does the bfloat16 training step compile so long? Compile variants side by side, then time each.

    XLA_PYTHON_CLIENT_PREALLOCATE=false python benchmarks/train_compile_probe.py --json $OUT/probe.json

Phase 1 compiles every variant (dtype x XLA_FLAGS) in its own process, all at once, each with its own
persistent compilation cache and a time limit; phase 2 runs the variants that compiled one after the
other, each in a fresh process that loads its executable from that cache: its "first_step_s" is a
cached start (process start to the first step done), its ms/step the speed. Every line is
benchmarks/train_step.py's JSON. Nothing here is needed by e4e-jax itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (dtype, XLA_FLAGS added to the environment's)
VARIANTS = {
    "f32": ("float32", ""),
    "bf16": ("bfloat16", ""),
    "bf16-no-triton-gemm": ("bfloat16", "--xla_gpu_enable_triton_gemm=false"),
    "bf16-autotune0": ("bfloat16", "--xla_gpu_autotune_level=0"),
    "bf16-autotune0-no-triton-gemm": ("bfloat16", "--xla_gpu_autotune_level=0 --xla_gpu_enable_triton_gemm=false"),
    "f32-autotune0": ("float32", "--xla_gpu_autotune_level=0"),
    # XLA's rematerialisation pass runs when the step's memory estimate is over the device's (the f32
    # step's estimate, 66 GiB, was logged over its 60 GiB limit): a suspect for the bf16 compile time.
    "bf16-no-remat": ("bfloat16", "--xla_disable_hlo_passes=rematerialization"),
    "f32-no-remat": ("float32", "--xla_disable_hlo_passes=rematerialization"),
}


def _cmd(dtype: str, args, cache: Path, tag: str, compile_only: bool) -> list[str]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--size", str(args.size)]
    cmd += ["--batch", str(args.batch), "--dtype", dtype, "--iters", str(args.iters), "--variant", args.variant]
    cmd += ["--cache-dir", str(cache), "--tag", tag]
    return cmd + (["--compile-only"] if compile_only else [])


def _env(flags: str) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["XLA_FLAGS"] = " ".join(x for x in (os.environ.get("XLA_FLAGS", ""), flags) if x)
    return env


def _last_json(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--timed", nargs="*", default=None, help="variants to time after compiling (default: all)")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--variant", default="full", choices=("full", "l2"))
    ap.add_argument("--iters", type=int, default=32)
    ap.add_argument("--compile-limit", type=float, default=400.0, help="seconds each compile may take")
    ap.add_argument("--cache-root", default=None)
    ap.add_argument("--json", default=None, help="JSON lines, appended as each result comes (survive a kill)")
    ap.add_argument("--timed-limit", type=float, default=120.0, help="seconds each timed run may take")
    args = ap.parse_args()

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")

    root = Path(args.cache_root or tempfile.mkdtemp(prefix="train-cc-"))
    rows, procs = [], {}
    t0 = time.time()
    for name in args.variants:
        dtype, flags = VARIANTS[name]
        cmd = _cmd(dtype, args, root / name, name, compile_only=True)
        procs[name] = subprocess.Popen(
            cmd, env=_env(flags), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    compiled = []
    for name, p in procs.items():
        try:
            out, _ = p.communicate(timeout=max(1.0, args.compile_limit - (time.time() - t0)))
            row = _last_json(out) or {"tag": name, "error": out[-600:]}
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            row = {"tag": name, "error": f"compile not done in {args.compile_limit:.0f} s"}
        row["phase"] = "compile (all variants at once)"
        emit(row)
        if "error" not in row and (args.timed is None or name in args.timed):
            compiled.append(name)
    for name in compiled:
        dtype, flags = VARIANTS[name]
        try:
            r = subprocess.run(
                _cmd(dtype, args, root / name, name, compile_only=False),
                env=_env(flags),
                capture_output=True,
                text=True,
                timeout=args.timed_limit,
            )
            row = _last_json(r.stdout) or {"tag": name, "error": (r.stdout + r.stderr)[-600:]}
        except subprocess.TimeoutExpired:
            row = {"tag": name, "error": f"timed run not done in {args.timed_limit:.0f} s"}
        row["phase"] = "timed (cached executable)"
        emit(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
