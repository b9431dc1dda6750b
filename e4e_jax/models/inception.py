"""The FID Inception-v3 of pytorch-fid (TF `inception-2015-12-05` weights), pool3 features for FID.

Architecture (torchvision `Inception3(num_classes=1008, aux_logits=False)` with pytorch-fid's patches):
    resize to 299x299 (bilinear, align_corners=False, no antialias: torch F.interpolate), x -> 2x - 1
    Conv2d_1a_3x3 (s2) -> Conv2d_2a_3x3 -> Conv2d_2b_3x3 (p1) -> maxpool 3/2
    Conv2d_3b_1x1 -> Conv2d_4a_3x3 -> maxpool 3/2
    Mixed_5b/5c/5d  FIDInceptionA   (3x3 avg pool, pad 1, count_include_pad=False, as TF)
    Mixed_6a        InceptionB
    Mixed_6b..6e    FIDInceptionC   (avg pool as in A)
    Mixed_7a        InceptionD
    Mixed_7b        FIDInceptionE_1 (avg pool as in A)
    Mixed_7c        FIDInceptionE_2 (3x3 MAX pool, stride 1, pad 1: the TF graph's quirk)
    global average pool -> pool3 (B, 2048); fc (2048 -> 1008) gives the logits
Every conv is BasicConv2d: conv (no bias) -> BatchNorm (eps 1e-3, running statistics) -> ReLU.

Parameter tree (names follow the torch state dict, '.' -> '/'):
    params/{block}/[{branch}/]conv/kernel (kh, kw, in, out), .../bn/{scale, bias}, fc/{kernel, bias}
    batch_stats/{block}/[{branch}/]bn/{mean, var}
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from e4e_jax.models.resampling import resize_bilinear

INPUT_SIZE = 299
POOL3_DIM = 2048
BN_EPS = 1e-3


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm(eps 1e-3, inference) -> ReLU. NHWC."""

    features: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    precision: Any = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        ph, pw = self.padding
        x = nn.Conv(
            self.features,
            self.kernel,
            strides=(self.stride, self.stride),
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            precision=self.precision,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="conv",
        )(x)
        x = nn.BatchNorm(
            use_running_average=True, epsilon=BN_EPS, dtype=self.dtype, param_dtype=jnp.float32, name="bn"
        )(x)
        return nn.relu(x)


