"""Model bundles: the one on-disk format for converted and trained models (docs/architecture.md, "Model bundles").

A bundle is a directory::

    DIR/config.json   {"kind", "format_version", "architecture": {...}, "source": {...}, ...}
    DIR/params/       the variables pytree (nested dicts of float arrays), written by orbax

`save` writes into a temporary sibling directory (`.DIR.tmp-*`, created with the umask) and renames it
into place at the end, so a failure never leaves a half-written bundle behind; the temporary folders of a
killed save are removed by the next save to the same place. `--overwrite` (overwrite=True) only ever
replaces a bundle, never another folder. `save` and `load` check every array against the architecture
(shapes, finite values; e4e_jax/variable_checks.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from e4e_jax import fileio, manifest, outdir, variable_checks
from e4e_jax.errors import UserError

FORMAT_VERSION = 1
KINDS = ("stylegan2", "e4e", "restyle", "lpips", "arcface", "moco", "inception", "stylegan2_delta")


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


# Files of params/ up to this size are hashed whole by `weights_id` (orbax's manifests and metadata: KBs).
SMALL_FILE_BYTES = 1 << 20


def weights_id(path: str | os.PathLike) -> str:
    """A cheap identity of a bundle's weights (hex sha256), without reading GBs: the names and sizes of
    the files in params/ and the bytes of its small ones (orbax's manifests and metadata). A bundle
    saved again differs (orbax names its data files at random on every write, and the manifests list
    them); a copy of the same bundle does not."""
    params = Path(path) / "params"
    h = hashlib.sha256()
    for f in sorted(p for p in params.rglob("*") if p.is_file()):
        size = f.stat().st_size
        h.update(f"{f.relative_to(params).as_posix()}\0{size}\0".encode())
        if size <= SMALL_FILE_BYTES:
            h.update(f.read_bytes())
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
      path: target directory; must not exist (or be empty) unless `overwrite`, which replaces only a
        bundle (a folder whose config.json names a known kind).
      kind: one of KINDS.
      architecture: JSON-serialisable hyper-parameters that rebuild the module.
      variables: nested dict of arrays (e.g. {'params': ..., 'buffers': ...}); every array must have the
        shape the architecture needs and hold finite values.
      sources: provenance (see `source_info`).
      extra: other JSON-serialisable facts (e.g. how latent_avg was obtained).
    Raises:
      BundleError (a UserError) for all of the above, before anything is written.
    """
    import orbax.checkpoint as ocp  # Deferred: orbax import is slow and not needed to read configs.

    if kind not in KINDS:
        raise BundleError(f"unknown bundle kind {kind!r}; expected one of {KINDS}")
    path = Path(path).absolute()
    variables = _to_numpy_tree(variables)
    check_variables(kind, architecture, variables, f"the {kind} weights for {path}")
    with outdir.lock_target(path, f"write bundle {path.name}"):
        fileio.remove_stale_temps(path.parent, target=path.name)  # left by a killed save
        check_replaceable(path, overwrite)
        # mkdir (not mkdtemp, which makes 0700): the bundle gets the umask's permissions like any file.
        tmp = path.parent / f"{fileio.temp_prefix(path.name)}{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
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
            ckptr.save(tmp / "params", variables)
            ckptr.wait_until_finished()
            if path.exists():
                # Move the old bundle aside (a temporary name the next save removes) so that the new one
                # takes its place in one rename.
                old = path.parent / f"{fileio.temp_prefix(path.name)}{os.getpid()}-old"
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path


def check_replaceable(path: Path, overwrite: bool) -> None:
    """Raise BundleError unless `path` is free: missing, an empty folder or, with `overwrite`, a bundle."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise BundleError(f"{path} exists and is not a folder; choose another output folder for the bundle")
    if not path.exists() or outdir.is_empty_dir(path):
        return
    if not overwrite:
        raise BundleError(f"{path} already exists; choose another --out or pass --overwrite")
    try:
        kind = json.loads((path / "config.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind not in KINDS:
        raise BundleError(
            f"{path} is not an e4e-jax bundle (no config.json of a known kind), so --overwrite "
            "will not replace it: its files are kept. Choose another --out"
        )


def check_variables(kind: str, architecture: Mapping[str, Any], variables: Mapping[str, Any], what: str) -> None:
    """Raise BundleError if an array of `variables` has another shape than the `kind` model built from
    `architecture` needs (naming the key, the expected and the found shape), or holds NaN / Inf.

    what: names the weights in the message, e.g. 'the stylegan2 weights read from g.pt'.
    """
    try:
        expected = variable_checks.expected_shapes(kind, architecture)
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{what}: the architecture does not describe a {kind} model ({type(e).__name__}: {e})") from e
    problems = variable_checks.shape_problems(expected, variables)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BundleError(f"{what} do not fit the architecture: {problems[0]}{more}")
    bad = variable_checks.non_finite(variables)
    if bad:
        raise BundleError(
            f"{what} hold NaN or Inf: {variable_checks.describe_non_finite(bad)}; the source "
            "is damaged or the model diverged"
        )


def work_directory_hint(path: Path) -> str | None:
    """Where the model of a training or quickstart work directory is, when `path` is one (its bundle
    inside it, not the folder itself, is what --model takes); None for anything else."""
    workdir = path / manifest.QUICKSTART_TRAIN_DIR
    trained = (
        (path, "an `e4e-jax train` work directory", f"`e4e-jax train ... --workdir {path} --resume` finishes it"),
        (workdir, "an `e4e-jax quickstart` work directory", "rerun the quickstart into a new folder"),
    )
    for run_dir, what, fix in trained:
        model = run_dir / manifest.TRAIN_MODEL_DIR
        if (model / "config.json").is_file():
            return f"{path} is {what}, not a model bundle; its trained model is {model}: pass --model {model}"
        if any((run_dir / name).exists() for name in manifest.TRAINING_MARKERS):
            return (
                f"{path} is {what} whose training has not finished: it writes its model to {model} at the end ({fix})"
            )
    return None


def read_config(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Read and validate a bundle's config.json (of kind `kind`, when given)."""
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise BundleError(
            work_directory_hint(path)
            or f"{path} is not an e4e-jax model bundle (no config.json). Convert a checkpoint first: "
            f"python -m tools.convert_weights KIND SRC --out DIR"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{cfg_path} is not valid JSON ({e}); re-create the bundle") from e
    except (OSError, UnicodeDecodeError) as e:
        raise BundleError(f"{cfg_path} cannot be read ({e}); check its permissions or re-create the bundle") from e
    if not isinstance(config, dict):
        raise BundleError(f"{cfg_path} holds a JSON {type(config).__name__}, not a bundle config; re-create the bundle")
    if config.get("kind") not in KINDS:  # a training work directory's config.json has no kind
        raise BundleError(work_directory_hint(path) or f"{cfg_path}: unknown kind {config.get('kind')!r}")
    if config.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{cfg_path}: bundle format {config.get('format_version')} is not supported by this "
            f"version (expects {FORMAT_VERSION}); re-convert the source checkpoint"
        )
    if kind is not None and config["kind"] != kind:
        raise BundleError(f"{path} holds a {config['kind']!r} bundle, but a {kind!r} bundle is needed here")
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
    if not any(params_dir.iterdir()):
        raise BundleError(f"{path}: params/ is empty; the bundle is incomplete, re-create it")
    try:
        # Each process reads on its own (no barrier): processes may load different bundles, or one alone.
        # Closed on the way out, an error included (an open one's event loop printed tracebacks at exit).
        with ocp.StandardCheckpointer(multiprocessing_options=_this_process_only()) as checkpointer:
            variables = checkpointer.restore(params_dir)
    except (OSError, ValueError) as e:
        raise BundleError(
            f"{path}: params/ cannot be read ({type(e).__name__}: {e}); the bundle is damaged, re-create it"
        ) from e
    check_variables(config["kind"], config["architecture"], variables, f"{path}: the weights in params/")
    return config, variables
