"""The official encoder types, their schema (`EncoderConfig`), and the one factory that builds them.

    opts.encoder_type (official)   mode    module                               codes
    Encoder4Editing                'e4e'   encoder.Encoder4Editing              w_0 + Δ_i (W^k)
    GradualStyleEncoder            'psp'   encoder.Encoder4Editing(mode='psp')  one style per layer (W+)
    SingleStyleCodeEncoder         'w'     w_encoder.SingleStyleCodeEncoder     one w repeated (W)

and ReStyle's encoders (RESTYLE_ENCODER_TYPES, a 'restyle' bundle's; restyle_encoders.BackboneEncoder, input_nc 6):

    BackboneEncoder                   'restyle_psp'         IR-SE50 (backbone_mode 'ir_se', num_layers 50)
    ProgressiveBackboneEncoder        'restyle_e4e'         IR-SE50, w_0 + Δ_i
    ResNetBackboneEncoder             'restyle_psp_resnet'  ResNet-34 (backbone_mode 'resnet', num_layers 34)
    ResNetProgressiveBackboneEncoder  'restyle_e4e_resnet'  ResNet-34, w_0 + Δ_i

An 'e4e' or 'restyle' bundle's config.json stores `EncoderConfig.to_dict()` as architecture['encoder']: 'mode',
'encoder_type', 'n_styles', 'num_layers', 'backbone_mode', 'input_nc', 'input_size' and, for toy sizes only,
'widths', 'units', 'style_channels'. `from_dict` also reads the older forms: only 'mode' (bundles written
before the W encoder) or only 'encoder_type', and no 'num_layers' / 'backbone_mode' / 'input_nc' (official
values then). Every module has the interface __call__(x, progressive_stage=None, train=False) ->
(B, n_styles, 512).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import flax.linen as nn

from e4e_jax.models.encoder import Encoder4Editing
from e4e_jax.models.restyle_encoders import RESNET_BACKBONE, RESNET_LAYERS, BackboneEncoder
from e4e_jax.models.w_encoder import SingleStyleCodeEncoder

# The single-pass encoders (an 'e4e' bundle's, training's encoder.mode choices).
ENCODER_TYPES = {"Encoder4Editing": "e4e", "GradualStyleEncoder": "psp", "SingleStyleCodeEncoder": "w"}
TYPE_OF_MODE = {mode: etype for etype, mode in ENCODER_TYPES.items()}
# ReStyle's iterative encoders (a 'restyle' bundle's): official class -> mode.
RESTYLE_ENCODER_TYPES = {
    "BackboneEncoder": "restyle_psp",
    "ProgressiveBackboneEncoder": "restyle_e4e",
    "ResNetBackboneEncoder": "restyle_psp_resnet",
    "ResNetProgressiveBackboneEncoder": "restyle_e4e_resnet",
}
RESTYLE_MODES = tuple(RESTYLE_ENCODER_TYPES.values())
_PROGRESSIVE_RESTYLE = ("restyle_e4e", "restyle_e4e_resnet")  # w_0 + Δ_i, as e4e
_RESNET_RESTYLE = ("restyle_psp_resnet", "restyle_e4e_resnet")  # ResNet-34 backbone
_TYPE_OF_ANY_MODE = {mode: etype for etype, mode in {**ENCODER_TYPES, **RESTYLE_ENCODER_TYPES}.items()}
IR_BACKBONES = ("ir", "ir_se")
# Non-official sizes (toy runs) that travel in a bundle's encoder dict; absent = the official IR-SE50.
SIZE_KEYS = ("widths", "units", "style_channels")


def _ints(value) -> Optional[tuple[int, ...]]:
    return None if value is None else tuple(int(v) for v in value)


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters that fully determine an encoder (JSON-able via `to_dict`).

    mode: 'e4e', 'psp', 'w' or a ReStyle mode (the tables above; `encoder_type` is the official class name).
    n_styles: style vectors out (the generator's n_latent: 2*log2(size) - 2).
    input_size: (H, W) of the images the encoder was trained on (official 256x256, cars 192x256).
    num_layers, backbone_mode: IR-SE backbone (official 50, 'ir_se'; 34, 'resnet' for ReStyle's ResNet
      modes); input_nc: input channels (images: 3; ReStyle: 6, the image and the current reconstruction).
    widths, units, style_channels: non-official stage sizes (None: official; see models/encoder.py).
    """

    mode: str
    n_styles: int
    input_size: tuple[int, int] = (256, 256)
    num_layers: int = 50
    backbone_mode: str = "ir_se"
    input_nc: int = 3
    widths: Optional[tuple[int, ...]] = None
    units: Optional[tuple[int, ...]] = None
    style_channels: Optional[int] = None

    def __post_init__(self):
        if self.mode not in _TYPE_OF_ANY_MODE:
            raise ValueError(f"encoder mode must be one of {sorted(_TYPE_OF_ANY_MODE)}, got {self.mode!r}")
        object.__setattr__(self, "n_styles", int(self.n_styles))
        object.__setattr__(self, "input_size", _ints(self.input_size))
        object.__setattr__(self, "widths", _ints(self.widths))
        object.__setattr__(self, "units", _ints(self.units))
        if len(self.input_size) != 2:
            raise ValueError(f"encoder input_size must be (height, width), got {self.input_size}")
        self._check_backbone()

    def _check_backbone(self) -> None:
        if self.mode in _RESNET_RESTYLE:
            if (self.backbone_mode, self.num_layers) != (RESNET_BACKBONE, RESNET_LAYERS) or self.widths or self.units:
                raise ValueError(
                    f"encoder mode {self.mode!r} ({self.encoder_type}) has the official ResNet-{RESNET_LAYERS} "
                    f"backbone: backbone_mode={RESNET_BACKBONE!r}, num_layers={RESNET_LAYERS}, no widths/units; "
                    f"got {self.backbone_mode!r}, {self.num_layers}"
                )
        elif self.backbone_mode not in IR_BACKBONES:
            raise ValueError(
                f"encoder mode {self.mode!r} has an IR backbone: backbone_mode one of {IR_BACKBONES}, "
                f"got {self.backbone_mode!r}"
            )

    @property
    def encoder_type(self) -> str:
        """The official class name (opts.encoder_type) of this mode."""
        return _TYPE_OF_ANY_MODE[self.mode]

    @property
    def iterative(self) -> bool:
        """Whether this is a ReStyle encoder (input: the image and the current reconstruction)."""
        return self.mode in RESTYLE_MODES

    def build(self, **runtime) -> nn.Module:
        """The encoder module; runtime: dtype, precision, axis_name, fuse_style_blocks (not stored;
        `fuse_style_blocks` is dropped for 'w', which has no style blocks)."""
        sizes = {k: getattr(self, k) for k in SIZE_KEYS}
        if self.iterative:
            return BackboneEncoder(
                n_styles=self.n_styles,
                progressive=self.mode in _PROGRESSIVE_RESTYLE,
                backbone_mode=self.backbone_mode,
                num_layers=self.num_layers,
                **sizes,
                **runtime,
            )
        if self.mode == "w":
            runtime.pop("fuse_style_blocks", None)
            return SingleStyleCodeEncoder(
                n_styles=self.n_styles, num_layers=self.num_layers, backbone_mode=self.backbone_mode, **sizes, **runtime
            )
        return Encoder4Editing(
            n_styles=self.n_styles,
            mode=self.mode,
            num_layers=self.num_layers,
            backbone_mode=self.backbone_mode,
            **sizes,
            **runtime,
        )

    def to_dict(self) -> dict[str, Any]:
        d = {
            "mode": self.mode,
            "encoder_type": self.encoder_type,
            "n_styles": self.n_styles,
            "num_layers": self.num_layers,
            "backbone_mode": self.backbone_mode,
            "input_nc": self.input_nc,
            "input_size": list(self.input_size),
        }
        for k in SIZE_KEYS:  # written only when set, as bundles of the official sizes always were
            v = getattr(self, k)
            if v is not None:
                d[k] = list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], types: Mapping[str, str] = ENCODER_TYPES) -> "EncoderConfig":
        """Read architecture['encoder'] of any bundle version (keys beyond the schema are ignored); `types`:
        the encoder types the bundle kind admits (ENCODER_TYPES: 'e4e'; RESTYLE_ENCODER_TYPES: 'restyle')."""
        known = {f.name for f in dataclasses.fields(cls)} - {"mode"}
        return cls(mode=mode_of(d, types), **{k: v for k, v in d.items() if k in known})


def mode_of(arch: Mapping[str, Any], types: Mapping[str, str] = ENCODER_TYPES) -> str:
    """The mode of a bundle's architecture['encoder'] dict, from 'mode' and/or 'encoder_type' (which must
    agree); an encoder_type must be one of `types` (official class -> mode)."""
    mode, etype = arch.get("mode"), arch.get("encoder_type")
    if etype is not None:
        if etype not in types:
            raise ValueError(f"encoder_type {etype!r} unknown; one of {sorted(types)}")
        if mode is not None and mode != types[etype]:
            raise ValueError(f"encoder mode {mode!r} contradicts encoder_type {etype!r} (mode {types[etype]!r})")
        return types[etype]
    if mode is None:
        raise ValueError("the encoder architecture names neither 'mode' nor 'encoder_type'")
    return mode
