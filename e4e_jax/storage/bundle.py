"""Model bundles: the one on-disk format for converted and trained models (docs/architecture.md, "Model bundles").

A bundle is a directory::

    DIR/config.json       {"kind", "format_version", "architecture": {...}, "sources": [...], ...}
    DIR/params/           the variables pytree (nested dicts of float arrays), written by orbax
    DIR/checksums.json    {path in DIR: {"bytes", "sha256"}} of config.json and of every file of params/

`save` writes into a temporary sibling directory (`.DIR.tmp-*`, created with the umask) and renames it
into place at the end, so a failure never leaves a half-written bundle behind; the temporary folders of a
killed save are removed by the next save to the same place. `--overwrite` (overwrite=True) only ever
replaces a bundle, never another folder. `save` and `load` check every array against the architecture
(shapes, finite values; e4e_jax/storage/variable_checks.py).

`save` records the size and sha256 of every file it writes (checksums.json, written last); `load` checks
them (the sizes and small files before orbax reads anything, the large files hashed while orbax
restores them), so a damaged byte is reported by the file it is in instead of loading other weights.
Bundles written before the checksums existed still load (said once per bundle).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from e4e_jax.errors import UserError
from e4e_jax.runtime import pause_points
from e4e_jax.storage import fileio, manifest, orbax_errors, outdir, variable_checks

FORMAT_VERSION = 1
KINDS = ("stylegan2", "e4e", "restyle", "lpips", "arcface", "moco", "inception", "stylegan2_delta")
CHECKSUMS_FILE = "checksums.json"  # {path in the bundle (posix): {"bytes": size, "sha256": hex}}
# What a bundle folder holds (e4e_jax/storage/outdir.py): --overwrite replaces nothing else.
OUTPUTS = outdir.Outputs("bundle", ("config.json", "params", CHECKSUMS_FILE))


class BundleError(UserError, ValueError):
    """A bundle is missing, malformed, or not what the caller asked for."""


HASH_READ_BYTES = 8 << 20  # bytes per read when hashing: large reads keep hashlib (GIL released) busy


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in large chunks into one buffer (checkpoints and bundles are GBs)."""
    h = hashlib.sha256()
    buf = bytearray(HASH_READ_BYTES)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


# Files of params/ up to this size are hashed whole by `weights_id` of a bundle without checksums, and are
# checked before orbax reads anything (orbax's manifests and metadata: KBs; the arrays' data: MBs to GBs).
SMALL_FILE_BYTES = 1 << 20
WEIGHTS = "params/"  # the folder of the weights' files in the bundle (and the prefix of their paths there)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def file_checksums(root: str | os.PathLike, files: list[Path]) -> dict[str, dict[str, Any]]:
    """{path relative to `root` (posix): {"bytes", "sha256"}} of `files`, hashed in parallel threads: what
    `save` records in checksums.json."""
    with concurrent.futures.ThreadPoolExecutor(_hash_threads(len(files))) as pool:
        digests = list(pool.map(sha256_of, files))
    return {f.relative_to(root).as_posix(): {"bytes": f.stat().st_size, "sha256": d} for f, d in zip(files, digests)}


def _hash_threads(n_files: int) -> int:
    return max(1, min(n_files, os.cpu_count() or 1))


def weights_id(path: str | os.PathLike) -> str:
    """An identity of a bundle's weights (hex sha256) that reads no weights: the digest of the checksums of
    params/ recorded in checksums.json (see `save`). A bundle saved again differs (orbax names its data
    files at random on every write, and the manifests list them); a copy of the same bundle does not.
    A bundle without checksums (older versions): the names and sizes of its files in params/ and the
    bytes of its small ones (orbax's manifests and metadata)."""
    path = Path(path)
    recorded = read_checksums(path)
    if recorded is not None:
        weights = {rel: entry for rel, entry in recorded.items() if rel.startswith(WEIGHTS)}
        return hashlib.sha256(json.dumps(weights, sort_keys=True).encode()).hexdigest()
    params = path / WEIGHTS
    h = hashlib.sha256()
    for f in _files(params):
        size = f.stat().st_size
        h.update(f"{f.relative_to(params).as_posix()}\0{size}\0".encode())
        if size <= SMALL_FILE_BYTES:
            h.update(f.read_bytes())
    return h.hexdigest()


