"""Pivotal tuning, photos per minute: the official PTI coach (one photo at a time) vs `e4e_jax.inference.tuning` (a batch
of photos in one compiled step), same generator, same photos, same pivots, same LPIPS, on one GPU.

Device command (H100; the defaults end in <= 4 minutes, `--budget-s`):

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/ml_collections-*.whl && \
    XLA_PYTHON_CLIENT_PREALLOCATE=false TORCH_EXTENSIONS_DIR=$PWD/external/torch_ext TORCH_CUDA_ARCH_LIST=9.0 \
    PYTHONPATH=/tmp/site:. python3 benchmarks/pti_vs_official.py --workdir /tmp/pti --json $OUT/pti_vs_official.jsonl

Carried (git-ignored, about 11 MiB): `external/PTI` (danielroich/PTI: its configs, coaches, criteria,
dnnlib, torch_utils), `external/stylegan2-ada-pytorch/training/networks.py` (NVlabs; the only file read:
PTI holds the torch_utils / dnnlib it imports, byte-identical), `external/pylibs` (the `lpips` package,
not installed on the device: `cp -r $VENV/lib/python3.*/site-packages/lpips external/pylibs/`), and
`.whl/ml_collections-1.1.0-py3-none-any.whl`, i.e. run's carry = ["external/PTI",
"external/stylegan2-ada-pytorch", "external/pylibs", ".whl/ml_collections-1.1.0-py3-none-any.whl"]
(not all of .whl: other wheels there may pass run's 64 MiB). The image has torch + torchvision; `wandb`
is stubbed (benchmarks/pti_official.py). NVlabs' plugins are built into external/torch_ext, which a warm
machine keeps for the next call. From a checkout:

    mkdir -p external/pylibs external/stylegan2-ada-pytorch/training
    cp -r /work/venv/lib/python3.11/site-packages/lpips external/pylibs/
    git --git-dir /work/.mirror/NVlabs+stylegan2-ada-pytorch/repo show HEAD:training/networks.py \
        > external/stylegan2-ada-pytorch/training/networks.py

Phases, each a fresh process bounded in time (`--setup-s`, `--ours-s`, `--official-s`; all within
`--budget-s`); a process still running at its limit is killed, and a side whose own deadline (a few
seconds earlier) passes stops after the step in flight and reports what it measured:
  setup     an NVlabs stylegan2-ada Generator at --size (default 1024, the FFHQ config: 8 mapping layers,
            channel_base 32768, conv_clamp 256) with random weights, pickled as the official training loop
            does (`G_ema`); K photos at --size (the e4e sample photos, else synthetic ones); pivots
            w = G.mapping(z); our bundles via `python -m tools.convert_weights stylegan2 G.pkl` and
            `... lpips` (a random-trunk LPIPS, so both sides use one LPIPS: no ImageNet download).
  ops       (GPU, in the background from the start) NVlabs' CUDA plugins built into TORCH_EXTENSIONS_DIR,
            so that the official phase does not pay for nvcc (reported apart).
  ours      `tuning.make_runner` on --photos photos in batches of --batch-size (compiled first, timed
            apart), each batch ending with its bfloat16 deltas saved as bundles (`pti_bundle.save`), as
            `e4e-jax tune` does.
  official  `SingleIDCoach.train()` over --official-photos photos (after one photo of 2 steps: cuDNN).
Both sides: noise 'const', float32 (TF32 allowed, torch's default for convs), --steps steps a photo
(--lpips-threshold 0: random weights never reach the official 0.06; every step runs), Adam lr 3e-4;
--locality adds the regulariser on both sides.

Defaults and why: --steps 100 (not the official 350): the step count changes neither side's time per
step (fixed shapes, no early stop), so photos per minute at 350 steps is computed from the measured
seconds per photo-step and per-photo overhead (official: two G reloads and a whole-G save; ours: the delta
bundles), and a whole run fits 4 minutes. --photos 8 = --batch-size 8 (one compiled batch; each photo
holds its synthesis parameters, gradients and Adam moments, about 0.6 GiB in float32 at 1024, plus its
activations: well within one H100). --official-photos 2 (the per-step time is
the median over photos; the second shows the per-photo overhead without the first's warm-up). Limits:
setup 60 s, ours 115 s (compile 40-70 s at 1024, then 800 photo-steps), official 60 s.

Output: one JSON object per line, printed and appended to --json (flushed) as soon as it is known:
{"phase": "run", ...args}, then each phase's rows ({"kind": "compile" | "batch" | "photo" | "summary" |
...}; "ended" for a phase killed at its limit or failed, "skipped" for one left no time), then
{"phase": "compare", ...}: photos/minute of each side at --steps and at 350 steps, their ratio, the ratio
of seconds per photo-step, peak GPU memory per photo (torch.cuda.max_memory_allocated at batch 1; JAX's
peak_bytes_in_use / batch size), and the first-step (L2, LPIPS) of both sides (equal generator, pivots,
photos and LPIPS: they must agree).

CPU smoke test (tiny sizes, generous limits): `--smoke --workdir /tmp/pti_smoke` (= --device cpu --size 64
--channel-base 1024 --steps 3 --photos 2 --batch-size 2 --official-photos 1 --parity; without torchvision,
tests/torchvision_standin.py stands in).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import pti_official  # noqa: E402  (needs ROOT on sys.path)

SEED, OFFICIAL_STEPS = pti_official.SEED, pti_official.OFFICIAL_STEPS
SIDE_MARGIN_S = 12  # a side stops this long before its phase's limit, to report before the kill
OFFICIAL_MIN_S = 25  # the official phase does not wait for the plugin build past its last this many seconds
SMOKE = dict(device="cpu", size=64, channel_base=1024, steps=3, photos=2, batch_size=2, official_photos=1, parity=True)
SMOKE_LIMITS = dict(budget_s=1500, setup_s=400, ours_s=500, official_s=400)


def emit(row: dict) -> None:
    """A side's result row, read by the orchestrator from its stdout."""
    print("RESULT " + json.dumps(row), flush=True)


