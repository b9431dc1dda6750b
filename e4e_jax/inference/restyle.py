"""ReStyle inference (Alaluf et al. 2021): a 'restyle' bundle refines its latents over a few iterations.

Official `utils/inference_utils.py` (get_average_image, run_on_batch) with pSp.forward / e4e.forward:

    y_0      = the average image: G(latent_avg) with the stored noise (randomize_noise=False), pooled
               to 256x256 (face_pool; cars: then rows 32:224)
    codes_t  = E(concat[x, y_t] on channels) + (latent_avg if t = 0 else codes_{t-1})      t = 0 .. n-1
    y_{t+1}  = G(codes_t) pooled to the encoder's frame (256x256; cars: AdaptiveAvgPool2d((192, 256)) of
               rows 64:448 of 512, the same average as pooling to 256 and keeping rows 32:224)

and returns the codes of every iteration and the last reconstruction. `encoder_frame` generalises the
frame to the encoder's input size (official: always 256 wide), so toy models work the same way.

All iterations run inside one compiled function, in one of two forms (`loop`), equal in value:
  'scan'   – the first iteration, then lax.scan over iterations 1..n-1 (one traced body: compile time
             does not grow with n); the last reconstruction is rendered only when images are asked for;
  'unroll' – a Python loop unrolled at trace time (XLA sees the whole chain; compiles n bodies).
The average image does not depend on the images: `with_average_image` computes it once and keeps it in
the variables, which `restyle` then reuses (without it, every call renders it again).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
from jax import lax

from e4e_jax import domains
from e4e_jax.inference.inversion import (
    IMAGE_MODES,
    E4EModel,
    build_model,
    crop_output,
    normalize_input,
    resize_output,
    to_uint8,
)
from e4e_jax.models import resampling
from e4e_jax.models.encoder import add_latent_avg
from e4e_jax.runtime import sharding
from e4e_jax.storage import restyle_bundle
from e4e_jax.storage.restyle_bundle import DEFAULT_ITERATIONS

LOOPS = ("scan", "unroll")
DEFAULT_LOOP = "scan"  # compile time independent of the iteration count; the GPU decides (BUILD_NOTES)
AVERAGE_IMAGE = "average_image"  # key of the precomputed average image in the variables (`with_average_image`)


@dataclasses.dataclass(frozen=True)
class RestyleModel(E4EModel):
    """A 'restyle' bundle ready to run (E4EModel's fields) and its default iteration count."""

    iterations: int = DEFAULT_ITERATIONS


def load_restyle(path: str, **options: Any) -> RestyleModel:
    """Build the encoder and generator of a 'restyle' bundle (BundleError for other kinds); options as
    `inversion.load_e4e` (modulation, dtype, precision, upsample, fuse_style_blocks)."""
    arch, variables, _ = restyle_bundle.load(path)
    base = build_model(arch, variables, str(path), **options)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(E4EModel)}
    return RestyleModel(**fields, iterations=arch.iterations)


def encoder_frame(model: E4EModel, images: jax.Array) -> jax.Array:
    """Generator output (B, S, S, 3) -> the encoder's input frame (B, h, w, 3): face_pool to w x w (official
    256) then the domain's frame `domains.output_rows` of it (cars: 32:224 of 256, so 192x256)."""
    _, w = model.input_hw
    rows = domains.output_rows(model.domain, w)
    return resampling.pool_and_crop(images, (w, w), rows)


def _render(model: E4EModel, variables: dict, codes: jax.Array) -> jax.Array:
    """G(codes) with the stored noise (official randomize_noise=False): (B, S, S, 3) float32."""
    return model.generator.apply(variables["generator"], codes, input_is_latent=True, noise_mode="const")


def average_image(model: E4EModel, variables: dict) -> jax.Array:
    """The first iteration's reconstruction: G(latent_avg) in the encoder's frame, (1, h, w, 3) float32."""
    codes = add_latent_avg(jnp.zeros((1, *variables["latent_avg"].shape), jnp.float32), variables["latent_avg"])
    return encoder_frame(model, _render(model, variables, codes))


def with_average_image(model: E4EModel, variables: dict) -> dict:
    """`variables` with the average image computed (jitted, once) under AVERAGE_IMAGE, for `restyle`."""
    return {**variables, AVERAGE_IMAGE: jax.jit(lambda v: average_image(model, v))(variables)}


def encoder_input(x: jax.Array, y_hat: jax.Array) -> jax.Array:
    """The ReStyle encoder's input (B, h, w, 6): the image, then the current reconstruction (official
    torch.cat([x, y_hat], dim=1)), in x's dtype. Training (training/step.py) builds its input here too."""
    return jnp.concatenate([x, y_hat.astype(x.dtype)], axis=-1)