def read_checksums(path: str | os.PathLike) -> dict[str, dict[str, Any]] | None:
    """The checksums.json of bundle `path` ({path in the bundle: {"bytes", "sha256"}}), None if it has none
    (written by an older version); BundleError if it cannot be read or is malformed."""
    f = Path(path) / CHECKSUMS_FILE
    if not f.exists():
        return None
    try:
        recorded = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"{f} cannot be read ({e}); the bundle is damaged, re-create it") from e
    ok = isinstance(recorded, dict) and all(
        isinstance(rel, str)
        and isinstance(entry, dict)
        and isinstance(entry.get("bytes"), int)
        and isinstance(entry.get("sha256"), str)
        and not Path(rel).is_absolute()
        and ".." not in Path(rel).parts
        for rel, entry in recorded.items()
    )
    if not ok:
        raise BundleError(f"{f} is malformed (not the sizes and sha256 of the bundle's files); re-create the bundle")
    return recorded


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
        fileio.check_room(path.parent, _nbytes(variables), path)  # orbax starts only what can finish
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
            # A full disk: one line naming the bundle, its temporary folder removed.
            with fileio.naming_no_room(path), orbax_errors.raised_once():
                (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
                # Closed (its background writes joined) before a failed save's folder is removed below: an
                # array write still in flight would otherwise make its folders again after the removal.
                with ocp.StandardCheckpointer(multiprocessing_options=_this_process_only()) as ckptr:
                    ckptr.save(tmp / "params", variables)
                    ckptr.wait_until_finished()
                checksums = file_checksums(tmp, _files(tmp))  # what load checks: every file as written
                (tmp / CHECKSUMS_FILE).write_text(json.dumps(checksums, indent=1, sort_keys=True) + "\n")
            pause_points.reached(fileio.WRITE_POINT)
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


def _nbytes(tree: Mapping[str, Any]) -> int:
    """Bytes of the arrays of a nested dict of numpy arrays (what orbax writes, before its metadata)."""
    return sum(_nbytes(v) if isinstance(v, Mapping) else np.asarray(v).nbytes for v in tree.values())


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
    foreign = OUTPUTS.foreign(path)
    if foreign:  # --overwrite replaces the bundle whole: these would go with it
        raise BundleError(
            f"{path} holds files that are not part of a bundle: {outdir.named(foreign)}; "
            "--overwrite replaces a bundle whole, so it will not: move them out or choose another --out"
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

    Its files are checked against checksums.json (`save`): the sizes and the small files before orbax
    reads anything, the large files hashed in threads while orbax restores them. Raises BundleError if the
    bundle is missing, malformed, damaged (naming the file that differs), or of another kind than `kind`.
    """
    path = Path(path).resolve()
    config = read_config(path, kind)
    params_dir = path / WEIGHTS
    if not params_dir.is_dir():
        raise BundleError(f"{path}: params/ is missing; the bundle is incomplete, re-create it")
    if not any(params_dir.iterdir()):
        raise BundleError(f"{path}: params/ is empty; the bundle is incomplete, re-create it")
    recorded = read_checksums(path)
    if recorded is None:
        _say_unchecked(path, config)
    large = {} if recorded is None else _check_before_reading(path, config, recorded)
    with concurrent.futures.ThreadPoolExecutor(_hash_threads(len(large))) as pool:
        hashing = {rel: pool.submit(sha256_of, path / rel) for rel in large}
        variables, failure = _restore(params_dir)
        for rel, digest in hashing.items():  # a file that differs explains any failure: said first
            if _digest(path, config, rel, digest.result) != large[rel]:
                raise _differs(path, config, rel) from failure
    if failure is not None:
        raise BundleError(
            f"{path}: params/ cannot be read ({type(failure).__name__}: {failure}); the bundle is damaged, "
            f"{_remake(config)}"
        ) from failure
    check_variables(config["kind"], config["architecture"], variables, f"{path}: the weights in params/")
    return config, variables


def _restore(params_dir: Path) -> tuple[Any, Exception | None]:
    """(variables, None) restored by orbax from `params_dir`, or (None, the error) if it cannot read them."""
    import orbax.checkpoint as ocp

    try:
        # Each process reads on its own (no barrier): processes may load different bundles, or one alone.
        # Closed on the way out, an error included (an open one's event loop printed tracebacks at exit).
        with ocp.StandardCheckpointer(multiprocessing_options=_this_process_only()) as checkpointer:
            return checkpointer.restore(params_dir), None
    except (OSError, ValueError) as e:
        orbax_errors.drop_closed_loop_callbacks()
        return None, e


_UNCHECKED: set[Path] = set()  # bundles without checksums already said (once per bundle and process)


def _say_unchecked(path: Path, config: Mapping[str, Any]) -> None:
    if path not in _UNCHECKED:
        _UNCHECKED.add(path)
        print(
            f"note: {path} was written by an older e4e-jax and has no {CHECKSUMS_FILE}, so damage to its files "
            f"cannot be detected; {_remake(config)} to add one",
            file=sys.stderr,
        )


def _check_before_reading(
    path: Path, config: Mapping[str, Any], recorded: Mapping[str, Mapping[str, Any]]
) -> dict[str, str]:
    """Check that every recorded file is there with its size, and the hashes of the small ones (config.json
    and what orbax reads first: a damaged manifest would fail inside orbax). Returns {path: sha256} of the
    large files, still to hash."""
    large = {}
    for rel, entry in recorded.items():
        f = path / rel
        if not f.is_file():
            raise BundleError(f"{path}: {rel} is missing; the bundle is incomplete, {_remake(config)}")
        size = f.stat().st_size
        if size != entry["bytes"]:
            raise _differs(path, config, rel, f"{size} bytes instead of the {entry['bytes']} written")
        if size > SMALL_FILE_BYTES:
            large[rel] = entry["sha256"]
        elif _digest(path, config, rel, lambda: sha256_of(f)) != entry["sha256"]:
            raise _differs(path, config, rel)
    return large


def _digest(path: Path, config: Mapping[str, Any], rel: str, compute) -> str:
    """``compute()`` (the sha256 of `rel` in the bundle), a BundleError naming the file if it cannot be read."""
    try:
        return compute()
    except OSError as e:
        raise BundleError(
            f"{path}: {rel} cannot be read ({e.strerror or e}); check its permissions or {_remake(config)}"
        ) from e


def _differs(path: Path, config: Mapping[str, Any], rel: str, how: str = "") -> BundleError:
    return BundleError(
        f"{path}: {rel} differs from the file written with the bundle ({how or 'its sha256 differs'}): "
        f"the bundle is damaged; {_remake(config)}"
    )


def _remake(config: Mapping[str, Any]) -> str:
    """The fix for a damaged bundle: convert its source again (named when config.json records one)."""
    sources = config.get("sources") or []
    source = sources[0].get("path") if sources and isinstance(sources[0], dict) else None
    return f"re-convert it from {source}" if source else "re-create it (re-convert its checkpoint or export it again)"
