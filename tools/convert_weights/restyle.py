"""Official ReStyle checkpoint converter (yuval-alaluf/restyle-encoder) -> 'restyle' bundle.

    python -m tools.convert_weights restyle restyle_e4e_ffhq_encode.pt --out restyle_e4e_ffhq
    python -m tools.convert_weights restyle restyle_psp_cars_encode.pt --out restyle_psp_cars
    options: --option iterations=N (the bundle's default iteration count; official inference: 5)
             --option encoder_type=... (only for checkpoints whose opts do not name it)

A checkpoint is what the official coaches save: {'state_dict': {'encoder.*', 'decoder.*'}, 'opts': vars(opts),
'latent_avg': (n_styles, 512)} (ReStyle-e4e's also 'global_step', 'optimizer', 'best_val_loss' and maybe the
discriminator's state: ignored). `opts` decide the encoder class (encoder_type), and are checked against the
weights: input_nc (6: the image and the current reconstruction), output_size (the decoder; n_styles =
2·log2(output_size) − 2); dataset_type gives the domain and the encoder's input size (cars 192x256).
The bundle (kind 'restyle', schema e4e_jax/storage/restyle_bundle.py) holds
    variables = {'encoder': {'params', 'batch_stats'}, 'generator': <stylegan2 variables>,
                 'latent_avg': (n_styles, 512)}.

Encoder key mapping (torch -> ours; conv, dense and BatchNorm layouts: state_dicts.py):
    input_layer.*, body.*  (IR-SE encoders)    -> backbone/... (IR-SE backbone: irse.py)
    conv1.weight, bn1.*, relu.weight (ResNet)  -> backbone/conv1/kernel, backbone/bn1, backbone/prelu/alpha
    body.{i}.conv{1,2}.weight, .bn{1,2}.*      -> backbone/body_{i}/conv{1,2}/kernel, bn{1,2}
    body.{i}.downsample.0.weight, .1.*         -> backbone/body_{i}/downsample_conv/kernel, downsample_bn
    styles.{i}.convs.{2j}.weight / bias        -> styles_{i}/convs_{j}/kernel / bias      (j = 0..3)
    styles.{i}.linear.weight / bias            -> styles_{i}/linear/weight (transposed) / bias
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping

from e4e_jax import domains
from e4e_jax.models.encoder import STYLE_DIM
from e4e_jax.models.encoder_types import ENCODER_TYPES, RESTYLE_ENCODER_TYPES, EncoderConfig
from e4e_jax.models.irse import WIDTHS
from e4e_jax.models.resnet import STEM_KERNEL, STEM_WIDTH, basic_block_specs
from e4e_jax.models.restyle_encoders import (
    RESNET_BACKBONE,
    RESNET_CHANNELS,
    RESNET_LAYERS,
    RESTYLE_INPUT_NC,
    STYLE_SPATIAL,
)
from e4e_jax.models.stylegan2 import StyleGAN2Config
from e4e_jax.storage.restyle_bundle import DEFAULT_ITERATIONS, RestyleArchitecture
from e4e_jax.storage.torchfile import load_checkpoint

from .irse import detect_backbone, irse_to_variables
from .state_dicts import KeyTracker, batch_norm, conv, equal_linear, jsonable_opts, latent_avg_per_style
from .stylegan2 import rosinality_to_variables

_RESNET_TYPES = ("ResNetBackboneEncoder", "ResNetProgressiveBackboneEncoder")
_STEM_KEY = {True: "conv1.weight", False: "input_layer.0.weight"}  # the first key of a ResNet / IR-SE encoder


def resnet34_to_variables(keys: KeyTracker) -> tuple[dict, dict]:
    """(params, batch_stats) of models.resnet.ResNet34Backbone from a ReStyle ResNet encoder's stem and body."""
    params: dict[str, Any] = {"conv1": conv(keys, "conv1", False)}
    stats: dict[str, Any] = {}
    kh, kw, _, width = params["conv1"]["kernel"].shape
    if (kh, kw, width) != (STEM_KERNEL, STEM_KERNEL, STEM_WIDTH):
        raise ValueError(
            f"{keys.source}: {keys.prefix}conv1.weight has shape {(width, params['conv1']['kernel'].shape[2], kh, kw)}, "
            f"expected ({STEM_WIDTH}, input_nc, {STEM_KERNEL}, {STEM_KERNEL})"
        )
    params["bn1"], stats["bn1"] = batch_norm(keys, "bn1", STEM_WIDTH)
    params["prelu"] = {"alpha": keys.take("relu.weight", (STEM_WIDTH,))}
    cin = STEM_WIDTH
    for i, (w, _, downsample) in enumerate(basic_block_specs()):
        b, p, s = f"body.{i}", {}, {}
        p["conv1"] = conv(keys, f"{b}.conv1", False, (w, cin, 3, 3))
        p["bn1"], s["bn1"] = batch_norm(keys, f"{b}.bn1", w)
        p["conv2"] = conv(keys, f"{b}.conv2", False, (w, w, 3, 3))
        p["bn2"], s["bn2"] = batch_norm(keys, f"{b}.bn2", w)
        if downsample:
            p["downsample_conv"] = conv(keys, f"{b}.downsample.0", False, (w, cin, 1, 1))
            p["downsample_bn"], s["downsample_bn"] = batch_norm(keys, f"{b}.downsample.1", w)
        params[f"body_{i}"], stats[f"body_{i}"] = p, s
        cin = w
    return params, stats


