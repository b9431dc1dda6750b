"""The e4e encoder (Encoder4Editing) and pSp's GradualStyleEncoder over an IR-SE feature pyramid.

Architecture (official e4e `models/encoders/psp_encoders.py`, paper Fig. 6):
  backbone IR-SE50 taps  c1 = body[6] (H/4, 128ch), c2 = body[20] (H/8, 256ch), c3 = body[23] (H/16, 512ch)
  p2 = upsample(c3) + latlayer1(c2)    (1x1 conv 256->512, bilinear upsample with align_corners=True)
  p1 = upsample(p2) + latlayer2(c1)    (1x1 conv 128->512)
  styles_i = GradualStyleBlock on c3 (i < 3), p2 (3 <= i < 7), p1 (i >= 7)
  e4e:  w_0 = styles_0(c3);  w_i = w_0 + styles_i(.) for 1 <= i <= progressive_stage, else w_0
  pSp:  w_i = styles_i(.)
latent_avg is NOT added here (official pSp.forward adds it): see `add_latent_avg`.

Parameter tree: {'backbone': IRSEBackbone params, 'latlayer1': {kernel, bias}, 'latlayer2': ...,
'styles_{i}': {'convs_{j}': {kernel (3,3,512,512), bias}, 'linear': {weight (512, 512) as (in, out), bias}}};
BatchNorm statistics live in the 'batch_stats' collection under 'backbone'.

Small encoders for toy runs (not in the official code): `widths` and `units` of the backbone stages and
`style_channels` (FPN and style-block width; must equal widths[3], the width of c3, because p2 adds
upsample(c3) to latlayer1(c2)). The taps move to the last unit of stages 2-4, and each style block's
number of stride-2 convs follows the actual feature map (ceil(log2(max side))) so that small inputs reach
1x1 without convs on 1x1 maps. The final EqualLinear always maps to W (512). Defaults (None) give the
official network: same parameter tree, same numerics, and the official conv counts at any input size.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from e4e_jax.models.fused_styles import fused_style_blocks
from e4e_jax.models.irse import UNITS, WIDTHS, IRSEBackbone, resolve_sizes
from e4e_jax.models.layers import TORCH_LRELU_SLOPE, EqualLinear
from e4e_jax.models.resampling import upsample_bilinear_align_corners

Dtype = Any

COARSE_IND = 3
MIDDLE_IND = 7
STYLE_DIM = 512  # W of the generator (rosinality/official style_dim)
# Nominal square side of c3, p2, p1 for the official 256x256 input: log2 gives the convs of a style block.
NOMINAL_SPATIAL = (16, 32, 64)


def stage_taps(units) -> tuple[int, int, int]:
    """Body indices of c1, c2, c3: the last unit of stages 2, 3 and 4."""
    ends = np.cumsum(units)
    return int(ends[1] - 1), int(ends[2] - 1), int(ends[3] - 1)


# The official code hard-codes these; only for IR-SE50 do they land on the last unit of stages 2-4 (for
# 100/152 layers c3 would have 256 channels and the style blocks fail).
TAPS = stage_taps(UNITS[50])
assert TAPS == (6, 20, 23)


def style_level(i: int) -> int:
    """Feature map of style i: 0 = c3 (coarse, i < COARSE_IND), 1 = p2 (middle, i < MIDDLE_IND), 2 = p1."""
    return 0 if i < COARSE_IND else 1 if i < MIDDLE_IND else 2


def style_block_spatial(hw: tuple[int, int], nominal: int, follow_map: bool) -> int:
    """The `spatial` of a GradualStyleBlock on an (H, W) map: the official nominal size, or (follow_map)
    the smallest power of two >= max(H, W) (at least 2: one conv), so that ceil-halving reaches 1x1."""
    if not follow_map:
        return nominal
    return max(2, 1 << (max(hw) - 1).bit_length())


class GradualStyleBlock(nn.Module):
    """log2(spatial) x [Conv3x3 stride 2 (pad 1) + LeakyReLU(0.01)] then EqualLinear(out_c, w_dim).

    (B, H, W, in) -> (B, w_dim). The convs must reduce the map to 1x1 (official code then does
    `view(-1, out_c)`); a non-square input such as cars' 192x256 reaches 1x1 as well (ceil halving).
    w_dim None = out_c (official: 512 -> 512).
    """

    out_c: int = 512
    spatial: int = 16
    dtype: Dtype = jnp.float32
    precision: Any = None
    w_dim: int | None = None

    @nn.compact
    def __call__(self, x):
        for j in range(int(math.log2(self.spatial))):
            x = nn.Conv(
                self.out_c,
                (3, 3),
                strides=(2, 2),
                padding=((1, 1), (1, 1)),
                dtype=self.dtype,
                param_dtype=jnp.float32,
                precision=self.precision,
                name=f"convs_{j}",
            )(x)
            x = nn.leaky_relu(x, TORCH_LRELU_SLOPE)
        if x.shape[1:3] != (1, 1):
            raise ValueError(
                f"GradualStyleBlock(spatial={self.spatial}) left a {x.shape[1]}x{x.shape[2]} map; the "
                f"input image is too large for this encoder (official inputs: 256x256, cars 192x256)"
            )
        x = x.reshape(x.shape[0], self.out_c)
        w_dim = self.out_c if self.w_dim is None else self.w_dim
        return EqualLinear(w_dim, 1.0, dtype=self.dtype, precision=self.precision, name="linear")(x)


def stage_mask(n_styles: int, progressive_stage) -> jnp.ndarray:
    """(n_styles,) bool: which deltas are used. Index 0 (w_0 itself) is always True.

    progressive_stage: None / 'inference' (all), or an int (python or traced jnp scalar) s: deltas 1..s.
    Stages >= n_styles - 1 use all deltas (official ProgressiveStage.Inference = 18 for every size).
    """
    idx = jnp.arange(n_styles)
    if progressive_stage is None or (isinstance(progressive_stage, str) and progressive_stage == "inference"):
        return jnp.ones((n_styles,), bool)
    if isinstance(progressive_stage, str):
        raise ValueError(f"progressive_stage must be an int, None or 'inference', got {progressive_stage!r}")
    return idx <= jnp.asarray(progressive_stage)


def progressive_codes(s, progressive_stage):
    """e4e's codes from its style-block outputs s (B, n_styles, D): w_0 = s[:, 0] and w_i = w_0 + s[:, i]
    for 1 <= i <= progressive_stage, else w_0 (`stage_mask`; the official encoders skip those blocks)."""
    keep = stage_mask(s.shape[1], progressive_stage).at[0].set(False)
    return s[:, :1] + jnp.where(keep[None, :, None], s, 0.0)


class Encoder4Editing(nn.Module):
    """e4e / pSp encoder. __call__(x, progressive_stage=None, train=False) -> (B, n_styles, 512) float32.

    Attributes:
      n_styles: number of style vectors (2*log2(stylegan_size) - 2; 18 for 1024px).
      mode: 'e4e' (w_0 + deltas, Encoder4Editing) or 'psp' (GradualStyleEncoder).
      num_layers, backbone_mode: IR-SE backbone (official: 50, 'ir_se').
      dtype: compute dtype (params stay float32); precision: lax precision of convs/matmuls.
      axis_name: mapped axis for training-mode BatchNorm statistics (None: per device).
      widths, units: backbone stage depths and units per stage (None: official IR-SE50, see irse.py);
        custom `units` lift the num_layers=50 requirement (taps follow the stage ends).
      style_channels: FPN and style-block conv width (None: widths[3], official 512); must be widths[3].
      Any non-official size makes the style blocks' conv counts follow the feature maps (see
      `style_block_spatial`), so the parameter tree then depends on the input size.
      fuse_style_blocks: run the style blocks that share a feature map as one stack (fused_styles.py;
        same parameters, same maths); used by `apply` only (`init` builds the per-block tree).

    x: (B, H, W, Cin) images in [-1, 1] (official: 256x256; cars 192x256).
    progressive_stage: see `stage_mask`; ignored in 'psp' mode. A traced int gives the same result as
      the python int (deltas beyond the stage are masked to zero), so one jit serves all stages.
    """

    n_styles: int = 18
    mode: str = "e4e"
    num_layers: int = 50
    backbone_mode: str = "ir_se"
    dtype: Dtype = jnp.float32
    precision: Any = None
    axis_name: str | None = None
    widths: tuple[int, ...] | None = None
    units: tuple[int, ...] | None = None
    style_channels: int | None = None
    fuse_style_blocks: bool = False

    def sizes(self) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        """Resolved (widths, units, style_channels); raises ValueError for unusable combinations."""
        if self.units is None and self.num_layers != 50:
            raise ValueError(
                f"the e4e/pSp feature pyramid taps body[6, 20, 23] and needs num_layers=50, "
                f"got {self.num_layers} (or pass custom `units`)"
            )
        widths, units = resolve_sizes(self.num_layers, self.widths, self.units)
        channels = widths[3] if self.style_channels is None else int(self.style_channels)
        if channels != widths[3]:
            raise ValueError(
                f"style_channels={channels} must equal widths[3]={widths[3]}: the FPN adds "
                f"upsample(c3) to latlayer1(c2); set style_channels={widths[3]} or change widths"
            )
        return widths, units, channels

    @nn.compact
    def __call__(self, x, progressive_stage=None, train: bool = False):
        if self.mode not in ("e4e", "psp"):
            raise ValueError(f"mode must be 'e4e' or 'psp', got {self.mode!r}")
        widths, units, channels = self.sizes()
        official = (widths, units, channels) == (WIDTHS, UNITS[50], 512)
        kw = dict(dtype=self.dtype, precision=self.precision)
        backbone = IRSEBackbone(
            self.num_layers,
            self.backbone_mode,
            axis_name=self.axis_name,
            name="backbone",
            widths=widths,
            units=units,
            **kw,
        )
        _, (c1, c2, c3) = backbone(x, train, stage_taps(units))

        def lateral(name):
            return nn.Conv(
                channels, (1, 1), dtype=self.dtype, param_dtype=jnp.float32, precision=self.precision, name=name
            )

        p2 = upsample_bilinear_align_corners(c3, c2.shape[1:3], self.precision) + lateral("latlayer1")(c2)
        p1 = upsample_bilinear_align_corners(p2, c1.shape[1:3], self.precision) + lateral("latlayer2")(c1)

        feats = (c3, p2, p1)
        levels = [style_level(i) for i in range(self.n_styles)]
        if self.fuse_style_blocks and not self.is_initializing():
            s = fused_style_blocks(self.variables["params"], feats, levels, self.dtype, self.precision)
        else:
            styles = []
            for i, level in enumerate(levels):
                spatial = style_block_spatial(feats[level].shape[1:3], NOMINAL_SPATIAL[level], follow_map=not official)
                block = GradualStyleBlock(channels, spatial, w_dim=STYLE_DIM, name=f"styles_{i}", **kw)
                styles.append(block(feats[level]).astype(jnp.float32))
            s = jnp.stack(styles, axis=1)  # (B, n_styles, 512)
        return s if self.mode == "psp" else progressive_codes(s, progressive_stage)


def add_latent_avg(codes, latent_avg):
    """codes (B, n_styles, 512) + latent_avg of shape (512,), (1, 512) or (n_styles, 512)."""
    latent_avg = jnp.asarray(latent_avg, codes.dtype)
    if latent_avg.ndim == 1:
        latent_avg = latent_avg[None]
    if latent_avg.ndim != 2 or latent_avg.shape[0] not in (1, codes.shape[1]) or latent_avg.shape[1] != codes.shape[2]:
        raise ValueError(
            f"latent_avg of shape {tuple(latent_avg.shape)} does not fit codes of shape {tuple(codes.shape)}; "
            f"expected ({codes.shape[2]},), (1, {codes.shape[2]}) or ({codes.shape[1]}, {codes.shape[2]})"
        )
    return codes + latent_avg[None]
