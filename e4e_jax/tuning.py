"""Pivotal tuning (PTI, Roich et al. 2021) of a StyleGAN2 around e4e pivots, many photos at once.

Each photo gets its own copy of the generator's synthesis parameters (a leading photo axis) and its own
Adam state; one jitted step `vmap`s the official objective over the photos, so B photos tuned together
give each what tuning it alone gives. The mapping network, w_avg and the noise buffers stay the base
generator's (the official objective only back-propagates through `G.synthesis`).

Facts of the official code (danielroich/PTI; `configs/hyperparameters.py`, `training/coaches/`,
`criteria/localitly_regulizer.py`), all in `PTIConfig`:

- per step: render the pivot with `G.synthesis(w, noise_mode='const', force_fp32=True)` at the
  generator's full resolution; loss = 1 * MSE(image, photo) + 1 * LPIPS_alex(image, photo), the
  photo in [-1, 1] at that resolution; if that LPIPS <= 0.06 the photo stops *before* the update;
  else one torch.optim.Adam step (lr 3e-4, betas (0.9, 0.999), eps 1e-8); at most 350 steps.
- locality regulariser (off by default; on: every step, 1 sample): z ~ N(0, I) -> w = mapping(z)
  truncated with psi 0.5 towards w_avg, moved to distance alpha = 30 from the pivot along (w - pivot)
  (the Frobenius norm over all of W+); both the tuned and the base generator render it with
  noise_mode='none'; loss += mean over samples of 0.1 * MSE + 0.1 * LPIPS.

Per-photo randomness (the regulariser's z) is keyed by (seed, photo id, step), never by the photo's
place in a batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from e4e_jax import sharding
from e4e_jax.models.lpips import LPIPS
from e4e_jax.models.stylegan2 import Generator

# torch.optim.Adam's defaults, which the official coach keeps (only lr is set).
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8
# Steps run inside one compiled call between looks at the host (progress, "all photos stopped").
STEPS_PER_CALL = 10


@dataclasses.dataclass(frozen=True)
class PTIConfig:
    """PTI hyper-parameters; the defaults are official PTI's `configs/hyperparameters.py` (name there)."""

    learning_rate: float = 3e-4  # pti_learning_rate
    max_steps: int = 350  # max_pti_steps
    lpips_threshold: float = 0.06  # LPIPS_value_threshold: stop once LPIPS <= it
    l2_lambda: float = 1.0  # pt_l2_lambda
    lpips_lambda: float = 1.0  # pt_lpips_lambda
    locality: bool = False  # use_locality_regularization (interval 1: every step)
    locality_alpha: float = 30.0  # regulizer_alpha: distance of the regulariser's w from the pivot
    locality_l2_lambda: float = 0.1  # regulizer_l2_lambda
    locality_lpips_lambda: float = 0.1  # regulizer_lpips_lambda
    locality_samples: int = 1  # latent_ball_num_of_samples
    locality_truncation: float = 0.5  # Space_Regulizer: mapping(z, truncation_psi=0.5)


class TuneState(NamedTuple):
    """The tuning of B photos (every leaf has a leading photo axis B).

    synthesis: each photo's synthesis parameters; opt_state: its Adam state; done (B,) bool: stopped
    (LPIPS under the threshold, the step budget spent, or a padding row); steps (B,) int32: updates
    applied.
    """

    synthesis: Any
    opt_state: Any
    done: jax.Array
    steps: jax.Array


def with_synthesis(variables: dict, synthesis: Any) -> dict:
    """Generator variables whose synthesis parameters are `synthesis` (everything else shared)."""
    return {**variables, "params": {**variables["params"], "synthesis": synthesis}}


def frame(images: jax.Array, crop_rows: Optional[tuple[int, int]]) -> jax.Array:
    """The frame PTI compares: the full generator output, or rows top:bottom (the cars frame)."""
    return images if crop_rows is None else images[:, crop_rows[0] : crop_rows[1]]


