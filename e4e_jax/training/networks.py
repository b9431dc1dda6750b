"""Build the networks, frozen inputs and step hyper-parameters of a run from its config.

Frozen networks come from bundles (docs/architecture.md, "Model bundles"): the generator ('stylegan2',
or the generator of an 'e4e' bundle), LPIPS ('lpips'), ArcFace ('arcface') or MoCo ('moco'). The toy
configuration builds a fixed-seed random generator (and optionally a random LPIPS) instead.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax import latent_avg
from e4e_jax import losses as losses_lib
from e4e_jax.choices import compute_dtype
from e4e_jax.generate import resolve_upsample
from e4e_jax.models.encoder_types import EncoderConfig
from e4e_jax.models.latent_discriminator import LatentCodesDiscriminator
from e4e_jax.models.stylegan2 import Generator, StyleGAN2Config
from e4e_jax.training.step import Networks, StepConfig

log = logging.getLogger(__name__)


def _e4e_encoder(n_styles: int, mode: str, dtype, **kwargs):
    return EncoderConfig(mode=mode, n_styles=n_styles, **kwargs).build(dtype=dtype)


def encoder_config(config, n_styles: int) -> EncoderConfig:
    """The EncoderConfig of a run's 'e4e' encoder (config.encoder.mode and .kwargs, config.data.image_size):
    what its exported bundle stores."""
    return EncoderConfig(
        mode=config.encoder.mode,
        n_styles=n_styles,
        input_size=tuple(config.data.image_size),
        **dict(config.encoder.kwargs),
    )


# Encoder factories: (n_styles, mode, dtype, **config.encoder.kwargs) -> module with the e4e interface
# __call__(x, progressive_stage, train) -> (B, n_styles, D). Tests and toy setups may register more.
ENCODERS: dict[str, Callable[..., Any]] = {"e4e": _e4e_encoder}


@dataclasses.dataclass
class Run:
    """Everything static about a run: modules, frozen inputs, step hyper-parameters."""

    nets: Networks
    step_cfg: StepConfig
    frozen: dict  # {'generator', 'latent_avg', 'losses'}
    gen_cfg: StyleGAN2Config
    encoder_config: EncoderConfig | None  # of an encoder.arch 'e4e' run (its exported bundle); None otherwise
    init_encoder_variables: dict | None


def _bundle_error(key: str, kind: str, why: str) -> ValueError:
    return ValueError(
        f"config.{key}: {why}. Convert the official checkpoint first "
        f"(python -m tools.convert_weights {kind} SRC --out DIR) and pass --config.{key}=DIR"
    )


def load_generator(config) -> tuple[StyleGAN2Config, dict]:
    """(config, variables) of the frozen generator."""
    spec = config.generator.random_init
    if spec:
        spec = dict(spec)
        seed = int(spec.pop("seed", 0))
        cfg = StyleGAN2Config(**spec)
        gen = Generator(cfg)
        variables = jax.jit(lambda k: gen.init(k, jnp.zeros((1, cfg.mapping_in_dim))))(jax.random.key(seed))
        return cfg, jax.tree.map(np.asarray, variables)
    if not config.generator.bundle:
        raise _bundle_error("generator.bundle", "stylegan2", "no generator given")
    from e4e_jax import generate

    return generate.load_generator(config.generator.bundle)


def compute_latent_avg(gen_cfg: StyleGAN2Config, gen_vars, n_styles: int) -> np.ndarray:
    """(n_styles, D) latent_avg: the generator's stored w_avg if set, else the mean of mapped N(0, I) codes
    (official pSp: checkpoint latent_avg, else decoder.mean_latent over 10,000 samples; the converters'
    estimate, e4e_jax/latent_avg.py), repeated per layer."""
    w_avg = np.asarray(gen_vars.get("buffers", {}).get("w_avg", 0.0))
    if w_avg.ndim == 1 and np.any(w_avg != 0):
        mean = w_avg
    else:
        mean = latent_avg.mean_w(gen_cfg, gen_vars)
    return latent_avg.per_layer(mean, n_styles)


def _load_bundle(path: str, kind: str, key: str) -> dict:
    from e4e_jax import bundle

    if not path:
        raise _bundle_error(key, kind, "a loss uses this network but no bundle is given")
    return bundle.load(path, kind)[1]


def random_loss_network(kind: str, seed: int, lpips_type: str = "alex") -> dict:
    """Variables of a randomly initialised LPIPS / ArcFace / MoCo ResNet-50 (toy runs, benchmarks)."""
    key = jax.random.key(seed)
    if kind == "lpips":
        from e4e_jax.models.lpips import LPIPS

        x = jnp.zeros((1, 64, 64, 3))
        v = jax.jit(LPIPS(net=lpips_type).init)(key, x, x)
    elif kind == "arcface":
        from e4e_jax.models.arcface import ArcFace

        v = jax.jit(ArcFace().init)(key, jnp.zeros((1, 112, 112, 3)))
    elif kind == "moco":
        from e4e_jax.models.resnet import ResNet

        v = jax.jit(ResNet().init)(key, jnp.zeros((1, 224, 224, 3)))
    else:
        raise ValueError(f"no random stand-in for {kind!r}")
    log.warning("%s loss network has random weights (random_loss_networks): for toy runs and benchmarks only", kind)
    return jax.tree.map(np.asarray, v)


def build_losses(config, dtype) -> tuple[dict, dict, dict]:
    """(lambdas, {name: LossFn}, {name: frozen params}) of the distortion terms (Eq. 5). The loss networks'
    convolutions compute in `dtype` (the compute dtype); every LossFn returns a float32 scalar."""
    lambdas = {"l2": float(config.l2_lambda), "lpips": float(config.lpips_lambda)}
    fns: dict[str, Any] = {"l2": lambda p, a, b: losses_lib.l2_loss(a, b)}
    params: dict[str, Any] = {}
    if config.lpips_lambda > 0:
        fns["lpips"] = functools.partial(losses_lib.lpips_loss, net=config.lpips_type, dtype=dtype)
        if config.random_loss_networks:
            params["lpips"] = random_loss_network("lpips", config.seed + 1, config.lpips_type)
        else:
            params["lpips"] = _load_bundle(config.lpips_bundle, "lpips", "lpips_bundle")
    if config.id_lambda > 0:
        random = config.random_loss_networks
        if config.similarity == "id":
            fns["id"] = functools.partial(losses_lib.id_loss, dtype=dtype)
            params["id"] = (
                random_loss_network("arcface", config.seed + 2)
                if random
                else _load_bundle(config.id_bundle, "arcface", "id_bundle")
            )
        elif config.similarity == "moco":
            fns["moco"] = functools.partial(losses_lib.moco_loss, dtype=dtype)
            params["moco"] = (
                random_loss_network("moco", config.seed + 3)
                if random
                else _load_bundle(config.moco_bundle, "moco", "moco_bundle")
            )
        else:
            raise ValueError(f"config.similarity must be 'id' or 'moco', got {config.similarity!r}")
        lambdas[config.similarity] = float(config.id_lambda)
    return lambdas, fns, params


def _initial_encoder_variables(config, n_styles: int) -> dict | None:
    from e4e_jax import e4e_bundle

    if config.encoder.init_bundle:
        arch, variables, _ = e4e_bundle.load(config.encoder.init_bundle)
        have, have_mode = arch.encoder.n_styles, arch.encoder.mode
        if have != n_styles:
            raise ValueError(
                f"config.encoder.init_bundle {config.encoder.init_bundle}: encoder has {have} styles, "
                f"the generator needs {n_styles}"
            )
        # e4e and psp share one parameter tree; the W encoder's differs (no FPN, one linear head).
        if (have_mode == "w") != (config.encoder.mode == "w"):
            raise ValueError(
                f"config.encoder.init_bundle {config.encoder.init_bundle}: its encoder has mode "
                f"{have_mode!r}, config.encoder.mode is {config.encoder.mode!r}"
            )
        return variables["encoder"]
    return None


def check_w_mode(config) -> None:
    """encoder.mode 'w' (one w for every layer) has no deltas: progressive stages and L_d-reg must be off
    (official: the W encoder has no progressive stage to set). Raises ValueError otherwise."""
    if config.encoder.mode != "w":
        return
    on = [k for k in ("use_progressive", "use_delta_reg") if config[k]]
    if on:
        raise ValueError(
            f"encoder.mode='w' has no deltas: set {' '.join(f'--config.{k}=False' for k in on)} "
            f"(configs/ffhq_w.py does)"
        )


def build(config) -> Run:
    dtype = compute_dtype(config.compute_dtype)
    check_w_mode(config)
    gen_cfg, gen_vars = load_generator(config)
    n_styles = gen_cfg.n_latent
    generator = Generator(
        gen_cfg,
        modulation=config.generator.modulation,
        dtype=dtype,
        upsample=resolve_upsample(config.generator.get("upsample", "auto")),
    )
    kwargs = dict(config.encoder.kwargs)
    if config.encoder.arch not in ENCODERS:
        raise ValueError(f"config.encoder.arch {config.encoder.arch!r} unknown; one of {sorted(ENCODERS)}")
    encoder = ENCODERS[config.encoder.arch](n_styles, config.encoder.mode, dtype, **kwargs)
    # D_W stays float32 under bf16 compute: it is tiny, and R1 differentiates through it twice.
    discriminator = LatentCodesDiscriminator(style_dim=gen_cfg.style_dim)
    lambdas, fns, loss_params = build_losses(config, dtype)
    step_cfg = StepConfig(
        n_styles=n_styles,
        progressive_start=int(config.progressive_start) if config.use_progressive else None,
        progressive_every=int(config.progressive_step_every),
        lambdas=lambdas,
        lambda_d_reg=float(config.delta_norm_lambda),
        lambda_adv=float(config.w_discriminator_lambda),
        lambda_edit=float(config.edit_lambda),
        use_delta_reg=bool(config.use_delta_reg),
        use_w_pool=bool(config.use_w_pool),
        r1_gamma=float(config.r1),
        d_reg_every=int(config.d_reg_every),
        start_from_latent_avg=bool(config.start_from_latent_avg),
        output_size=tuple(config.output_size),
        crop_rows=tuple(config.crop_rows) if config.crop_rows else None,
        noise_mode=config.train_noise,
    )
    avg = compute_latent_avg(gen_cfg, gen_vars, n_styles) if config.start_from_latent_avg else None
    frozen = {"generator": gen_vars, "latent_avg": avg, "losses": loss_params}
    init_vars = _initial_encoder_variables(config, n_styles)
    enc_cfg = encoder_config(config, n_styles) if config.encoder.arch == "e4e" else None
    nets = Networks(encoder=encoder, generator=generator, discriminator=discriminator, losses=fns)
    return Run(nets, step_cfg, frozen, gen_cfg, enc_cfg, init_vars)


def backbone_from_arcface(encoder_variables: dict, arcface_variables: dict, source: str) -> dict:
    """Official init: the encoder's IR-SE50 backbone takes the ArcFace IR-SE50 weights (input_layer, body)
    and BatchNorm statistics; the FPN and style blocks keep their random init."""
    params = dict(encoder_variables["params"])
    stats = dict(encoder_variables.get("batch_stats", {}))
    want, got = params.get("backbone"), arcface_variables["params"].get("backbone")
    if got is None or jax.tree.structure(want) != jax.tree.structure(got):
        raise ValueError(f"{source}: its 'backbone' does not match the encoder's IR-SE backbone")
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        if a.shape != b.shape:
            raise ValueError(f"{source}: backbone shapes differ ({a.shape} vs {b.shape})")
    params["backbone"] = got
    if "backbone" in arcface_variables.get("batch_stats", {}):
        stats["backbone"] = arcface_variables["batch_stats"]["backbone"]
    return {"params": params, "batch_stats": stats}
