"""One e4e training step (official training/coach.py, one iteration of `Coach.train`), as a pure function.

Order, as the official coach runs it:
  1. progressive stage from the step (schedule.py);
  2. discriminator update (λ_adv > 0): real w = mapping(z ~ N(0, I)), fake w = the encoder's codes
     (+ latent_avg), one layer per item among the discriminated ones, both through their LatentCodesPool;
     Adam step on softplus losses (Eq. 2); on steps with step % d_reg_every == 0 a second Adam step on the
     lazy R1 loss γ/2·E||∇_w D(w_real)||²·d_reg_every, with D as updated by the first;
  3. encoder update with the freshly updated D: the generator renders the codes (noise re-sampled, as
     official `randomize_noise=True`), the output is average-pooled to 256×256 (cars: rows 32:224), and
     L = L_dist + λ_edit (λ_d-reg L_d-reg + λ_adv L_adv) (Eq. 5-7) drives one optimizer step.

The encoder runs once per step (`jax.vjp`): its codes feed the discriminator step through stop_gradient
and the encoder loss through the VJP. The official code runs it twice in train mode on the same batch,
which updates BatchNorm's running statistics twice; we apply that second (identical) EMA update in
closed form: s2 = s1 + m·(s1 − s0), m the BatchNorm momentum.

Data parallelism: the step is written for the global batch; under `jit` with the batch sharded P('data')
and the state replicated P(), XLA partitions it and inserts the gradient all-reduce. BatchNorm therefore
uses the statistics of the *global* batch — the same numbers as one device (or one official GPU) seeing
that batch, independent of the device count (pinned by tests/test_training_step.py).

ReStyle (StepConfig.n_iters_per_batch set; official training/coach_restyle_{e4e,psp}.py `perform_train_iteration_on_batch`):
  - the discriminator step (ReStyle-e4e) runs its own train-mode encoder pass on (x, average image) and,
    as the official `sample_real_and_fake_latents` of ReStyle does, takes the encoder's raw output as the
    fake codes (no latent_avg added; e4e's coach adds it);
  - then n_iters_per_batch refinement iterations: y_0 = the average image (frozen['average_image']), codes_t =
    E(concat[x, y_t]) + codes_{t-1} (latent_avg for t = 0), y_{t+1} = render(codes_t); each iteration's
    loss is `objective` of its own codes and rendering, and its gradient is taken with the loop state
    (y_t, codes_{t-1}) held constant (lax.stop_gradient): the official coach detaches both and calls
    loss.backward() per iteration, so the encoder's gradient is the sum of the iterations' gradients,
    applied in one optimizer step. Each iteration is differentiated inside a lax.scan body, so only one
    iteration's activations are alive at a time (as the official per-iteration backward);
  - BatchNorm's running statistics move once per encoder pass (the D pass, then every iteration), as
    n_iters_per_batch + 1 train-mode forwards do officially; the reported losses are the last iteration's (official
    loss_dict), with every iteration's total as loss_iter_{t}.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from e4e_jax import losses as obj
from e4e_jax.inference import restyle
from e4e_jax.models import resampling
from e4e_jax.training import optim, pool, schedule
from e4e_jax.training.state import TrainState

# A pluggable distortion term: (frozen params of its network or None, y_hat, y) -> scalar.
LossFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static hyper-parameters of the step (official option names in comments)."""

    n_styles: int
    progressive_start: Optional[int] = None  # --progressive_start
    progressive_step_every: int = 2000  # --progressive_step_every
    lambdas: Mapping[str, float] = dataclasses.field(default_factory=lambda: {"l2": 1.0})  # distortion λs
    delta_norm_lambda: float = 2e-4  # --delta_norm_lambda (λ_d-reg)
    w_discriminator_lambda: float = 0.0  # --w_discriminator_lambda (λ_adv)
    edit_lambda: float = 1.0  # paper Eq. 7 (official: implicit 1)
    use_delta_reg: bool = True  # only applies with progressive training (official)
    use_w_pool: bool = True  # --use_w_pool
    r1: float = 10.0  # --r1 (R1 γ)
    d_reg_every: int = 16  # --d_reg_every
    start_from_latent_avg: bool = True  # --start_from_latent_avg
    output_size: tuple[int, int] = resampling.FACE_POOL_SIZE  # pSp.face_pool
    crop_rows: Optional[tuple[int, int]] = None  # cars: (32, 224)
    train_noise: str = "random"  # generator noise_mode; official trains with randomize_noise=True
    bn_momentum: float = 0.9  # flax momentum of the encoder's BatchNorm (torch 0.1)
    n_iters_per_batch: Optional[int] = None  # ReStyle: refinement iterations per batch; None: e4e

    @classmethod
    def from_config(cls, config, n_styles: int, lambdas: Mapping[str, float], iterative: bool) -> "StepConfig":
        """The step's fields from a training config (same names; `n_styles` from the generator, `lambdas`
        from networks.build_losses, `iterative`: config_rules.is_restyle(config))."""
        return cls(
            n_styles=n_styles,
            progressive_start=int(config.progressive_start) if config.use_progressive else None,
            progressive_step_every=int(config.progressive_step_every),
            lambdas=lambdas,
            delta_norm_lambda=float(config.delta_norm_lambda),
            w_discriminator_lambda=float(config.w_discriminator_lambda),
            edit_lambda=float(config.edit_lambda),
            use_delta_reg=bool(config.use_delta_reg),
            use_w_pool=bool(config.use_w_pool),
            r1=float(config.r1),
            d_reg_every=int(config.d_reg_every),
            start_from_latent_avg=bool(config.start_from_latent_avg),
            output_size=tuple(config.output_size),
            crop_rows=tuple(config.crop_rows) if config.crop_rows else None,
            train_noise=config.train_noise,
            n_iters_per_batch=int(config.n_iters_per_batch) if iterative else None,
        )

    @property
    def iterative(self) -> bool:
        """A ReStyle run (module docstring): the encoder refines its codes over n_iters_per_batch passes."""
        return self.n_iters_per_batch is not None

    @property
    def progressive(self) -> bool:
        return self.progressive_start is not None

    @property
    def use_discriminator(self) -> bool:
        return self.w_discriminator_lambda > 0


