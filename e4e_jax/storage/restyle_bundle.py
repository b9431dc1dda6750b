"""The 'restyle' bundle: a ReStyle encoder + generator + latent_avg, run iteratively (e4e_jax/inference/restyle.py).

The schema extends the 'e4e' one (`E4EArchitecture`) by the default number of refinement iterations:

    config.json kind 'restyle', architecture = {'encoder': EncoderConfig.to_dict() (a ReStyle mode, input_nc 6),
                                                'generator', 'opts', 'dataset_type'?, 'domain'?,
                                                'iterations': the default iteration count (official 5)}
    variables = {'encoder': {'params', 'batch_stats'}, 'generator': <stylegan2 variables>,
                 'latent_avg': (n_styles, 512)}

A kind of its own rather than an 'e4e' bundle with a new encoder: every reader of 'e4e' bundles (invert,
edit, evaluate, train's bundle init) runs one encoder pass on 3-channel images, and would fail on this
encoder; `bundle.load(path, 'e4e')` refuses a 'restyle' bundle by name instead, and readers that know the
iterations accept both kinds.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional

from e4e_jax.models.encoder_types import RESTYLE_ENCODER_TYPES, EncoderConfig
from e4e_jax.models.restyle_encoders import RESTYLE_INPUT_NC
from e4e_jax.models.stylegan2 import StyleGAN2Config
from e4e_jax.storage import bundle
from e4e_jax.storage.e4e_bundle import E4EArchitecture

KIND = "restyle"
DEFAULT_ITERATIONS = 5  # official --n_iters_per_batch (inference and training options)


@dataclasses.dataclass(frozen=True)
class RestyleArchitecture(E4EArchitecture):
    """What rebuilds a 'restyle' bundle: the fields of `E4EArchitecture` (the encoder one of
    RESTYLE_ENCODER_TYPES with RESTYLE_INPUT_NC input channels) and `iterations`, the default number of
    refinement steps of inference."""

    iterations: int = DEFAULT_ITERATIONS

    KIND: ClassVar[str] = KIND
    ENCODER_TYPES: ClassVar[Mapping[str, str]] = RESTYLE_ENCODER_TYPES

    def __post_init__(self):
        super().__post_init__()
        if self.encoder.input_nc != RESTYLE_INPUT_NC:
            raise ValueError(
                f"a ReStyle encoder reads the image and the current reconstruction ({RESTYLE_INPUT_NC} channels), "
                f"this one has input_nc={self.encoder.input_nc}"
            )
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {self.iterations!r}")

    @classmethod
    def create(
        cls,
        encoder: EncoderConfig,
        generator: StyleGAN2Config,
        dataset_type: Optional[str] = None,
        opts: Optional[Mapping[str, Any]] = None,
        iterations: int = DEFAULT_ITERATIONS,
    ) -> "RestyleArchitecture":
        """The architecture of a new bundle (the domain follows from `dataset_type`)."""
        return dataclasses.replace(super().create(encoder, generator, dataset_type, opts), iterations=iterations)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "iterations": self.iterations}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RestyleArchitecture":
        return dataclasses.replace(super().from_dict(d), iterations=d.get("iterations", DEFAULT_ITERATIONS))


def save(
    path: str | os.PathLike,
    architecture: RestyleArchitecture,
    variables: Mapping[str, Any],
    *,
    sources: Optional[list[dict[str, str]]] = None,
    extra: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False,
) -> Path:
    """Write a restyle bundle atomically (bundle.save: shapes and finite values checked first)."""
    return bundle.save(path, KIND, architecture.to_dict(), variables, sources=sources, extra=extra, overwrite=overwrite)


def _architecture(path, config: Mapping[str, Any]) -> RestyleArchitecture:
    try:
        return RestyleArchitecture.from_dict(config["architecture"])
    except (KeyError, TypeError, ValueError) as e:
        raise bundle.BundleError(f"{path}: config.json does not describe a ReStyle model ({e}); re-create the bundle")


def read_architecture(path: str | os.PathLike) -> RestyleArchitecture:
    """The architecture of a restyle bundle from its config.json alone (the weights are not read)."""
    return _architecture(path, bundle.read_config(path, KIND))


def load(path: str | os.PathLike) -> tuple[RestyleArchitecture, dict[str, Any], dict[str, Any]]:
    """(architecture, variables, the whole config.json) of a restyle bundle; BundleError for another kind
    or a damaged bundle."""
    config, variables = bundle.load(path, KIND)
    return _architecture(path, config), variables, config
