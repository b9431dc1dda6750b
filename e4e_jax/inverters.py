"""How a bundle inverts images, decided in one place by its kind: `e4e-jax invert` and the editor (studio)
both take their kernel here, so the studio's latent of a photo is `invert --batch-size 1`'s.

    arch = inverters.read_architecture(path)            # config.json only: E4EArchitecture (or its subclass
                                                        # RestyleArchitecture); BundleError for other kinds
    k = inverters.resolve_iterations(arch, n, save)     # the iteration count a run uses (None: one pass)
    model = inverters.load(path, dtype=..., modulation=...)
    kernel = inverters.kernel(model, mesh, images="uint8", iterations=k, save_iterations=save)
    kernel.fn(kernel.variables, x)                      # x (B, h, w, 3) uint8 or [-1, 1] floats

Kinds:
  'e4e'      one encoder pass (`inversion.make_invert_fn`); --iterations / --save-iterations are refused.
  'restyle'  ReStyle's iterations from the average image, all in one compiled function
             (`restyle.make_restyle_fn`, the bundle's iteration count unless one is given); the latents are
             the last iteration's, or every iteration's with `save_iterations`.

The kernel returns latents batch first, as `inversion.make_invert_fn` does (ReStyle's own functions keep
the iterations first): (B, n_latent, 512) float32, or (B, iterations, n_latent, 512) with
`save_iterations`; then the reconstructions as `images` asks (the latents alone for 'none').
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from e4e_jax import bundle, e4e_bundle, inversion, restyle, restyle_bundle
from e4e_jax.errors import UserError

KINDS = (e4e_bundle.KIND, restyle_bundle.KIND)  # the bundle kinds that invert images


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A jitted `fn(variables, x)` (module docstring) and the host `variables` it takes (place them on the
    mesh: `sharding.replicate`). ReStyle's include its precomputed average image."""

    fn: Callable
    variables: dict


def kind_of(path: str | os.PathLike) -> str:
    """The kind of the bundle at `path`, one of KINDS; BundleError (a UserError) naming it otherwise."""
    kind = bundle.read_config(path)["kind"]
    if kind not in KINDS:
        raise bundle.BundleError(
            f"{path} holds a {kind!r} bundle, but a {e4e_bundle.KIND!r} bundle (or a {restyle_bundle.KIND!r} one) "
            "is needed here; convert an encoder checkpoint: python -m tools.convert_weights e4e|restyle ..."
        )
    return kind


def read_architecture(path: str | os.PathLike) -> e4e_bundle.E4EArchitecture:
    """The architecture of an inverting bundle from its config.json (the weights are not read)."""
    if kind_of(path) == restyle_bundle.KIND:
        return restyle_bundle.read_architecture(path)
    return e4e_bundle.read_architecture(path)


def resolve_iterations(
    arch: e4e_bundle.E4EArchitecture, iterations: Optional[int] = None, save_iterations: bool = False
) -> Optional[int]:
    """The iteration count a run of `arch` uses: for a ReStyle architecture `iterations` (None: its
    default, official 5); None for a one-pass encoder, which refuses both options (UserError)."""
    if isinstance(arch, restyle_bundle.RestyleArchitecture):
        n = arch.iterations if iterations is None else iterations
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UserError(f"--iterations must be a whole number >= 1, got {n!r}")
        return n
    given = [
        name for name, on in (("--iterations", iterations is not None), ("--save-iterations", save_iterations)) if on
    ]
    if given:
        raise UserError(
            f"{' and '.join(given)} apply to ReStyle bundles ({restyle_bundle.KIND!r}); this model is an "
            f"{e4e_bundle.KIND!r} bundle, which inverts in one encoder pass: drop {' and '.join(given)}"
        )
    return None


def load(path: str | os.PathLike, **options: Any) -> inversion.E4EModel:
    """The model of an inverting bundle, by its kind (`restyle.load_restyle` gives a RestyleModel); options
    as `inversion.load_e4e` (dtype, modulation, ...)."""
    if kind_of(path) == restyle_bundle.KIND:
        return restyle.load_restyle(str(path), **options)
    return inversion.load_e4e(str(path), **options)


def kernel(
    model: inversion.E4EModel,
    mesh: Optional[jax.sharding.Mesh] = None,
    *,
    images: str = "float",
    out_hw: Optional[tuple[int, int]] = None,
    iterations: Optional[int] = None,
    save_iterations: bool = False,
) -> Kernel:
    """The inversion of `model` (from `load`) as one jitted function (module docstring). images / out_hw /
    mesh: as `inversion.make_invert_fn`; iterations (None: the bundle's) and save_iterations: ReStyle only."""
    if not isinstance(model, restyle.RestyleModel):
        if iterations is not None or save_iterations:
            raise ValueError("iterations / save_iterations apply to a ReStyle model only")
        return Kernel(inversion.make_invert_fn(model, mesh, images=images, out_hw=out_hw), model.variables)
    run = restyle.make_restyle_fn(model, mesh, n_iters=iterations, images=images, out_hw=out_hw)

    def invert(variables, x):
        latents, out = run(variables, x)  # latents (iterations, B, n, 512)
        rows = jnp.swapaxes(latents, 0, 1) if save_iterations else latents[-1]
        return rows if images == "none" else (rows, out)

    return Kernel(jax.jit(invert), restyle.with_average_image(model, model.variables))