def restyle_encoder_to_variables(keys: KeyTracker, encoder_type: str) -> tuple[dict, dict]:
    """Map a ReStyle encoder state dict onto restyle_encoders.BackboneEncoder variables.

    Returns (EncoderConfig fields: num_layers, backbone_mode, n_styles, input_nc; variables {'params',
    'batch_stats'})."""
    resnet = encoder_type in _RESNET_TYPES
    if _STEM_KEY[resnet] not in keys:
        other = _STEM_KEY[not resnet] in keys
        hint = f" (it has {keys.prefix}{_STEM_KEY[not resnet]}: the other backbone)" if other else ""
        raise KeyError(
            f"{keys.source}: missing key {keys.prefix + _STEM_KEY[resnet]!r}: opts.encoder_type {encoder_type} "
            f"has {'a ResNet-34' if resnet else 'an IR-SE'} backbone{hint}"
        )
    if resnet:
        bb_params, bb_stats = resnet34_to_variables(keys)
        arch = {"num_layers": RESNET_LAYERS, "backbone_mode": RESNET_BACKBONE}
        channels, input_nc = RESNET_CHANNELS, int(bb_params["conv1"]["kernel"].shape[2])
    else:
        num_layers, backbone_mode = detect_backbone(keys)
        bb_params, bb_stats = irse_to_variables(keys, num_layers, backbone_mode)
        arch = {"num_layers": num_layers, "backbone_mode": backbone_mode}
        channels = WIDTHS[-1]  # every official IR depth ends in 512 channels (the shapes below are checked)
        input_nc = int(bb_params["input_layer"]["conv"]["kernel"].shape[2])
    n_styles = len({m.group(1) for k in keys.state if (m := re.match(r"styles\.(\d+)\.linear\.weight$", k))})
    if n_styles == 0:
        raise KeyError(f"{keys.source}: no {keys.prefix}styles.*.linear.weight keys: not a ReStyle encoder")
    params: dict[str, Any] = {"backbone": bb_params}
    for i in range(n_styles):
        block = {
            f"convs_{j}": conv(keys, f"styles.{i}.convs.{2 * j}", True, (channels, channels, 3, 3))
            for j in range(int(math.log2(STYLE_SPATIAL)))
        }
        block["linear"] = equal_linear(keys, f"styles.{i}.linear", channels, STYLE_DIM)
        params[f"styles_{i}"] = block
    arch.update(n_styles=n_styles, input_nc=input_nc)
    return arch, {"params": params, "batch_stats": {"backbone": bb_stats}}


