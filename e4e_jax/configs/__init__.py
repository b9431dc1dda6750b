"""Training configs (ml_collections), in flax's examples/imagenet layout: `default.py` holds every field with
the official values; each domain's file imports it and overrides what differs.

They live inside the package so that an installed e4e-jax (no repository) still has them: `e4e-jax train
--config ffhq` and `e4e-jax quickstart` (the `tiny` config) find them here; `configs/` in the repository
points at this folder, so `--config configs/ffhq.py` works from a checkout.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import ml_collections

NAMES = ("default", "ffhq", "ffhq_w", "ffhq_restyle_e4e", "ffhq_restyle_psp", "cars", "horse", "church", "cats",
         "tiny", "tiny_restyle")


def path(name: str) -> Path:
    """The file of the config called `name` (one of NAMES)."""
    if name not in NAMES:
        raise KeyError(f"no config named {name!r}; configs: {', '.join(NAMES)}")
    return Path(__file__).with_name(f"{name}.py")


def get(name: str) -> ml_collections.ConfigDict:
    """The config called `name` (one of NAMES), freshly built."""
    path(name)
    return importlib.import_module(f"{__name__}.{name}").get_config()
