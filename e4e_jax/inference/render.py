"""Batched image synthesis from latents with a StyleGAN2 bundle (the `synthesize` command)."""

from __future__ import annotations

from typing import Any, Iterator, Optional

import jax
import numpy as np

from e4e_jax.choices import compute_dtype
from e4e_jax.models.stylegan2 import Generator, StyleGAN2Config
from e4e_jax.runtime import sharding


def resolve_modulation(name: str) -> str:
    """'auto' picks the faster modulated-conv path for the backend.

    On an H100 the activation path was 1.6× (f32) to 2.4× (bf16) faster than the grouped conv from
    batch 8 up (BUILD_NOTES.md); the grouped conv stays the CPU default, where it is the reference.
    """
    if name != "auto":
        return name
    return "activation" if _on_accelerator() else "grouped"


def resolve_upsample(name: str) -> str:
    """'auto' picks sub-pixel up-sampling on accelerators: 1.43× faster f32 synthesis and 2.4× faster
    compiles at 1024², batch 32, on an H100 (BUILD_NOTES.md); the official order on CPU."""
    if name != "auto":
        return name
    return "subpixel" if _on_accelerator() else "transpose"


def _on_accelerator() -> bool:
    return jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")


def generator_of_bundle(path: str) -> tuple[StyleGAN2Config, dict]:
    """Generator config and variables from a `stylegan2` bundle or from the generator of an `e4e` or
    `restyle` bundle."""
    from e4e_jax.storage import bundle

    config = bundle.read_config(path)
    if config["kind"] == "stylegan2":
        _, variables = bundle.load(path, "stylegan2")
        return StyleGAN2Config.from_dict(config["architecture"]), variables
    if config["kind"] == "e4e":
        from e4e_jax.storage import e4e_bundle

        arch, variables, _ = e4e_bundle.load(path)
        return arch.generator, variables["generator"]
    if config["kind"] == "restyle":
        from e4e_jax.storage import restyle_bundle

        arch, variables, _ = restyle_bundle.load(path)
        return arch.generator, variables["generator"]
    raise bundle.BundleError(
        f"{path} holds a {config['kind']!r} bundle; synthesis needs a 'stylegan2', 'e4e' or 'restyle' bundle"
    )


def as_wplus(latents: np.ndarray, cfg: StyleGAN2Config, source: str = "latents") -> np.ndarray:
    """Accept (N, D) W codes or (N, n_latent, D) W+ codes; return (N, n_latent, D) float32."""
    latents = np.asarray(latents, np.float32)
    d, n = cfg.style_dim, cfg.n_latent
    if latents.ndim == 2 and latents.shape[1] == d:
        return np.repeat(latents[:, None], n, axis=1)
    if latents.ndim == 3 and latents.shape[1:] == (n, d):
        return latents
    raise ValueError(
        f"{source}: latents of shape {latents.shape} do not fit this generator: expected "
        f"(N, {d}) W codes or (N, {n}, {d}) W+ codes"
    )


def check_latents(latents: np.ndarray, cfg: StyleGAN2Config, source: str) -> np.ndarray:
    """`as_wplus` for latents read from `source`, which must hold at least one code and only finite values.

    Raises UserError naming `source`.
    """
    from e4e_jax.errors import UserError
    from e4e_jax.storage.variable_checks import require_finite

    kind = np.asarray(latents).dtype
    if kind.kind != "f":  # bool, integer or complex codes are not latents (a cast would drop imaginary parts)
        raise UserError(
            f"{source} holds {kind} values; latents are real floating-point codes (float32): "
            "save them with np.save(path, w.astype(np.float32))"
        )
    try:
        latents = as_wplus(latents, cfg, source)
    except ValueError as e:
        raise UserError(str(e)) from e
    if latents.shape[0] == 0:
        raise UserError(f"{source} holds no latents (shape {latents.shape}); invert some images first")
    require_finite(latents, source, "re-create the latents (a NaN code renders a NaN image)")
    return latents


def load_latents(path, cfg: StyleGAN2Config) -> np.ndarray:
    """W or W+ codes from a .npy file as checked (N, n_latent, D) float32 (see `check_latents`)."""
    from e4e_jax.storage.fileio import load_npy

    return check_latents(load_npy(path), cfg, str(path))


# A rendered image's peak working memory, in copies of the largest activation of the synthesis network
# (its input and output, the up-sampled intermediate, the skip image): a rough upper estimate, used only to
# refuse batches that cannot fit before XLA tries to allocate them.
ACTIVATION_COPIES = 4