@dataclasses.dataclass(frozen=True)
class Networks:
    """The modules of a run. `encoder(x, progressive_stage, train)` -> (B, n_styles, D) codes;
    `losses` maps a distortion term name (a key of StepConfig.lambdas) to its LossFn."""

    encoder: nn.Module
    generator: nn.Module
    discriminator: nn.Module
    losses: Mapping[str, LossFn]


def render(generator: nn.Module, gen_vars, codes: jax.Array, cfg: StepConfig, key: jax.Array) -> jax.Array:
    """Codes (B, n, D) -> the image the losses compare: pooled to cfg.output_size and cropped (cars)."""
    images = generator.apply(gen_vars, codes, input_is_latent=True, noise_mode=cfg.train_noise, rngs={"noise": key})
    return resampling.pool_and_crop(images, cfg.output_size, cfg.crop_rows)


def encoder_codes(nets: Networks, params, batch_stats, x, stage, latent_avg, train: bool):
    """(codes (B, n, D) with latent_avg added if given, new batch_stats)."""
    variables = {"params": params, "batch_stats": batch_stats}
    if train:
        codes, upd = nets.encoder.apply(variables, x, stage, train=True, mutable=["batch_stats"])
        new_stats = upd["batch_stats"]
    else:
        codes, new_stats = nets.encoder.apply(variables, x, stage, train=False), batch_stats
    if latent_avg is not None:
        codes = codes + latent_avg[None].astype(codes.dtype)
    return codes.astype(jnp.float32), new_stats


def distortion_terms(nets: Networks, loss_params: Mapping[str, Any], cfg: StepConfig, y_hat, y) -> dict:
    """{name: scalar} for every distortion term with a non-zero λ (Eq. 5's L_2, L_lpips, L_sim)."""
    terms = {}
    for name, lam in cfg.lambdas.items():
        if lam > 0:
            if name not in nets.losses:
                raise KeyError(f"loss term {name!r} has λ={lam} but no loss function; known: {sorted(nets.losses)}")
            terms[name] = nets.losses[name](loss_params.get(name), y_hat, y).astype(jnp.float32)
    return terms


