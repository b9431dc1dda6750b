"""NVlabs stylegan2-ada-pytorch network pickles (`network-snapshot-*.pkl`) -> our StyleGAN2 generator.

Reads `G_ema` as rebuilt by `e4e_jax.torchfile.load_checkpoint` (a `PersistentObject` tree; no code from the
pickle is run), takes the hyper-parameters from its constructor kwargs and maps its parameters and
buffers onto the layout of docs/params_layout.md:

| NVlabs (`G_ema`)                                | ours                                   | transform              |
|-------------------------------------------------|----------------------------------------|------------------------|
| `mapping.fc{i}.weight` (out, in)                | `mapping/dense_{i}/weight`             | `.T` (same lr_mul conv.)|
| `mapping.fc{i}.bias`                            | `mapping/dense_{i}/bias`               | -                      |
| `mapping.w_avg`                                 | `buffers/w_avg`                        | -                      |
| `synthesis.b4.const` (C, 4, 4)                  | `synthesis/input` (1, 4, 4, C)         | CHW -> 1HWC            |
| `synthesis.b4.conv1`, `.b4.torgb`               | `conv1`, `to_rgb1`                     | see `_layer`           |
| `synthesis.b{r}.conv0/.conv1/.torgb` (r = 2^(j+3)) | `convs_{2j}`/`convs_{2j+1}`/`to_rgbs_{j}` | see `_layer`      |
| `*.noise_const` (r, r)                          | `buffers/synthesis/noise_{i}` (1, r, r, 1) | -                  |
| `*.resample_filter`                             | (not stored)                           | checked = [1,3,3,1] FIR|

Numerics: NVlabs demodulates the raw weight while rosinality (ours) demodulates weight/sqrt(fan_in);
demodulation cancels the scale, only the 1e-8 epsilon's relative size differs (negligible). ToRGB's
weight_gain 1/sqrt(in) equals rosinality's scale. No weight flips are needed. `conv_clamp` (256 in
ADA-trained pickles) carries over as the config's `conv_clamp`; `num_fp16_res` is ignored (we run fp32).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from e4e_jax.models.stylegan2 import BLUR_KERNEL
from e4e_jax.torchfile import CheckpointError, PersistentObject

from .state_dicts import KeyTracker

# Constructor kwargs that do not change the fp32 forward pass.
_HARMLESS_SYNTHESIS_KWARGS = {"num_fp16_res", "fp16_channels_last", "channels_last", "fused_modconv_default"}
_SG3_CLASSES = {"SynthesisInput"}  # StyleGAN3 (networks_stylegan3.py) Fourier-feature input


# ----------------------------------------------------------------------------- PersistentObject access


def _init_kwargs(obj: PersistentObject) -> dict[str, Any]:
    return dict(obj.attr("init_kwargs", None) or {})


def _walk(obj: PersistentObject, prefix: str = ""):
    """Yield (dotted name, PersistentObject) for obj and all its submodules."""
    yield prefix.rstrip("."), obj
    for name, child in obj.children().items():
        yield from _walk(child, f"{prefix}{name}.")


# ----------------------------------------------------------------------------- validation


def _reject_stylegan3(g: PersistentObject, source: str) -> None:
    names = {path: o.class_name for path, o in _walk(g)}
    syn = g.children().get("synthesis")
    sg3 = any(c in _SG3_CLASSES for c in names.values())
    kids = syn.children() if syn is not None else {}
    sg3 |= "input" in kids or any(re.match(r"L\d+_", k) for k in kids)
    sg2_blocks = any(re.fullmatch(r"b\d+", k) for k in kids)
    # A SynthesisLayer with an affine but no noise_const is StyleGAN3's layer (or use_noise=False).
    no_noise = [
        p
        for p, o in _walk(g)
        if o.class_name == "SynthesisLayer" and "affine" in o.children() and o.attr("noise_const", None) is None
    ]
    mentions = "stylegan3" in ((syn if syn is not None else g).module_src or "").lower()
    if sg3 or (not sg2_blocks and (mentions or no_noise)):
        raise ValueError(
            f"{source}: G_ema is a StyleGAN3 generator (alias-free synthesis: "
            f"{sorted(set(names.values()) & _SG3_CLASSES) or 'no b<res> blocks'}); only StyleGAN2 "
            "(stylegan2-ada-pytorch, config 'skip' architecture) pickles can be converted"
        )
    if no_noise:
        raise ValueError(
            f"{source}: G_ema.{no_noise[0]} has no noise_const buffer (use_noise=False); "
            "only generators with noise inputs are supported"
        )


def _synthesis_kwargs(kw: dict) -> dict:
    """stylegan2-ada passes synthesis_kwargs={...}; stylegan3's networks_stylegan2 flattens them."""
    if "synthesis_kwargs" in kw:
        return dict(kw["synthesis_kwargs"] or {})
    base = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs"}
    return {k: v for k, v in kw.items() if k not in base}


