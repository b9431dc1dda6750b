"""A pivotal-tuned generator on disk: the 'stylegan2_delta' bundle, and the tuned generators of a
`e4e-jax tune` output folder.

PTI changes only the synthesis network (e4e_jax/tuning.py), so a tuned generator is saved as the
difference of its synthesis parameters from the base generator's, in bfloat16 (a quarter of a float32
generator), in the bundle format (e4e_jax/bundle.py)::

    config.json architecture = {'generator': StyleGAN2Config.to_dict(), 'base_synthesis_sha256': HEX,
                                'dtype': 'bfloat16'}
    variables = {'synthesis': delta tree (the generator's params['synthesis'] shapes)}

The tuned parameters are base + float32(delta) (`tuning.apply_delta`); `base_synthesis_sha256`
(`synthesis_fingerprint`) names the base they must be added to, so a delta is never applied to another
generator (an e4e bundle and a stylegan2 bundle of the same weights are the same base).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from e4e_jax import bundle, manifest
from e4e_jax.errors import UserError
from e4e_jax.models.stylegan2 import StyleGAN2Config
from e4e_jax.variable_checks import leaves

KIND = "stylegan2_delta"
DELTA_DTYPE = "bfloat16"


def synthesis_fingerprint(synthesis: Mapping[str, Any]) -> str:
    """sha256 (hex) of a synthesis parameter tree: every leaf's key, dtype, shape and bytes, in key order."""
    h = hashlib.sha256()
    for key, leaf in leaves(synthesis):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{key}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(
    path: str | os.PathLike,
    generator: StyleGAN2Config,
    base_fingerprint: str,
    delta: Mapping[str, Any],
    *,
    extra: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False,
) -> Path:
    """Write one tuned generator (its synthesis delta, bfloat16) atomically (bundle.save)."""
    arch = {"generator": generator.to_dict(), "base_synthesis_sha256": base_fingerprint, "dtype": DELTA_DTYPE}
    return bundle.save(path, KIND, arch, {"synthesis": delta}, extra=extra, overwrite=overwrite)


def load(path: str | os.PathLike, base_fingerprint: Optional[str] = None) -> tuple[dict[str, Any], Any]:
    """(config, synthesis delta tree) of a tuned generator; with `base_fingerprint`, BundleError unless
    the delta was made against that base."""
    config, variables = bundle.load(path, KIND)
    if base_fingerprint is not None and config["architecture"].get("base_synthesis_sha256") != base_fingerprint:
        raise bundle.BundleError(
            f"{path} was tuned from another generator than the one given (its base synthesis sha256 "
            f"differs); pass the --model that `e4e-jax tune` used"
        )
    return config, variables["synthesis"]


def tuned_generators(folder: str | os.PathLike, flag: str = "--tuned") -> tuple[list[str], list[Path]]:
    """(files.txt lines, each row's tuned generator bundle) of a finished `e4e-jax tune` output folder;
    UserError naming `flag` for anything else (a folder being written, a missing or short listing)."""
    from e4e_jax import outdir

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{flag} {folder} is not a folder; pass the output folder of `e4e-jax tune`")
    outdir.refuse_in_use(folder, flag)
    listing, files_txt = folder / manifest.GENERATORS, folder / manifest.FILES
    for f in (files_txt, listing):
        if not f.is_file():
            raise UserError(
                f"{flag} {folder}: {f.name} is missing; pass a finished `e4e-jax tune` output "
                "(an interrupted one: finish it with --resume)"
            )
    files, names = manifest.read_lines(files_txt), manifest.read_lines(listing)
    if len(files) != len(names):
        raise UserError(f"{listing} lists {len(names)} generators for {len(files)} photos; rerun `e4e-jax tune`")
    root = folder.resolve()
    paths = []
    for name in names:
        p = (folder / name).resolve()
        if root not in p.parents or not p.is_dir():
            raise UserError(f"{listing} lists {name!r}, which is not a folder inside {folder}; rerun `e4e-jax tune`")
        paths.append(p)
    return files, paths
