"""Official e4e / pSp checkpoint converter (encoder + StyleGAN2 decoder + latent_avg).

    python -m tools.convert_weights e4e e4e_ffhq_encode.pt --out e4e_ffhq
    python -m tools.convert_weights e4e psp_ffhq_encode.pt --out psp_ffhq      # pSp: same layout
    python -m tools.convert_weights e4e w_encoder.pt --out w_ffhq               # SingleStyleCodeEncoder
    options: --option encoder_type=Encoder4Editing|GradualStyleEncoder|SingleStyleCodeEncoder
             (when opts lack it; official default Encoder4Editing)
             --option latent_avg_samples=N (when the checkpoint has no latent_avg)

A checkpoint is `torch.save({'state_dict': {'encoder.*', 'decoder.*'}, 'latent_avg': (n_styles, 512),
'opts': {...}})`. The bundle (kind 'e4e', schema e4e_jax/storage/e4e_bundle.py) holds
    variables = {'encoder': {'params', 'batch_stats'}, 'generator': <stylegan2 variables>,
                 'latent_avg': (n_styles, 512)}.

Encoder key mapping (torch -> ours; conv, dense and BatchNorm layouts: state_dicts.py):
    input_layer.*, body.*                     -> backbone/... (IR-SE backbone: irse.py)
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
from typing import Any, Mapping

from e4e_jax import domains
from e4e_jax.models.encoder import NOMINAL_SPATIAL, STYLE_DIM, style_level
from e4e_jax.models.encoder_types import ENCODER_TYPES, RESTYLE_ENCODER_TYPES, EncoderConfig
from e4e_jax.models.latent_avg import W_AVG_SAMPLES, W_AVG_SEED, mean_w, nothing_added, per_layer
from e4e_jax.models.stylegan2 import StyleGAN2Config
from e4e_jax.storage.e4e_bundle import E4EArchitecture
from e4e_jax.storage.torchfile import load_checkpoint

from .irse import detect_backbone, irse_to_variables
from .state_dicts import KeyTracker, conv, equal_linear, latent_avg_per_style
from .stylegan2 import rosinality_to_variables


def encoder_to_variables(keys: KeyTracker) -> tuple[dict, dict]:
    """Map an Encoder4Editing / GradualStyleEncoder state dict onto Encoder4Editing variables.

    Returns (architecture without 'mode', variables {'params', 'batch_stats'}).
    """
    num_layers, backbone_mode = detect_backbone(keys)
    n_styles = len({m.group(1) for k in keys.state if (m := re.match(r"styles\.(\d+)\.linear\.weight$", k))})
    if n_styles == 0:
        hint = (
            " (it has linear.weight: a SingleStyleCodeEncoder? pass --option encoder_type=SingleStyleCodeEncoder)"
            if "linear.weight" in keys
            else ""
        )
        raise ValueError(
            f"{keys.source}: no {keys.prefix}styles.*.linear.weight keys: not an "
            f"Encoder4Editing/GradualStyleEncoder state dict{hint}"
        )
    bb_params, bb_stats = irse_to_variables(keys, num_layers, backbone_mode)
    params: dict[str, Any] = {
        "backbone": bb_params,
        "latlayer1": conv(keys, "latlayer1", True),
        "latlayer2": conv(keys, "latlayer2", True),
    }
    for i in range(n_styles):
        spatial = NOMINAL_SPATIAL[style_level(i)]  # official conv counts (the official input size)
        block = {f"convs_{j}": conv(keys, f"styles.{i}.convs.{2 * j}", True) for j in range(int(math.log2(spatial)))}
        block["linear"] = equal_linear(keys, f"styles.{i}.linear", STYLE_DIM, STYLE_DIM)
        params[f"styles_{i}"] = block
    input_nc = int(params["backbone"]["input_layer"]["conv"]["kernel"].shape[2])
    arch = {"num_layers": num_layers, "backbone_mode": backbone_mode, "n_styles": n_styles, "input_nc": input_nc}
    return arch, {"params": params, "batch_stats": {"backbone": bb_stats}}


def w_encoder_to_variables(keys: KeyTracker) -> tuple[dict, dict]:
    """Map a SingleStyleCodeEncoder (BackboneEncoderUsingLastLayerIntoW) state dict onto its variables.

    Returns (architecture without 'mode' and 'n_styles', variables {'params', 'batch_stats'}).
    """
    if "linear.weight" not in keys:
        hint = (
            " (it has styles.*: an Encoder4Editing/GradualStyleEncoder? check opts.encoder_type or "
            "--option encoder_type)"
            if any(str(k).startswith("styles.") for k in keys.state)
            else ""
        )
        raise ValueError(f"{keys.source}: no {keys.prefix}linear.weight: not a SingleStyleCodeEncoder state dict{hint}")
    num_layers, backbone_mode = detect_backbone(keys)
    bb_params, bb_stats = irse_to_variables(keys, num_layers, backbone_mode)
    params = {"backbone": bb_params, "linear": equal_linear(keys, "linear", STYLE_DIM, STYLE_DIM)}
    input_nc = int(bb_params["input_layer"]["conv"]["kernel"].shape[2])
    arch = {"num_layers": num_layers, "backbone_mode": backbone_mode, "input_nc": input_nc}
    return arch, {"params": params, "batch_stats": {"backbone": bb_stats}}


def _json_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v))


def _jsonable(v: Any) -> bool:
    """An official option value kept in config.json: a JSON scalar or a flat list of them (argparse's
    values; anything nested is not an official option and is not walked)."""
    return _json_scalar(v) or (isinstance(v, (list, tuple)) and all(_json_scalar(x) for x in v))


def _check_not_generator_ckpt(ckpt: Any, path: Path) -> None:
    if not isinstance(ckpt, dict):
        raise ValueError(
            f"{path}: expected an e4e/pSp checkpoint (a dict with 'state_dict', 'latent_avg', "
            f"'opts'), found a {type(ckpt).__name__}"
        )
    if "state_dict" not in ckpt:
        if "g_ema" in ckpt or "G_ema" in ckpt:
            raise ValueError(
                f"{path} is a StyleGAN2 generator checkpoint, not an e4e/pSp encoder: convert "
                f"it with `python -m tools.convert_weights stylegan2 {path} --out DIR`"
            )
        raise ValueError(
            f"{path}: no 'state_dict' entry (found keys {sorted(map(str, ckpt))[:8]}); expected an "
            f"official e4e/pSp checkpoint saved by its training coach"
        )


def convert(
    sources: list[Path], encoder_type: str | None = None, latent_avg_samples: str | int = W_AVG_SAMPLES, **options
) -> tuple[dict, dict, dict]:
    """Converter entry point (see tools/convert_weights/__main__.py)."""
    if options:
        raise ValueError(f"e4e: unknown options {sorted(options)}; supported: encoder_type, latent_avg_samples")
    if len(sources) != 1:
        raise ValueError("e4e takes exactly one source file (the e4e/pSp checkpoint)")
    path = Path(sources[0])
    ckpt = load_checkpoint(path)
    _check_not_generator_ckpt(ckpt, path)
    state = ckpt["state_dict"]
    raw_opts = ckpt.get("opts") or {}
    if not isinstance(raw_opts, Mapping):
        raise ValueError(
            f"{path}: 'opts' is a {type(raw_opts).__name__}, not the dict of training options the official "
            "coach saves (vars(opts))"
        )
    opts = dict(raw_opts)
    extra: dict[str, Any] = {"bundle_kind": "e4e"}

    # Encoder type: official default of e4e's TrainOptions is Encoder4Editing. The option is for
    # checkpoints whose opts do not name it; it may not contradict them (same keys: nothing else would).
    if encoder_type is not None and opts.get("encoder_type") not in (None, encoder_type):
        raise ValueError(
            f"{path}: --option encoder_type={encoder_type} contradicts the checkpoint's opts "
            f"(encoder_type={opts['encoder_type']!r}); drop the option, it is for checkpoints whose opts do not "
            "name the encoder type"
        )
    etype = encoder_type or opts.get("encoder_type")
    if etype is None:
        etype = "Encoder4Editing"
        extra["encoder_type_source"] = "default (opts has no encoder_type)"
    if etype in RESTYLE_ENCODER_TYPES:
        raise ValueError(
            f"{path}: encoder_type {etype!r} is a ReStyle encoder: convert it with "
            f"`python -m tools.convert_weights restyle {path} --out DIR`"
        )
    if etype not in ENCODER_TYPES:
        raise ValueError(
            f"{path}: encoder_type {etype!r} is not supported (only "
            f"{sorted(ENCODER_TYPES)}); this converter cannot rebuild that encoder"
        )

    enc_keys = KeyTracker(state, "encoder.", str(path))
    if not enc_keys.state:
        raise KeyError(f"{path}: no 'encoder.*' keys in state_dict")
    mode = ENCODER_TYPES[etype]
    enc_arch, enc_vars = (w_encoder_to_variables if mode == "w" else encoder_to_variables)(enc_keys)
    enc_keys.check_all_used()
    other = sorted(k for k in state if not (str(k).startswith("encoder.") or str(k).startswith("decoder.")))
    if other:
        raise KeyError(f"{path}: state_dict keys outside encoder.*/decoder.*: {', '.join(other[:10])}")

    raw_avg = ckpt.get("latent_avg")
    gen_arch, gen_vars = rosinality_to_variables(state, prefix="decoder.", source=str(path), latent_avg=raw_avg)
    gen_cfg = StyleGAN2Config.from_dict(gen_arch)
    # The W encoder repeats its w for every layer of the decoder (both sized by opts.stylegan_size).
    n_styles = enc_arch.setdefault("n_styles", gen_cfg.n_latent)
    if gen_cfg.n_latent != n_styles:
        raise ValueError(
            f"{path}: the encoder has {n_styles} styles but the decoder (size "
            f"{gen_cfg.size}) takes {gen_cfg.n_latent} latents"
        )
    latent_avg, extra["latent_avg_source"] = _latent_avg(
        gen_cfg, gen_vars, raw_avg, opts.get("start_from_latent_avg"), n_styles, int(latent_avg_samples), str(path)
    )

    dataset_type = opts.get("dataset_type")
    dataset_type = dataset_type if isinstance(dataset_type, str) else None
    encoder = EncoderConfig(mode=mode, input_size=domains.input_hw(domains.domain_of(dataset_type)), **enc_arch)
    architecture = E4EArchitecture.create(
        encoder,
        gen_cfg,
        dataset_type,
        opts={str(k): (list(v) if isinstance(v, tuple) else v) for k, v in opts.items() if _jsonable(v)},
    ).to_dict()
    variables = {"encoder": enc_vars, "generator": gen_vars, "latent_avg": latent_avg}
    return architecture, variables, extra


def _latent_avg(gen_cfg, gen_vars, raw_avg, start_from_avg, n_styles: int, n: int, source: str):
    """((n_styles, D) latent_avg, how it was made). Sets the generator's w_avg (truncation centre) to the
    mapped mean of `n` z when the checkpoint has no latent_avg; latent_avg is what official pSp.forward adds
    to the codes: zeros unless opts.start_from_latent_avg, else the checkpoint's or that mapped mean."""
    dim = gen_cfg.style_dim
    computed = None
    if raw_avg is None:
        computed = mean_w(gen_cfg, gen_vars, n)
        gen_vars["buffers"]["w_avg"] = computed
    if start_from_avg is False:
        return nothing_added(
            n_styles, dim
        ), "zeros: opts.start_from_latent_avg is False (official forward adds nothing)"
    if raw_avg is not None:
        return latent_avg_per_style(raw_avg, dim, n_styles, source), "checkpoint latent_avg"
    return per_layer(computed, n_styles), f"computed from {n} mapped z, seed {W_AVG_SEED}"
