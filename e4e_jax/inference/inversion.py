"""Batch inversion with an e4e bundle: images → W+ latents (+ latent_avg) → reconstructions.

Mirrors official `scripts/inference.py`: codes = encoder(x) + latent_avg; cars codes are trimmed to
the generator's latent count and the 512×512 output is cropped to rows 64:448; the generator runs
with its stored noise (`randomize_noise=False`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax import domains
from e4e_jax import images as images_lib
from e4e_jax.choices import compute_dtype
from e4e_jax.inference.render import resolve_modulation, resolve_upsample
from e4e_jax.models import resampling
from e4e_jax.models.encoder import add_latent_avg
from e4e_jax.models.stylegan2 import Generator, StyleGAN2Config
from e4e_jax.runtime import sharding
from e4e_jax.storage import e4e_bundle

# What an inversion returns besides the latents: float reconstructions, uint8 ones, or none.
IMAGE_MODES = ("float", "uint8", "none")


@dataclasses.dataclass(frozen=True)
class E4EModel:
    """An e4e bundle ready to run: modules, variables and the facts inversion needs."""

    encoder: nn.Module  # any encoder of models/encoder_types.EncoderConfig.build (ReStyle: restyle.RestyleModel)
    generator: Generator
    variables: dict
    input_hw: tuple[int, int]
    domain: Optional[str]
    source: str

    @property
    def gen_config(self) -> StyleGAN2Config:
        return self.generator.config

    @property
    def is_cars(self) -> bool:
        return self.domain == "cars"


def load_e4e(
    path: str,
    *,
    modulation: str = "auto",
    dtype: str = "float32",
    precision: Any = None,
    upsample: str = "auto",
    fuse_style_blocks: bool = True,
) -> E4EModel:
    """Build the encoder and generator of an `e4e` bundle (raises BundleError for other kinds).

    fuse_style_blocks: run the style blocks that share a feature map as one stack (inference only; same
    parameters and maths, see e4e_jax/models/fused_styles.py)."""
    arch, variables, _ = e4e_bundle.load(path)
    return build_model(
        arch,
        variables,
        str(path),
        modulation=modulation,
        dtype=dtype,
        precision=precision,
        upsample=upsample,
        fuse_style_blocks=fuse_style_blocks,
    )


def build_model(
    arch: e4e_bundle.E4EArchitecture,
    variables: dict,
    source: str,
    *,
    modulation: str = "auto",
    dtype: str = "float32",
    precision: Any = None,
    upsample: str = "auto",
    fuse_style_blocks: bool = True,
) -> E4EModel:
    """The modules of a loaded bundle's architecture (an 'e4e' one, or a 'restyle' one: restyle.load_restyle)
    with its variables (conv kernels cast to a bfloat16 `dtype`); options as `load_e4e`."""
    dt = compute_dtype(dtype)
    encoder = arch.encoder.build(dtype=dt, precision=precision, fuse_style_blocks=fuse_style_blocks)
    generator = Generator(
        arch.generator,
        modulation=resolve_modulation(modulation),
        dtype=dt,
        precision=precision,
        upsample=resolve_upsample(upsample),
    )
    if dt != jnp.float32:
        variables = {**variables, "encoder": cast_conv_kernels(variables["encoder"], dt)}
    return E4EModel(encoder, generator, variables, arch.encoder.input_size, arch.domain, source)


def cast_conv_kernels(tree: dict, dtype) -> dict:
    """The 4-D conv kernels of an encoder parameter tree stored in the compute dtype.

    Every encoder conv casts its kernel to the compute dtype before use, so storing it cast gives the
    same values and saves the cast of ~120M parameters (67 kernel launches) on every call. Other
    parameters (BN statistics, PReLU slopes, EqualLinear weights scaled in float32 before their cast)
    stay float32.
    """

    def cast(path, leaf):
        name = getattr(path[-1], "key", None)
        return leaf.astype(dtype) if name == "kernel" and np.ndim(leaf) == 4 else leaf

    return jax.tree_util.tree_map_with_path(cast, tree)


def encode(model: E4EModel, variables: dict, x: jax.Array) -> jax.Array:
    """x: (B, H, W, 3) in [-1, 1] → W+ codes (B, n_latent, 512) float32, latent_avg added."""
    codes = model.encoder.apply(variables["encoder"], x)
    codes = add_latent_avg(codes.astype(jnp.float32), variables["latent_avg"])
    return codes[:, : model.gen_config.n_latent]  # Official cars inference trims 18 → 16 codes (domains.py).


def crop_output(model: E4EModel, images: jax.Array) -> jax.Array:
    """Official output framing: `domains.output_rows` (cars keep rows 64:448 of 512)."""
    rows = domains.output_rows(model.domain, model.gen_config.size)
    return images if rows is None else images[:, rows[0] : rows[1]]


def normalize_input(x: jax.Array) -> jax.Array:
    """uint8 pixels -> float32 in [-1, 1] (official ToTensor + Normalize(0.5, 0.5), the same IEEE
    operations as `data.folder.normalize`); float inputs are taken as already normalised."""
    if x.dtype != jnp.uint8:
        return x
    return images_lib.normalize(x, jnp)


def to_uint8(images: jax.Array) -> jax.Array:
    """[-1, 1] float images -> uint8 on the device, rounded and clipped, NaN -> 0 (the same values as
    `images.to_uint8` on the host; a quarter of the bytes to copy back)."""
    return images_lib.to_uint8(images, jnp)


def resize_output(images: jax.Array, out_hw: Optional[tuple[int, int]]) -> jax.Array:
    """Reconstructions at `out_hw` (None: as generated), by `resampling.resize_area_or_linear`."""
    if out_hw is None:
        return images
    return resampling.resize_area_or_linear(images, out_hw)


def make_invert_fn(
    model: E4EModel,
    mesh: Optional[jax.sharding.Mesh] = None,
    *,
    images: str = "float",
    out_hw: Optional[tuple[int, int]] = None,
):
    """f(variables, x) -> (latents (B, n_latent, 512) float32, reconstructions), jitted; latents alone
    when images='none'.

    images: 'float' -> (B, H', W', 3) float32 in the generator's range; 'uint8' -> the same converted
    on the device (what the writers encode); 'none' -> no generator pass at all (latents only).
    out_hw: size of the returned reconstructions (see `resize_output`). With a `mesh`, each device
    inverts its slice of the batch.
    """
    if images not in IMAGE_MODES:
        raise ValueError(f"images must be one of {IMAGE_MODES}, got {images!r}")

    def invert(variables, x):
        codes = encode(model, variables, normalize_input(x))
        if images == "none":
            return codes
        out = model.generator.apply(variables["generator"], codes, input_is_latent=True, noise_mode="const")
        out = resize_output(crop_output(model, out), out_hw)
        return codes, to_uint8(out) if images == "uint8" else out

    if mesh is None:
        return jax.jit(invert)
    data = sharding.P(sharding.DATA_AXIS)
    return sharding.per_device(invert, mesh, (sharding.P(), data), data if images == "none" else (data, data))


def compile_invert(model: E4EModel, mesh: jax.sharding.Mesh, batch_size: int, input_dtype=jnp.float32, **kw):
    """Ahead-of-time compile of `make_invert_fn(model, mesh, **kw)` for a (batch_size, H, W, 3) input of
    `input_dtype` (uint8 pixels or float32 in [-1, 1]); returns (compiled fn, seconds spent). With JAX's persistent cache on (`compile_cache`), a
    second run of the same model and batch size loads the executable instead of compiling."""
    fn = make_invert_fn(model, mesh, **kw)
    return compile_for_batch(fn, model.variables, model.input_hw, mesh, batch_size, input_dtype)


def compile_for_batch(fn, variables: dict, input_hw, mesh: jax.sharding.Mesh, batch_size: int, input_dtype=jnp.float32):
    """Ahead-of-time compile of a jitted `fn(variables, x)` (an inversion kernel: `make_invert_fn`,
    `inverters.kernel`) for `variables` replicated on `mesh` and x (batch_size, *input_hw, 3) of
    `input_dtype` split over it; returns (compiled fn, seconds spent)."""
    import time

    repl = sharding.replicated(mesh)
    shapes = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=repl), variables)
    x = jax.ShapeDtypeStruct((batch_size, *input_hw, 3), input_dtype, sharding=sharding.batch_sharding(mesh))
    t0 = time.perf_counter()
    compiled = fn.lower(shapes, x).compile()
    return compiled, time.perf_counter() - t0


def _to_host_memory(out, pinned: bool):
    """Start copying `out` back to the host as soon as the device is done, not when it is read.

    pinned (where the devices have pinned host memory: GPU, TPU; `_has_pinned_host`): the results are
    moved there by the DMA engines (an asynchronous device_put), and reading them is a host memcpy: on
    an H200 a batch of 32 uint8 1024² images took 98 ms through pageable memory (1.0 GB/s) and 2.6 ms
    this way (38 GB/s; BUILD_NOTES.md, "Batch inversion end to end"). Otherwise (CPU) the plain
    asynchronous copy.
    """
    if pinned:
        return jax.tree_util.tree_map(lambda a: jax.device_put(a, a.sharding.with_memory_kind("pinned_host")), out)
    for a in jax.tree_util.tree_leaves(out):
        a.copy_to_host_async()
    return out


def _has_pinned_host(devices) -> bool:
    """Whether every device (not a CPU) has a pinned host memory space."""
    return all(d.platform != "cpu" and "pinned_host" in {m.kind for m in d.addressable_memories()} for d in devices)


def iter_invert(
    model: E4EModel,
    batches: Iterator[tuple[np.ndarray, Sequence, Sequence]],
    batch_size: int,
    mesh: Optional[jax.sharding.Mesh] = None,
    *,
    invert_fn=None,
    images: str = "float",
    out_hw: Optional[tuple[int, int]] = None,
    variables=None,
):
    """Invert host batches from `data.folder.iter_batches`.

    Yields (latents (b, n, 512), images (b, H', W', 3) or None, paths, skipped) as numpy, in input order.
    Each batch is padded to one size (a multiple of the local device count) so a single compilation
    serves the run, and sharded over `mesh` (default: all local devices). One batch stays in flight:
    batch i+1 is read and dispatched before batch i is copied back, so the device computes while
    the host decodes the next images and the caller writes the previous results.
    `invert_fn` (e.g. from `compile_invert`) and `variables` (already placed on `mesh`) may be passed in
    to reuse them; `images`/`out_hw` as in `make_invert_fn`.
    """
    mesh = mesh or sharding.data_mesh(jax.local_devices())
    pinned = _has_pinned_host(mesh.devices.flat)  # decided once: the route of every batch's copy back
    bs = sharding.round_up(batch_size, mesh.size)
    invert = invert_fn or make_invert_fn(model, mesh, images=images, out_hw=out_hw)
    variables = variables if variables is not None else sharding.replicate(model.variables, mesh)

    def host(arrays, n):
        # One part (the usual case): a view of the host copy, not a second copy of it (for 1024²
        # reconstructions the copies, not the device, were the job's limit: BUILD_NOTES.md issue 13).
        got = [np.asarray(a)[:k] for a, k in zip(arrays, n)]
        return got[0] if len(got) == 1 else np.concatenate(got)

    def fetch(pending):
        parts, paths, skipped = pending
        n = [k for _, k in parts]
        if images == "none":
            return host([out for out, _ in parts], n), None, paths, skipped
        return host([lat for (lat, _), _ in parts], n), host([rec for (_, rec), _ in parts], n), paths, skipped

    pending = None
    for batch, paths, skipped in batches:
        b = batch.shape[0]
        if b == 0:
            if pending is not None:
                yield fetch(pending)
                pending = None
            empty = np.zeros((0, model.gen_config.n_latent, model.gen_config.style_dim), np.float32)
            yield empty, None, paths, skipped
            continue
        parts = []
        for start in range(0, b, bs):  # Larger host batches are split: one compiled shape.
            chunk = batch[start : start + bs]
            out = invert(variables, sharding.shard_batch(sharding.pad_batch(chunk, bs), mesh))
            out = _to_host_memory(out, pinned)
            parts.append((out, len(chunk)))
        if pending is not None:
            yield fetch(pending)
        pending = (parts, paths, skipped)
    if pending is not None:
        yield fetch(pending)