# ------------------------------------------------------------------------------------------------ setup
def _photos(k: int, size: int) -> np.ndarray:
    """(k, size, size, 3) uint8: the e4e sample photos (cycled), else smooth synthetic ones."""
    from PIL import Image

    try:
        from tests.assets import E4E_ASSETS  # imports pytest, which a device image may lack
    except ImportError:
        E4E_ASSETS = Path("/nonexistent")
    files = sorted((E4E_ASSETS / "images").glob("*.jpg")) if (E4E_ASSETS / "images").is_dir() else []
    rng = np.random.default_rng(SEED)
    out = []
    for i in range(k):
        if files:
            img = Image.open(files[i % len(files)]).convert("RGB").resize((size, size), Image.BILINEAR)
            a = np.asarray(img)
            out.append(a if i < len(files) else a[:, ::-1])
        else:
            small = Image.fromarray(rng.integers(0, 256, (24, 24, 3), np.uint8)).resize((size, size), Image.BICUBIC)
            out.append(np.asarray(small))
    return np.stack(out)


def setup(args) -> None:
    import pickle

    import torch

    pti_official.official_imports(args)
    import dnnlib

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    pkl, k = work / "G.pkl", max(args.photos, args.official_photos)
    t0 = time.perf_counter()
    if not pkl.is_file():
        nets = pti_official.nvlabs_networks(args)
        torch.manual_seed(SEED)
        g = nets.Generator(
            z_dim=512,
            c_dim=0,
            w_dim=512,
            img_resolution=args.size,
            img_channels=3,
            mapping_kwargs=dnnlib.EasyDict(num_layers=8),
            synthesis_kwargs=dnnlib.EasyDict(
                channel_base=args.channel_base, channel_max=512, num_fp16_res=4, conv_clamp=256
            ),
        ).eval()
        with torch.no_grad():  # random but not default: biases and noise strengths off zero
            for name, p in g.named_parameters():
                if name.endswith("bias") or name.endswith("noise_strength"):
                    p.add_(0.1 * torch.randn_like(p))
        with open(pkl, "wb") as f:
            pickle.dump(
                {"G": g, "D": None, "G_ema": g, "training_set_kwargs": dnnlib.EasyDict(resolution=args.size)}, f
            )
        with torch.no_grad():
            z = torch.from_numpy(np.random.default_rng(SEED).standard_normal((k, 512)).astype(np.float32))
            np.save(work / "pivots.npy", g.mapping(z, None).numpy())
        np.save(work / "photos.npy", _photos(k, args.size))
    if not (work / "lpips_random.pth").is_file():
        torch.manual_seed(SEED)
        torch.save(pti_official.random_trunk_lpips()(net="alex").state_dict(), work / "lpips_random.pth")
    emit({"kind": "generator", "seconds": round(time.perf_counter() - t0, 1), "photos": k})
    t0 = time.perf_counter()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    convs = []
    for kind, src, out in (("stylegan2", pkl, "bundle"), ("lpips", work / "lpips_random.pth", "lpips")):
        if not (work / out).is_dir():  # both at once
            cmd = [sys.executable, "-m", "tools.convert_weights", kind, str(src), "--out", str(work / out)]
            convs.append((kind, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)))
    for kind, proc in convs:
        if proc.wait():
            raise SystemExit(f"converting the {kind} weights failed (exit {proc.returncode})")
    emit({"kind": "converted", "seconds": round(time.perf_counter() - t0, 1)})


