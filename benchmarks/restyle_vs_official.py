"""ReStyle-e4e inversion (5 iterations) images/s: e4e-jax vs the official in-memory loop, same random weights.

    XLA_PYTHON_CLIENT_PREALLOCATE=false python benchmarks/restyle_vs_official.py \
        --official external/restyle-encoder --torch-ext external/torch_ext_h100/torch_ext --json $OUT/restyle.jsonl

CPU smoke (a 64² generator, batch 2; the official CUDA-only ops replaced by pure-torch ones, see
`_cpu_standins`):

    python benchmarks/restyle_vs_official.py --smoke --json /tmp/restyle_smoke.jsonl

Phases, each in its own process bounded in time (the whole run by --budget-s; a phase that runs out is
killed and said, the results before it stay):
  prepare  – a random official ReStyle-e4e checkpoint (ProgressiveBackboneEncoder IR-SE50, input_nc 6, and the
             official net's Generator(size, 512, 8, channel_multiplier=2)), written by tests/official_restyle.py
             as the official coach saves it, then converted by the real converter (`convert_weights restyle`);
  official – the official `models.e4e.e4e` net loading that checkpoint (--checkpoint_path), the average image
             (`get_average_image`) once, then `utils.inference_utils.run_on_batch` (5 iterations, outputs at
             full size as --resize_outputs false; it copies each iteration's latents to the host) timed;
  ours     – restyle.make_restyle_fn on the converted bundle (average image precomputed by
             with_average_image, as the official one is), for each --dtypes x --loops, compiled ahead in
             parallel threads, then timed one after the other (the latents fetched to the host, the last
             reconstruction at full size waited for); latents compared with the official ones on the same input.
TF32 allowed on both sides for float32. Each result is a JSON line printed and appended to --json at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
from concurrent import futures
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENCODER_TYPE = "ProgressiveBackboneEncoder"  # official ReStyle-e4e on faces (IR-SE50)
OFFICIAL_N_MLP, OFFICIAL_CHANNEL_MULTIPLIER = 8, 2  # official models/e4e.py builds Generator(size, 512, 8, 2)
INPUT_HW = (256, 256)  # the official encoders' frame (face_pool)
SMOKE = {"size": 64, "batch": 2, "iters": 1}
MIN_PHASE_S = 5  # a phase with less time left than this is skipped, not started
TIMING_RESERVE_S = 12  # kept per variant for its timed calls at 1024², batch 32 (about 2 s each)


def _emit(row: dict, path: Path | None) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def _input(batch: int) -> np.ndarray:
    """The one input batch both sides time: (B, 256, 256, 3) float32 in [-1, 1], seeded."""
    return np.random.default_rng(0).uniform(-1, 1, (batch, *INPUT_HW, 3)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ prepare
def phase_prepare(args) -> None:
    import torch

    from tests.official_restyle import build_reference, checkpoint_dict, official_opts
    from tools.convert_weights.__main__ import main as convert_main

    t0 = time.time()
    enc, dec, latent_avg = build_reference(
        ENCODER_TYPE, args.size, n_mlp=OFFICIAL_N_MLP, channel_multiplier=OFFICIAL_CHANNEL_MULTIPLIER
    )
    opts = official_opts(ENCODER_TYPE, args.size)
    torch.save(checkpoint_dict(ENCODER_TYPE, enc, dec, latent_avg, opts), args.workdir / "restyle_e4e.pt")
    build_s = time.time() - t0
    t0 = time.time()
    rc = convert_main(["restyle", str(args.workdir / "restyle_e4e.pt"), "--out", str(args.workdir / "bundle")])
    if rc != 0:
        raise SystemExit(f"the converter failed (exit {rc})")
    _emit(
        {"phase": "prepare", "build_and_save_s": round(build_s, 1), "convert_s": round(time.time() - t0, 1)}, args.json
    )


# ----------------------------------------------------------------------------------------------- official
def _cpu_standins() -> None:
    """CPU only: rosinality's ops are CUDA kernels; give `cpp_extension.load` modules computing the same in
    torch (upfirdn2d: tests/refs' pure-torch one; fused_bias_act: the forward of a biased leaky ReLU, all
    inference needs), and a `torchvision` whose resnet34 is never called (the IR-SE encoder
    imports it only), when torchvision is not installed."""
    import torch.nn.functional as F
    from torch.utils import cpp_extension

    from tests.refs.rosinality_stylegan2 import upfirdn2d as reference_upfirdn2d

    def fused_bias_act(x, bias, refer, act, grad, alpha, scale):
        assert act == 3 and grad == 0, "inference only"
        return F.leaky_relu(x + bias.view(1, -1, *[1] * (x.ndim - 2)), alpha) * scale

    def upfirdn2d(x, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1):
        # The op's layout: x (N, H, W, 1) -> (N, H', W', 1); the official code pads and scales x and y alike.
        assert (up_x, down_x, pad_x0, pad_x1) == (up_y, down_y, pad_y0, pad_y1)
        out = reference_upfirdn2d(x.permute(0, 3, 1, 2), kernel, up_x, down_x, (pad_x0, pad_x1))
        return out.permute(0, 2, 3, 1)

    ops = {
        "fused": types.SimpleNamespace(fused_bias_act=fused_bias_act),
        "upfirdn2d": types.SimpleNamespace(upfirdn2d=upfirdn2d),
    }
    cpp_extension.load = lambda name, *a, **k: ops[name]
    try:
        import torchvision  # noqa: F401
    except ImportError:
        tv, models = types.ModuleType("torchvision"), types.ModuleType("torchvision.models")

        def resnet34(*a, **k):
            raise RuntimeError("torchvision stand-in: resnet34 is not available")

        models.resnet34 = resnet34
        tv.models = models
        sys.modules.update({"torchvision": tv, "torchvision.models": models})


def phase_official(args) -> None:
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        if args.torch_ext:
            from benchmarks.common import use_prebuilt_torch_ops

            print("prebuilt torch ops:", use_prebuilt_torch_ops(args.torch_ext), flush=True)
    else:
        _cpu_standins()
    sys.path.insert(0, str(args.official))
    from models.e4e import e4e  # noqa: E402 - the official code, from its own folder
    from utils.inference_utils import get_average_image, run_on_batch

    from tests.official_restyle import official_opts

    device = "cuda" if cuda else "cpu"
    t0 = time.time()
    opts = argparse.Namespace(
        **official_opts(
            ENCODER_TYPE,
            args.size,
            checkpoint_path=str(args.workdir / "restyle_e4e.pt"),
            device=device,
            n_iters_per_batch=args.iterations,
            resize_outputs=False,
        )
    )
    net = e4e(opts).eval().to(device)
    with torch.no_grad():
        if cuda:
            avg = get_average_image(net, opts)
        else:  # get_average_image moves it to 'cuda': the same call, left on the CPU
            avg = net(net.latent_avg.unsqueeze(0), input_code=True, randomize_noise=False, average_code=True)[0]
            avg = avg.float().detach()
    build_s = time.time() - t0
    x = torch.from_numpy(_input(args.batch).transpose(0, 3, 1, 2)).to(device)

    def call():
        with torch.no_grad():
            images, latents = run_on_batch(x, net, opts, avg)
        if cuda:
            torch.cuda.synchronize()
        return latents

    t0 = time.time()
    latents = call()  # warm-up (cudnn autotuning)
    first_s = time.time() - t0
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    s = float(np.median(times))
    np.save(args.workdir / "official_latents.npy", np.stack([np.stack(latents[i]) for i in range(args.batch)], axis=1))
    row = {
        "impl": "official-pytorch",
        "dtype": "float32(tf32)" if cuda else "float32",
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "size": args.size,
        "batch": args.batch,
        "iterations": args.iterations,
        "s_per_batch": round(s, 4),
        "img_per_s": round(args.batch / s, 2),
        "first_call_s": round(first_s, 1),
        "build_s": round(build_s, 1),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    }
    (args.workdir / "official.json").write_text(json.dumps(row))
    _emit(row, args.json)


# --------------------------------------------------------------------------------------------------- ours
def phase_ours(args) -> None:
    import jax

    from benchmarks.common import device_info, time_fn
    from e4e_jax.inference import inversion, restyle
    from e4e_jax.storage import restyle_bundle

    t0 = time.time()
    path = str(args.workdir / "bundle")
    arch, variables, _ = restyle_bundle.load(path)

    def model(dtype):  # restyle.load_restyle without reading the ~1 GB bundle again per dtype
        base = inversion.build_model(arch, variables, path, dtype=dtype)
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(inversion.E4EModel)}
        return restyle.RestyleModel(**fields, iterations=arch.iterations)

    models = {d: model(d) for d in args.dtypes}
    x = jax.device_put(_input(args.batch))
    # The average image once, in float32 (as the official one): an input of every variant, not timed.
    first = models["float32"] if "float32" in models else next(iter(models.values()))
    avg = restyle.with_average_image(first, variables)[restyle.AVERAGE_IMAGE]
    prepared = {d: jax.device_put({**m.variables, restyle.AVERAGE_IMAGE: avg}) for d, m in models.items()}
    load_s = time.time() - t0
    print({**device_info(), "load_s": round(load_s, 1)}, flush=True)
    official_file, official_latents = args.workdir / "official.json", args.workdir / "official_latents.npy"
    official = json.loads(official_file.read_text()) if official_file.is_file() else None
    ref = np.load(official_latents) if official_latents.is_file() else None

    variants = [(d, loop) for d in args.dtypes for loop in args.loops]
    gpu = jax.default_backend() == "gpu"

    def compile_one(variant):
        d, loop = variant
        t = time.time()
        fn = restyle.make_restyle_fn(models[d], n_iters=args.iterations, loop=loop)
        return fn.lower(prepared[d], x).compile(), time.time() - t

    pool = futures.ThreadPoolExecutor(max(1, args.compile_threads))
    jobs = {pool.submit(compile_one, v): v for v in variants}
    # Compiles still running then are abandoned, leaving time to time the others (TIMING_RESERVE_S each).
    compile_limit = min(args.compile_limit_s, args.deadline - time.time() - TIMING_RESERVE_S * len(variants))
    done, _ = futures.wait(jobs, timeout=max(0.0, compile_limit))
    for variant in variants:
        d, loop = variant
        job = next(j for j, v in jobs.items() if v == variant)
        row = {"impl": "e4e-jax", "dtype": d if d != "float32" or not gpu else "float32(tf32)", "loop": loop}
        row.update(size=args.size, batch=args.batch, iterations=args.iterations)
        if job not in done:
            _emit({**row, "compile_timed_out_s": round(compile_limit)}, args.json)
            continue
        compiled, compile_s = job.result()
        v = prepared[d]
        out = {}

        def call(i, compiled=compiled, v=v, out=out):
            latents, images = compiled(v, x)
            out["latents"] = np.asarray(latents)  # to the host, as the official loop copies its latents
            jax.block_until_ready(images)

        t = time_fn(call, warmup=1, iters=args.iters)
        row.update(
            s_per_batch=round(t["median_s"], 4),
            img_per_s=round(args.batch / t["median_s"], 2),
            compile_s=round(compile_s, 1),
        )
        if official:
            row["speedup_vs_official"] = round(official["s_per_batch"] / t["median_s"], 2)
        if ref is not None:  # the same input: per-iteration latents against the official loop's
            row["latents_max_abs_diff_per_iteration"] = [
                float(f"{np.abs(out['latents'][i] - ref[i]).max():.3g}") for i in range(args.iterations)
            ]
            row["latents_max_abs_official"] = round(float(np.abs(ref).max()), 3)
        _emit(row, args.json)
    os._exit(0)  # a compile still running past --compile-limit-s is abandoned, not waited for


# ------------------------------------------------------------------------------------------------- parent
def _run_phase(phase: str, argv: list[str], limit: float, json_path: Path | None) -> bool:
    """Run `phase` in a child process for at most `limit` seconds (its process group killed then)."""
    if limit < MIN_PHASE_S:
        _emit({"phase": phase, "skipped": f"{limit:.0f}s left of --budget-s"}, json_path)
        return False
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    child = subprocess.Popen([sys.executable, __file__, *argv, "--phase", phase], env=env, start_new_session=True)
    t0 = time.time()
    try:
        rc = child.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        _emit({"phase": phase, "timed_out_s": round(limit), "ran_s": round(time.time() - t0)}, json_path)
        return False
    if rc != 0:
        _emit({"phase": phase, "failed_exit": rc}, json_path)
    return rc == 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official", type=Path, default=ROOT / "external" / "restyle-encoder")
    p.add_argument("--torch-ext", type=Path, default=None, help="prebuilt rosinality ops (DIR/fused/fused.so, ...)")
    p.add_argument("--size", type=int, default=1024, help="generator output size")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--iterations", type=int, default=5, help="ReStyle iterations (official --n_iters_per_batch)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--loops", nargs="+", default=["scan", "unroll"])
    p.add_argument("--iters", type=int, default=2, help="timed calls per variant (median), after one warm-up")
    p.add_argument("--compile-threads", type=int, default=4, help="our variants compiled at once")
    p.add_argument("--skip-official", action="store_true")
    p.add_argument("--smoke", action="store_true", help=f"CPU smoke test: {SMOKE}")
    p.add_argument("--budget-s", type=float, default=175.0, help="the whole run's time limit")
    p.add_argument("--prepare-limit-s", type=float, default=60.0)
    p.add_argument("--official-limit-s", type=float, default=70.0)
    p.add_argument("--compile-limit-s", type=float, default=120.0, help="our variants not compiled by then are skipped")
    p.add_argument("--workdir", type=Path, default=None, help="checkpoint and bundle (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=None, help="append each JSON line to this file as well")
    p.add_argument("--phase", choices=("prepare", "official", "ours"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=float("inf"), help=argparse.SUPPRESS)  # epoch seconds
    return p


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.smoke:
        for k, v in SMOKE.items():
            setattr(args, k, v)
    if args.phase:
        {"prepare": phase_prepare, "official": phase_official, "ours": phase_ours}[args.phase](args)
        return
    start = time.time()
    argv += ["--deadline", str(start + args.budget_s)]
    temporary = args.workdir is None
    if temporary:
        args.workdir = Path(tempfile.mkdtemp(prefix="restyle_vs_official_"))
        argv += ["--workdir", str(args.workdir)]
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        _phases(args, argv, start)
    finally:
        if temporary:
            shutil.rmtree(args.workdir, ignore_errors=True)


def _phases(args, argv: list[str], start: float) -> None:
    _emit({"phase": "start", **{k: str(v) for k, v in vars(args).items() if k != "phase"}}, args.json)

    def left():
        return args.budget_s - (time.time() - start)

    if not _run_phase("prepare", argv, min(args.prepare_limit_s, left()), args.json):
        return
    if not args.skip_official:
        _run_phase("official", argv, min(args.official_limit_s, left()), args.json)
    _run_phase("ours", argv, left(), args.json)
    _emit({"phase": "end", "total_s": round(time.time() - start, 1)}, args.json)


if __name__ == "__main__":
    main()
