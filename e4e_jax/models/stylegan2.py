"""StyleGAN2 generator (mapping + synthesis) as Flax linen modules, NHWC.

Architecture and numerics of rosinality's port, as used by official e4e; parameter layout in
docs/params_layout.md. Variables::

    {'params': {'mapping': ..., 'synthesis': ...},
     'buffers': {'w_avg': (D,), 'synthesis': {'noise_i': (1, r, r, 1)}}}

Usage::

    gen = Generator(StyleGAN2Config.rosinality(size=256, channel_multiplier=2))
    variables = gen.init(jax.random.key(0), jnp.zeros((1, 512)))
    images = gen.apply(variables, z, truncation=0.7)                        # (B, 256, 256, 3)
    images = gen.apply(variables, ws, input_is_latent=True)                 # ws: (B, n_latent, 512)
    w = gen.apply(variables, z, method=Generator.map)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from e4e_jax.models import layers

NOISE_MODES = ("const", "random", "none")
BLUR_KERNEL = (1, 3, 3, 1)  # the FIR taps of every official StyleGAN2 (rosinality and NVlabs)


def rosinality_channels(size: int, channel_multiplier: int = 2) -> tuple[int, ...]:
    """Output channels for resolutions 4, 8, …, size (docs/architecture.md, "Numerics")."""
    cm = channel_multiplier
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm, 1024: 16 * cm}
    return tuple(table[2**i] for i in range(2, int(math.log2(size)) + 1))


@dataclasses.dataclass(frozen=True)
class StyleGAN2Config:
    """Hyper-parameters that fully determine a generator (JSON-able via `to_dict`).

    channels: one entry per resolution 4, 8, …, size.
    conv_clamp: NVlabs' activation clamp (None for rosinality checkpoints).
    z_dim: input size of the mapping network (defaults to style_dim).
    """

    size: int
    channels: tuple[int, ...]
    style_dim: int = 512
    n_mlp: int = 8
    lr_mlp: float = 0.01
    blur_kernel: tuple[int, ...] = BLUR_KERNEL
    conv_clamp: Optional[float] = None
    z_dim: Optional[int] = None

    def __post_init__(self):
        log = math.log2(self.size) if self.size > 0 else -1
        if self.size < 4 or log != int(log):
            raise ValueError(f"StyleGAN2 size must be a power of two >= 4, got {self.size}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "blur_kernel", tuple(self.blur_kernel))
        if len(self.channels) != self.log_size - 1:
            raise ValueError(
                f"channels must list one count per resolution 4..{self.size} "
                f"({self.log_size - 1} values), got {len(self.channels)}"
            )

    @classmethod
    def rosinality(cls, size: int, channel_multiplier: int = 2, **kw) -> "StyleGAN2Config":
        return cls(size=size, channels=rosinality_channels(size, channel_multiplier), **kw)

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def n_latent(self) -> int:
        """Number of W+ codes the synthesis network consumes."""
        return 2 * self.log_size - 2

    @property
    def num_noise(self) -> int:
        return 2 * self.log_size - 3

    @property
    def mapping_in_dim(self) -> int:
        return self.z_dim or self.style_dim

    def channels_at(self, res: int) -> int:
        return self.channels[int(math.log2(res)) - 2]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"], d["blur_kernel"] = list(self.channels), list(self.blur_kernel)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StyleGAN2Config":
        return cls(**d)


def noise_resolution(i: int) -> int:
    """Spatial size of noise input i (rosinality's `noises.noise_i`)."""
    return 2 ** ((i + 5) // 2)


class MappingNetwork(nn.Module):
    """PixelNorm + n_mlp equalized-lr dense layers (lr_mul 0.01) with fused leaky-ReLU."""

    style_dim: int = 512
    n_mlp: int = 8
    lr_mlp: float = 0.01
    precision: Any = None

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        """z: (B, z_dim) -> w: (B, style_dim), float32."""
        x = layers.pixel_norm(z.astype(jnp.float32))
        for i in range(self.n_mlp):
            x = layers.EqualLinear(
                self.style_dim, self.lr_mlp, activation=True, precision=self.precision, name=f"dense_{i}"
            )(x)
        return x


class StyledConv(nn.Module):
    """Modulated 3×3 conv (optionally ×2 transposed + blur), noise, bias + leaky-ReLU."""

    out_channels: int
    upsample: bool = False
    blur_kernel: tuple[int, ...] = BLUR_KERNEL
    conv_clamp: Optional[float] = None
    path: str = "grouped"
    dtype: Any = jnp.float32
    precision: Any = None
    kernel_size: int = 3
    up_impl: str = "transpose"

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array, noise: Optional[jax.Array]) -> jax.Array:
        """x: (B, H, W, Cin); w: (B, D); noise: (B|1, H', W', 1) or None -> (B, H', W', Cout)."""
        cin, k = x.shape[-1], self.kernel_size
        weight = self.param("weight", nn.initializers.normal(1.0), (k, k, cin, self.out_channels))
        mod_w = self.param("mod_weight", nn.initializers.normal(1.0), (w.shape[-1], cin))
        mod_b = self.param("mod_bias", nn.initializers.ones, (cin,))
        strength = self.param("noise_strength", nn.initializers.zeros, ())
        bias = self.param("bias", nn.initializers.zeros, (self.out_channels,))
        styles = layers.equal_linear(w, mod_w, mod_b, precision=self.precision)
        scale = 1.0 / math.sqrt(cin * k * k)
        taps = layers.fir_taps(self.blur_kernel)
        y = layers.modulated_conv2d(
            x.astype(self.dtype),
            weight * scale,
            styles,
            demodulate=True,
            up=self.upsample,
            path=self.path,
            precision=self.precision,
            up_impl=self.up_impl,
            blur_taps=taps,
        )
        if self.upsample and self.up_impl == "transpose":
            y = layers.blur(y, taps, pad=layers.up_blur_pad(k, len(taps)), gain=4)
        if noise is not None:
            y = y + (strength * noise).astype(y.dtype)
        return layers.fused_leaky_relu(y, bias, clamp=self.conv_clamp)


class ToRGB(nn.Module):
    """Modulated 1×1 conv to RGB (no demodulation) + bias, plus the upsampled skip image (if any)."""

    blur_kernel: tuple[int, ...] = BLUR_KERNEL
    conv_clamp: Optional[float] = None
    path: str = "grouped"
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array, skip: Optional[jax.Array]) -> jax.Array:
        """x: (B, H, W, Cin); w: (B, D); skip: (B, H/2, W/2, 3) float32 or None -> (B, H, W, 3) float32."""
        cin = x.shape[-1]
        weight = self.param("weight", nn.initializers.normal(1.0), (1, 1, cin, 3))
        mod_w = self.param("mod_weight", nn.initializers.normal(1.0), (w.shape[-1], cin))
        mod_b = self.param("mod_bias", nn.initializers.ones, (cin,))
        bias = self.param("bias", nn.initializers.zeros, (3,))
        styles = layers.equal_linear(w, mod_w, mod_b, precision=self.precision)
        y = layers.modulated_conv2d(
            x.astype(self.dtype),
            weight / math.sqrt(cin),
            styles,
            demodulate=False,
            path=self.path,
            precision=self.precision,
        )
        y = y.astype(jnp.float32) + bias
        if self.conv_clamp is not None:
            y = jnp.clip(y, -self.conv_clamp, self.conv_clamp)
        if skip is not None:
            y = y + layers.upsample2d(skip, layers.fir_taps(self.blur_kernel))
        return y