def objective(nets: Networks, cfg: StepConfig, frozen: Mapping[str, Any], disc_params, codes, y_hat, y, active):
    """The training objective (paper Eq. 5-7, official `calc_loss`), the one every step and validation use.

    codes: (B, n, D) the full W+ codes (latent_avg / previous codes added); y_hat: their rendering as the
    losses see it (`render`); y: the target; active: (n,) bool layers of the progressive stage, or None.
    Returns (loss, {'loss', 'loss_dist', 'loss_edit', 'loss_<term>', 'total_delta_loss'?,
    'encoder_discriminator_loss'?}), float32 scalars.
    """
    terms = distortion_terms(nets, frozen.get("losses", {}), cfg, y_hat, y)
    dist = obj.distortion_loss(terms, cfg.lambdas)
    aux = {f"loss_{k}": v for k, v in terms.items()}
    d_reg = adv = None
    if cfg.progressive and cfg.use_delta_reg:
        d_reg, _ = obj.delta_reg_loss(codes, active)
        aux["total_delta_loss"] = d_reg
    if cfg.use_discriminator:
        adv = obj.encoder_adv_loss(nets.discriminator.apply({"params": disc_params}, codes), active)
        aux["encoder_discriminator_loss"] = adv
    edit = obj.editability_loss(d_reg, adv, cfg.delta_norm_lambda, cfg.w_discriminator_lambda)
    loss = obj.total_loss(dist, edit, cfg.edit_lambda)
    aux.update(loss=loss, loss_dist=dist, loss_edit=edit)
    return loss, aux


def _objective_of_codes(nets: Networks, cfg: StepConfig, frozen, disc_params, y, active, key):
    """codes -> (objective, (its metrics, the rendering y_hat)): what the encoder's gradient differentiates."""

    def f(codes):
        y_hat = render(nets.generator, frozen["generator"], codes, cfg, key)
        loss, aux = objective(nets, cfg, frozen, disc_params, codes, y_hat, y, active)
        return loss, (aux, y_hat)

    return f


def _step_keys(state: TrainState):
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    names = ("noise", "z", "layer", "real_pool", "fake_pool")
    return dict(zip(names, jax.random.split(key, len(names))))


def discriminator_update(
    nets: Networks, cfg: StepConfig, disc_tx, state: TrainState, gen_vars, fake_codes, n_sel, keys
) -> tuple[Any, Any, pool.PoolState, pool.PoolState, dict]:
    """Official `train_discriminator`. fake_codes: (B, n, D), no gradient. Returns new
    (disc_params, disc_opt_state, real_pool, fake_pool, metrics)."""
    b, _, d = fake_codes.shape
    z = jax.random.normal(keys["z"], (b, d), jnp.float32)
    real_w = nets.generator.apply(gen_vars, z, method="map")
    if cfg.use_w_pool:
        fake_w = pool.select_layers(fake_codes, n_sel, keys["layer"])
        real_w, real_pool = pool.query(state.real_pool, real_w, keys["real_pool"])
        fake_w, fake_pool = pool.query(state.fake_pool, fake_w, keys["fake_pool"])
    else:
        fake_w, real_pool, fake_pool = fake_codes[:, 0], state.real_pool, state.fake_pool

    d_apply = lambda p, w: nets.discriminator.apply({"params": p}, w)  # noqa: E731

    def d_loss_fn(p):
        return obj.discriminator_adv_loss(d_apply(p, real_w), d_apply(p, fake_w))

    (d_loss, parts), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.disc_params)
    updates, opt_state = disc_tx.update(grads, state.disc_opt_state, state.disc_params)
    params = optax.apply_updates(state.disc_params, updates)

    def with_r1(args):
        p, o = args
        r1, g = jax.value_and_grad(lambda q: obj.r1_loss(lambda w: d_apply(q, w), real_w, cfg.r1, cfg.d_reg_every))(p)
        u, o = disc_tx.update(g, o, p)
        return optax.apply_updates(p, u), o, r1

    def without_r1(args):
        p, o = args
        return p, o, jnp.zeros((), jnp.float32)

    regularize = state.step % cfg.d_reg_every == 0
    params, opt_state, r1 = jax.lax.cond(regularize, with_r1, without_r1, (params, opt_state))
    metrics = {
        "discriminator_loss": d_loss,
        **parts,
        "discriminator_r1_loss": r1,
        "discriminator_r1_applied": regularize.astype(jnp.float32),
    }
    return params, opt_state, real_pool, fake_pool, metrics


def _stage(cfg: StepConfig, step):
    """(progressive stage, active layers or None) at `step`."""
    stage = schedule.progressive_stage(step, cfg.n_styles, cfg.progressive_start, cfg.progressive_step_every)
    return stage, (schedule.active_layers(stage, cfg.n_styles) if cfg.progressive else None)