def _avg_pool_tf(x):
    """3x3 stride-1 average pool, pad 1, padded zeros not counted (TF; pytorch-fid's patch)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x, stride: int = 2, pad: int = 0):
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


class _Block(nn.Module):
    """Base for the mixed blocks: `conv(name, features, kernel, stride, padding)` builds a BasicConv2d."""

    precision: Any = None
    dtype: Any = jnp.float32

    def conv(self, name, features, kernel=(1, 1), stride=1, padding=(0, 0)):
        return BasicConv2d(features, kernel, stride, padding, self.precision, self.dtype, name=name)


class InceptionA(_Block):
    pool_features: int = 32

    @nn.compact
    def __call__(self, x):
        b1 = self.conv("branch1x1", 64)(x)
        b5 = self.conv("branch5x5_2", 64, (5, 5), padding=(2, 2))(self.conv("branch5x5_1", 48)(x))
        b3 = self.conv("branch3x3dbl_1", 64)(x)
        b3 = self.conv("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(b3)
        b3 = self.conv("branch3x3dbl_3", 96, (3, 3), padding=(1, 1))(b3)
        bp = self.conv("branch_pool", self.pool_features)(_avg_pool_tf(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
    @nn.compact
    def __call__(self, x):
        b3 = self.conv("branch3x3", 384, (3, 3), stride=2)(x)
        bd = self.conv("branch3x3dbl_1", 64)(x)
        bd = self.conv("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(bd)
        bd = self.conv("branch3x3dbl_3", 96, (3, 3), stride=2)(bd)
        return jnp.concatenate([b3, bd, _max_pool(x)], axis=-1)


class InceptionC(_Block):
    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = self.conv("branch1x1", 192)(x)
        b7 = self.conv("branch7x7_1", c7)(x)
        b7 = self.conv("branch7x7_2", c7, (1, 7), padding=(0, 3))(b7)
        b7 = self.conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7)
        bd = self.conv("branch7x7dbl_1", c7)(x)
        bd = self.conv("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(bd)
        bd = self.conv("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(bd)
        bd = self.conv("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(bd)
        bd = self.conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(bd)
        bp = self.conv("branch_pool", 192)(_avg_pool_tf(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
    @nn.compact
    def __call__(self, x):
        b3 = self.conv("branch3x3_2", 320, (3, 3), stride=2)(self.conv("branch3x3_1", 192)(x))
        b7 = self.conv("branch7x7x3_1", 192)(x)
        b7 = self.conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
        b7 = self.conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
        b7 = self.conv("branch7x7x3_4", 192, (3, 3), stride=2)(b7)
        return jnp.concatenate([b3, b7, _max_pool(x)], axis=-1)


class InceptionE(_Block):
    """FIDInceptionE_1 (`max_pool=False`: TF average pool) or FIDInceptionE_2 (`max_pool=True`)."""

    max_pool: bool = False

    @nn.compact
    def __call__(self, x):
        b1 = self.conv("branch1x1", 320)(x)
        b3 = self.conv("branch3x3_1", 384)(x)
        b3 = jnp.concatenate(
            [
                self.conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3),
                self.conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3),
            ],
            axis=-1,
        )
        bd = self.conv("branch3x3dbl_1", 448)(x)
        bd = self.conv("branch3x3dbl_2", 384, (3, 3), padding=(1, 1))(bd)
        bd = jnp.concatenate(
            [
                self.conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd),
                self.conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd),
            ],
            axis=-1,
        )
        pooled = _max_pool(x, stride=1, pad=1) if self.max_pool else _avg_pool_tf(x)
        bp = self.conv("branch_pool", 192)(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's `InceptionV3([3])` (FID weights), NHWC.

    __call__(x, return_logits=False): x (B, H, W, 3) in [0, 1] (pytorch-fid's input range) ->
    pool3 features (B, 2048) float32, or (features, logits (B, num_classes)) with `return_logits`.
    `resize_input` / `normalize_input` as pytorch-fid (both on by default).
    """

    num_classes: int = 1008
    resize_input: bool = True
    normalize_input: bool = True
    precision: Any = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, return_logits: bool = False):
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"FID Inception expects (B, H, W, 3) images, got shape {x.shape}")
        x = x.astype(jnp.float32)
        if self.resize_input:
            x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE))
        if self.normalize_input:
            x = 2 * x - 1
        kw = dict(precision=self.precision, dtype=self.dtype)
        x = x.astype(self.dtype)
        x = BasicConv2d(32, (3, 3), 2, name="Conv2d_1a_3x3", **kw)(x)
        x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3", **kw)(x)
        x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3", **kw)(x)
        x = _max_pool(x)
        x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1", **kw)(x)
        x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3", **kw)(x)
        x = _max_pool(x)
        x = InceptionA(pool_features=32, name="Mixed_5b", **kw)(x)
        x = InceptionA(pool_features=64, name="Mixed_5c", **kw)(x)
        x = InceptionA(pool_features=64, name="Mixed_5d", **kw)(x)
        x = InceptionB(name="Mixed_6a", **kw)(x)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(channels_7x7=c7, name=name, **kw)(x)
        x = InceptionD(name="Mixed_7a", **kw)(x)
        x = InceptionE(max_pool=False, name="Mixed_7b", **kw)(x)
        x = InceptionE(max_pool=True, name="Mixed_7c", **kw)(x)
        pool3 = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        if not return_logits:
            return pool3
        logits = nn.Dense(self.num_classes, precision=self.precision, name="fc")(pool3)
        return pool3, logits


def init_variables(rng: jax.Array, num_classes: int = 1008) -> dict:
    """Random variables of the full tree (fc included), for tests and shape checks."""
    model = FIDInceptionV3(num_classes=num_classes)
    return jax.jit(lambda k: model.init(k, jnp.zeros((1, 75, 75, 3)), return_logits=True))(rng)
