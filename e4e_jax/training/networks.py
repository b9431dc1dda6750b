"""Build the networks, frozen inputs and step hyper-parameters of a run from its config.

Frozen networks come from bundles (docs/architecture.md, "Model bundles"): the generator ('stylegan2',
or the generator of an 'e4e' bundle), LPIPS ('lpips'), ArcFace ('arcface') or MoCo ('moco'). The toy
configuration builds a fixed-seed random generator (and optionally a random LPIPS) instead. A ReStyle run
(config_rules.is_restyle) also freezes the average image, its first iteration's reconstruction.

The encoder starts from its random init, or (official inits) an ArcFace IR-SE50 backbone
(`backbone_from_arcface`), an e4e / pSp bundle's encoder (`encoder.init_bundle`; for a ReStyle run its
backbone and coarse style blocks, `encoder_from_e4e`) or a 'restyle' bundle's encoder. A ReStyle encoder
reads 6 channels: a 3-channel donor's input convolution fills channels 0-2 and the others are drawn
from N(0, 1), as the official `__get_encoder_checkpoint` does with torch.randn.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax import losses as losses_lib
from e4e_jax.choices import compute_dtype
from e4e_jax.data import train_input
from e4e_jax.inference.render import resolve_upsample
from e4e_jax.models import latent_avg
from e4e_jax.models.encoder import style_level
from e4e_jax.models.encoder_types import EncoderConfig
from e4e_jax.models.latent_discriminator import LatentCodesDiscriminator
from e4e_jax.models.restyle_encoders import RESTYLE_INPUT_NC
from e4e_jax.models.stylegan2 import Generator, StyleGAN2Config
from e4e_jax.training import config_rules
from e4e_jax.training.step import Networks, StepConfig, render

log = logging.getLogger(__name__)

IMAGE_CHANNELS = 3
# The extra input channels of a widened input convolution: N(0, 1) weights (official torch.randn, unseeded).
WIDENED_INPUT_SEED = 0


def _e4e_encoder(n_styles: int, mode: str, dtype, **kwargs):
    return EncoderConfig(mode=mode, n_styles=n_styles, **kwargs).build(dtype=dtype)


def encoder_config(config, n_styles: int) -> EncoderConfig:
    """The EncoderConfig of a run's 'e4e' encoder (config.encoder.mode and .kwargs, config.data.image_size):
    what its exported bundle stores."""
    return EncoderConfig(
        mode=config.encoder.mode,
        n_styles=n_styles,
        input_size=tuple(config.data.image_size),
        input_nc=input_channels(config),
        **dict(config.encoder.kwargs),
    )


def input_channels(config) -> int:
    """Channels of the encoder's input: the image (3), and for ReStyle its reconstruction beside it (6)."""
    return RESTYLE_INPUT_NC if config_rules.is_restyle(config) else IMAGE_CHANNELS


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
    input_nc: int = IMAGE_CHANNELS  # channels of the encoder's input (ReStyle: 6)

    def generator_source(self) -> train_input.GeneratorSource:
        """The frozen generator as the synthetic data source sees it (data/ does not know a Run)."""
        return train_input.GeneratorSource(
            generator=self.nets.generator,
            variables=self.frozen["generator"],
            latent_avg=self.frozen["latent_avg"],
            z_dim=self.gen_cfg.mapping_in_dim,
            output_size=self.step_cfg.output_size,
            crop_rows=self.step_cfg.crop_rows,
        )


def _bundle_error(key: str, kind: str, why: str) -> ValueError:
    return ValueError(
        f"config.{key}: {why}. Convert the official checkpoint first "
        f"(python -m tools.convert_weights {kind} SRC --out DIR) and pass --config.{key}=DIR"
    )


def frozen_generator(config) -> tuple[StyleGAN2Config, dict]:
    """(config, variables) of the training run's frozen generator: `generator.random_init` or the
    `generator.bundle` (`render.generator_of_bundle`)."""
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
    from e4e_jax.inference import render

    return render.generator_of_bundle(config.generator.bundle)


