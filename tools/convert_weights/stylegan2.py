"""StyleGAN2 generator converter: rosinality `.pt` (as used by official e4e) or NVlabs `.pkl`.

    python -m tools.convert_weights stylegan2 stylegan2-ffhq-config-f.pt --out ffhq_g
    python -m tools.convert_weights stylegan2 network-snapshot-000000.pkl --out ada_g

The format is detected from the file's content. Key mapping: docs/params_layout.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from e4e_jax.models.latent_avg import W_AVG_SAMPLES, W_AVG_SEED, mean_w
from e4e_jax.models.stylegan2 import BLUR_KERNEL, StyleGAN2Config, noise_resolution
from e4e_jax.storage.torchfile import load_checkpoint

from .state_dicts import KeyTracker, mean_w_rows
from .stylegan2_nvlabs import convert_nvlabs


def _nchw_to_nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1)))


def _check_fir(keys: KeyTracker, key: str, taps, gain: float) -> None:
    """Blur/upsample buffers are fixed by the architecture: verify, don't store."""
    if key not in keys:
        return
    k = keys.take(key)
    t = np.asarray(taps, np.float64)
    expected = np.outer(t, t) / t.sum() ** 2 * gain
    if k.shape != expected.shape or not np.allclose(k, expected, atol=1e-6):
        raise ValueError(f"{keys.source}: {keys.prefix + key} is not the [1,3,3,1] FIR kernel this converter supports")


def _styled(keys: KeyTracker, name: str, rgb: bool = False) -> dict[str, np.ndarray]:
    w = keys.take(f"{name}.conv.weight")  # (1, out, in, k, k)
    if w.ndim != 5 or w.shape[0] != 1:
        raise ValueError(
            f"{keys.source}: {keys.prefix}{name}.conv.weight has shape {w.shape}, expected (1, out, in, k, k)"
        )
    out = {
        "weight": np.ascontiguousarray(np.transpose(w[0], (2, 3, 1, 0))),
        "mod_weight": np.ascontiguousarray(keys.take(f"{name}.conv.modulation.weight", ndim=2).T),
        "mod_bias": keys.take(f"{name}.conv.modulation.bias", ndim=1),
    }
    if rgb:
        out["bias"] = keys.take(f"{name}.bias", (1, w.shape[1], 1, 1)).reshape(-1)
    else:
        out["noise_strength"] = keys.take(f"{name}.noise.weight", (1,)).reshape(())
        out["bias"] = keys.take(f"{name}.activate.bias")
    return out


def rosinality_to_variables(
    state: Mapping[str, Any], prefix: str = "", source: str = "checkpoint", latent_avg: np.ndarray | None = None
) -> tuple[dict, dict]:
    """Map a rosinality Generator state dict (keys under `prefix`) onto our variables.

    Returns (architecture: StyleGAN2Config.to_dict(), variables). `buffers/w_avg` is the first row of
    `latent_avg` when given ((D,), (1, D) or (n, D): `mean_w_rows`), else zeros (the caller fills it:
    `e4e_jax.models.latent_avg.mean_w`).
    """
    keys = KeyTracker(state, prefix, source)
    if not keys.state:
        raise KeyError(f"{source}: no generator keys under prefix {prefix!r}")
    n_mlp = len({m.group(1) for k in keys.state if (m := re.match(r"style\.(\d+)\.weight$", k))})
    n_rgbs = len({m.group(1) for k in keys.state if (m := re.match(r"to_rgbs\.(\d+)\.bias$", k))})
    size = 2 ** (n_rgbs + 2)
    params: dict[str, Any] = {"mapping": {}, "synthesis": {}}
    for i in range(n_mlp):
        params["mapping"][f"dense_{i}"] = {
            "weight": np.ascontiguousarray(keys.take(f"style.{i + 1}.weight", ndim=2).T),
            "bias": keys.take(f"style.{i + 1}.bias"),
        }
    lr_mlp = 0.01  # Not stored in the file; rosinality/e4e always use 0.01.
    syn = params["synthesis"]
    syn["input"] = _nchw_to_nhwc(keys.take("input.input", ndim=4))
    syn["conv1"] = _styled(keys, "conv1")
    syn["to_rgb1"] = _styled(keys, "to_rgb1", rgb=True)
    for k in range(2 * (n_rgbs)):
        syn[f"convs_{k}"] = _styled(keys, f"convs.{k}")
        if k % 2 == 0:
            _check_fir(keys, f"convs.{k}.conv.blur.kernel", BLUR_KERNEL, 4.0)
    for j in range(n_rgbs):
        syn[f"to_rgbs_{j}"] = _styled(keys, f"to_rgbs.{j}", rgb=True)
        _check_fir(keys, f"to_rgbs.{j}.upsample.kernel", BLUR_KERNEL, 4.0)
    channels = [syn["conv1"]["weight"].shape[-1]] + [syn[f"convs_{2 * j}"]["weight"].shape[-1] for j in range(n_rgbs)]
    style_dim = syn["conv1"]["mod_weight"].shape[0]
    z_dim = params["mapping"]["dense_0"]["weight"].shape[0] if n_mlp else style_dim
    config = StyleGAN2Config(
        size=size,
        channels=channels,
        style_dim=int(style_dim),
        n_mlp=n_mlp,
        lr_mlp=lr_mlp,
        blur_kernel=BLUR_KERNEL,
        conv_clamp=None,
        z_dim=int(z_dim) if z_dim != style_dim else None,
    )
    noises = {}
    for i in range(config.num_noise):
        r = noise_resolution(i)
        noises[f"noise_{i}"] = _nchw_to_nhwc(keys.take(f"noises.noise_{i}", (1, 1, r, r)))
    keys.check_all_used()
    w_avg = np.zeros((style_dim,), np.float32) if latent_avg is None else mean_w_rows(latent_avg, style_dim, source)[0]
    return config.to_dict(), {"params": params, "buffers": {"w_avg": w_avg, "synthesis": noises}}


