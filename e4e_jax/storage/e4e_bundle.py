"""The 'e4e' bundle: encoder + generator + latent_avg, written by the converter and the trainer and read
by inversion, editing and training, through one schema (`E4EArchitecture`) and one `save` / `load` pair.

    config.json architecture = {'encoder': EncoderConfig.to_dict(), 'generator': StyleGAN2Config.to_dict(),
                                'opts': {...official training options...}, 'dataset_type'?, 'domain'?}
    variables = {'encoder': {'params', 'batch_stats'}, 'generator': <stylegan2 variables>,
                 'latent_avg': (n_styles, 512)}

Bundles of every earlier version load (EncoderConfig.from_dict reads the older encoder dicts). The
'restyle' bundle (restyle_bundle.py) extends this schema; an 'e4e' bundle holds a single-pass encoder only.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional

from e4e_jax.domains import domain_of
from e4e_jax.models.encoder_types import ENCODER_TYPES, EncoderConfig
from e4e_jax.models.stylegan2 import StyleGAN2Config
from e4e_jax.storage import bundle

KIND = "e4e"


@dataclasses.dataclass(frozen=True)
class E4EArchitecture:
    """What rebuilds the modules of an e4e bundle (JSON-able via `to_dict`).

    opts: the official training options kept for provenance (JSON values only).
    dataset_type: official --dataset_type, if known; domain: its `domains.domain_of` (None: unknown).
    """

    encoder: EncoderConfig
    generator: StyleGAN2Config
    opts: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dataset_type: Optional[str] = None
    domain: Optional[str] = None

    KIND: ClassVar[str] = KIND
    ENCODER_TYPES: ClassVar[Mapping[str, str]] = ENCODER_TYPES  # the encoders this kind admits (class -> mode)

    def __post_init__(self):
        if self.encoder.mode not in self.ENCODER_TYPES.values():
            raise ValueError(
                f"the encoder of a {self.KIND!r} bundle is one of {sorted(self.ENCODER_TYPES)}, got "
                f"{self.encoder.encoder_type} (mode {self.encoder.mode!r})"
            )

    @classmethod
    def create(
        cls,
        encoder: EncoderConfig,
        generator: StyleGAN2Config,
        dataset_type: Optional[str] = None,
        opts: Optional[Mapping[str, Any]] = None,
    ) -> "E4EArchitecture":
        """The architecture of a new bundle: the domain follows from `dataset_type`."""
        if encoder.n_styles != generator.n_latent:
            raise ValueError(
                f"the encoder has {encoder.n_styles} styles but the generator (size "
                f"{generator.size}) takes {generator.n_latent} latents"
            )
        return cls(encoder, generator, dict(opts or {}), dataset_type, domain_of(dataset_type))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "encoder": self.encoder.to_dict(),
            "generator": self.generator.to_dict(),
            "opts": dict(self.opts),
        }
        if self.dataset_type is not None:
            d["dataset_type"] = self.dataset_type
        if self.domain is not None:
            d["domain"] = self.domain
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "E4EArchitecture":
        return cls(
            EncoderConfig.from_dict(d["encoder"], cls.ENCODER_TYPES),
            StyleGAN2Config.from_dict(d["generator"]),
            dict(d.get("opts") or {}),
            d.get("dataset_type"),
            d.get("domain"),
        )


def save(
    path: str | os.PathLike,
    architecture: E4EArchitecture,
    variables: Mapping[str, Any],
    *,
    sources: Optional[list[dict[str, str]]] = None,
    extra: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False,
) -> Path:
    """Write an e4e bundle atomically (bundle.save: shapes and finite values checked first)."""
    return bundle.save(path, KIND, architecture.to_dict(), variables, sources=sources, extra=extra, overwrite=overwrite)


def read_architecture(path: str | os.PathLike) -> E4EArchitecture:
    """The architecture of an e4e bundle from its config.json alone (the weights are not read)."""
    return E4EArchitecture.from_dict(bundle.read_config(path, KIND)["architecture"])


def load(path: str | os.PathLike) -> tuple[E4EArchitecture, dict[str, Any], dict[str, Any]]:
    """(architecture, variables, the whole config.json) of an e4e bundle; BundleError for another kind
    or a damaged bundle."""
    config, variables = bundle.load(path, KIND)
    return E4EArchitecture.from_dict(config["architecture"]), variables, config