def _single_pass_update(nets, cfg, disc_tx, state, frozen, params, x, stage, active, keys):
    """e4e: one encoder pass, its codes feed the D step (stop_gradient) and the objective (VJP).
    Returns (encoder grads, new batch_stats, (disc_params, disc_opt_state, real_pool, fake_pool), metrics)."""
    latent_avg = frozen.get("latent_avg") if cfg.start_from_latent_avg else None
    codes, enc_vjp, new_stats = jax.vjp(
        lambda p: encoder_codes(nets, p, state.encoder_batch_stats, x, stage, latent_avg, train=True),
        params,
        has_aux=True,
    )
    disc = (state.disc_params, state.disc_opt_state, state.real_pool, state.fake_pool)
    metrics = {}
    if cfg.use_discriminator:
        n_sel = stage + 1 if cfg.progressive else cfg.n_styles
        *disc, d_metrics = discriminator_update(
            nets, cfg, disc_tx, state, frozen["generator"], jax.lax.stop_gradient(codes), n_sel, keys
        )
        metrics.update(d_metrics)
        # The official D step ran the encoder in train mode too: a second identical BatchNorm EMA update.
        m = cfg.bn_momentum
        new_stats = jax.tree.map(lambda s1, s0: s1 + m * (s1 - s0), new_stats, state.encoder_batch_stats)
    loss_fn = _objective_of_codes(nets, cfg, frozen, disc[0], x, active, keys["noise"])
    (_, (aux, _)), g_codes = jax.value_and_grad(loss_fn, has_aux=True)(codes)
    (grads,) = enc_vjp(g_codes)
    return grads, new_stats, tuple(disc), {**metrics, **aux}


def _first_input(cfg: StepConfig, frozen, batch_size: int):
    """ReStyle's loop state before iteration 0: (the average image (B, h, w, 3), latent_avg (B, n, D))."""
    avg = frozen["average_image"].astype(jnp.float32)
    la = jnp.asarray(frozen["latent_avg"], jnp.float32)
    return jnp.broadcast_to(avg, (batch_size, *avg.shape[1:])), jnp.broadcast_to(la, (batch_size, *la.shape))


def _per_iteration(aux: dict) -> dict:
    """Stacked (n_iters_per_batch,) metrics of the scan -> the last iteration's (official loss_dict) + loss_iter_{t}."""
    out = {k: v[-1] for k, v in aux.items()}
    out.update({f"loss_iter_{t}": aux["loss"][t] for t in range(aux["loss"].shape[0])})
    return out


def _iterative_update(nets, cfg, disc_tx, state, frozen, params, x, stage, active, keys):
    """ReStyle (module docstring): the D step on its own encoder pass, then n_iters_per_batch iterations, each
    differentiated with its loop state held constant. Returns as `_single_pass_update`."""
    y_first, codes_first = _first_input(cfg, frozen, x.shape[0])
    stats = state.encoder_batch_stats
    disc = (state.disc_params, state.disc_opt_state, state.real_pool, state.fake_pool)
    metrics = {}
    if cfg.use_discriminator:
        raw, stats = encoder_codes(nets, params, stats, restyle.encoder_input(x, y_first), stage, None, train=True)
        n_sel = stage + 1 if cfg.progressive else cfg.n_styles
        *disc, d_metrics = discriminator_update(
            nets, cfg, disc_tx, state, frozen["generator"], jax.lax.stop_gradient(raw), n_sel, keys
        )
        metrics.update(d_metrics)

    def iteration(carry, t):
        y_prev, previous, stats, grads = carry
        y_prev, previous = jax.lax.stop_gradient(y_prev), jax.lax.stop_gradient(previous)  # official .detach()
        enc_in = restyle.encoder_input(x, y_prev)
        raw, enc_vjp, stats = jax.vjp(
            lambda p: encoder_codes(nets, p, stats, enc_in, stage, None, train=True), params, has_aux=True
        )
        codes = raw + previous  # official e4e/pSp.forward: codes + latent (latent_avg at t = 0)
        loss_fn = _objective_of_codes(nets, cfg, frozen, disc[0], x, active, jax.random.fold_in(keys["noise"], t))
        (_, (aux, y_hat)), g_codes = jax.value_and_grad(loss_fn, has_aux=True)(codes)
        (g,) = enc_vjp(g_codes)  # d codes / d raw is the identity: previous is constant
        grads = jax.tree.map(jnp.add, grads, g)
        return (y_hat.astype(jnp.float32), codes, stats, grads), aux

    zeros = jax.tree.map(jnp.zeros_like, params)
    carry = (y_first, codes_first, stats, zeros)
    (_, _, stats, grads), aux = jax.lax.scan(iteration, carry, jnp.arange(cfg.n_iters_per_batch))
    return grads, stats, tuple(disc), {**metrics, **_per_iteration(aux)}


