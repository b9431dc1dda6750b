"""The W encoder: official e4e `BackboneEncoderUsingLastLayerIntoW` (opts.encoder_type 'SingleStyleCodeEncoder').

Architecture (official `models/encoders/psp_encoders.py`):
  IR-SE input layer + body  ->  global average pool to 1x1 (AdaptiveAvgPool2d((1, 1)))  ->  EqualLinear(512, 512)
  ->  the one w repeated for every style layer: (B, n_styles, 512).
The repeat is inside the encoder (the official forward returns (B, style_count, 512)), so latent_avg is
added outside as for the other encoders (official pSp.forward; `encoder.add_latent_avg`). It is the W end
of the paper's distortion-editability trade-off: no deltas, no feature pyramid, no progressive stages.

Parameter tree: {'backbone': IRSEBackbone params, 'linear': {weight (widths[3], 512) as (in, out), bias (512,)}};
BatchNorm statistics live in the 'batch_stats' collection under 'backbone'. The official `output_pool`
has no parameters.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from e4e_jax.models.encoder import STYLE_DIM
from e4e_jax.models.irse import IRSEBackbone, resolve_sizes
from e4e_jax.models.layers import EqualLinear

Dtype = Any


class SingleStyleCodeEncoder(nn.Module):
    """W encoder. __call__(x, progressive_stage=None, train=False) -> (B, n_styles, 512) float32, all rows equal.

    Attributes:
      n_styles: number of style vectors the one w is repeated into (2*log2(stylegan_size) - 2).
      num_layers, backbone_mode: IR-SE backbone (official pSp builds 50, 'ir_se'; the class takes 50/100/152:
        every depth ends in 512 channels).
      dtype: compute dtype (params stay float32); precision: lax precision of convs/matmuls.
      axis_name: mapped axis for training-mode BatchNorm statistics (None: per device).
      widths, units: backbone stage depths and units per stage (None: official, see irse.py).
      style_channels: the width the head reads, accepted so that one size schema serves every encoder type
        (toy configs set it for Encoder4Editing); it must be None or widths[3], the backbone's output width.

    x: (B, H, W, Cin) images in [-1, 1]; any size (the pool is global; official 256x256, cars 192x256).
    progressive_stage: accepted for the common encoder interface and ignored (there are no deltas).
    """

    n_styles: int = 18
    num_layers: int = 50
    backbone_mode: str = "ir_se"
    dtype: Dtype = jnp.float32
    precision: Any = None
    axis_name: str | None = None
    widths: tuple[int, ...] | None = None
    units: tuple[int, ...] | None = None
    style_channels: int | None = None

    def sizes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Resolved (widths, units); raises ValueError for unusable combinations."""
        widths, units = resolve_sizes(self.num_layers, self.widths, self.units)
        if self.style_channels is not None and int(self.style_channels) != widths[3]:
            raise ValueError(
                f"style_channels={self.style_channels} must be None or widths[3]={widths[3]}: the W "
                f"encoder's linear layer reads the backbone's last stage"
            )
        return widths, units

    @nn.compact
    def __call__(self, x, progressive_stage=None, train: bool = False):
        del progressive_stage  # one w for every layer: nothing is staged
        widths, units = self.sizes()
        y, _ = IRSEBackbone(
            self.num_layers,
            self.backbone_mode,
            dtype=self.dtype,
            precision=self.precision,
            axis_name=self.axis_name,
            widths=widths,
            units=units,
            name="backbone",
        )(x, train)
        # AdaptiveAvgPool2d((1, 1)) + view(-1, C); the mean accumulates in float32 as the SE pools do.
        pooled = jnp.mean(y.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
        w = EqualLinear(STYLE_DIM, 1.0, dtype=self.dtype, precision=self.precision, name="linear")(pooled)
        w = w.astype(jnp.float32)
        return jnp.broadcast_to(w[:, None], (w.shape[0], self.n_styles, STYLE_DIM))
