"""LPIPS perceptual distance (Zhang et al. 2018, v0.1) with torchvision AlexNet / VGG16 feature backbones.

NHWC inputs in [-1, 1]. For each image pair:

    x' = (x - shift) / scale                                  ScalingLayer, per RGB channel
    f_k = backbone taps (alex: relu1..relu5; vgg16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)
    n_k = f_k / (sqrt(sum_c f_k^2) + 1e-10)                   unit-normalise along channels
    d   = sum_k mean_hw( sum_c w_k[c] * (n_k(x) - n_k(y))^2 )  1x1 linear heads, no bias

which is the lpips package's `LPIPS(net, version='0.1')` and e4e's `criteria/lpips` copy (that copy
returns the batch mean of d; see `e4e_jax.losses.lpips_loss`).

Parameter tree (names follow torchvision's `features.{n}` indices so the mapping is 1:1):
    params/backbone/features_{n}/{kernel (kh, kw, in, out), bias (out,)}   n = conv's index in `features`
    params/lin_{k} (C_k,)                                   k = 0..4, from lin{k}.model.1.weight (1, C_k, 1, 1)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10

# torchvision `features` as a list of ('conv', index, out, kernel, stride, pad) | ('pool', k, s) | ('tap',).
# ReLU follows every conv; taps are taken after that ReLU.
_ALEX = (
    ("conv", 0, 64, 11, 4, 2),
    ("tap",),
    ("pool", 3, 2),
    ("conv", 3, 192, 5, 1, 2),
    ("tap",),
    ("pool", 3, 2),
    ("conv", 6, 384, 3, 1, 1),
    ("tap",),
    ("conv", 8, 256, 3, 1, 1),
    ("tap",),
    ("conv", 10, 256, 3, 1, 1),
    ("tap",),
)


def _vgg16_layers() -> tuple:
    layers, idx = [], 0
    for stage, (ch, n) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        if stage:
            layers.append(("pool", 2, 2))
            idx += 1
        for _ in range(n):
            layers.append(("conv", idx, ch, 3, 1, 1))
            idx += 2  # conv + relu
        layers.append(("tap",))
    return tuple(layers)


LAYERS = {"alex": _ALEX, "vgg": _vgg16_layers()}
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}


def conv_indices(net: str) -> tuple[tuple[int, int, int, int], ...]:
    """(features index, out channels, kernel size, in channels) of every conv of `net`, in order."""
    out, cin = [], 3
    for layer in LAYERS[net]:
        if layer[0] == "conv":
            out.append((layer[1], layer[2], layer[3], cin))
            cin = layer[2]
    return tuple(out)


def _safe_norm(x: jax.Array, axis: int = -1) -> jax.Array:
    """sqrt(sum x^2) whose gradient is 0 (not NaN) where the vector is all zeros (e.g. dead ReLUs)."""
    s = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    pos = s > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)


def normalize_channels(x: jax.Array) -> jax.Array:
    """x / (||x||_2 over channels + 1e-10), as lpips `normalize_tensor`. (B, H, W, C) -> same."""
    return x / (_safe_norm(x) + NORM_EPS)


class FeatureNet(nn.Module):
    """torchvision `alexnet().features` / `vgg16().features` returning the five LPIPS taps.

    __call__(x): (B, H, W, 3) scaled images -> list of 5 (B, h_k, w_k, C_k) post-ReLU activations.
    """

    net: str = "alex"
    precision: Any = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        if self.net not in LAYERS:
            raise ValueError(f"LPIPS net must be one of {sorted(LAYERS)}, got {self.net!r}")
        taps = []
        for layer in LAYERS[self.net]:
            if layer[0] == "conv":
                _, idx, out, k, s, p = layer
                x = nn.Conv(
                    out,
                    (k, k),
                    strides=(s, s),
                    padding=((p, p), (p, p)),
                    dtype=self.dtype,
                    param_dtype=jnp.float32,
                    precision=self.precision,
                    name=f"features_{idx}",
                )(x)
                x = nn.relu(x)
            elif layer[0] == "pool":
                _, k, s = layer
                x = nn.max_pool(x, (k, k), strides=(s, s), padding="VALID")  # torch: no pad, floor mode
            else:
                taps.append(x)
        return taps


class LPIPS(nn.Module):
    """LPIPS v0.1 distance.

    Attributes:
      net: 'alex' (e4e's default) or 'vgg'.
      precision: lax precision of the convs (tests use 'highest').

    __call__(x, y, per_layer=False): x, y (B, H, W, 3) in [-1, 1] -> (B,) distances
    (or (B, 5) per-layer terms whose sum is the distance).
    """

    net: str = "alex"
    precision: Any = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, y, per_layer: bool = False):
        if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"LPIPS expects two (B, H, W, 3) batches of equal shape, got {x.shape}, {y.shape}")
        shift, scale = jnp.asarray(SHIFT, jnp.float32), jnp.asarray(SCALE, jnp.float32)
        b = x.shape[0]
        both = (jnp.concatenate([x, y], 0).astype(jnp.float32) - shift) / scale  # one backbone pass
        feats = FeatureNet(self.net, self.precision, self.dtype, name="backbone")(both.astype(self.dtype))
        terms = []
        for k, f in enumerate(feats):
            f = normalize_channels(f.astype(jnp.float32))
            d = jnp.square(f[:b] - f[b:])
            w = self.param(f"lin_{k}", nn.initializers.ones, (d.shape[-1],), jnp.float32)
            # 1x1 conv to one channel, then spatial mean.
            terms.append(jnp.mean(jnp.einsum("bhwc,c->bhw", d, w, precision=self.precision), axis=(1, 2)))
        terms = jnp.stack(terms, axis=1)
        return terms if per_layer else jnp.sum(terms, axis=1)
