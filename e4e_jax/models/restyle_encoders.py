"""The ReStyle encoders (Alaluf et al. 2021; official `models/encoders/restyle_{psp,e4e}_encoders.py`): every
style is read from the backbone's last feature map (H/16: 16x16 for a 256x256 input), no feature pyramid.

    official class (opts.encoder_type)    mode                  backbone     codes
    BackboneEncoder                       'restyle_psp'         IR-SE50      one style block per layer
    ProgressiveBackboneEncoder            'restyle_e4e'         IR-SE50      w_0 + Δ_i (e4e's progressive stages)
    ResNetBackboneEncoder                 'restyle_psp_resnet'  ResNet-34    one style block per layer
    ResNetProgressiveBackboneEncoder      'restyle_e4e_resnet'  ResNet-34    w_0 + Δ_i

The input has opts.input_nc channels: 6 for ReStyle, the image and the current reconstruction concatenated
on the channel axis in that order (e4e_jax/inference/restyle.py runs the iterations). Every style is a
GradualStyleBlock(512, 512, 16) (four stride-2 3x3 convs + LeakyReLU(0.01), then EqualLinear), so a cars
input (192x256, map 12x16) reaches 1x1 as well. latent_avg (first iteration) or the previous latent (later
ones) is added outside, as official pSp.forward / e4e.forward do.

Parameter tree: {'backbone': IRSEBackbone params (irse.py) or ResNet34Backbone params (resnet.py),
'styles_{i}': GradualStyleBlock params (encoder.py)}; BatchNorm statistics under 'batch_stats'/'backbone'.
Toy sizes (`widths`, `units`, `style_channels`) are those of Encoder4Editing, for the IR backbone only; the
style blocks' conv counts then follow the map (encoder.style_block_spatial).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from e4e_jax.models.encoder import STYLE_DIM, GradualStyleBlock, progressive_codes, style_block_spatial
from e4e_jax.models.fused_styles import fused_style_blocks
from e4e_jax.models.irse import UNITS, WIDTHS, IRSEBackbone, resolve_sizes
from e4e_jax.models.resnet import ResNet34Backbone

Dtype = Any

RESTYLE_INPUT_NC = 6  # official opts.input_nc: the image and the current reconstruction (3 + 3 channels)
RESNET_BACKBONE = "resnet"  # backbone_mode of the ResNet-34 encoders (num_layers RESNET_LAYERS)
RESNET_LAYERS = 34
RESNET_CHANNELS = 512  # the width of ResNet-34's layer4, which the style blocks read
STYLE_SPATIAL = 16  # official GradualStyleBlock(512, 512, 16): log2(16) = 4 stride-2 convs


class BackboneEncoder(nn.Module):
    """A ReStyle encoder. __call__(x, progressive_stage=None, train=False) -> (B, n_styles, 512) float32.

    Attributes:
      n_styles: number of style vectors (2*log2(output_size) - 2).
      progressive: False = BackboneEncoder (pSp: one block per style); True = ProgressiveBackboneEncoder
        (e4e: w_0 + Δ_i for i <= progressive_stage, see encoder.progressive_codes).
      backbone_mode, num_layers: 'ir_se' / 'ir' with 50, 100 or 152 layers (official: 'ir_se', 50), or
        'resnet' with 34 (the ResNet* classes).
      dtype: compute dtype (params stay float32); precision: lax precision of convs/matmuls.
      axis_name: mapped axis for training-mode BatchNorm statistics (None: per device).
      widths, units, style_channels: toy sizes of the IR backbone (None: official; as Encoder4Editing).
      fuse_style_blocks: run the style blocks as one stack (fused_styles.py; inference, same maths).

    x: (B, H, W, input_nc) in [-1, 1] (official 256x256, cars 192x256). progressive_stage: None /
    'inference' (all deltas) or an int, python or traced; ignored when not progressive.
    """

    n_styles: int = 18
    progressive: bool = False
    backbone_mode: str = "ir_se"
    num_layers: int = 50
    dtype: Dtype = jnp.float32
    precision: Any = None
    axis_name: str | None = None
    widths: tuple[int, ...] | None = None
    units: tuple[int, ...] | None = None
    style_channels: int | None = None
    fuse_style_blocks: bool = False

    def _features(self, x, train: bool):
        """(last feature map, its channels, whether the network has the official sizes)."""
        kw = dict(dtype=self.dtype, precision=self.precision, axis_name=self.axis_name, name="backbone")
        if self.backbone_mode == RESNET_BACKBONE:
            if self.num_layers != RESNET_LAYERS or any(v is not None for v in (self.widths, self.units)):
                raise ValueError(
                    f"the ResNet backbone of ReStyle is ResNet-{RESNET_LAYERS} with the official sizes; got "
                    f"num_layers={self.num_layers}, widths={self.widths}, units={self.units}"
                )
            return ResNet34Backbone(**kw)(x, train), RESNET_CHANNELS, True
        widths, units = resolve_sizes(self.num_layers, self.widths, self.units)
        y, _ = IRSEBackbone(self.num_layers, self.backbone_mode, widths=widths, units=units, **kw)(x, train)
        return y, widths[3], (widths, units) == (WIDTHS, UNITS.get(self.num_layers))

    @nn.compact
    def __call__(self, x, progressive_stage=None, train: bool = False):
        y, channels, official = self._features(x, train)
        if self.style_channels is not None and int(self.style_channels) != channels:
            raise ValueError(
                f"style_channels={self.style_channels} must be None or {channels}: the style blocks read the "
                f"backbone's last map"
            )
        levels = [0] * self.n_styles  # every style reads the same map
        if self.fuse_style_blocks and not self.is_initializing():
            s = fused_style_blocks(self.variables["params"], (y,), levels, self.dtype, self.precision)
        else:
            spatial = style_block_spatial(y.shape[1:3], STYLE_SPATIAL, follow_map=not official)
            kw = dict(dtype=self.dtype, precision=self.precision, w_dim=STYLE_DIM)
            styles = [GradualStyleBlock(channels, spatial, name=f"styles_{i}", **kw)(y) for i in range(self.n_styles)]
            s = jnp.stack([v.astype(jnp.float32) for v in styles], axis=1)  # (B, n_styles, 512)
        return progressive_codes(s, progressive_stage) if self.progressive else s
