"""Pivotal tuning, photos per minute: the official PTI coach (one photo at a time) vs `e4e_jax.tuning` (a batch
of photos in one compiled step), same generator, same photos, same pivots, on one GPU.

    python benchmarks/pti_vs_official.py --workdir workdir/pti --json $OUT/pti_vs_official.json \
        [--steps 350] [--photos 8] [--batch-size 8] [--official-photos 2] [--sides setup official ours]

What must be on the device (git-ignored; the lead carries `external/`):
    external/PTI                     danielroich/PTI (its configs, coaches, criteria, dnnlib, torch_utils)
    external/stylegan2-ada-pytorch   NVlabs/stylegan2-ada-pytorch: only training/networks.py is read (PTI
                                     holds the torch_utils / dnnlib it imports, byte-identical)
    external/pylibs/lpips            the `lpips` package (not installed there): cp -r the venv's site-packages/lpips
The device image has torch + torchvision; `wandb` is stubbed in sys.modules, and so are the PTI modules the
tuning loop never calls (the W projector, the e4e encoder, the wandb image logging: they import matplotlib).

Steps (each side a fresh process; --workdir keeps the setup, so sides can run in separate calls):
  setup     an NVlabs stylegan2-ada Generator at --size (default 1024, the FFHQ config: 8 mapping layers,
            channel_base 32768, conv_clamp 256) with random weights, pickled as the official training loop
            does (`G_ema`; its CUDA ops build at run time); K photos at --size (the e4e sample photos, else
            synthetic ones); pivots w = G.mapping(z) for K seeds; our bundle via
            `python -m tools.convert_weights stylegan2 G.pkl`.
  official  `SingleIDCoach.train()` over --official-photos photos with the pivots saved where the coach reads
            them (use_last_w_pivots): per photo it reloads G, runs up to --steps steps of L2 + LPIPS(alex)
            with Adam and saves the whole tuned G, as the official script does. One photo of 2 steps first
            (CUDA op builds, cuDNN autotuning), untimed.
  ours      `tuning.make_runner` on --photos photos in batches of --batch-size (one compile, timed apart),
            each batch ending with its bfloat16 deltas saved as bundles (`pti_bundle.save`), as `e4e-jax tune`.
Both sides: noise 'const', float32 (TF32 convs allowed, torch's default), LPIPS with a random AlexNet trunk
(no ImageNet weights can be downloaded; speed does not depend on them). --lpips-threshold defaults to 0 so
that both sides run every step (random weights never reach the official 0.06 anyway; the steps each photo
ran are reported). --locality adds the regulariser on both sides.

Reports (JSON): photos/minute of each side, their ratio, seconds per photo-step, peak GPU memory per photo
(torch.cuda.max_memory_allocated at batch 1; JAX's peak_bytes_in_use / batch size), our compile time.
CPU smoke test (no GPU, tiny sizes): --device cpu --size 64 --channel-base 1024 --steps 2 --photos 2
--batch-size 2 --official-photos 1 (without torchvision, tests/torchvision_standin.py stands in).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SEED = 0
_KEEP: list = []
STUBBED_PTI_MODULES = ("training.projectors.w_projector", "models.e4e.psp", "utils.log_utils")


# ------------------------------------------------------------------------------------------------ setup
def _official_imports(args) -> None:
    """sys.path and stand-ins so that the official PTI code imports on the device (or a CPU machine)."""
    for p in (args.pylibs, args.pti):
        sys.path.insert(0, str(Path(p).resolve()))
    sys.modules.setdefault("wandb", types.ModuleType("wandb"))
    try:
        import torchvision  # noqa: F401
    except ImportError:  # a CPU machine without torchvision: the tests' stand-in, plus the names PTI imports
        from tests.torchvision_standin import standin_torchvision

        _KEEP.append(standin_torchvision())  # held: collecting it would undo the stand-in
        _KEEP[-1].__enter__()
        tf = types.ModuleType("torchvision.transforms")
        for name in ("Compose", "ToPILImage", "Resize", "ToTensor", "Normalize"):
            setattr(tf, name, lambda *a, **k: None)
        sys.modules["torchvision.transforms"] = tf
        sys.modules["torchvision"].transforms = tf
    for name in STUBBED_PTI_MODULES:  # imported by the coach, never called by its tuning loop
        mod = types.ModuleType(name)
        mod.__getattr__ = lambda attr, name=name: _never_called(name, attr)
        sys.modules[name] = mod


def _never_called(module: str, attr: str):
    if attr.startswith("__"):  # module protocol names (inspect asks for __file__): absent
        raise AttributeError(attr)

    def fail(*a, **k):
        raise RuntimeError(f"benchmark stub: {module}.{attr} is not part of the tuning loop")

    return fail


def _nvlabs_networks(args):
    """NVlabs training/networks.py as a module (PTI's torch_utils on the path)."""
    import importlib.util

    path = Path(args.nvlabs) / "training" / "networks.py"
    spec = importlib.util.spec_from_file_location("nvlabs_networks", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _photos(k: int, size: int) -> np.ndarray:
    """(k, size, size, 3) uint8: the e4e sample photos (cycled), else smooth synthetic ones."""
    from PIL import Image

    from tests.assets import E4E_ASSETS

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


def setup(args) -> dict:
    import pickle

    import torch

    _official_imports(args)
    import dnnlib

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    pkl, k = work / "G.pkl", max(args.photos, args.official_photos)
    if not pkl.is_file():
        nets = _nvlabs_networks(args)
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
        torch.save(_random_trunk_lpips()(net="alex").state_dict(), work / "lpips_random.pth")
    for kind, src, out in (("stylegan2", pkl, "bundle"), ("lpips", work / "lpips_random.pth", "lpips")):
        if not (work / out).is_dir():
            convert = [sys.executable, "-m", "tools.convert_weights", kind, str(src), "--out", str(work / out)]
            subprocess.run(convert, check=True, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    return {"pickle": str(pkl), "bundle": str(work / "bundle"), "lpips": str(work / "lpips"), "photos": k}


def _random_trunk_lpips(weights: Path | None = None):
    """lpips.LPIPS with a random AlexNet trunk (no ImageNet download on the device) and the package's v0.1
    heads; with `weights`, the state dict saved by setup (so both sides use one LPIPS)."""
    import lpips
    import torch

    heads = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"

    class RandomTrunkLPIPS(lpips.LPIPS):
        def __init__(self, *a, **kw):
            super().__init__(*a, **{"pnet_rand": True, "verbose": False, "model_path": str(heads), **kw})
            if weights is not None:
                self.load_state_dict(torch.load(weights, map_location="cpu"))

    return RandomTrunkLPIPS


# --------------------------------------------------------------------------------------------- official
def run_official(args) -> dict:
    import torch

    _official_imports(args)
    import lpips

    lpips.LPIPS = _random_trunk_lpips(Path(args.workdir) / "lpips_random.pth")  # before the coach imports it
    from training.coaches.single_id_coach import SingleIDCoach

    from configs import global_config, hyperparameters, paths_config

    work = Path(args.workdir)
    device = "cuda:0" if args.device == "gpu" else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    global_config.device = device
    paths_config.stylegan2_ada_ffhq = str(work / "G.pkl")
    paths_config.checkpoints_dir = str(work / "official" / "checkpoints")
    paths_config.embedding_base_dir = str(work / "official" / "embeddings")
    paths_config.input_data_id = "bench"
    hyperparameters.use_last_w_pivots, hyperparameters.first_inv_type = True, "w"
    hyperparameters.LPIPS_value_threshold = args.lpips_threshold
    hyperparameters.use_locality_regularization = args.locality
    pivots, photos = np.load(work / "pivots.npy"), np.load(work / "photos.npy")
    data = []
    for i in range(args.official_photos):
        name = f"photo{i:03d}"
        folder = Path(paths_config.embedding_base_dir) / "bench" / paths_config.pti_results_keyword / name
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(torch.from_numpy(pivots[i : i + 1]), folder / "0.pt")
        image = torch.from_numpy(photos[i]).permute(2, 0, 1)[None].float() / 255
        data.append(((name,), (image - 0.5) / 0.5))

    def coach_run(items, steps):
        hyperparameters.max_pti_steps, hyperparameters.max_images_to_invert = steps, len(items)
        coach = SingleIDCoach(items, use_wandb=False)
        calls, first, last = [], {}, {}
        loss = coach.calc_loss

        def counted(*a):  # a[2]: the photo's name; returns (loss, l2, lpips)
            calls.append(a[2])
            out = loss(*a)
            first.setdefault(a[2], [float(out[1]), float(out[2])])
            last[a[2]] = [float(out[1]), float(out[2])]
            return out

        coach.calc_loss = counted
        sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        coach.train()
        sync()
        names = [name for (name,), _ in items]
        seconds = time.perf_counter() - t0
        return seconds, [calls.count(n) for n in names], [first[n] for n in names], [last[n] for n in names]

    coach_run(data[:1], 2)  # CUDA op builds, cuDNN autotuning
    from torch_utils.ops import bias_act, upfirdn2d

    # NVlabs falls back to slow reference ops (with a warning) when its CUDA plugins fail to build.
    plugins = {"bias_act": bias_act._plugin is not None, "upfirdn2d": upfirdn2d._plugin is not None}
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    seconds, measured, first, last = coach_run(data, args.steps)
    n = len(data)
    return {
        "side": "official",
        "photos": n,
        "seconds": round(seconds, 3),
        "photos_per_minute": round(60 * n / seconds, 3),
        "seconds_per_photo_step": seconds / (n * args.steps),
        "loss_evaluations_per_photo": measured,  # = steps run (+1 if it stopped early)
        "first_step_l2_lpips": first,  # the base generator at the pivot against the photo
        "last_step_l2_lpips": last,  # measured before the last update: after steps - 1 updates
        "peak_memory_per_photo_bytes": int(torch.cuda.max_memory_allocated()) if device != "cpu" else None,
        "cuda_plugins_built": plugins,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device != "cpu" else "cpu",
    }


# ------------------------------------------------------------------------------------------------- ours
def run_ours(args) -> dict:
    import jax
    import jax.numpy as jnp

    from e4e_jax import bundle, generate, pti_bundle, sharding, tuning
    from e4e_jax.choices import compute_dtype
    from e4e_jax.models.lpips import LPIPS
    from e4e_jax.models.stylegan2 import Generator

    work = Path(args.workdir)
    cfg, variables = generate.load_generator(str(work / "bundle"))
    dtype = compute_dtype(args.dtype)
    gen = Generator(
        cfg, modulation=generate.resolve_modulation("auto"), dtype=dtype, upsample=generate.resolve_upsample("auto")
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
    runner = tuning.make_runner(gen, lpips, pti, seed=SEED)

    def batch(j):
        sl = slice(j * bs, (j + 1) * bs)
        b = len(pivots[sl])
        ids = np.arange(j * bs, j * bs + bs, dtype=np.int32)
        args_ = (jnp.asarray(sharding.pad_batch(pivots[sl], bs)), jnp.asarray(sharding.pad_batch(photos[sl], bs)))
        return tuning.init_state(pti, base, jnp.arange(bs) < b), args_, jnp.asarray(ids), b

    state, (pv, tg), ids, _ = batch(0)
    render = jax.jit(lambda v, ws: gen.apply(v, ws, "const", method=Generator.synthesize))
    l2, lp = (np.asarray(x) for x in tuning.photo_distances(lpips, lpips_vars, render(variables, pv), tg))
    first = [[float(a), float(b)] for a, b in zip(l2, lp)]
    t0 = time.perf_counter()
    compiled = runner.lower(state, variables, lpips_vars, pv, tg, ids, jnp.int32(tuning.STEPS_PER_CALL)).compile()
    compile_s = time.perf_counter() - t0
    n_batches = -(-args.photos // bs)
    t_tune = t_save = 0.0
    steps = []
    for j in range(n_batches):
        state, (pv, tg), ids, b = batch(j)
        t0 = time.perf_counter()
        state, _ = tuning.tune(compiled, state, variables, lpips_vars, pv, tg, ids, pti.max_steps)
        deltas = jax.device_get(tuning.delta(state.synthesis, base))
        t1 = time.perf_counter()
        for i in range(b):
            out = work / "ours" / f"photo{j * bs + i:03d}"
            pti_bundle.save(out, cfg, fp, jax.tree.map(lambda d: d[i], deltas), overwrite=True)
        t_tune, t_save = t_tune + t1 - t0, t_save + time.perf_counter() - t1
        steps += np.asarray(state.steps)[:b].tolist()
    seconds = t_tune + t_save
    mem = jax.local_devices()[0].memory_stats() or {}
    peak = mem.get("peak_bytes_in_use")
    last = None
    if args.parity:  # batch 0 again for steps - 1 updates: what the official side measures at its last step
        state, (pv, tg), ids, b = batch(0)
        state, _ = tuning.tune(compiled, state, variables, lpips_vars, pv, tg, ids, pti.max_steps - 1)
        images = tuning.per_photo_renderer(gen)(variables, state.synthesis, pv[:, None], jax.random.key(0))[:, 0]
        l2, lp = (np.asarray(x) for x in tuning.photo_distances(lpips, lpips_vars, images, tg))
        last = [[float(a), float(c)] for a, c in zip(l2[:b], lp[:b])]
    return {
        "side": "ours",
        "photos": args.photos,
        "batch_size": bs,
        "seconds": round(seconds, 3),
        "tuning_seconds": round(t_tune, 3),
        "saving_seconds": round(t_save, 3),
        "compile_seconds": round(compile_s, 2),
        "photos_per_minute": round(60 * args.photos / seconds, 3),
        "seconds_per_photo_step": t_tune / (args.photos * args.steps),
        "steps_per_photo": steps,
        "first_step_l2_lpips": first[: args.photos],
        "last_step_l2_lpips": last,
        "peak_memory_bytes": peak,
        "peak_memory_per_photo_bytes": peak // bs if peak else None,
        "dtype": args.dtype,
        "modulation": gen.modulation,
        "upsample": gen.upsample,
        "jax": jax.__version__,
        "device": str(jax.devices()[0].device_kind),
    }


# ------------------------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--json", type=Path, default=None, help="write the combined results here")
    p.add_argument("--sides", nargs="+", default=["setup", "official", "ours"], choices=["setup", "official", "ours"])
    p.add_argument("--side", default=None, help=argparse.SUPPRESS)  # one side, in this process
    p.add_argument("--steps", type=int, default=350, help="tuning steps per photo on both sides (official: 350)")
    p.add_argument("--photos", type=int, default=8, help="photos our side tunes")
    p.add_argument("--batch-size", type=int, default=8, help="our photos per compiled step")
    p.add_argument("--official-photos", type=int, default=2, help="photos the official coach tunes")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--channel-base", type=int, default=32768, help="NVlabs channel_base (FFHQ: 32768)")
    p.add_argument("--lpips-threshold", type=float, default=0.0, help="early stop (official 0.06; 0 runs every step)")
    p.add_argument("--locality", action="store_true", help="the locality regulariser on both sides")
    p.add_argument(
        "--parity",
        action="store_true",
        help="also compare the losses after steps - 1 updates (ours reruns batch 0 for that, untimed)",
    )
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="our compute dtype")
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--pti", default=str(ROOT / "external" / "PTI"))
    p.add_argument("--nvlabs", default=str(ROOT / "external" / "stylegan2-ada-pytorch"))
    p.add_argument("--pylibs", default=str(ROOT / "external" / "pylibs"), help="folder holding the lpips package")
    args = p.parse_args(argv)
    if args.side:
        result = {"setup": setup, "official": run_official, "ours": run_ours}[args.side](args)
        print("RESULT " + json.dumps(result), flush=True)
        return
    results = {}
    for side in args.sides:
        env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
        if args.device == "cpu":
            env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
        cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--side", side]
        r = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if r.returncode:
            raise SystemExit(f"{side} failed (exit {r.returncode})")
        results[side] = json.loads(r.stdout.split("RESULT ", 1)[1])
        print(side, json.dumps(results[side]), flush=True)
    if "official" in results and "ours" in results:
        o, u = results["official"], results["ours"]
        pairs = list(zip(o["first_step_l2_lpips"], u["first_step_l2_lpips"]))
        results["first_step_max_abs_diff_l2_lpips"] = [max(abs(a[i] - b[i]) for a, b in pairs) for i in (0, 1)]
        if u["last_step_l2_lpips"]:
            pairs = list(zip(o["last_step_l2_lpips"], u["last_step_l2_lpips"]))
            results["last_step_max_abs_diff_l2_lpips"] = [max(abs(a[i] - b[i]) for a, b in pairs) for i in (0, 1)]
        results["ratio_photos_per_minute"] = round(u["photos_per_minute"] / o["photos_per_minute"], 2)
        results["ratio_seconds_per_photo_step"] = round(o["seconds_per_photo_step"] / u["seconds_per_photo_step"], 2)
    results["args"] = {k: str(v) for k, v in vars(args).items()}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k.startswith("ratio")}))


if __name__ == "__main__":
    main()
