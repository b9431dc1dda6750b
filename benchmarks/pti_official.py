"""The official side of benchmarks/pti_vs_official.py: official PTI's `SingleIDCoach` (danielroich/PTI) on an
NVlabs stylegan2-ada generator with random weights, imported from the git-ignored `external/` at run time.

Nothing here is copied from those repositories: their modules are imported (sys.path), and the few
modules the coach imports but its tuning loop never calls are stubbed (`wandb`; the W projector, the e4e
encoder and the wandb image logging, which import matplotlib and others).
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path
from typing import Callable

import numpy as np

SEED = 0
OFFICIAL_STEPS = 350  # official PTI's max_pti_steps: what photos/minute is projected to
STUBBED_PTI_MODULES = ("training.projectors.w_projector", "models.e4e.psp", "utils.log_utils")
_KEEP: list = []


class OutOfTime(Exception):
    """The phase's deadline passed: stop after what is measured."""


def official_imports(args) -> None:
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


def nvlabs_networks(args):
    """NVlabs training/networks.py as a module (PTI's torch_utils on the path)."""
    import importlib.util

    path = Path(args.nvlabs) / "training" / "networks.py"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: put NVlabs/stylegan2-ada-pytorch (or its training/networks.py) there")
    spec = importlib.util.spec_from_file_location("nvlabs_networks", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def random_trunk_lpips(weights: Path | None = None):
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


def build_ops(args, emit: Callable[[dict], None]) -> None:
    """Build (or load from TORCH_EXTENSIONS_DIR) NVlabs' CUDA plugins, so the official phase does not pay
    for their compilation; run in the background while our side is measured (nvcc uses the CPU only)."""
    import torch

    official_imports(args)
    from torch_utils.ops import bias_act, upfirdn2d

    t0 = time.perf_counter()
    built = {"bias_act": bool(bias_act._init()), "upfirdn2d": bool(upfirdn2d._init())}
    emit({"kind": "ops", "built": built, "seconds": round(time.perf_counter() - t0, 1), "torch": torch.__version__})


def run_official(args, emit: Callable[[dict], None], deadline: float) -> None:
    """SingleIDCoach.train() over --official-photos photos (pivots where the coach reads them:
    use_last_w_pivots); per photo it reloads G, runs up to --steps steps of L2 + LPIPS (+ the locality
    term) with Adam and saves the whole tuned G, as the official script does. Emits a row per photo as it
    ends and a summary; stops at `deadline` (time.time()) after the step in flight."""
    import torch

    official_imports(args)
    import lpips

    lpips.LPIPS = random_trunk_lpips(Path(args.workdir) / "lpips_random.pth")  # before the coach imports it
    from training.coaches.single_id_coach import SingleIDCoach

    from configs import global_config, hyperparameters, paths_config

    work = Path(args.workdir)
    cuda = args.device == "gpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    global_config.device = "cuda:0" if cuda else "cpu"
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

    t0 = time.perf_counter()
    _coach_run(SingleIDCoach, hyperparameters, data[:1], 2, None, sync, float("inf"))  # warm-up: cuDNN, plugins
    emit({"kind": "warmup", "seconds": round(time.perf_counter() - t0, 1)})
    from torch_utils.ops import bias_act, upfirdn2d

    # NVlabs falls back to slow reference ops (with a warning) when its CUDA plugins fail to build.
    plugins = {"bias_act": bias_act._plugin is not None, "upfirdn2d": upfirdn2d._plugin is not None}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    photos_done = _coach_run(SingleIDCoach, hyperparameters, data, args.steps, emit, sync, deadline)
    per_step = [p["seconds_per_step"] for p in photos_done if p["seconds_per_step"] is not None]
    overhead = [p["seconds"] - p["steps"] * p["seconds_per_step"] for p in photos_done if p["finished"]]
    s_step = float(np.median(per_step)) if per_step else None
    s_over = float(np.median(overhead)) if overhead else None
    emit(
        {
            "kind": "summary",
            "photos_finished": sum(p["finished"] for p in photos_done),
            "steps": args.steps,
            "seconds_per_photo_step": s_step,
            "per_photo_overhead_s": s_over,  # G reloaded twice (restart_training) and the whole G saved
            "photos_per_minute": per_minute(s_step, s_over, args.steps),
            f"photos_per_minute_at_{OFFICIAL_STEPS}_steps": per_minute(s_step, s_over, OFFICIAL_STEPS),
            "first_step_l2_lpips": [p["first_l2_lpips"] for p in photos_done],
            "last_step_l2_lpips": [p["last_l2_lpips"] for p in photos_done if p["finished"]],
            "peak_memory_per_photo_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None,
            "cuda_plugins_built": plugins,
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if cuda else "cpu",
        }
    )


def per_minute(s_step, s_over, steps: int):
    """Photos per minute of one-at-a-time tuning at `steps` steps a photo."""
    if s_step is None or s_over is None:
        return None
    return round(60 / (steps * s_step + s_over), 3)


def _coach_run(coach_cls, hyperparameters, items, steps, emit, sync, deadline) -> list[dict]:
    """coach.train() on `items` with `steps` steps; each photo's timing (from its restart_training to the
    next one's, or the end: its G reloads, steps and G save) and first/last (L2, LPIPS)."""
    hyperparameters.max_pti_steps, hyperparameters.max_images_to_invert = steps, len(items)
    coach = coach_cls(items, use_wandb=False)
    photos: list[dict] = []
    restart, loss = coach.restart_training, coach.calc_loss

    def close(now: float, finished: bool) -> None:
        p = photos[-1]
        n, ts = len(p.pop("ticks")), p.pop("t_steps")  # ts: each step's entry (+ the one cut by the deadline)
        p.update(
            seconds=now - p.pop("t0"),
            steps=n,
            finished=finished,
            seconds_per_step=(ts[-1] - ts[0]) / (len(ts) - 1) if len(ts) > 1 else None,
            first_l2_lpips=[float(x) for x in p.pop("first")] if n else None,
            last_l2_lpips=[float(x) for x in p.pop("last")] if n else None,
        )
        if n == 0 and not finished:  # cut before its first step: nothing measured
            photos.pop()
        elif emit is not None:
            emit({"kind": "photo", **p})

    def timed_restart():
        sync()
        now = time.perf_counter()
        if photos:
            close(now, True)
        photos.append({"photo": len(photos), "t0": now, "ticks": [], "t_steps": []})
        restart()

    def counted(*a):  # returns (loss, l2, lpips); entered once per step, after the previous step's sync
        p = photos[-1]
        p["t_steps"].append(time.perf_counter())
        if time.time() > deadline:
            raise OutOfTime
        out = loss(*a)
        p["ticks"].append(1)
        p.setdefault("first", (out[1].detach(), out[2].detach()))
        p["last"] = (out[1].detach(), out[2].detach())  # measured before the update: after steps - 1 updates
        return out

    coach.restart_training, coach.calc_loss = timed_restart, counted
    try:
        coach.train()
        finished = True
    except OutOfTime:
        finished = False
    sync()
    if photos:
        close(time.perf_counter(), finished)
    return photos
