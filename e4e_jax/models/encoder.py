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
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from e4e_jax.models.irse import IRSEBackbone

Dtype = Any

COARSE_IND = 3
MIDDLE_IND = 7
# Body indices of c1, c2, c3. The official code hard-codes them; only for IR-SE50 do they land on the
# last unit of stages 2-4 (for 100/152 layers c3 would have 256 channels and the style blocks fail).
TAPS = (6, 20, 23)


def n_styles_for(stylegan_size: int) -> int:
    """Number of style vectors of a StyleGAN2 of output size `stylegan_size`: 2*log2(size) - 2."""
    return 2 * int(math.log2(stylegan_size)) - 2


def _align_corners_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix of torch's bilinear resize with align_corners=True."""
    a = np.zeros((n_out, n_in), np.float64)
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    for i in range(n_out):
        src = i * scale
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        a[i, i0] += 1.0 - lam
        a[i, i1] += lam
    return a.astype(np.float32)


def upsample_bilinear_align_corners(x, size: tuple[int, int], precision=None):
    """Resize (B, H, W, C) to (B, size[0], size[1], C) exactly like
    `F.interpolate(mode='bilinear', align_corners=True)` (separable: rows, then columns)."""
    ah = jnp.asarray(_align_corners_matrix(size[0], x.shape[1]), x.dtype)
    aw = jnp.asarray(_align_corners_matrix(size[1], x.shape[2]), x.dtype)
    x = jnp.einsum("oh,bhwc->bowc", ah, x, precision=precision)
    return jnp.einsum("pw,bowc->bopc", aw, x, precision=precision)


class EqualLinear(nn.Module):
    """rosinality EqualLinear (no activation): y = x @ (W * lr_mul/sqrt(in)) + b * lr_mul.

    Params: 'weight' (in, out) raw as stored by torch (transposed), 'bias' (out,).
    """

    features: int
    lr_mul: float = 1.0
    dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        in_dim = x.shape[-1]
        w = self.param("weight", nn.initializers.normal(1.0 / self.lr_mul), (in_dim, self.features), jnp.float32)
        b = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        scale = self.lr_mul / math.sqrt(in_dim)
        w = (w * scale).astype(self.dtype)
        return jnp.dot(x.astype(self.dtype), w, precision=self.precision) + (b * self.lr_mul).astype(self.dtype)


class GradualStyleBlock(nn.Module):
    """log2(spatial) x [Conv3x3 stride 2 (pad 1) + LeakyReLU(0.01)] then EqualLinear(out, out).

    (B, H, W, in) -> (B, out). The convs must reduce the map to 1x1 (official code then does
    `view(-1, out_c)`); a non-square input such as cars' 192x256 reaches 1x1 as well (ceil halving).
    """

    out_c: int = 512
    spatial: int = 16
    dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        for j in range(int(math.log2(self.spatial))):
            x = nn.Conv(self.out_c, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), dtype=self.dtype,
                        param_dtype=jnp.float32, precision=self.precision, name=f"convs_{j}")(x)
            x = nn.leaky_relu(x, 0.01)
        if x.shape[1:3] != (1, 1):
            raise ValueError(
                f"GradualStyleBlock(spatial={self.spatial}) left a {x.shape[1]}x{x.shape[2]} map; the "
                f"input image is too large for this encoder (official inputs: 256x256, cars 192x256)")
        x = x.reshape(x.shape[0], self.out_c)
        return EqualLinear(self.out_c, 1.0, self.dtype, self.precision, name="linear")(x)


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


class Encoder4Editing(nn.Module):
    """e4e / pSp encoder. __call__(x, progressive_stage=None, train=False) -> (B, n_styles, 512) float32.

    Attributes:
      n_styles: number of style vectors (2*log2(stylegan_size) - 2; 18 for 1024px).
      mode: 'e4e' (w_0 + deltas, Encoder4Editing) or 'psp' (GradualStyleEncoder).
      num_layers, backbone_mode: IR-SE backbone (official: 50, 'ir_se').
      dtype: compute dtype (params stay float32); precision: lax precision of convs/matmuls.
      axis_name: mapped axis for training-mode BatchNorm statistics (None: per device).

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

    @nn.compact
    def __call__(self, x, progressive_stage=None, train: bool = False):
        if self.mode not in ("e4e", "psp"):
            raise ValueError(f"mode must be 'e4e' or 'psp', got {self.mode!r}")
        if self.num_layers != 50:
            raise ValueError(f"the e4e/pSp feature pyramid taps body[6, 20, 23] and needs num_layers=50, "
                             f"got {self.num_layers}")
        kw = dict(dtype=self.dtype, precision=self.precision)
        _, (c1, c2, c3) = IRSEBackbone(self.num_layers, self.backbone_mode, axis_name=self.axis_name,
                                       name="backbone", **kw)(x, train, TAPS)

        def lateral(name):
            return nn.Conv(512, (1, 1), dtype=self.dtype, param_dtype=jnp.float32,
                           precision=self.precision, name=name)

        p2 = upsample_bilinear_align_corners(c3, c2.shape[1:3], self.precision) + lateral("latlayer1")(c2)
        p1 = upsample_bilinear_align_corners(p2, c1.shape[1:3], self.precision) + lateral("latlayer2")(c1)

        styles = []
        for i in range(self.n_styles):
            feat, spatial = (c3, 16) if i < COARSE_IND else (p2, 32) if i < MIDDLE_IND else (p1, 64)
            styles.append(GradualStyleBlock(512, spatial, name=f"styles_{i}", **kw)(feat).astype(jnp.float32))
        s = jnp.stack(styles, axis=1)  # (B, n_styles, 512)
        if self.mode == "psp":
            return s
        w0 = s[:, :1]
        keep = stage_mask(self.n_styles, progressive_stage).at[0].set(False)
        return w0 + jnp.where(keep[None, :, None], s, 0.0)


def add_latent_avg(codes, latent_avg):
    """codes (B, n_styles, 512) + latent_avg of shape (512,), (1, 512) or (n_styles, 512)."""
    latent_avg = jnp.asarray(latent_avg, codes.dtype)
    if latent_avg.ndim == 1:
        latent_avg = latent_avg[None]
    if latent_avg.ndim != 2 or latent_avg.shape[0] not in (1, codes.shape[1]) or latent_avg.shape[1] != codes.shape[2]:
        raise ValueError(
            f"latent_avg of shape {tuple(latent_avg.shape)} does not fit codes of shape {tuple(codes.shape)}; "
            f"expected ({codes.shape[2]},), (1, {codes.shape[2]}) or ({codes.shape[1]}, {codes.shape[2]})")
    return codes + latent_avg[None]