def photo_distances(lpips: LPIPS, lpips_vars, images: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(MSE, LPIPS) of each image against its target: (B, H, W, 3) [-1, 1] each -> two (B,) arrays.

    MSE is torch's MSELoss (the mean over pixels and channels), LPIPS the v0.1 distance."""
    mse = jnp.mean(jnp.square(images - targets), axis=(1, 2, 3))
    return mse, lpips.apply(lpips_vars, images, targets)


def locality_latents(gen: Generator, variables: dict, pivot: jax.Array, key: jax.Array, cfg: PTIConfig) -> jax.Array:
    """The regulariser's codes for one pivot (n_latent, D): (S, n_latent, D), S = cfg.locality_samples."""
    gcfg = gen.config
    z = jax.random.normal(key, (cfg.locality_samples, gcfg.mapping_in_dim))
    w = gen.apply(variables, z, method=Generator.map)
    w_avg = variables["buffers"]["w_avg"]
    w = w_avg + cfg.locality_truncation * (w - w_avg)
    ws = jnp.broadcast_to(w[:, None], (w.shape[0], gcfg.n_latent, gcfg.style_dim))
    direction = ws - pivot[None]
    norm = jnp.sqrt(jnp.sum(jnp.square(direction), axis=(1, 2), keepdims=True))
    return pivot[None] + cfg.locality_alpha * direction / norm


def make_objective(gen: Generator, lpips: LPIPS, cfg: PTIConfig, crop_rows: Optional[tuple[int, int]] = None):
    """loss(synthesis, base_vars, lpips_vars, pivot (n, D), target (h, w, 3), key) -> (loss, (mse, lpips))
    of one photo: PTI's objective (module docstring), the locality term included when cfg.locality."""

    def render(variables, ws, noise_mode):
        return gen.apply(variables, ws, noise_mode, method=Generator.synthesize)

    def loss_fn(synthesis, base_vars, lpips_vars, pivot, target, key):
        tuned = with_synthesis(base_vars, synthesis)
        image = frame(render(tuned, pivot[None], "const"), crop_rows)
        mse, lp = photo_distances(lpips, lpips_vars, image, target[None])
        loss = cfg.l2_lambda * mse[0] + cfg.lpips_lambda * lp[0]
        if cfg.locality:
            ws = locality_latents(gen, base_vars, pivot, key, cfg)
            new = render(tuned, ws, "none")
            old = jax.lax.stop_gradient(render(base_vars, ws, "none"))
            r_mse, r_lp = photo_distances(lpips, lpips_vars, new, old)
            loss = loss + jnp.mean(cfg.locality_l2_lambda * r_mse + cfg.locality_lpips_lambda * r_lp)
        return loss, (mse[0], lp[0])

    return loss_fn


def optimizer(cfg: PTIConfig) -> optax.GradientTransformation:
    return optax.adam(cfg.learning_rate, b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS)


def init_state(cfg: PTIConfig, base_synthesis: Any, valid: jax.Array) -> TuneState:
    """Every photo starts from the base synthesis parameters with a fresh Adam state; rows where `valid`
    (B,) is False (padding) start stopped."""
    b = valid.shape[0]
    synthesis = jax.tree.map(lambda p: jnp.broadcast_to(p, (b, *p.shape)), base_synthesis)
    opt_state = jax.vmap(optimizer(cfg).init)(synthesis)
    return TuneState(synthesis, opt_state, ~valid, jnp.zeros((b,), jnp.int32))


def make_step(gen: Generator, lpips: LPIPS, cfg: PTIConfig, seed: int, crop_rows=None) -> Callable:
    """step(state, base_vars, lpips_vars, pivots (B, n, D), targets (B, h, w, 3), photo_ids (B,)) -> state:
    one PTI step of every photo that has not stopped (the official order: measure, stop if LPIPS is under
    the threshold, else update). A stopped photo's parameters and Adam state stay as they are."""
    loss_grad = jax.value_and_grad(make_objective(gen, lpips, cfg, crop_rows), has_aux=True)
    tx = optimizer(cfg)
    root = jax.random.key(seed)

    def photo_step(synthesis, opt_state, done, steps, base_vars, lpips_vars, pivot, target, photo_id):
        key = jax.random.fold_in(jax.random.fold_in(root, photo_id), steps)
        (_, (_, lp)), grads = loss_grad(synthesis, base_vars, lpips_vars, pivot, target, key)
        stop = done | (lp <= cfg.lpips_threshold) | (steps >= cfg.max_steps)
        updates, new_opt = tx.update(grads, opt_state, synthesis)
        new_synthesis = optax.apply_updates(synthesis, updates)
        keep = lambda new, old: jnp.where(stop, old, new)  # noqa: E731
        return (
            jax.tree.map(keep, new_synthesis, synthesis),
            jax.tree.map(keep, new_opt, opt_state),
            stop,
            steps + (~stop).astype(steps.dtype),
        )

    batched = jax.vmap(photo_step, in_axes=(0, 0, 0, 0, None, None, 0, 0, 0))

    def step(state, base_vars, lpips_vars, pivots, targets, photo_ids):
        return TuneState(*batched(*state, base_vars, lpips_vars, pivots, targets, photo_ids))

    return step


def make_runner(
    gen: Generator,
    lpips: LPIPS,
    cfg: PTIConfig,
    *,
    seed: int = 0,
    crop_rows: Optional[tuple[int, int]] = None,
    mesh: Optional[jax.sharding.Mesh] = None,
):
    """run(state, base_vars, lpips_vars, pivots, targets, photo_ids, n_steps) -> state, jitted (state
    donated): up to `n_steps` steps (`make_step`), fewer once every photo has stopped.

    With a `mesh`, the photos are split over its devices (each runs the steps of its own photos; no
    communication), so B must be a multiple of the device count.
    """
    step = make_step(gen, lpips, cfg, seed, crop_rows)

    def run(state, base_vars, lpips_vars, pivots, targets, photo_ids, n_steps):
        def cond(carry):
            i, s = carry
            return (i < n_steps) & ~jnp.all(s.done)

        def body(carry):
            i, s = carry
            return i + 1, step(s, base_vars, lpips_vars, pivots, targets, photo_ids)

        return jax.lax.while_loop(cond, body, (jnp.int32(0), state))[1]

    if mesh is None:
        return jax.jit(run, donate_argnums=0)
    data, repl = sharding.P(sharding.DATA_AXIS), sharding.P()
    mapped = jax.shard_map(run, mesh=mesh, in_specs=(data, repl, repl, data, data, data, repl), out_specs=data)
    return jax.jit(mapped, donate_argnums=0)


def tune(
    run: Callable,
    state: TuneState,
    base_vars: dict,
    lpips_vars: dict,
    pivots: jax.Array,
    targets: jax.Array,
    photo_ids: jax.Array,
    max_steps: int,
    on_steps: Optional[Callable[[int], None]] = None,
) -> tuple[TuneState, int]:
    """Run `run` (from `make_runner`) until every photo has stopped or `max_steps` steps are done, in
    calls of STEPS_PER_CALL steps; `on_steps(k)` after each call (a progress bar). Returns the state and
    the steps run (at most max_steps)."""
    done_steps = 0
    while done_steps < max_steps:
        k = min(STEPS_PER_CALL, max_steps - done_steps)
        state = run(state, base_vars, lpips_vars, pivots, targets, photo_ids, jnp.int32(k))
        done_steps += k
        if on_steps is not None:
            on_steps(k)
        if bool(jnp.all(state.done)):
            break
    return state, done_steps


# ------------------------------------------------------------------------- per-photo generators
def per_photo_renderer(
    gen: Generator, noise_mode: str = "const", truncation: float = 1.0, mesh: Optional[jax.sharding.Mesh] = None
):
    """render(base_vars, synthesis (B, ...), ws (B, M, n, D), rng) -> (B, M, H, W, 3) float32, jitted:
    photo b's M codes rendered with its own synthesis parameters (tuned generators; edits of tuned
    photos), as `Generator.__call__` with W+ input renders them (truncation towards the base w_avg;
    'random' noise drawn per photo from `rng`)."""

    def one(synthesis, base_vars, ws, rng):
        tuned = with_synthesis(base_vars, synthesis)
        kw = dict(input_is_latent=True, truncation=truncation, noise_mode=noise_mode, rngs={"noise": rng})
        return gen.apply(tuned, ws, **kw)

    def render(base_vars, synthesis, ws, rng):
        if mesh is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(sharding.DATA_AXIS))
        keys = jax.random.split(rng, ws.shape[0])
        return jax.vmap(one, in_axes=(0, None, 0, 0))(synthesis, base_vars, ws, keys)

    if mesh is None:
        return jax.jit(render)
    data, repl = sharding.P(sharding.DATA_AXIS), sharding.P()
    return jax.jit(jax.shard_map(render, mesh=mesh, in_specs=(repl, data, data, repl), out_specs=data))


def delta(tuned: Any, base: Any, dtype=jnp.bfloat16) -> Any:
    """tuned - base, stored in `dtype` (what a tuned generator is saved as)."""
    return jax.tree.map(lambda t, b: (t - b).astype(dtype), tuned, base)


def apply_delta(base: Any, delta_tree: Any) -> Any:
    """base + delta in the base's dtype: the tuned parameters a saved delta stands for. Leading axes of
    the delta (photos) broadcast against the base."""
    return jax.tree.map(lambda b, d: b + d.astype(b.dtype), base, delta_tree)