def batch_rows(batch_size: int, n_rows: int, n_devices: int = 1) -> int:
    """The rows of one compiled batch: `batch_size`, but no more than the `n_rows` there are (a larger
    batch would only render padding), rounded up to a multiple of the device count."""
    return sharding.round_up(max(1, min(batch_size, n_rows)), n_devices)


def synthesis_bytes(cfg: StyleGAN2Config, batch: int, activations: bool = True) -> int:
    """Estimated memory to render `batch` images at once: codes and outputs, and with `activations` the
    working memory of the network (ACTIVATION_COPIES of the largest feature map, an up-sampling conv's
    input channels counted)."""
    resolutions = [2**k for k in range(2, cfg.log_size + 1)]
    largest = max(max(cfg.channels_at(r), cfg.channels_at(max(4, r // 2))) * r * r for r in resolutions)
    per_image = (
        cfg.n_latent * cfg.style_dim + cfg.size * cfg.size * 3 + (ACTIVATION_COPIES * largest if activations else 0)
    )
    return 4 * batch * per_image


def check_batch_fits(cfg: StyleGAN2Config, batch_size: int, n_rows: int) -> None:
    """UserError when one batch of `min(batch_size, n_rows)` renders cannot fit: its codes and images in
    host memory, and the network's working memory where it runs (host memory on the CPU backend, each
    accelerator's memory for its share of the batch otherwise)."""
    from e4e_jax.runtime import memory

    n_dev = jax.local_device_count()
    rows = batch_rows(batch_size, n_rows, n_dev)
    what = f"--batch-size {batch_size} ({rows} images of {cfg.size}x{cfg.size} rendered at once)"
    fix = "pass a smaller --batch-size"
    stats = jax.local_devices()[0].memory_stats() or {}
    on_host = "bytes_limit" not in stats  # the CPU backend reports no device memory
    memory.require_room(synthesis_bytes(cfg, rows, activations=on_host), what, fix)
    if not on_host:
        room = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
        memory.require_room(synthesis_bytes(cfg, rows // n_dev), what, fix, available=room)


def make_synthesis_fn(
    cfg: StyleGAN2Config,
    *,
    modulation: str = "auto",
    dtype: str = "float32",
    noise_mode: str = "const",
    truncation: float = 1.0,
    precision: Any = None,
    upsample: str = "auto",
    mesh: Optional[jax.sharding.Mesh] = None,
):
    """f(variables, ws (B, n_latent, D), rng) -> images (B, size, size, 3) float32, jitted.

    With a `mesh`, each device renders its slice of the batch (B must divide evenly); random noise
    then differs per device (the key is folded with the device index).
    """
    gen = Generator(
        cfg,
        modulation=resolve_modulation(modulation),
        dtype=compute_dtype(dtype),
        precision=precision,
        upsample=resolve_upsample(upsample),
    )

    def synth(variables, ws, rng):
        if mesh is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(sharding.DATA_AXIS))
        return gen.apply(
            variables, ws, input_is_latent=True, truncation=truncation, noise_mode=noise_mode, rngs={"noise": rng}
        )

    if mesh is None:
        return jax.jit(synth)
    return sharding.per_device(
        synth, mesh, (sharding.P(), sharding.P(sharding.DATA_AXIS), sharding.P()), sharding.P(sharding.DATA_AXIS)
    )


def iter_synthesize(
    cfg: StyleGAN2Config,
    variables: dict,
    latents: np.ndarray,
    *,
    batch_size: int = 8,
    seed: int = 0,
    mesh: Optional[jax.sharding.Mesh] = None,
    **synth_kw,
) -> Iterator[np.ndarray]:
    """Yield float32 image batches (b, size, size, 3) for W+ `latents` (N, n_latent, D).

    Every batch is padded to one size (a multiple of the device count) so one compilation
    serves the whole run, and sharded over `mesh` (default: all local devices).
    """
    mesh = mesh or sharding.data_mesh(jax.local_devices())
    bs = batch_rows(batch_size, latents.shape[0], mesh.size)
    synth = make_synthesis_fn(cfg, mesh=mesh, **synth_kw)
    variables = sharding.replicate(variables, mesh)
    rng = jax.random.key(seed)
    for start in range(0, latents.shape[0], bs):
        chunk = latents[start : start + bs]
        ws = sharding.shard_batch(sharding.pad_batch(chunk, bs), mesh)
        rng, sub = jax.random.split(rng)
        yield np.asarray(synth(variables, ws, sub))[: chunk.shape[0]]