# ------------------------------------------------------------------------------------------------- ours
def run_ours(args, deadline: float) -> None:
    """Our side (module doc): rows 'start', 'compile', one per batch, 'summary', then the untimed checks
    ('first_step', and 'parity' with --parity) while time remains."""
    import jax
    import jax.numpy as jnp

    from e4e_jax.choices import compute_dtype
    from e4e_jax.inference import render, tuning
    from e4e_jax.models.lpips import LPIPS
    from e4e_jax.models.stylegan2 import Generator
    from e4e_jax.runtime import sharding
    from e4e_jax.storage import bundle, pti_bundle

    work = Path(args.workdir)
    cfg, variables = render.generator_of_bundle(str(work / "bundle"))
    dtype = compute_dtype(args.dtype)
    gen = Generator(
        cfg, modulation=render.resolve_modulation("auto"), dtype=dtype, upsample=render.resolve_upsample("auto")
    )
    lpips = LPIPS(dtype=dtype)
    lpips_vars = jax.device_put(bundle.load(work / "lpips", "lpips")[1])  # the official side's LPIPS
    pti = tuning.PTIConfig(max_steps=args.steps, lpips_threshold=args.lpips_threshold, locality=args.locality)
    pivots = np.load(work / "pivots.npy")[: args.photos]
    photos = (np.load(work / "photos.npy")[: args.photos].astype(np.float32) / 255 - 0.5) / 0.5
    base = variables["params"]["synthesis"]
    fp = pti_bundle.synthesis_fingerprint(base)
    variables = jax.device_put(variables)
    bs = args.batch_size
    emit(
        {
            "kind": "start",
            "photos": args.photos,
            "batch_size": bs,
            "dtype": args.dtype,
            "modulation": gen.modulation,
            "upsample": gen.upsample,
            "jax": jax.__version__,
            "device": str(jax.devices()[0].device_kind),
        }
    )

    def batch(j):
        sl = slice(j * bs, (j + 1) * bs)
        b = len(pivots[sl])
        ids = jnp.asarray(np.arange(j * bs, j * bs + bs, dtype=np.int32))
        data = (jnp.asarray(sharding.pad_batch(pivots[sl], bs)), jnp.asarray(sharding.pad_batch(photos[sl], bs)))
        return tuning.init_state(pti, base, jnp.arange(bs) < b), data, ids, b

    state, (pv, tg), ids, _ = batch(0)
    t0 = time.perf_counter()
    runner = tuning.make_runner(gen, lpips, pti, seed=SEED)
    compiled = runner.lower(state, variables, lpips_vars, pv, tg, ids, jnp.int32(tuning.STEPS_PER_CALL)).compile()
    emit({"kind": "compile", "seconds": round(time.perf_counter() - t0, 2)})

    def steps_until(state, pv, tg, ids, n_steps, stop_at):
        """Up to n_steps steps in calls of STEPS_PER_CALL, stopping after the call that passes `stop_at`."""
        done = 0
        while done < n_steps and time.time() < stop_at:
            k = min(tuning.STEPS_PER_CALL, n_steps - done)
            state = compiled(state, variables, lpips_vars, pv, tg, ids, jnp.int32(k))
            jax.block_until_ready(state.steps)
            done += k
        return state, done

    rows = []
    for j in range(-(-args.photos // bs)):
        state, (pv, tg), ids, b = batch(j)
        t0 = time.perf_counter()
        state, ran = steps_until(state, pv, tg, ids, pti.max_steps, deadline)
        deltas = jax.device_get(tuning.delta(state.synthesis, base))
        t_tune = time.perf_counter() - t0
        t0, saved = time.perf_counter(), 0
        for i in range(b):
            if time.time() > deadline and saved:
                break
            out = work / "ours" / f"photo{j * bs + i:03d}"
            pti_bundle.save(out, cfg, fp, jax.tree.map(lambda d: d[i], deltas), overwrite=True)
            saved += 1
        t_save = time.perf_counter() - t0
        row = {"kind": "batch", "batch": j, "photos": b, "steps": ran, "tune_s": round(t_tune, 3)}
        row.update(save_s=round(t_save, 3), saved=saved, seconds_per_photo_step=t_tune / (b * ran) if ran else None)
        emit(row)
        rows.append(row)
        if time.time() > deadline:
            break
    timed = [r for r in rows if r["steps"]]
    photo_steps = sum(r["photos"] * r["steps"] for r in timed)
    s_step = sum(r["tune_s"] for r in timed) / photo_steps if photo_steps else None
    n_saved = sum(r["saved"] for r in rows)
    s_over = sum(r["save_s"] for r in rows) / n_saved if n_saved else None
    peak = (jax.local_devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    emit(
        {
            "kind": "summary",
            "photos_finished": sum(r["photos"] for r in rows if r["steps"] == pti.max_steps),
            "steps": pti.max_steps,
            "seconds_per_photo_step": s_step,
            "per_photo_overhead_s": s_over,  # its delta bundle saved
            "photos_per_minute": pti_official.per_minute(s_step, s_over, pti.max_steps),
            f"photos_per_minute_at_{OFFICIAL_STEPS}_steps": pti_official.per_minute(s_step, s_over, OFFICIAL_STEPS),
            "peak_memory_bytes": peak,
            "peak_memory_per_photo_bytes": peak // bs if peak else None,
        }
    )
    if time.time() < deadline:  # untimed: the base generator's losses, for the comparison with the official
        render = jax.jit(lambda v, ws: gen.apply(v, ws, "const", method=Generator.synthesize))
        state, (pv, tg), ids, b = batch(0)
        l2, lp = (np.asarray(x) for x in tuning.photo_distances(lpips, lpips_vars, render(variables, pv), tg))
        emit({"kind": "first_step", "l2_lpips": [[float(a), float(c)] for a, c in zip(l2[:b], lp[:b])]})
    if args.parity and time.time() < deadline:  # batch 0 for steps - 1 updates: the official's last measure
        state, (pv, tg), ids, b = batch(0)
        state, ran = steps_until(state, pv, tg, ids, pti.max_steps - 1, float("inf"))
        images = tuning.per_photo_renderer(gen)(variables, state.synthesis, pv[:, None], jax.random.key(0))[:, 0]
        l2, lp = (np.asarray(x) for x in tuning.photo_distances(lpips, lpips_vars, images, tg))
        emit({"kind": "parity", "last_step_l2_lpips": [[float(a), float(c)] for a, c in zip(l2[:b], lp[:b])]})


# ----------------------------------------------------------------------------------------- orchestrator
class Rows:
    """The run's JSON lines: printed and appended to the --json file, flushed, as each is known."""

    def __init__(self, path: Optional[Path]):
        self.path, self.rows, self._lock = path, [], threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict) -> None:
        line = json.dumps(row)
        with self._lock:
            self.rows.append(row)
            print(line, flush=True)
            if self.path is not None:
                with open(self.path, "a") as f:
                    f.write(line + "\n")
                    f.flush()
                    os.fsync(f.fileno())

    def of(self, phase: str, kind: str) -> Optional[dict]:
        return next((r for r in self.rows if r.get("phase") == phase and r.get("kind") == kind), None)


def run_phase(
    side: str, argv: list[str], env: dict, limit_s: float, rows: Rows, margin_s: float, started: Optional[list] = None
) -> None:
    """Run one side in its own process group; its RESULT rows go to `rows` as they come; killed at `limit_s`
    (`started` gets its Popen, for a caller that ends it sooner)."""
    deadline = time.time() + max(0.0, limit_s - margin_s)
    cmd = [sys.executable, __file__, *argv, "--side", side, "--deadline", str(deadline)]
    p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    if started is not None:
        started.append(p)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [*map(lines.put, p.stdout), lines.put(None)], daemon=True).start()
    end, killed = time.monotonic() + limit_s, False
    while True:
        try:
            line = lines.get(timeout=max(0.0, end - time.monotonic()))
        except queue.Empty:
            os.killpg(p.pid, signal.SIGKILL)
            killed = True
            break
        if line is None:
            break
        if line.startswith("RESULT "):
            rows.add({"phase": side, **json.loads(line[len("RESULT ") :])})
        else:
            print(line, end="", flush=True)
    rc = p.wait()
    if killed or rc:
        rows.add({"phase": side, "kind": "ended", "killed_at_limit_s": limit_s if killed else None, "exit": rc})


def compare(rows: Rows) -> dict:
    """The comparison row from both sides' summaries (None where one is missing)."""
    o, u = rows.of("official", "summary"), rows.of("ours", "summary")
    out: dict = {"phase": "compare"}
    if not (o and u):
        return {**out, "missing": [s for s, r in (("official", o), ("ours", u)) if not r]}
    key = f"photos_per_minute_at_{OFFICIAL_STEPS}_steps"
    for k in ("photos_per_minute", key):
        if o[k] and u[k]:
            out[f"ratio_{k}"] = round(u[k] / o[k], 2)
    if o["seconds_per_photo_step"] and u["seconds_per_photo_step"]:
        out["ratio_seconds_per_photo_step"] = round(o["seconds_per_photo_step"] / u["seconds_per_photo_step"], 2)
    out["peak_memory_per_photo_bytes"] = {
        "official": o["peak_memory_per_photo_bytes"],
        "ours": u["peak_memory_per_photo_bytes"],
    }
    first = rows.of("ours", "first_step")
    if first and o["first_step_l2_lpips"]:
        pairs = list(zip(o["first_step_l2_lpips"], first["l2_lpips"]))
        out["first_step_max_abs_diff_l2_lpips"] = [max(abs(a[i] - b[i]) for a, b in pairs) for i in (0, 1)]
    parity = rows.of("ours", "parity")
    if parity and o["last_step_l2_lpips"]:
        pairs = list(zip(o["last_step_l2_lpips"], parity["last_step_l2_lpips"]))
        out["last_step_max_abs_diff_l2_lpips"] = [max(abs(a[i] - b[i]) for a, b in pairs) for i in (0, 1)]
    return out


def orchestrate(args, argv: list[str]) -> None:
    t_end = time.monotonic() + args.budget_s
    rows = Rows(args.json)
    rows.add(
        {"phase": "run", "started": time.strftime("%Y-%m-%dT%H:%M:%S"), **{k: str(v) for k, v in vars(args).items()}}
    )
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", TQDM_DISABLE="1")
    if args.device == "cpu":
        env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    left = lambda: t_end - time.monotonic()  # noqa: E731
    ops, ops_proc = None, []
    if args.device == "gpu" and "official" in args.sides:  # nvcc on the CPU while the other phases run
        ops = threading.Thread(target=run_phase, args=("ops", argv, env, args.budget_s, rows, 0, ops_proc))
        ops.start()
    limits = {"setup": args.setup_s, "ours": args.ours_s, "official": args.official_s}
    for side in ("setup", "ours", "official"):
        if side not in args.sides:
            continue
        phase_end = time.monotonic() + min(limits[side], left())
        if side == "official" and ops is not None:
            ops.join(timeout=max(0.0, phase_end - time.monotonic() - OFFICIAL_MIN_S))
        limit = phase_end - time.monotonic()
        if limit <= 0:
            rows.add({"phase": side, "kind": "skipped", "reason": "--budget-s spent"})
            continue
        run_phase(side, argv, env, limit, rows, SIDE_MARGIN_S if args.device == "gpu" else limit / 4)
        if side == "setup" and rows.of("setup", "ended"):
            break  # nothing to measure without the setup
    rows.add(compare(rows))
    if ops is not None and ops.is_alive() and ops_proc:  # not needed: official skipped, or it built them itself
        os.killpg(ops_proc[0].pid, signal.SIGKILL)
        ops.join()


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--json", type=Path, default=None, help="append the JSON lines here (flushed as they come)")
    p.add_argument("--sides", nargs="+", default=["setup", "ours", "official"], choices=["setup", "ours", "official"])
    p.add_argument("--side", default=None, help=argparse.SUPPRESS)  # one side, in this process
    p.add_argument("--deadline", type=float, default=float("inf"), help=argparse.SUPPRESS)  # time.time()
    p.add_argument("--steps", type=int, default=100, help="tuning steps per photo on both sides (official: 350)")
    p.add_argument("--photos", type=int, default=8, help="photos our side tunes")
    p.add_argument("--batch-size", type=int, default=8, help="our photos per compiled step")
    p.add_argument("--official-photos", type=int, default=2, help="photos the official coach tunes")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--channel-base", type=int, default=32768, help="NVlabs channel_base (FFHQ: 32768)")
    p.add_argument("--lpips-threshold", type=float, default=0.0, help="early stop (official 0.06; 0 runs every step)")
    p.add_argument("--locality", action="store_true", help="the locality regulariser on both sides")
    p.add_argument("--parity", action="store_true", help="also compare the losses after steps - 1 updates (untimed)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="our compute dtype")
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--budget-s", type=float, default=235, help="the whole run's limit in seconds")
    p.add_argument("--setup-s", type=float, default=60, help="limit of the setup phase (s)")
    p.add_argument("--ours-s", type=float, default=115, help="limit of our phase (s)")
    p.add_argument("--official-s", type=float, default=60, help="limit of the official phase (s)")
    p.add_argument("--smoke", action="store_true", help="CPU smoke test at a tiny size (module doc)")
    p.add_argument("--pti", default=str(ROOT / "external" / "PTI"))
    p.add_argument("--nvlabs", default=str(ROOT / "external" / "stylegan2-ada-pytorch"))
    p.add_argument("--pylibs", default=str(ROOT / "external" / "pylibs"), help="folder holding the lpips package")
    args = p.parse_args(argv)
    if args.smoke:
        for k, v in {**SMOKE, **SMOKE_LIMITS}.items():
            setattr(args, k, v)
    sides: dict[str, Callable] = {
        "setup": lambda: setup(args),
        "ops": lambda: pti_official.build_ops(args, emit),
        "ours": lambda: run_ours(args, args.deadline),
        "official": lambda: pti_official.run_official(args, emit, args.deadline),
    }
    if args.side:
        sides[args.side]()
        sys.stdout.flush()
        os._exit(0)  # every row is out: skip the interpreter's slow teardown (torch, JAX), which the limit counts
    else:
        orchestrate(args, argv)


if __name__ == "__main__":
    main()
