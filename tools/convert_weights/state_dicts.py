"""What the converters share: their one source file, `KeyTracker` (state-dict entries handed out by name,
leftovers reported), and the torch -> flax layouts of convolutions, dense layers and BatchNorm.

    torch conv weight (O, I, kh, kw)        -> kernel (kh, kw, I, O)                    `conv_kernel`, `conv`
    torch Linear weight (out, in)           -> kernel / weight (in, out)                `dense`, `equal_linear`
    BatchNorm weight, bias                  -> params scale, bias                       `batch_norm`
    BatchNorm running_mean, running_var     -> batch_stats mean, var (num_batches_tracked dropped)

and `mean_w_rows` / `latent_avg_per_style`, the one reading of a checkpoint's latent_avg (rosinality
generators, e4e/pSp; the estimate where it has none is e4e_jax/models/latent_avg.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from e4e_jax.storage.torchfile import load_checkpoint, short_repr
from e4e_jax.storage.variable_checks import require_finite


class KeyTracker:
    """Hands out state-dict entries by name and reports what was never taken (or is missing)."""

    def __init__(self, state: Mapping[str, Any], prefix: str, source: str):
        if not isinstance(state, Mapping):
            raise ValueError(
                f"{source}: the state dict is a {type(state).__name__}, not a mapping of parameter names to "
                "tensors; the file is not an official checkpoint of this kind"
            )
        for k in state:
            if not isinstance(k, str):
                raise ValueError(
                    f"{source}: the state dict has the key {short_repr(k)} of type {type(k).__name__}, not a parameter "
                    "name; the file is not an official checkpoint of this kind"
                )
        self.state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        self.prefix, self.source, self.used = prefix, source, set()

    def __contains__(self, key: str) -> bool:
        return key in self.state

    def take(self, key: str, shape: tuple[int, ...] | None = None, ndim: int | None = None) -> np.ndarray:
        """The entry `key` as float32, its `shape` (or only its number of dimensions, `ndim`) checked."""
        if key not in self.state:
            raise KeyError(f"{self.source}: missing key {self.prefix + key!r}")
        value = self.state[key]
        if not isinstance(value, (np.ndarray, np.generic, int, float)) or np.iscomplexobj(value):
            kind = f"{np.asarray(value).dtype} tensor" if np.iscomplexobj(value) else type(value).__name__
            raise ValueError(f"{self.source}: {self.prefix + key} is a {kind}, not a real tensor")
        arr = np.asarray(value, dtype=np.float32)
        if shape is not None and arr.shape != tuple(shape):
            raise ValueError(f"{self.source}: {self.prefix + key} has shape {arr.shape}, expected {tuple(shape)}")
        if ndim is not None and arr.ndim != ndim:
            raise ValueError(f"{self.source}: {self.prefix + key} has shape {arr.shape}, expected {ndim} dimensions")
        self.used.add(key)
        return arr

    def skip(self, key: str) -> None:
        self.used.add(key)

    def check_all_used(self) -> None:
        left = sorted(set(self.state) - self.used)
        if left:
            shown = ", ".join(self.prefix + k for k in left[:10])
            more = f" (+{len(left) - 10} more)" if len(left) > 10 else ""
            raise KeyError(f"{self.source}: unexpected keys not matched by the converter: {shown}{more}")


# ----------------------------------------------------------------------------------- layouts


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """torch conv weight (O, I, kh, kw) -> flax kernel (kh, kw, I, O)."""
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def conv(keys: KeyTracker, name: str, bias: bool, shape: tuple[int, int, int, int] | None = None) -> dict:
    """{'kernel' (kh, kw, I, O)[, 'bias' (O,)]} of torch conv `name`; `shape` (O, I, kh, kw) is checked."""
    out = {"kernel": conv_kernel(keys.take(f"{name}.weight", shape, ndim=4))}
    if bias:
        out["bias"] = keys.take(f"{name}.bias", None if shape is None else shape[:1])
    return out


def dense(keys: KeyTracker, name: str) -> dict:
    """{'kernel' (in, out), 'bias' (out,)} of torch Linear `name` (flax nn.Dense)."""
    w = keys.take(f"{name}.weight")
    if w.ndim != 2:
        raise ValueError(f"{keys.source}: {keys.prefix}{name}.weight has shape {w.shape}, expected (out, in)")
    return {"kernel": np.ascontiguousarray(w.T), "bias": keys.take(f"{name}.bias", (w.shape[0],))}


def equal_linear(keys: KeyTracker, name: str, in_dim: int, out_dim: int) -> dict:
    """{'weight' (in, out), 'bias' (out,)} of EqualLinear `name`, whose torch weight is (out, in)."""
    return {
        "weight": np.ascontiguousarray(keys.take(f"{name}.weight", (out_dim, in_dim)).T),
        "bias": keys.take(f"{name}.bias", (out_dim,)),
    }


def batch_norm(keys: KeyTracker, name: str, channels: int | None = None) -> tuple[dict, dict]:
    """(params {'scale', 'bias'}, batch_stats {'mean', 'var'}) of torch BatchNorm `name` (with `channels`
    checked when given); num_batches_tracked only drives torch's momentum=None mode and is dropped."""
    if f"{name}.num_batches_tracked" in keys:
        keys.skip(f"{name}.num_batches_tracked")
    c = None if channels is None else (channels,)
    return (
        {"scale": keys.take(f"{name}.weight", c), "bias": keys.take(f"{name}.bias", c)},
        {"mean": keys.take(f"{name}.running_mean", c), "var": keys.take(f"{name}.running_var", c)},
    )