def _load_bundle(path: str, kind: str, key: str) -> dict:
    from e4e_jax.storage import bundle

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


def _initial_encoder_variables(config, n_styles: int, encoder) -> dict | None:
    """The encoder variables of `config.encoder.init_bundle` (None: random init), fitted to this run's
    encoder: an 'e4e' bundle's encoder as it is (e4e / pSp / W runs) or its backbone and coarse style blocks
    (ReStyle runs, `encoder_from_e4e`); a 'restyle' bundle's encoder (ReStyle runs only)."""
    path = config.encoder.init_bundle
    if not path:
        return None
    from e4e_jax.storage import bundle, e4e_bundle, restyle_bundle

    restyle = config_rules.is_restyle(config)
    if restyle and bundle.read_config(path).get("kind") == restyle_bundle.KIND:
        arch, variables, _ = restyle_bundle.load(path)
    else:
        arch, variables, _ = e4e_bundle.load(path)  # a 'restyle' bundle for an e4e run: refused by name
    have, have_mode = arch.encoder.n_styles, arch.encoder.mode
    if have != n_styles:
        raise ValueError(
            f"config.encoder.init_bundle {path}: encoder has {have} styles, the generator needs {n_styles}"
        )
    if restyle and not arch.encoder.iterative:
        return encoder_from_e4e(_fresh_encoder_variables(config, encoder), variables["encoder"], path)
    # e4e and psp share one parameter tree, so do the two ReStyle IR modes; the W encoder's differs (no FPN,
    # one linear head), as do the ReStyle ResNet-34 modes'.
    if _tree_family(have_mode) != _tree_family(config.encoder.mode):
        raise ValueError(
            f"config.encoder.init_bundle {path}: its encoder has mode {have_mode!r}, config.encoder.mode is "
            f"{config.encoder.mode!r}, whose weights differ"
        )
    return variables["encoder"]


def _tree_family(mode: str) -> str:
    """Encoder modes whose parameter trees are the same (one init can start the other)."""
    return {"psp": "e4e", "restyle_psp": "restyle_e4e", "restyle_psp_resnet": "restyle_e4e_resnet"}.get(mode, mode)


def _fresh_encoder_variables(config, encoder) -> dict:
    """The encoder's random init (numpy), as the train state's seeds it."""
    h, w = config.data.image_size
    x = jnp.zeros((1, h, w, input_channels(config)), jnp.float32)
    init = jax.jit(lambda k: encoder.init(k, x, None, train=False))
    return jax.tree.map(np.asarray, init(jax.random.split(jax.random.key(int(config.seed)), 3)[0]))


def _leaves(tree) -> dict[str, Any]:
    return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _fitted(want, got, source: str, what: str):
    """`got`'s arrays in the structure of `want` (same leaf paths and shapes), except that a 4-D kernel with
    fewer input channels (axis 2, HWIO) fills the first ones and the rest are N(0, 1): the official
    widening of an RGB input convolution to ReStyle's 6 channels."""
    have, need = _leaves(got), _leaves(want)
    if set(have) != set(need):
        diff = sorted(set(have) ^ set(need))
        raise ValueError(
            f"{source}: its {what} does not match the encoder's ({len(diff)} names differ, e.g. {diff[0]})"
        )
    key = jax.random.key(WIDENED_INPUT_SEED)
    out = {}
    for name, w in need.items():
        g = np.asarray(have[name])
        if g.shape != w.shape:
            widen = g.ndim == 4 and g.shape[:2] + g.shape[3:] == w.shape[:2] + w.shape[3:] and g.shape[2] < w.shape[2]
            if not widen:
                raise ValueError(f"{source}: {what}{name} has shape {g.shape}, the encoder's {w.shape}")
            extra = jax.random.normal(key, (*w.shape[:2], w.shape[2] - g.shape[2], w.shape[3]), jnp.float32)
            g = np.concatenate([g, np.asarray(extra, g.dtype)], axis=2)
        out[name] = g
    return jax.tree_util.tree_unflatten(jax.tree.structure(want), [out[n] for n in need])


