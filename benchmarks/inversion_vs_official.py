"""Inversion images/s at 1024 output: e4e-jax vs the official PyTorch e4e, same random weights.

    python benchmarks/inversion_vs_official.py --official external/encoder4editing \
        --batches 1 8 32 --dtypes float32 bfloat16 --json $OUT/inversion.json

The official repository is not part of e4e-jax: fetch omertov/encoder4editing into the git-ignored
`external/` folder and carry it to the device. This script builds the official pSp/e4e modules
(Encoder4Editing IR-SE50 + the 1024² StyleGAN2 with its CUDA ops) with random weights, saves them as
an official checkpoint, converts that file with our converter, checks both give the same latents
and images on the same input, then times `encoder → + latent_avg → generator (const noise)` at
each batch size on both sides (no resizing, no disk I/O). f32 runs with TF32 allowed on both sides.
Two timings per row: `ms`, the median of single calls each waited for, and `ms_pipelined`, calls
dispatched back to back with one wait at the end (how a batch job runs: `inversion.iter_invert`
keeps a batch in flight; PyTorch launches asynchronously in the same way).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_official(official: Path, size: int, seed: int = 0):
    """Official Encoder4Editing + Generator with random weights (non-trivial BN stats, biases)."""
    import torch

    sys.path.insert(0, str(official))
    from models.encoders.psp_encoders import Encoder4Editing  # noqa: E402 - the official code, from its own folder
    from models.stylegan2.model import Generator

    class Opts:
        stylegan_size = size

    torch.manual_seed(seed)
    enc = Encoder4Editing(50, "ir_se", Opts())
    dec = Generator(size, 512, 8, channel_multiplier=2)
    with torch.no_grad():
        for name, t in list(enc.state_dict().items()) + list(dec.state_dict().items()):
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif name.endswith("running_mean") or name.endswith("noise.weight") or name.endswith("activate.bias"):
                t.normal_(0, 0.1)
    latent_avg = torch.randn(dec.n_latent, 512) * 0.1
    return enc.eval(), dec.eval(), latent_avg


def save_official_ckpt(enc, dec, latent_avg, size, path):
    import torch

    sd = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    sd.update({f"decoder.{k}": v for k, v in dec.state_dict().items()})
    torch.save(
        {
            "state_dict": sd,
            "latent_avg": latent_avg,
            "opts": {
                "encoder_type": "Encoder4Editing",
                "stylegan_size": size,
                "dataset_type": "ffhq_encode",
                "start_from_latent_avg": True,
            },
        },
        path,
    )


def time_torch(fn, iters):
    import torch

    fn()
    torch.cuda.synchronize()
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--official", type=Path, default=ROOT / "external" / "encoder4editing")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--modulation", default="auto")
    p.add_argument("--upsample", default="auto")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--skip-official-timing", action="store_true")
    p.add_argument(
        "--fuse-style-blocks",
        type=int,
        nargs="+",
        default=[1],
        help="time ours with these fuse_style_blocks values (0/1)",
    )
    p.add_argument("--json", default=None)
    args = p.parse_args()

    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    import jax
    import jax.numpy as jnp

    from benchmarks.common import device_info, emit, time_fn, time_pipelined
    from e4e_jax.inference import inversion
    from tools.convert_weights.__main__ import main as convert_main

    print(device_info(), "torch", torch.__version__, flush=True)
    t0 = time.time()
    enc, dec, latent_avg = build_official(args.official, args.size)
    print(f"official modules built (CUDA ops compiled) in {time.time() - t0:.0f}s", flush=True)
    tmp = Path(tempfile.mkdtemp())
    save_official_ckpt(enc, dec, latent_avg, args.size, tmp / "e4e_random.pt")
    t0 = time.time()
    assert convert_main(["e4e", str(tmp / "e4e_random.pt"), "--out", str(tmp / "bundle")]) == 0
    print(f"converted in {time.time() - t0:.1f}s", flush=True)
    enc, dec, latent_avg = enc.cuda(), dec.cuda(), latent_avg.cuda()

    @torch.no_grad()
    def official_invert(x):
        codes = enc(x) + latent_avg.repeat(x.shape[0], 1, 1)
        images, _ = dec([codes], input_is_latent=True, randomize_noise=False)
        return codes, images

    # Same input on both sides: parity on the GPU (TF32 on both, so a relative tolerance).
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 256, 256, 3)).astype(np.float32)
    ref_codes, ref_img = official_invert(torch.from_numpy(x.transpose(0, 3, 1, 2)).cuda())
    ref_codes, ref_img = ref_codes.cpu().numpy(), ref_img.cpu().numpy().transpose(0, 2, 3, 1)
    model = inversion.load_e4e(
        str(tmp / "bundle"),
        modulation=args.modulation,
        precision="highest",
        fuse_style_blocks=bool(max(args.fuse_style_blocks)),
    )
    codes, img = inversion.make_invert_fn(model)(model.variables, jnp.asarray(x))
    print(
        f"parity (fp32 'highest' ours vs official TF32): latents max|d| {np.abs(np.asarray(codes) - ref_codes).max():.2e} "
        f"(max|ref| {np.abs(ref_codes).max():.2f}); images max|d| {np.abs(np.asarray(img) - ref_img).max():.2e} "
        f"mean|d| {np.abs(np.asarray(img) - ref_img).mean():.2e}",
        flush=True,
    )

    rows = []
    for b in args.batches:
        xs = [rng.uniform(-1, 1, (b, 256, 256, 3)).astype(np.float32) for _ in range(3)]
        if not args.skip_official_timing:
            tx = [torch.from_numpy(a.transpose(0, 3, 1, 2)).cuda() for a in xs]
            it = iter(range(10**9))
            torch.cuda.reset_peak_memory_stats()
            t = time_torch(lambda: official_invert(tx[next(it) % 3]), args.iters)
            tp = time_pipelined(
                lambda i: official_invert(tx[i % 3]), lambda _: torch.cuda.synchronize(), iters=args.iters
            )["median_s"]
            rows.append(
                {
                    "impl": "official-pytorch",
                    "dtype": "float32(tf32)",
                    "batch": b,
                    "ms": round(t * 1e3, 2),
                    "img_per_s": round(b / t, 1),
                    "ms_pipelined": round(tp * 1e3, 2),
                    "img_per_s_pipelined": round(b / tp, 1),
                    "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                }
            )
            print(rows[-1], flush=True)
        for dtype, fuse in [(d, f) for d in args.dtypes for f in args.fuse_style_blocks]:
            m = inversion.load_e4e(
                str(tmp / "bundle"),
                modulation=args.modulation,
                dtype=dtype,
                upsample=args.upsample,
                fuse_style_blocks=bool(fuse),
            )
            fn = inversion.make_invert_fn(m)
            v = jax.device_put(m.variables)
            jx = [jax.device_put(a) for a in xs]
            t = time_fn(lambda i: jax.block_until_ready(fn(v, jx[i % 3])), iters=args.iters)
            tp = time_pipelined(lambda i: fn(v, jx[i % 3]), jax.block_until_ready, iters=args.iters)["median_s"]
            tag = ",fused" if fuse else ""
            rows.append(
                {
                    "impl": f"e4e-jax[{m.generator.modulation},{m.generator.upsample}{tag}]",
                    "dtype": dtype if dtype != "float32" else "float32(tf32)",
                    "batch": b,
                    "ms": round(t["median_s"] * 1e3, 2),
                    "img_per_s": round(b / t["median_s"], 1),
                    "ms_pipelined": round(tp * 1e3, 2),
                    "img_per_s_pipelined": round(b / tp, 1),
                    "compile_s": round(t["first_call_s"], 1),
                }
            )
            print(rows[-1], flush=True)
        torch.cuda.empty_cache()
    drift(tmp, args, rng)
    emit(rows, args.json)


def drift(tmp: Path, args, rng) -> None:
    """bf16 vs fp32 inversion of the same 16 inputs: latent and image drift, MSE and LPIPS at 256².

    LPIPS uses the real v0.1 alex heads (tests/data) on a random-weight torchvision AlexNet (no
    pretrained backbone can be downloaded here), so it is a relative measure only.
    """
    import jax
    import jax.numpy as jnp
    import torch
    import torchvision

    from e4e_jax.inference import inversion
    from e4e_jax.models.lpips import LPIPS
    from e4e_jax.models.resampling import adaptive_avg_pool2d
    from e4e_jax.storage import bundle
    from tools.convert_weights.__main__ import main as convert_main

    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp / "alexnet.pth")
    assert (
        convert_main(
            [
                "lpips",
                str(ROOT / "tests/data/lpips_v0.1/alex.pth"),
                str(tmp / "alexnet.pth"),
                "--out",
                str(tmp / "lpips"),
            ]
        )
        == 0
    )
    _, lp_vars = bundle.load(tmp / "lpips", "lpips")
    lpips = jax.jit(lambda a, b: LPIPS("alex").apply(lp_vars, a, b))
    x = jnp.asarray(rng.uniform(-1, 1, (16, 256, 256, 3)).astype(np.float32))
    outs = {}
    for dtype in ("float32", "bfloat16"):
        m = inversion.load_e4e(str(tmp / "bundle"), modulation=args.modulation, dtype=dtype, upsample=args.upsample)
        outs[dtype] = inversion.make_invert_fn(m)(m.variables, x)
    (l32, i32), (l16, i16) = outs["float32"], outs["bfloat16"]
    p32, p16 = adaptive_avg_pool2d(i32, (256, 256)), adaptive_avg_pool2d(i16, (256, 256))
    print(
        f"bf16 drift vs fp32 (16 inputs): latents max|d| {float(jnp.abs(l16 - l32).max()):.4f}; "
        f"images mean|d| {float(jnp.abs(i16 - i32).mean()):.4f}; MSE@256 {float(jnp.mean((p16 - p32) ** 2)):.2e}; "
        f"LPIPS@256 mean {float(jnp.mean(lpips(p16, p32))):.4f} max {float(jnp.max(lpips(p16, p32))):.4f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