class SynthesisNetwork(nn.Module):
    """Constant input → StyledConv/ToRGB pyramid with skip connections. ws: (B, n_latent, D)."""

    config: StyleGAN2Config
    path: str = "grouped"
    dtype: Any = jnp.float32
    precision: Any = None
    up_impl: str = "transpose"

    def _noise(self, i: int, batch: int, mode: str) -> Optional[jax.Array]:
        r = noise_resolution(i)
        buf = self.variable("buffers", f"noise_{i}", lambda: jax.random.normal(self.make_rng("params"), (1, r, r, 1)))
        if mode == "const":
            return buf.value
        if mode == "random":
            return jax.random.normal(self.make_rng("noise"), (batch, r, r, 1))
        if mode == "none":
            return None
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {mode!r}")

    @nn.compact
    def __call__(self, ws: jax.Array, noise_mode: str = "const") -> jax.Array:
        cfg = self.config
        if ws.ndim != 3 or ws.shape[1] != cfg.n_latent:
            raise ValueError(f"synthesis expects ws of shape (B, {cfg.n_latent}, {cfg.style_dim}), got {ws.shape}")
        b = ws.shape[0]
        kw = dict(
            blur_kernel=cfg.blur_kernel,
            conv_clamp=cfg.conv_clamp,
            path=self.path,
            dtype=self.dtype,
            precision=self.precision,
        )
        const = self.param("input", nn.initializers.normal(1.0), (1, 4, 4, cfg.channels[0]))
        x = jnp.broadcast_to(const, (b,) + const.shape[1:])
        x = StyledConv(cfg.channels[0], name="conv1", **kw)(x, ws[:, 0], self._noise(0, b, noise_mode))
        skip = ToRGB(name="to_rgb1", **kw)(x, ws[:, 1], None)
        for j in range(cfg.log_size - 2):
            c = cfg.channels[j + 1]
            x = StyledConv(c, upsample=True, up_impl=self.up_impl, name=f"convs_{2 * j}", **kw)(
                x, ws[:, 2 * j + 1], self._noise(2 * j + 1, b, noise_mode)
            )
            x = StyledConv(c, name=f"convs_{2 * j + 1}", **kw)(
                x, ws[:, 2 * j + 2], self._noise(2 * j + 2, b, noise_mode)
            )
            skip = ToRGB(name=f"to_rgbs_{j}", **kw)(x, ws[:, 2 * j + 3], skip)
        return skip