def _architecture(g: PersistentObject, source: str) -> tuple[dict, dict]:
    """Validate G_ema's constructor kwargs. Returns (our architecture dict, derived facts)."""
    kw = _init_kwargs(g)
    for k in ("z_dim", "w_dim", "img_resolution", "img_channels"):
        if k not in kw:
            raise KeyError(f"{source}: G_ema's constructor kwargs lack {k!r} (found {sorted(map(str, kw))})")
    c_dim = int(kw.get("c_dim", 0) or 0)
    if c_dim > 0:
        raise ValueError(
            f"{source}: conditional generator (c_dim={c_dim}); only unconditional "
            "(c_dim=0) StyleGAN2 pickles are supported"
        )
    res = kw["img_resolution"]
    if (
        isinstance(res, (list, tuple))
        or not isinstance(res, (int, np.integer))
        or res < 4
        or (int(res) & (int(res) - 1)) != 0
    ):
        raise ValueError(f"{source}: img_resolution={res!r}; only square power-of-two resolutions >= 4 are supported")
    res = int(res)
    if int(kw["img_channels"]) != 3:
        raise ValueError(f"{source}: img_channels={kw['img_channels']}; only RGB (3-channel) generators are supported")
    z_dim, w_dim = int(kw["z_dim"]), int(kw["w_dim"])
    if z_dim <= 0:
        raise ValueError(f"{source}: z_dim={z_dim}; a generator without a latent input is not supported")

    syn = _synthesis_kwargs(kw)
    arch_name = syn.pop("architecture", "skip")
    if arch_name != "skip":
        raise ValueError(
            f"{source}: synthesis architecture {arch_name!r} is not supported; only 'skip' "
            "(the StyleGAN2 config-f default) converts to this generator ('orig' and "
            "'resnet' do not)"
        )
    channel_base = int(syn.pop("channel_base", 32768))
    channel_max = int(syn.pop("channel_max", 512))
    conv_clamp = syn.pop("conv_clamp", None)
    conv_clamp = None if conv_clamp is None else float(conv_clamp)
    taps = tuple(syn.pop("resample_filter", BLUR_KERNEL))
    if tuple(float(t) for t in taps) != tuple(float(t) for t in BLUR_KERNEL):
        raise ValueError(f"{source}: resample_filter={list(taps)}; only [1, 3, 3, 1] is supported")
    for k, default in (("kernel_size", 3), ("use_noise", True), ("activation", "lrelu")):
        v = syn.pop(k, default)
        if v != default:
            raise ValueError(f"{source}: synthesis {k}={v!r} is not supported (expected {default!r})")
    unknown = sorted(map(str, set(syn) - _HARMLESS_SYNTHESIS_KWARGS))
    if unknown:
        raise ValueError(f"{source}: unsupported synthesis kwargs {unknown} in G_ema's constructor")

    mk = dict(kw.get("mapping_kwargs") or {})
    n_mlp = int(mk.pop("num_layers", 8))
    lr_mlp = float(mk.pop("lr_multiplier", 0.01))
    layer_features = mk.pop("layer_features", None)
    if layer_features is not None and int(layer_features) != w_dim:
        raise ValueError(f"{source}: mapping layer_features={layer_features} != w_dim={w_dim} is not supported")
    act = mk.pop("activation", "lrelu")
    if act != "lrelu":
        raise ValueError(f"{source}: mapping activation {act!r} is not supported (expected 'lrelu')")
    mk.pop("embed_features", None)  # only used when c_dim > 0
    mk.pop("w_avg_beta", None)  # training-time EMA decay
    if mk:
        raise ValueError(f"{source}: unsupported mapping kwargs {sorted(map(str, mk))} in G_ema's constructor")
    if n_mlp < 1:
        raise ValueError(f"{source}: mapping num_layers={n_mlp}; at least one layer is required")

    resolutions = [2**i for i in range(2, res.bit_length())]
    channels = [min(channel_base // r, channel_max) for r in resolutions]
    architecture = {
        "size": res,
        "channels": channels,
        "style_dim": w_dim,
        "n_mlp": n_mlp,
        "lr_mlp": lr_mlp,
        "blur_kernel": list(BLUR_KERNEL),
        "conv_clamp": conv_clamp,
        "z_dim": z_dim if z_dim != w_dim else None,
    }
    return architecture, {"resolutions": resolutions, "z_dim": z_dim}


# ----------------------------------------------------------------------------- tensors


def _check_filter(keys: KeyTracker, key: str) -> None:
    f = keys.take(key)
    t = np.asarray(BLUR_KERNEL, np.float64)
    expected = np.outer(t, t) / t.sum() ** 2
    if f.shape != expected.shape or not np.allclose(f, expected, atol=1e-6):
        raise ValueError(
            f"{keys.source}: {keys.prefix + key} is not the normalised [1,3,3,1] FIR filter "
            f"(shape {f.shape}); only that resample filter is supported"
        )


def _layer(keys: KeyTracker, name: str, cin: int, cout: int, style_dim: int, rgb: bool) -> dict:
    """SynthesisLayer / ToRGBLayer `name` -> our StyledConv / ToRGB params."""
    k = 1 if rgb else 3
    out = {
        "weight": np.ascontiguousarray(keys.take(f"{name}.weight", (cout, cin, k, k)).transpose(2, 3, 1, 0)),
        "mod_weight": np.ascontiguousarray(keys.take(f"{name}.affine.weight", (cin, style_dim)).T),
        "mod_bias": keys.take(f"{name}.affine.bias", (cin,)),
        "bias": keys.take(f"{name}.bias", (cout,)),
    }
    if not rgb:
        out["noise_strength"] = keys.take(f"{name}.noise_strength", ()).reshape(())
        _check_filter(keys, f"{name}.resample_filter")
    return out


def _noise(keys: KeyTracker, name: str, r: int) -> np.ndarray:
    return keys.take(f"{name}.noise_const", (r, r)).reshape(1, r, r, 1)


def convert_nvlabs(obj: Mapping[str, Any], path: Path) -> tuple[dict, dict]:
    """Map an NVlabs network pickle (as returned by `e4e_jax.torchfile.load_checkpoint`) onto our generator.

    Args:
      obj: {'G', 'D', 'G_ema', 'training_set_kwargs', 'augment_pipe'}; only G_ema is read.
      path: the source file (for error messages).
    Returns:
      (architecture, variables): `StyleGAN2Config` kwargs (JSON-able) and
      {'params': {'mapping', 'synthesis'}, 'buffers': {'w_avg', 'synthesis': {noise_i}}}, float32.
    """
    source = str(path)
    g = obj.get("G_ema") if isinstance(obj, Mapping) else None
    if g is None:
        found = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise KeyError(
            f"{source}: no 'G_ema' generator in this network pickle (found {found}); "
            "convert a stylegan2-ada-pytorch network-snapshot-*.pkl that contains G_ema"
        )
    if not isinstance(g, PersistentObject):
        raise ValueError(f"{source}: G_ema is a {type(g).__name__}, not an NVlabs persistent network object")
    if g.class_name != "Generator":
        raise ValueError(f"{source}: G_ema is a {g.class_name!r}, expected a StyleGAN2 'Generator'")
    _reject_stylegan3(g, source)
    architecture, facts = _architecture(g, source)
    for path_, o in _walk(g):
        if o.class_name == "SynthesisBlock" and o.attr("architecture", "skip") != "skip":
            raise ValueError(
                f"{source}: G_ema.{path_} has architecture {o.attr('architecture')!r}; only 'skip' is supported"
            )

    try:
        flat = g.state_dict()
    except CheckpointError as e:
        raise ValueError(f"{source}: G_ema: {e}") from None
    keys = KeyTracker(flat, "", f"{source} (G_ema)")
    d, n_mlp, channels = architecture["style_dim"], architecture["n_mlp"], architecture["channels"]

    mapping = {}
    for i in range(n_mlp):
        fin = facts["z_dim"] if i == 0 else d
        mapping[f"dense_{i}"] = {
            "weight": np.ascontiguousarray(keys.take(f"mapping.fc{i}.weight", (d, fin)).T),
            "bias": keys.take(f"mapping.fc{i}.bias", (d,)),
        }
    w_avg = keys.take("mapping.w_avg", (d,))

    syn: dict[str, Any] = {}
    noises: dict[str, np.ndarray] = {}
    c4 = channels[0]
    syn["input"] = np.ascontiguousarray(keys.take("synthesis.b4.const", (c4, 4, 4)).transpose(1, 2, 0)[None])
    syn["conv1"] = _layer(keys, "synthesis.b4.conv1", c4, c4, d, rgb=False)
    syn["to_rgb1"] = _layer(keys, "synthesis.b4.torgb", c4, 3, d, rgb=True)
    noises["noise_0"] = _noise(keys, "synthesis.b4.conv1", 4)
    _check_filter(keys, "synthesis.b4.resample_filter")
    for j, r in enumerate(facts["resolutions"][1:]):
        cin, cout, b = channels[j], channels[j + 1], f"synthesis.b{r}"
        syn[f"convs_{2 * j}"] = _layer(keys, f"{b}.conv0", cin, cout, d, rgb=False)
        syn[f"convs_{2 * j + 1}"] = _layer(keys, f"{b}.conv1", cout, cout, d, rgb=False)
        syn[f"to_rgbs_{j}"] = _layer(keys, f"{b}.torgb", cout, 3, d, rgb=True)
        noises[f"noise_{2 * j + 1}"] = _noise(keys, f"{b}.conv0", r)
        noises[f"noise_{2 * j + 2}"] = _noise(keys, f"{b}.conv1", r)
        _check_filter(keys, f"{b}.resample_filter")
    keys.check_all_used()
    variables = {"params": {"mapping": mapping, "synthesis": syn}, "buffers": {"w_avg": w_avg, "synthesis": noises}}
    return architecture, variables