def _with_backbone(encoder_variables: dict, donor: dict, source: str) -> dict:
    """`encoder_variables` ({'params', 'batch_stats'}) with the donor's 'backbone' weights and statistics."""
    params = dict(encoder_variables["params"])
    stats = dict(encoder_variables.get("batch_stats", {}))
    if "backbone" not in donor["params"]:
        raise ValueError(f"{source}: it has no 'backbone' for the encoder's")
    params["backbone"] = _fitted(params["backbone"], donor["params"]["backbone"], source, "backbone")
    if "backbone" in donor.get("batch_stats", {}) and "backbone" in stats:
        stats["backbone"] = _fitted(stats["backbone"], donor["batch_stats"]["backbone"], source, "backbone statistics")
    return {"params": params, "batch_stats": stats}


def encoder_from_e4e(fresh: dict, e4e_encoder: dict, source: str) -> dict:
    """A ReStyle encoder's start from an e4e / pSp encoder: its backbone (input convolution widened to 6
    channels) and the style blocks that read the same map in both (e4e's coarse ones, on the backbone's
    last map, models.encoder.style_level 0); the other style blocks keep `fresh`'s random init."""
    out = _with_backbone(fresh, e4e_encoder, source)
    params = dict(out["params"])
    for name in params:
        if name.startswith("styles_") and style_level(int(name.split("_")[1])) == 0 and name in e4e_encoder["params"]:
            params[name] = _fitted(params[name], e4e_encoder["params"][name], source, name)
    return {**out, "params": params}


def build(config) -> Run:
    dtype = compute_dtype(config.compute_dtype)
    gen_cfg, gen_vars = frozen_generator(config)
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
    step_cfg = StepConfig.from_config(config, n_styles, lambdas, config_rules.is_restyle(config))
    avg = latent_avg.of_generator(gen_cfg, gen_vars, n_styles) if config.start_from_latent_avg else None
    frozen = {"generator": gen_vars, "latent_avg": avg, "losses": loss_params}
    if step_cfg.iterative:
        frozen["average_image"] = average_image(generator, gen_vars, avg, step_cfg)
    init_vars = _initial_encoder_variables(config, n_styles, encoder)
    enc_cfg = encoder_config(config, n_styles) if config.encoder.arch == "e4e" else None
    nets = Networks(encoder=encoder, generator=generator, discriminator=discriminator, losses=fns)
    return Run(nets, step_cfg, frozen, gen_cfg, enc_cfg, init_vars, input_channels(config))


def average_image(generator, gen_vars, latent_avg, step_cfg: StepConfig) -> np.ndarray:
    """ReStyle's first reconstruction, (1, h, w, 3) float32: G(latent_avg) with the stored noise, in the frame
    the losses see (official coach: net(latent_avg, input_code=True, randomize_noise=False), face_pool, cars
    rows 32:224; equal to restyle.average_image for the official frames)."""
    cfg = dataclasses.replace(step_cfg, train_noise="const")
    fn = jax.jit(lambda v, w: render(generator, v, w[None], cfg, jax.random.key(0)).astype(jnp.float32))
    return np.asarray(fn(gen_vars, jnp.asarray(latent_avg, jnp.float32)))


def backbone_from_arcface(encoder_variables: dict, arcface_variables: dict, source: str) -> dict:
    """Official init: the encoder's IR-SE50 backbone takes the ArcFace IR-SE50 weights (input_layer, body)
    and BatchNorm statistics; the FPN and style blocks keep their random init. A ReStyle encoder's input
    convolution is widened (module docstring)."""
    return _with_backbone(encoder_variables, arcface_variables, source)