def _checkpoint(path: Path) -> tuple[Mapping[str, Any], dict[str, Any], Any]:
    """(state_dict, opts, latent_avg) of an official ReStyle checkpoint; ValueError naming what is wrong."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict):
        raise ValueError(
            f"{path}: expected a ReStyle checkpoint (a dict with 'state_dict', 'opts', 'latent_avg'), found a "
            f"{type(ckpt).__name__}"
        )
    if "state_dict" not in ckpt:
        if "g_ema" in ckpt or "G_ema" in ckpt:
            raise ValueError(
                f"{path} is a StyleGAN2 generator checkpoint, not a ReStyle encoder: convert it with "
                f"`python -m tools.convert_weights stylegan2 {path} --out DIR`"
            )
        raise ValueError(
            f"{path}: no 'state_dict' entry (found keys {sorted(map(str, ckpt))[:8]}); expected an official "
            "ReStyle checkpoint saved by its training coach"
        )
    opts = ckpt.get("opts") or {}
    if not isinstance(opts, Mapping):
        raise ValueError(f"{path}: 'opts' is a {type(opts).__name__}, not the dict of training options (vars(opts))")
    if ckpt.get("latent_avg") is None:
        raise ValueError(
            f"{path}: no 'latent_avg': ReStyle's first iteration starts from it (the official coach always saves "
            "it); this file is not a ReStyle training checkpoint"
        )
    return ckpt["state_dict"], dict(opts), ckpt["latent_avg"]


def _encoder_type(path: Path, opts: Mapping[str, Any], option: str | None) -> str:
    """opts.encoder_type (or the option, which may not contradict it), one of RESTYLE_ENCODER_TYPES."""
    etype = opts.get("encoder_type")
    if option is not None and etype not in (None, option):
        raise ValueError(
            f"{path}: --option encoder_type={option} contradicts the checkpoint's opts (encoder_type={etype!r}); "
            "drop the option, it is for checkpoints whose opts do not name the encoder type"
        )
    etype = option or etype
    if etype is None:
        raise ValueError(
            f"{path}: its opts name no encoder_type; pass --option encoder_type=... (ReStyle-e4e: "
            "ProgressiveBackboneEncoder / ResNetProgressiveBackboneEncoder; ReStyle-pSp: BackboneEncoder / "
            "ResNetBackboneEncoder)"
        )
    if etype not in RESTYLE_ENCODER_TYPES:
        hint = " (a single-pass e4e/pSp encoder: convert it with the e4e converter)" if etype in ENCODER_TYPES else ""
        raise ValueError(
            f"{path}: encoder_type {etype!r} is not supported by the ReStyle converter (only "
            f"{sorted(RESTYLE_ENCODER_TYPES)}){hint}"
        )
    return etype


def _check_opt(path: Path, opts: Mapping[str, Any], key: str, found: int, what: str) -> None:
    """opts[key], when present, must equal what the weights show."""
    if key in opts and opts[key] is not None and opts[key] != found:
        raise ValueError(f"{path}: opts.{key} is {opts[key]!r} but the weights have {what} {found}")


def convert(
    sources: list[Path], encoder_type: str | None = None, iterations: int = DEFAULT_ITERATIONS, **options
) -> tuple[dict, dict, dict]:
    """Converter entry point (see tools/convert_weights/__main__.py)."""
    if options:
        raise ValueError(f"restyle: unknown options {sorted(options)}; supported: encoder_type, iterations")
    if len(sources) != 1:
        raise ValueError("restyle takes exactly one source file (the ReStyle checkpoint)")
    path = Path(sources[0])
    state, opts, raw_avg = _checkpoint(path)
    etype = _encoder_type(path, opts, encoder_type)

    enc_keys = KeyTracker(state, "encoder.", str(path))
    if not enc_keys.state:
        raise KeyError(f"{path}: no 'encoder.*' keys in state_dict")
    enc_arch, enc_vars = restyle_encoder_to_variables(enc_keys, etype)
    enc_keys.check_all_used()
    other = sorted(str(k) for k in state if not str(k).startswith(("encoder.", "decoder.")))
    if other:
        raise KeyError(f"{path}: state_dict keys outside encoder.*/decoder.*: {', '.join(other[:10])}")
    _check_opt(path, opts, "input_nc", enc_arch["input_nc"], "input channels")
    if enc_arch["input_nc"] != RESTYLE_INPUT_NC:
        raise ValueError(
            f"{path}: the encoder reads {enc_arch['input_nc']} channels; ReStyle's iterations feed it the image "
            f"and the current reconstruction ({RESTYLE_INPUT_NC})"
        )

    gen_arch, gen_vars = rosinality_to_variables(state, prefix="decoder.", source=str(path), latent_avg=raw_avg)
    gen_cfg = StyleGAN2Config.from_dict(gen_arch)
    _check_opt(path, opts, "output_size", gen_cfg.size, "a decoder of size")
    n_styles = enc_arch["n_styles"]
    if gen_cfg.n_latent != n_styles:
        raise ValueError(
            f"{path}: the encoder has {n_styles} styles but the decoder (size {gen_cfg.size}) takes "
            f"{gen_cfg.n_latent} latents"
        )
    latent_avg = latent_avg_per_style(raw_avg, gen_cfg.style_dim, n_styles, str(path))

    dataset_type = opts.get("dataset_type") if isinstance(opts.get("dataset_type"), str) else None
    mode = RESTYLE_ENCODER_TYPES[etype]
    encoder = EncoderConfig(mode=mode, input_size=domains.input_hw(domains.domain_of(dataset_type)), **enc_arch)
    architecture = RestyleArchitecture.create(encoder, gen_cfg, dataset_type, jsonable_opts(opts), int(iterations))
    variables = {"encoder": enc_vars, "generator": gen_vars, "latent_avg": latent_avg}
    extra = {"bundle_kind": "restyle", "latent_avg_source": "checkpoint latent_avg"}
    return architecture.to_dict(), variables, extra