def convert(sources: list[Path], w_avg_samples: str | int = W_AVG_SAMPLES, **options) -> tuple[dict, dict, dict]:
    """Converter entry point (see tools/convert_weights/__main__.py)."""
    if options:
        raise ValueError(f"stylegan2: unknown options {sorted(options)}; supported: w_avg_samples")
    if len(sources) != 1:
        raise ValueError("stylegan2 takes exactly one source file")
    path = Path(sources[0])
    ckpt = load_checkpoint(path)
    extra: dict[str, Any] = {}
    nvlabs_keys = {"G_ema", "G", "D", "augment_pipe", "training_set_kwargs"}
    if isinstance(ckpt, dict) and nvlabs_keys & set(map(str, ckpt)):  # NVlabs network pickle
        architecture, variables = convert_nvlabs(ckpt, path)
        extra["source_format"] = "nvlabs-stylegan2-ada-pytorch"
        return architecture, variables, extra
    if isinstance(ckpt, dict) and "g_ema" in ckpt:
        if not isinstance(ckpt["g_ema"], Mapping):
            raise ValueError(
                f"{path}: 'g_ema' is a {type(ckpt['g_ema']).__name__}, not a state dict (a mapping of "
                "parameter names to tensors) as rosinality's train.py saves it"
            )
        latent_avg = ckpt.get("latent_avg")
        architecture, variables = rosinality_to_variables(ckpt["g_ema"], source=str(path), latent_avg=latent_avg)
        if latent_avg is not None and np.ptp(mean_w_rows(latent_avg, architecture["style_dim"], str(path)), 0).any():
            raise ValueError(
                f"{path}: latent_avg has {np.shape(latent_avg)[0]} rows that differ; a generator checkpoint's "
                "latent_avg is one mean w ((D,), or rows all the same), so this file is not one this converter reads"
            )
        extra["source_format"] = "rosinality-stylegan2-pytorch"
        if latent_avg is None:
            n = int(w_avg_samples)
            variables["buffers"]["w_avg"] = mean_w(StyleGAN2Config.from_dict(architecture), variables, n)
            extra["w_avg_source"] = f"computed: mean of mapping(z) over {n} z (seed {W_AVG_SEED})"
        else:
            extra["w_avg_source"] = "checkpoint latent_avg"
        return architecture, variables, extra
    if (
        isinstance(ckpt, dict)
        and isinstance(ckpt.get("state_dict"), Mapping)
        and any(str(k).startswith("encoder.") for k in ckpt["state_dict"])
    ):
        raise ValueError(
            f"{path} is an e4e/pSp encoder checkpoint, not a StyleGAN2 generator: "
            f"convert it with `python -m tools.convert_weights e4e {path} --out DIR`"
        )
    found = sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
    raise ValueError(
        f"{path} is not a StyleGAN2 generator checkpoint: expected a rosinality .pt with "
        f"'g_ema' or an NVlabs network pickle with 'G_ema', found {found}"
    )
