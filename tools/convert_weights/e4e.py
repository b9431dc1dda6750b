"""Official e4e / pSp checkpoint converter (encoder + StyleGAN2 decoder + latent_avg).

    python -m tools.convert_weights e4e e4e_ffhq_encode.pt --out e4e_ffhq
    python -m tools.convert_weights e4e psp_ffhq_encode.pt --out psp_ffhq      # pSp: same layout
    python -m tools.convert_weights e4e w_encoder.pt --out w_ffhq               # SingleStyleCodeEncoder
    options: --option encoder_type=Encoder4Editing|GradualStyleEncoder|SingleStyleCodeEncoder
             (when opts lack it; official default Encoder4Editing)
             --option latent_avg_samples=N (when the checkpoint has no latent_avg)

A checkpoint is `torch.save({'state_dict': {'encoder.*', 'decoder.*'}, 'latent_avg': (n_styles, 512),
'opts': {...}})`. The bundle (kind 'e4e') holds
    variables = {'encoder': {'params', 'batch_stats'}, 'generator': <stylegan2 variables>,
                 'latent_avg': (n_styles, 512)}.

Encoder key mapping (torch -> ours; conv weights (O, I, kh, kw) -> kernels (kh, kw, I, O);
BatchNorm weight/bias -> params scale/bias, running_mean/var -> batch_stats mean/var,
num_batches_tracked dropped; PReLU weight -> alpha):
    input_layer.0 / .1 / .2                   -> backbone/input_layer/conv / bn / prelu
    body.{i}.shortcut_layer.0 / .1            -> backbone/body_{i}/shortcut_conv / shortcut_bn
    body.{i}.res_layer.0 / 1 / 2 / 3 / 4      -> backbone/body_{i}/bn1 / conv1 / prelu / conv2 / bn2
    body.{i}.res_layer.5.fc1 / fc2            -> backbone/body_{i}/se/fc1 / fc2
    latlayer{1,2}.weight / bias               -> latlayer{1,2}/kernel / bias
    styles.{i}.convs.{2j}.weight / bias       -> styles_{i}/convs_{j}/kernel / bias
    styles.{i}.linear.weight / bias           -> styles_{i}/linear/weight (transposed) / bias
SingleStyleCodeEncoder (BackboneEncoderUsingLastLayerIntoW): the same input_layer / body mapping, then
    linear.weight / bias                      -> linear/weight (transposed) / bias
(`output_pool` has no parameters); its n_styles is the decoder's latent count (official style_count and
decoder size both come from opts.stylegan_size).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from tools.convert_weights.stylegan2 import (DEFAULT_W_AVG_SAMPLES, W_AVG_SEED, KeyTracker, mean_w,
                                             rosinality_to_variables)

# Units per IR body depth (official get_blocks): 3+4+14+3, 3+13+30+3, 3+8+36+3.
_NUM_UNITS = {24: 50, 49: 100, 50: 152}


def _kernel(w: np.ndarray) -> np.ndarray:
    """torch conv weight (O, I, kh, kw) -> flax kernel (kh, kw, I, O)."""
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def _conv(keys: KeyTracker, name: str, bias: bool) -> dict[str, np.ndarray]:
    out = {"kernel": _kernel(keys.take(f"{name}.weight"))}
    if bias:
        out["bias"] = keys.take(f"{name}.bias")
    return out


def _bn(keys: KeyTracker, name: str) -> tuple[dict, dict]:
    if f"{name}.num_batches_tracked" in keys:
        keys.skip(f"{name}.num_batches_tracked")  # Only drives torch's momentum=None mode.
    params = {"scale": keys.take(f"{name}.weight"), "bias": keys.take(f"{name}.bias")}
    stats = {"mean": keys.take(f"{name}.running_mean"), "var": keys.take(f"{name}.running_var")}
    return params, stats


def detect_backbone(keys: KeyTracker) -> tuple[int, str]:
    """(num_layers, 'ir' | 'ir_se') from the body.* keys."""
    units = {int(m.group(1)) for k in keys.state if (m := re.match(r"body\.(\d+)\.", k))}
    n = len(units)
    if n not in _NUM_UNITS or units != set(range(n)):
        raise ValueError(f"{keys.source}: {keys.prefix}body.* has {n} units; an IR backbone has 24 "
                         f"(50 layers), 49 (100) or 50 (152)")
    mode = "ir_se" if "body.0.res_layer.5.fc1.weight" in keys else "ir"
    return _NUM_UNITS[n], mode


def irse_to_variables(keys: KeyTracker, num_layers: int, mode: str, params_prefix: str = "") -> tuple[dict, dict]:
    """Map `input_layer.*` and `body.*` (under the tracker's prefix) onto IRSEBackbone variables.

    Returns (params, batch_stats) of e4e_jax.models.irse.IRSEBackbone. Reusable for ArcFace.
    """
    from e4e_jax.models.irse import unit_specs

    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    p, s = _bn(keys, "input_layer.1")
    params["input_layer"] = {"conv": _conv(keys, "input_layer.0", False), "bn": p,
                             "prelu": {"alpha": keys.take("input_layer.2.weight")}}
    stats["input_layer"] = {"bn": s}
    for i, (in_c, depth, _) in enumerate(unit_specs(num_layers)):
        b = f"body.{i}"
        up, us = {}, {}
        if in_c != depth:
            up["shortcut_conv"] = _conv(keys, f"{b}.shortcut_layer.0", False)
            up["shortcut_bn"], us["shortcut_bn"] = _bn(keys, f"{b}.shortcut_layer.1")
        up["bn1"], us["bn1"] = _bn(keys, f"{b}.res_layer.0")
        up["conv1"] = _conv(keys, f"{b}.res_layer.1", False)
        up["prelu"] = {"alpha": keys.take(f"{b}.res_layer.2.weight")}
        up["conv2"] = _conv(keys, f"{b}.res_layer.3", False)
        up["bn2"], us["bn2"] = _bn(keys, f"{b}.res_layer.4")
        if mode == "ir_se":
            up["se"] = {"fc1": _conv(keys, f"{b}.res_layer.5.fc1", False),
                        "fc2": _conv(keys, f"{b}.res_layer.5.fc2", False)}
        params[f"body_{i}"], stats[f"body_{i}"] = up, us
    return params, stats


def _linear(keys: KeyTracker, name: str) -> dict[str, np.ndarray]:
    """EqualLinear(512, 512): torch weight (out, in) -> ours (in, out)."""
    return {"weight": np.ascontiguousarray(keys.take(f"{name}.weight", (512, 512)).T),
            "bias": keys.take(f"{name}.bias", (512,))}


def encoder_to_variables(keys: KeyTracker) -> tuple[dict, dict]:
    """Map an Encoder4Editing / GradualStyleEncoder state dict onto Encoder4Editing variables.

    Returns (architecture without 'mode', variables {'params', 'batch_stats'}).
    """
    num_layers, backbone_mode = detect_backbone(keys)
    n_styles = len({m.group(1) for k in keys.state if (m := re.match(r"styles\.(\d+)\.linear\.weight$", k))})
    if n_styles == 0:
        hint = (" (it has linear.weight: a SingleStyleCodeEncoder? pass --option "
                "encoder_type=SingleStyleCodeEncoder)" if "linear.weight" in keys else "")
        raise ValueError(f"{keys.source}: no {keys.prefix}styles.*.linear.weight keys: not an "
                         f"Encoder4Editing/GradualStyleEncoder state dict{hint}")
    bb_params, bb_stats = irse_to_variables(keys, num_layers, backbone_mode)
    params: dict[str, Any] = {"backbone": bb_params,
                              "latlayer1": _conv(keys, "latlayer1", True),
                              "latlayer2": _conv(keys, "latlayer2", True)}
    for i in range(n_styles):
        spatial = 16 if i < 3 else 32 if i < 7 else 64
        block = {f"convs_{j}": _conv(keys, f"styles.{i}.convs.{2 * j}", True)
                 for j in range(int(math.log2(spatial)))}
        block["linear"] = _linear(keys, f"styles.{i}.linear")
        params[f"styles_{i}"] = block
    input_nc = int(params["backbone"]["input_layer"]["conv"]["kernel"].shape[2])
    arch = {"num_layers": num_layers, "backbone_mode": backbone_mode, "n_styles": n_styles, "input_nc": input_nc}
    return arch, {"params": params, "batch_stats": {"backbone": bb_stats}}


def w_encoder_to_variables(keys: KeyTracker) -> tuple[dict, dict]:
    """Map a SingleStyleCodeEncoder (BackboneEncoderUsingLastLayerIntoW) state dict onto its variables.

    Returns (architecture without 'mode' and 'n_styles', variables {'params', 'batch_stats'}).
    """
    if "linear.weight" not in keys:
        hint = (" (it has styles.*: an Encoder4Editing/GradualStyleEncoder? check opts.encoder_type or "
                "--option encoder_type)" if any(str(k).startswith("styles.") for k in keys.state) else "")
        raise ValueError(f"{keys.source}: no {keys.prefix}linear.weight: not a SingleStyleCodeEncoder state "
                         f"dict{hint}")
    num_layers, backbone_mode = detect_backbone(keys)
    bb_params, bb_stats = irse_to_variables(keys, num_layers, backbone_mode)
    params = {"backbone": bb_params, "linear": _linear(keys, "linear")}
    input_nc = int(bb_params["input_layer"]["conv"]["kernel"].shape[2])
    arch = {"num_layers": num_layers, "backbone_mode": backbone_mode, "input_nc": input_nc}
    return arch, {"params": params, "batch_stats": {"backbone": bb_stats}}


def _jsonable(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return not (isinstance(v, float) and not math.isfinite(v))
    if isinstance(v, (list, tuple)):
        return all(_jsonable(x) for x in v)
    return False


def _domain(dataset_type: str) -> str | None:
    d = dataset_type.lower()
    for needle, name in (("ffhq", "ffhq"), ("celeb", "ffhq"), ("car", "cars"), ("horse", "horse"),
                         ("church", "church"), ("cat", "cats")):
        if needle in d:
            return name
    return None


def _check_not_generator_ckpt(ckpt: Any, path: Path) -> None:
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected an e4e/pSp checkpoint (a dict with 'state_dict', 'latent_avg', "
                         f"'opts'), found a {type(ckpt).__name__}")
    if "state_dict" not in ckpt:
        if "g_ema" in ckpt or "G_ema" in ckpt:
            raise ValueError(f"{path} is a StyleGAN2 generator checkpoint, not an e4e/pSp encoder: convert "
                             f"it with `python -m tools.convert_weights stylegan2 {path} --out DIR`")
        raise ValueError(f"{path}: no 'state_dict' entry (found keys {sorted(map(str, ckpt))[:8]}); expected an "
                         f"official e4e/pSp checkpoint saved by its training coach")


def convert(sources: list[Path], encoder_type: str | None = None,
            latent_avg_samples: str | int = DEFAULT_W_AVG_SAMPLES, **options) -> tuple[dict, dict, dict]:
    """Converter entry point (see tools/convert_weights/__main__.py)."""
    if options:
        raise ValueError(f"e4e: unknown options {sorted(options)}; supported: encoder_type, latent_avg_samples")
    if len(sources) != 1:
        raise ValueError("e4e takes exactly one source file (the e4e/pSp checkpoint)")
    from e4e_jax.models.encoder_types import ENCODER_TYPES
    from e4e_jax.torchfile import load_checkpoint

    path = Path(sources[0])
    ckpt = load_checkpoint(path)
    _check_not_generator_ckpt(ckpt, path)
    state = ckpt["state_dict"]
    opts = dict(ckpt.get("opts") or {})
    extra: dict[str, Any] = {"bundle_kind": "e4e"}

    # Encoder type: official default of e4e's TrainOptions is Encoder4Editing.
    etype = encoder_type or opts.get("encoder_type")
    if etype is None:
        etype = "Encoder4Editing"
        extra["encoder_type_source"] = "default (opts has no encoder_type)"
    if etype not in ENCODER_TYPES:
        raise ValueError(f"{path}: encoder_type {etype!r} is not supported (only "
                         f"{sorted(ENCODER_TYPES)}); this converter cannot rebuild that encoder")

    enc_keys = KeyTracker(state, "encoder.", str(path))
    if not enc_keys.state:
        raise KeyError(f"{path}: no 'encoder.*' keys in state_dict")
    mode = ENCODER_TYPES[etype]
    enc_arch, enc_vars = (w_encoder_to_variables if mode == "w" else encoder_to_variables)(enc_keys)
    enc_keys.check_all_used()
    other = sorted(k for k in state if not (str(k).startswith("encoder.") or str(k).startswith("decoder.")))
    if other:
        raise KeyError(f"{path}: state_dict keys outside encoder.*/decoder.*: {', '.join(other[:10])}")

    start_from_avg = opts.get("start_from_latent_avg")
    raw_avg = ckpt.get("latent_avg")
    gen_arch, gen_vars = rosinality_to_variables(state, prefix="decoder.", source=str(path),
                                                 latent_avg=raw_avg)
    n_latent = 2 * int(math.log2(gen_arch["size"])) - 2
    # The W encoder repeats its w for every layer of the decoder (both sized by opts.stylegan_size).
    n_styles = enc_arch.setdefault("n_styles", n_latent)
    if n_latent != n_styles:
        raise ValueError(f"{path}: the encoder has {n_styles} styles but the decoder (size "
                         f"{gen_arch['size']}) takes {n_latent} latents")

    # The generator's w_avg (truncation centre): the checkpoint's latent_avg, else the mapped mean.
    n = int(latent_avg_samples)
    computed = None
    if raw_avg is None:
        computed = mean_w(gen_arch, gen_vars, n, W_AVG_SEED)
        gen_vars["buffers"]["w_avg"] = computed
    # latent_avg as official pSp.forward uses it: added to the codes iff opts.start_from_latent_avg.
    if start_from_avg is False:
        latent_avg = np.zeros((n_styles, 512), np.float32)
        extra["latent_avg_source"] = "zeros: opts.start_from_latent_avg is False (official forward adds nothing)"
    elif raw_avg is not None:
        la = np.asarray(raw_avg, np.float32)
        if la.ndim == 1:
            la = la[None]
        if la.ndim != 2 or la.shape[1] != 512 or la.shape[0] not in (1, n_styles):
            raise ValueError(f"{path}: latent_avg has shape {np.shape(raw_avg)}; expected (512,), (1, 512) or "
                             f"({n_styles}, 512)")
        latent_avg = np.broadcast_to(la, (n_styles, 512)).copy()
        extra["latent_avg_source"] = "checkpoint latent_avg"
    else:
        latent_avg = np.broadcast_to(computed[None], (n_styles, 512)).copy()
        extra["latent_avg_source"] = f"computed from {n} mapped z, seed {W_AVG_SEED}"

    dataset_type = opts.get("dataset_type")
    is_cars = isinstance(dataset_type, str) and "car" in dataset_type.lower()
    architecture: dict[str, Any] = {
        "encoder": {"mode": mode, "encoder_type": etype, **enc_arch,
                    "input_size": [192, 256] if is_cars else [256, 256]},
        "generator": gen_arch,
        "opts": {str(k): (list(v) if isinstance(v, tuple) else v) for k, v in opts.items() if _jsonable(v)},
    }
    if isinstance(dataset_type, str):
        architecture["dataset_type"] = dataset_type
        if (dom := _domain(dataset_type)) is not None:
            architecture["domain"] = dom
    variables = {"encoder": enc_vars, "generator": gen_vars, "latent_avg": latent_avg}
    return architecture, variables, extra