def mean_w_rows(latent_avg: Any, dim: int, source: str) -> np.ndarray:
    """A checkpoint's latent_avg as float32 rows (n, dim): (dim,), (1, dim) or (n, dim) as saved.

    Raises ValueError naming `source` for anything else (a wrong shape, an empty or non-real tensor), and a
    UserError for NaN / Inf values."""
    if not isinstance(latent_avg, (np.ndarray, np.generic)) or np.asarray(latent_avg).dtype.kind not in "fiu":
        what = f"{latent_avg.dtype} tensor" if isinstance(latent_avg, np.ndarray) else type(latent_avg).__name__
        raise ValueError(f"{source}: latent_avg is a {what}, not a real tensor of mean w")
    la = np.asarray(latent_avg, np.float32)
    la = la[None] if la.ndim == 1 else la
    if la.ndim != 2 or la.shape[0] == 0 or la.shape[1] != dim:
        raise ValueError(
            f"{source}: latent_avg has shape {np.shape(latent_avg)}; expected ({dim},), (1, {dim}) or (n, {dim}) "
            f"for this generator's style_dim {dim}"
        )
    require_finite(la, f"{source}: latent_avg", "the checkpoint is damaged; re-download it")
    return la


def latent_avg_per_style(latent_avg: Any, dim: int, n_styles: int, source: str) -> np.ndarray:
    """A checkpoint's latent_avg as the (n_styles, dim) float32 rows official pSp.forward adds: `mean_w_rows`
    of it, one row repeated or n_styles rows kept; ValueError naming `source` for another count."""
    la = mean_w_rows(latent_avg, dim, source)
    if la.shape[0] not in (1, n_styles):
        raise ValueError(
            f"{source}: latent_avg has shape {np.shape(latent_avg)}; expected ({dim},), (1, {dim}) or "
            f"({n_styles}, {dim})"
        )
    return np.broadcast_to(la, (n_styles, dim)).copy()


def _jsonable_value(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return not (isinstance(v, float) and not math.isfinite(v))
    if isinstance(v, (list, tuple)):
        return all(_jsonable_value(x) for x in v)
    return False


def jsonable_opts(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a checkpoint's training options (vars(opts)) that JSON can hold, kept in a bundle for
    provenance: None, bools, numbers (finite), strings and lists of them (tuples become lists)."""
    return {str(k): (list(v) if isinstance(v, tuple) else v) for k, v in opts.items() if _jsonable_value(v)}


# ----------------------------------------------------------------------------------- sources
# ----------------------------------------------------------------------------------- sources


def single_source(kind: str, sources: list, options: dict, expected: str) -> Path:
    """The one source file of converter `kind`, which takes no options (clear errors otherwise)."""
    if options:
        raise ValueError(f"{kind}: unknown options {sorted(options)}; this converter takes none")
    if len(sources) != 1:
        raise ValueError(f"{kind} takes exactly one source file ({expected})")
    return Path(sources[0])


def load_state_dict(path: Path, what: str) -> dict[str, Any]:
    """The state dict of a checkpoint read by the safe reader: the object itself, or its 'state_dict'."""
    obj = load_checkpoint(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict ({what}), found a {type(obj).__name__}")
    return obj