def refine(model: E4EModel, variables: dict, x: jax.Array, y_hat: jax.Array, previous: jax.Array) -> jax.Array:
    """One iteration's codes: E(concat[x, y_hat]) + previous. x, y_hat: (B, h, w, 3); previous (B, n, 512)
    (latent_avg at the first iteration, then the last codes). Returns (B, n_latent, 512) float32."""
    codes = model.encoder.apply(variables["encoder"], encoder_input(x, y_hat))
    return codes.astype(jnp.float32) + previous


def _check(n_iters: int, loop: str, images: str) -> None:
    if isinstance(n_iters, bool) or not isinstance(n_iters, int) or n_iters < 1:
        raise ValueError(f"n_iters must be a positive int, got {n_iters!r}")
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")
    if images not in IMAGE_MODES:
        raise ValueError(f"images must be one of {IMAGE_MODES}, got {images!r}")


def restyle(
    model: E4EModel,
    variables: dict,
    x: jax.Array,
    n_iters: Optional[int] = None,
    *,
    loop: str = DEFAULT_LOOP,
    images: str = "float",
    out_hw: Optional[tuple[int, int]] = None,
):
    """ReStyle inversion of a batch, a pure function (jit it, or use `make_restyle_fn`).

    model: from `load_restyle` (or any E4EModel whose encoder is a ReStyle encoder).
    variables: model.variables, optionally `with_average_image`'s (else the average image is rendered here).
    x: (B, h, w, 3) images in [-1, 1] (or uint8 pixels), h x w = model.input_hw.
    n_iters: iterations (None: the bundle's default, `RestyleModel.iterations`; official 5).
    loop: 'scan' or 'unroll' (module docstring); images / out_hw: as `inversion.make_invert_fn`.
    Returns (latents (n_iters, B, n_latent, 512) float32: the codes after each iteration, the last one
    being the result; reconstructions of the last codes as `images` asks, or None for 'none').
    """
    n_iters = getattr(model, "iterations", DEFAULT_ITERATIONS) if n_iters is None else n_iters
    _check(n_iters, loop, images)
    x = normalize_input(x)
    avg = variables.get(AVERAGE_IMAGE)
    avg = average_image(model, variables) if avg is None else avg
    b = x.shape[0]
    first = refine(
        model,
        variables,
        x,
        jnp.broadcast_to(avg, (b, *avg.shape[1:])),
        add_latent_avg(jnp.zeros((b, *variables["latent_avg"].shape), jnp.float32), variables["latent_avg"]),
    )

    def iteration(previous, _):
        codes = refine(model, variables, x, encoder_frame(model, _render(model, variables, previous)), previous)
        return codes, codes

    # The first iteration stays outside the loop: the carry then depends on x from the start (under
    # shard_map it must vary along the batch axis as the body's output does).
    if loop == "scan":
        last, history = lax.scan(iteration, first, None, length=n_iters - 1)  # (n_iters - 1, B, n, 512)
        latents = jnp.concatenate([first[None], history])
    else:
        rows = [first]
        for _ in range(n_iters - 1):
            rows.append(iteration(rows[-1], None)[0])
        last, latents = rows[-1], jnp.stack(rows)
    if images == "none":
        return latents, None
    out = resize_output(crop_output(model, _render(model, variables, last)), out_hw)
    return latents, to_uint8(out) if images == "uint8" else out


def make_restyle_fn(
    model: E4EModel,
    mesh: Optional[jax.sharding.Mesh] = None,
    *,
    n_iters: Optional[int] = None,
    loop: str = DEFAULT_LOOP,
    images: str = "float",
    out_hw: Optional[tuple[int, int]] = None,
):
    """f(variables, x) -> `restyle`'s (latents, images), jitted (images None when images='none').

    With a `mesh`, each device refines its slice of the batch: x and the images are split along their
    batch axis (P('data')), the latents along axis 1 (P(None, 'data')); variables are replicated.
    """
    n_iters = getattr(model, "iterations", DEFAULT_ITERATIONS) if n_iters is None else n_iters
    _check(n_iters, loop, images)

    def run(variables, x):
        return restyle(model, variables, x, n_iters, loop=loop, images=images, out_hw=out_hw)

    if mesh is None:
        return jax.jit(run)
    data = sharding.P(sharding.DATA_AXIS)
    out_specs = (sharding.P(None, sharding.DATA_AXIS), None if images == "none" else data)
    return sharding.per_device(run, mesh, (sharding.P(), data), out_specs)