class Generator(nn.Module):
    """StyleGAN2 generator: mapping, truncation, style mixing / W+ input, synthesis.

    Attributes:
      config: StyleGAN2Config.
      modulation: 'grouped' (per-sample weights as a grouped conv) or 'activation'.
      dtype: compute dtype of the synthesis convolutions (params stay float32).
      precision: lax precision for convs/matmuls (None = backend default, TF32 on GPU).
      upsample: 'transpose' (official order: dilated conv, then blur) or 'subpixel' (both folded
        into one dense conv + depth-to-space; same maths, see layers.UPSAMPLE_IMPLS).
    """

    config: StyleGAN2Config
    modulation: str = "grouped"
    dtype: Any = jnp.float32
    precision: Any = None
    upsample: str = "transpose"

    def setup(self):
        if self.modulation not in layers.MODULATION_PATHS:
            raise ValueError(f"modulation must be one of {layers.MODULATION_PATHS}, got {self.modulation!r}")
        cfg = self.config
        self.mapping = MappingNetwork(cfg.style_dim, cfg.n_mlp, cfg.lr_mlp, precision=self.precision)
        if self.upsample not in layers.UPSAMPLE_IMPLS:
            raise ValueError(f"upsample must be one of {layers.UPSAMPLE_IMPLS}, got {self.upsample!r}")
        self.synthesis = SynthesisNetwork(
            cfg, path=self.modulation, dtype=self.dtype, precision=self.precision, up_impl=self.upsample
        )
        self.w_avg = self.variable("buffers", "w_avg", jnp.zeros, (cfg.style_dim,))

    def map(self, z: jax.Array) -> jax.Array:
        """z: (B, z_dim) -> w: (B, style_dim)."""
        return self.mapping(z)

    def synthesize(self, ws: jax.Array, noise_mode: str = "const") -> jax.Array:
        """ws: (B, n_latent, style_dim) -> images (B, size, size, 3) float32."""
        return self.synthesis(ws, noise_mode).astype(jnp.float32)

    def __call__(
        self,
        styles,
        *,
        input_is_latent: bool = False,
        truncation: float = 1.0,
        truncation_latent: Optional[jax.Array] = None,
        noise_mode: str = "const",
        inject_index: Optional[int | jax.Array] = None,
        return_latents: bool = False,
    ):
        """Generate images.

        Args:
          styles: an array, or a sequence of two arrays for style mixing. Each is z (B, z_dim)
            (mapped first) or, with `input_is_latent`, w (B, D) or W+ (B, n_latent, D).
          truncation: ψ; codes move towards `truncation_latent` (default: the stored w_avg).
          inject_index: crossover layer for two styles (random from rng 'mixing' if None).
        Returns images (B, size, size, 3) float32 in the generator's raw range, and the W+
        latents (B, n_latent, D) if `return_latents`.
        """
        n = self.config.n_latent
        styles = list(styles) if isinstance(styles, (list, tuple)) else [styles]
        if not 1 <= len(styles) <= 2:
            raise ValueError(f"expected one or two style inputs, got {len(styles)}")
        if not input_is_latent:
            styles = [self.mapping(s) for s in styles]
        if truncation != 1.0:
            t = self.w_avg.value if truncation_latent is None else truncation_latent
            styles = [t + truncation * (s - t) for s in styles]
        plus = [s if s.ndim == 3 else jnp.repeat(s[:, None], n, axis=1) for s in styles]
        if len(plus) == 1:
            latent = plus[0]
        else:
            if inject_index is None:
                inject_index = jax.random.randint(self.make_rng("mixing"), (), 1, n)
            first = (jnp.arange(n) < inject_index)[None, :, None]
            latent = jnp.where(first, plus[0], plus[1])
        images = self.synthesize(latent, noise_mode)
        return (images, latent) if return_latents else images


def init_variables(cfg: StyleGAN2Config, rng: jax.Array) -> dict:
    """Random variables for every part of the generator (mapping, synthesis, buffers)."""
    gen = Generator(cfg)
    return jax.jit(lambda k: gen.init(k, jnp.zeros((1, cfg.mapping_in_dim))))(rng)
