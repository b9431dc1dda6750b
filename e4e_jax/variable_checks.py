"""Checks of a model's variables before they are written or used: every array has the shape its
architecture needs, and every float holds a finite value.

The converters run both at conversion time and `bundle.save` / `bundle.load` run them on every bundle,
so a damaged or mismatched tensor is reported by its key, expected and found shape instead of surfacing
as a flax traceback at the first forward pass (where `synthesize` would blame the latents).
"""

from __future__ import annotations

import functools
import json
from typing import Any, Iterator, Mapping

import numpy as np


def leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(slash-joined key, leaf) for every leaf of a nested mapping, in key order."""
    if isinstance(tree, Mapping):
        for k in sorted(tree, key=str):
            yield from leaves(tree[k], f"{prefix}{k}/")
    else:
        yield prefix.rstrip("/"), tree


def non_finite(variables: Any) -> list[tuple[str, int]]:
    """(key, count) of every floating-point array holding NaN or ±Inf."""
    bad = []
    for key, leaf in leaves(variables):
        a = np.asarray(leaf)
        # bfloat16 (ml_dtypes; tuned generators' deltas) is not a numpy floating subtype, but has isfinite.
        floating = np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating)
        if floating or a.dtype.name == "bfloat16":
            n = int(a.size - np.count_nonzero(np.isfinite(a)))
            if n:
                bad.append((key, n))
    return bad


def require_finite(array: Any, what: str, fix: str) -> None:
    """Raise UserError('WHAT holds N NaN/Inf values ...; FIX') unless every value of `array` is finite."""
    from e4e_jax.errors import UserError

    a = np.asarray(array)
    n = int(a.size - np.count_nonzero(np.isfinite(a)))
    if n:
        first = np.unravel_index(int(np.argmin(np.isfinite(a).reshape(-1))), a.shape)
        raise UserError(
            f"{what} holds {n} NaN or Inf value{'s' if n > 1 else ''} (the first at index "
            f"{tuple(int(i) for i in first)}); {fix}"
        )


def describe_non_finite(bad: list[tuple[str, int]], limit: int = 3) -> str:
    """'a/b (12 values), c (1 value)' for the first `limit` entries of `non_finite`."""
    shown = ", ".join(f"{k} ({n} value{'s' if n > 1 else ''})" for k, n in bad[:limit])
    return shown + (f" and {len(bad) - limit} more arrays" if len(bad) > limit else "")


def shape_problems(expected: Mapping[str, Any], variables: Mapping[str, Any]) -> list[str]:
    """'KEY has shape FOUND, expected EXPECTED' / 'KEY is missing' for every leaf of `expected`.

    Arrays the architecture does not use are not reported (the converters refuse unknown source keys
    themselves; a bundle may carry extras).
    """
    found = dict(leaves(variables))
    problems = []
    for key, shape in leaves(expected):
        if key not in found:
            problems.append(f"{key} is missing")
        elif tuple(np.shape(found[key])) != tuple(shape):
            problems.append(f"{key} has shape {tuple(np.shape(found[key]))}, expected {tuple(shape)}")
    return problems


def expected_shapes(kind: str, architecture: Mapping[str, Any]) -> dict:
    """The variable tree (leaves: shape tuples) the model of a bundle `kind` with this architecture has.

    Computed abstractly (jax.eval_shape: nothing is allocated); cached per architecture.
    Raises KeyError / TypeError / ValueError if the architecture cannot build the model.
    """
    return _expected_cached(kind, json.dumps(architecture, sort_keys=True, default=str))


@functools.lru_cache(maxsize=32)
def _expected_cached(kind: str, architecture_json: str) -> dict:
    import jax

    arch = json.loads(architecture_json)
    if kind not in _BUILDERS:
        raise ValueError(f"no shape reference for bundle kind {kind!r}")
    tree = jax.eval_shape(_BUILDERS[kind](arch))
    return jax.tree.map(lambda s: tuple(s.shape), _plain(tree))


def _plain(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {str(k): _plain(v) for k, v in tree.items()}
    return tree


def _stylegan2(arch: Mapping[str, Any]):
    import jax
    import jax.numpy as jnp

    from e4e_jax.models.stylegan2 import Generator, StyleGAN2Config

    cfg = StyleGAN2Config.from_dict(arch)
    return lambda: Generator(cfg).init(jax.random.key(0), jnp.zeros((1, cfg.mapping_in_dim)))


def _e4e(arch: Mapping[str, Any], restyle: bool = False):
    """The tree of an 'e4e' bundle, or (restyle) of a 'restyle' one: the same, with a ReStyle encoder."""
    import jax
    import jax.numpy as jnp

    from e4e_jax.models.encoder import STYLE_DIM
    from e4e_jax.models.encoder_types import ENCODER_TYPES, RESTYLE_ENCODER_TYPES, EncoderConfig

    enc = EncoderConfig.from_dict(arch["encoder"], RESTYLE_ENCODER_TYPES if restyle else ENCODER_TYPES)
    encoder = enc.build()  # the module load_e4e builds (every encoder type)
    generator = _stylegan2(arch["generator"])

    def init():
        return {
            "encoder": encoder.init(jax.random.key(0), jnp.zeros((1, *enc.input_size, enc.input_nc))),
            "generator": generator(),
            "latent_avg": jax.ShapeDtypeStruct((enc.n_styles, STYLE_DIM), jnp.float32),
        }

    return init


def _lpips(arch: Mapping[str, Any]):
    import jax
    import jax.numpy as jnp

    from e4e_jax.models.lpips import LPIPS

    x = jnp.zeros((1, 64, 64, 3))  # parameter shapes do not depend on the image size
    return lambda: LPIPS(net=arch["net"]).init(jax.random.key(0), x, x)


def _arcface(arch: Mapping[str, Any]):
    import jax
    import jax.numpy as jnp

    from e4e_jax.models.arcface import ArcFace

    s = int(arch["input_size"])
    model = ArcFace(num_layers=arch["num_layers"], mode=arch["mode"], input_size=s)
    return lambda: model.init(jax.random.key(0), jnp.zeros((1, s, s, 3)))


def _moco(arch: Mapping[str, Any]):
    import jax
    import jax.numpy as jnp

    from e4e_jax.models.resnet import ResNet

    model = ResNet(
        stage_sizes=tuple(arch["stage_sizes"]), head=arch.get("head"), head_dims=tuple(arch.get("head_dims") or ())
    )
    x = jnp.zeros((1, 64, 64, 3))
    return lambda: model.init(jax.random.key(0), x, with_head=model.head is not None)


def _inception(arch: Mapping[str, Any]):
    import jax
    import jax.numpy as jnp

    from e4e_jax.models.inception import FIDInceptionV3

    model = FIDInceptionV3(num_classes=int(arch["num_classes"]))
    return lambda: model.init(jax.random.key(0), jnp.zeros((1, 299, 299, 3)), return_logits=True)


def _stylegan2_delta(arch: Mapping[str, Any]):
    """A tuned generator's delta (e4e_jax/pti_bundle.py): the synthesis parameters of its generator."""
    generator = _stylegan2(arch["generator"])
    return lambda: {"synthesis": generator()["params"]["synthesis"]}


_BUILDERS = {
    "stylegan2": _stylegan2,
    "stylegan2_delta": _stylegan2_delta,
    "e4e": _e4e,
    "restyle": functools.partial(_e4e, restyle=True),
    "lpips": _lpips,
    "arcface": _arcface,
    "moco": _moco,
    "inception": _inception,
}