def train_step(
    nets: Networks,
    cfg: StepConfig,
    encoder_tx,
    disc_tx,
    state: TrainState,
    frozen: Mapping[str, Any],
    batch: Mapping[str, jax.Array],
) -> tuple[TrainState, dict]:
    """One update of D_W and the encoder.

    frozen: {'generator': generator variables, 'latent_avg': (n, D) or None, 'losses': {name: params},
    'average_image': (1, h, w, 3), ReStyle only}.
    batch: {'image': (B, H, W, 3) float32 in [-1, 1]} (source = target, as official ImagesDataset).
    Returns (new state, metrics {name: float32 scalar}).
    """
    keys = _step_keys(state)
    x = batch["image"]
    stage, active = _stage(cfg, state.step)
    params = optim.fast_params(state.encoder_params)
    update = _iterative_update if cfg.iterative else _single_pass_update
    grads, new_stats, disc, metrics = update(nets, cfg, disc_tx, state, frozen, params, x, stage, active, keys)
    disc_params, disc_opt, real_pool, fake_pool = disc
    updates, enc_opt = encoder_tx.update(grads, state.encoder_opt_state, state.encoder_params)
    enc_params = optax.apply_updates(state.encoder_params, updates)
    metrics["progressive_stage"] = jnp.asarray(stage, jnp.float32)
    metrics["grad_norm"] = optax.global_norm(grads)
    # Counted on device so the loop never checkpoints a state whose update overflowed.
    metrics["nonfinite_params"] = sum(jnp.sum(~jnp.isfinite(p)) for p in jax.tree.leaves((enc_params, disc_params)))

    new_state = state.replace(
        step=state.step + 1,
        encoder_params=enc_params,
        encoder_batch_stats=new_stats,
        encoder_opt_state=enc_opt,
        disc_params=disc_params,
        disc_opt_state=disc_opt,
        real_pool=real_pool,
        fake_pool=fake_pool,
    )
    return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


def eval_step(
    nets: Networks, cfg: StepConfig, state: TrainState, frozen: Mapping[str, Any], batch: Mapping[str, jax.Array]
) -> tuple[dict, jax.Array]:
    """Official `validate`: encoder in eval mode (running statistics), the same objective (no updates);
    ReStyle: every iteration, the last one's losses (official cur_loss_dict) and loss_iter_{t}.
    Returns (metrics, the last y_hat) for logging image grids."""
    keys = _step_keys(state)
    x = batch["image"]
    stage, active = _stage(cfg, state.step)
    params, stats = optim.fast_params(state.encoder_params), state.encoder_batch_stats
    if not cfg.iterative:
        latent_avg = frozen.get("latent_avg") if cfg.start_from_latent_avg else None
        codes, _ = encoder_codes(nets, params, stats, x, stage, latent_avg, train=False)
        y_hat = render(nets.generator, frozen["generator"], codes, cfg, keys["noise"])
        _, metrics = objective(nets, cfg, frozen, state.disc_params, codes, y_hat, x, active)
        return {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}, y_hat

    def iteration(carry, t):
        y_prev, previous = carry
        raw, _ = encoder_codes(nets, params, stats, restyle.encoder_input(x, y_prev), stage, None, train=False)
        codes = raw + previous
        y_hat = render(nets.generator, frozen["generator"], codes, cfg, jax.random.fold_in(keys["noise"], t))
        _, aux = objective(nets, cfg, frozen, state.disc_params, codes, y_hat, x, active)
        return (y_hat.astype(jnp.float32), codes), aux

    (y_hat, _), aux = jax.lax.scan(iteration, _first_input(cfg, frozen, x.shape[0]), jnp.arange(cfg.n_iters_per_batch))
    return {k: jnp.asarray(v, jnp.float32) for k, v in _per_iteration(aux).items()}, y_hat
