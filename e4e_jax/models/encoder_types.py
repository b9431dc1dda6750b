"""The official encoder types, their bundle schema, and the one factory that builds them.

    opts.encoder_type (official)   mode    module                               codes
    Encoder4Editing                'e4e'   encoder.Encoder4Editing              w_0 + Δ_i (W^k)
    GradualStyleEncoder            'psp'   encoder.Encoder4Editing(mode='psp')  one style per layer (W+)
    SingleStyleCodeEncoder         'w'     w_encoder.SingleStyleCodeEncoder     one w repeated (W)

The encoder of an 'e4e' bundle is described by config.json's architecture['encoder'] dict: 'mode' and/or
'encoder_type' (bundles written before the W encoder may lack 'encoder_type'; those with only 'mode' load
as before), 'n_styles', 'num_layers', 'backbone_mode', and for toy sizes 'widths', 'units', 'style_channels'.
Every module has the interface __call__(x, progressive_stage=None, train=False) -> (B, n_styles, 512).
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn

from e4e_jax.models.encoder import Encoder4Editing
from e4e_jax.models.w_encoder import SingleStyleCodeEncoder

ENCODER_TYPES = {"Encoder4Editing": "e4e", "GradualStyleEncoder": "psp", "SingleStyleCodeEncoder": "w"}
TYPE_OF_MODE = {mode: etype for etype, mode in ENCODER_TYPES.items()}
# Non-official sizes (toy runs) that travel in a bundle's encoder dict; absent = the official IR-SE50.
SIZE_KEYS = ("widths", "units", "style_channels")


def build_encoder(n_styles: int, mode: str, **kwargs) -> nn.Module:
    """The encoder module of `mode` ('e4e', 'psp' or 'w'); kwargs are module attributes (dtype, precision,
    num_layers, widths, ...). `fuse_style_blocks` is dropped for 'w', which has no style blocks."""
    if mode == "w":
        kwargs.pop("fuse_style_blocks", None)
        return SingleStyleCodeEncoder(n_styles=n_styles, **kwargs)
    if mode in ("e4e", "psp"):
        return Encoder4Editing(n_styles=n_styles, mode=mode, **kwargs)
    raise ValueError(f"encoder mode must be one of {sorted(TYPE_OF_MODE)}, got {mode!r}")


def mode_of(arch: Mapping[str, Any]) -> str:
    """The mode of a bundle's architecture['encoder'] dict, from 'mode' and/or 'encoder_type' (which must agree)."""
    mode, etype = arch.get("mode"), arch.get("encoder_type")
    if etype is not None:
        if etype not in ENCODER_TYPES:
            raise ValueError(f"encoder_type {etype!r} unknown; one of {sorted(ENCODER_TYPES)}")
        if mode is not None and mode != ENCODER_TYPES[etype]:
            raise ValueError(f"encoder mode {mode!r} contradicts encoder_type {etype!r} "
                             f"(mode {ENCODER_TYPES[etype]!r})")
        return ENCODER_TYPES[etype]
    if mode is None:
        raise ValueError("the encoder architecture names neither 'mode' nor 'encoder_type'")
    return mode


def from_architecture(arch: Mapping[str, Any], **kwargs) -> nn.Module:
    """The encoder described by a bundle's architecture['encoder'] dict; kwargs: dtype, precision,
    fuse_style_blocks, ... (runtime choices, not stored)."""
    sizes = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items() if k in SIZE_KEYS}
    return build_encoder(arch["n_styles"], mode_of(arch), num_layers=arch.get("num_layers", 50),
                         backbone_mode=arch.get("backbone_mode", "ir_se"), **sizes, **kwargs)
