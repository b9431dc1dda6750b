"""Model bundles: the one on-disk format for converted and trained models (DESIGN.md §3).

A bundle is a directory::

    DIR/config.json   {"kind", "format_version", "architecture": {...}, "source": {...}, ...}
    DIR/params/       the variables pytree (nested dicts of float arrays), written by orbax

`save` writes into a temporary sibling directory and renames it into place at the end, so a failure
never leaves a half-written bundle behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from e4e_jax.errors import UserError

FORMAT_VERSION = 1
KINDS = ("stylegan2", "e4e", "lpips", "arcface", "moco", "inception")


class BundleError(UserError, ValueError):
    """A bundle is missing, malformed, or not what the caller asked for."""


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints can be GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def source_info(*paths: str | os.PathLike) -> list[dict[str, str]]:
    """Provenance records for the files a bundle was converted from."""
    return [{"path": str(Path(p).resolve()), "sha256": sha256_of(p)} for p in paths]


def _to_numpy_tree(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {str(k): _to_numpy_tree(v) for k, v in tree.items()}
    return np.asarray(tree)


def _this_process_only():
    """orbax options making a save a single-process operation (no barrier with the other processes of a
    multi-process JAX run, which are not taking part)."""
    import jax
    import orbax.checkpoint as ocp

    me = jax.process_index()
    return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})


def save(
    path: str | os.PathLike,
    kind: str,
    architecture: Mapping[str, Any],
    variables: Mapping[str, Any],
    *,
    sources: list[dict[str, str]] | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a bundle atomically.

    Written by the calling process alone, with no collective: in a multi-process run call it on one
    process (e.g. process 0) only.

    Args:
      path: target directory; must not exist unless `overwrite`.
      kind: one of KINDS.
      architecture: JSON-serialisable hyper-parameters that rebuild the module.
      variables: nested dict of arrays (e.g. {'params': ..., 'buffers': ...}).
      sources: provenance (see `source_info`).
      extra: other JSON-serialisable facts (e.g. how latent_avg was obtained).
    """
    import orbax.checkpoint as ocp  # Deferred: orbax import is slow and not needed to read configs.

    if kind not in KINDS:
        raise BundleError(f"unknown bundle kind {kind!r}; expected one of {KINDS}")
    path = Path(path).resolve()
    if path.exists() and not overwrite:
        raise BundleError(f"{path} already exists; choose another --out or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        from e4e_jax import __version__

        config = {
            "kind": kind,
            "format_version": FORMAT_VERSION,
            "architecture": dict(architecture),
            "sources": sources or [],
            "e4e_jax_version": __version__,
        }
        if extra:
            config.update(dict(extra))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        ckptr = ocp.StandardCheckpointer(multiprocessing_options=_this_process_only())
        ckptr.save(tmp / "params", _to_numpy_tree(variables))
        ckptr.wait_until_finished()
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_config(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Read and validate a bundle's config.json (of kind `kind`, when given)."""
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise BundleError(
            f"{path} is not an e4e-jax model bundle (no config.json). Convert a checkpoint first: "
            f"python -m tools.convert_weights KIND SRC --out DIR"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{cfg_path} is not valid JSON ({e}); re-create the bundle") from e
    if config.get("kind") not in KINDS:
        raise BundleError(f"{cfg_path}: unknown kind {config.get('kind')!r}")
    if config.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{cfg_path}: bundle format {config.get('format_version')} is not supported by this "
            f"version (expects {FORMAT_VERSION}); re-convert the source checkpoint"
        )
    if kind is not None and config["kind"] != kind:
        raise BundleError(
            f"{path} holds a {config['kind']!r} bundle, but a {kind!r} bundle is needed here"
        )
    return config


def load(path: str | os.PathLike, kind: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load a bundle: returns (config, variables) with numpy arrays.

    Raises BundleError if the bundle is missing, malformed, or of another kind than `kind`.
    """
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    config = read_config(path, kind)
    params_dir = path / "params"
    if not params_dir.is_dir():
        raise BundleError(f"{path}: params/ is missing; the bundle is incomplete, re-create it")
    # Each process reads on its own (no barrier): processes may load different bundles, or one alone.
    variables = ocp.StandardCheckpointer(multiprocessing_options=_this_process_only()).restore(params_dir)
    return config, variables
