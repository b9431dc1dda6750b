"""Latent-space edits of W+ codes: InterFaceGAN directions, GANSpace components, SeFa factors.

All edit functions are pure (numpy in, jax arrays out, jit-able with static layer arguments) and
work on W+ latents of shape (B, n_latent, D) (D = style_dim = 512 for official models). Only the
two `load_*` functions touch files; they read torch-saved files with the project's safe reader
(`e4e_jax.storage.torchfile`, which never runs pickled code).

Facts from the official code (omertov/encoder4editing `editings/`; genforce/sefa `utils.py`):
- InterFaceGAN (`LatentEditor.apply_interfacegan`): `latent + factor * direction` with torch
  broadcasting; directions are (1, 512) (the same step on every layer: age, smile) or
  (1, 18, 512) (per-layer: pose). `factor_range=(a, b)` means the integer factors `range(a, b)`.
- GANSpace (`ganspace.get_delta` / `edit`): the coordinate of a latent along component `idx` is
  measured on layer 0 only, in units of that component's std:
  `c = <w[0] - mean, comp[idx]> / std[idx]`; the edit *sets* that coordinate to `strength`:
  `delta = (strength - c) * comp[idx] * std[idx]`, added to layers `start:end` (end exclusive).
  One output latent per (latent, edit direction); edits are not accumulated.
- SeFa (`factorize_weight`): stack the selected layers' modulation weights as columns of a
  (D, sum C_in) matrix, normalise every column to unit length, take the eigenvectors of
  W Wᵀ (D, D); an edit adds `distance * eigvec` to the selected w indices.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.storage import torchfile

ArrayLike = np.ndarray | jax.Array


# ----------------------------------------------------------------------------------- helpers


def _check_latents(latents: ArrayLike) -> jax.Array:
    w = jnp.asarray(latents, jnp.float32)
    if w.ndim != 3:
        raise ValueError(
            f"edits take W+ latents of shape (B, n_latent, D), got shape {w.shape}; "
            "repeat a (B, D) code over layers first"
        )
    return w


def _factors(values: Iterable[float] | ArrayLike) -> jax.Array:
    f = jnp.asarray(values, jnp.float32)
    if f.ndim != 1:
        raise ValueError(f"sweep values must be a 1-D list of numbers, got shape {f.shape}")
    return f


# ------------------------------------------------------------------------------ InterFaceGAN


def _canonical_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    s = tuple(shape)
    if len(s) == 3 and s[0] == 1:
        s = s[1:]
    if len(s) == 2 and s[0] == 1:
        s = s[1:]
    if len(s) not in (1, 2):
        raise ValueError(f"an InterFaceGAN direction has shape (D,), (1, D), (n, D) or (1, n, D); got {tuple(shape)}")
    return s


def canonical_direction(direction: ArrayLike) -> np.ndarray:
    """(D,) / (1, D) -> (D,) (all layers); (n, D) / (1, n, D) -> (n, D) (per layer). float32."""
    d = np.asarray(direction, np.float32)
    return d.reshape(_canonical_shape(d.shape))


def _direction_for(w: jax.Array, direction: ArrayLike) -> jax.Array:
    d = jnp.asarray(direction, jnp.float32)  # works on tracers too (shape logic only)
    d = d.reshape(_canonical_shape(d.shape))
    if d.shape[-1] != w.shape[-1] or (d.ndim == 2 and d.shape[0] != w.shape[1]):
        raise ValueError(
            f"direction of shape {d.shape} does not fit latents of shape {w.shape} "
            f"(expected ({w.shape[-1]},) or ({w.shape[1]}, {w.shape[-1]}))"
        )
    return d


def check_direction(direction: ArrayLike, n_latent: int, style_dim: int, source: str) -> np.ndarray:
    """An InterFaceGAN direction checked against a generator of `n_latent` codes of `style_dim`: (D,) (one
    step for every layer, which fits any generator whose styles have D values) or (n, D) (per layer).
    Returns it float32 in canonical shape; ValueError naming `source`, both shapes and the fix for a
    direction of another style size or layer count, or one that is all zeros (it would move nothing)."""
    d = canonical_direction(direction)
    fits = d.shape[-1] == style_dim and (d.ndim == 1 or d.shape[0] == n_latent)
    if not fits:
        raise ValueError(
            f"{source}: direction of shape {d.shape} does not fit this generator's W+ codes ({n_latent}, "
            f"{style_dim}); expected ({style_dim},) or ({n_latent}, {style_dim}): use a direction made for "
            "this generator"
        )
    if not np.any(d):
        raise ValueError(f"{source}: the direction is all zeros, so it moves no latent; re-create the file")
    return d


# Edit strengths beyond this (in direction lengths, GANSpace stds or SeFa steps) throw w far outside the
# generator's range; the official sweeps use ±3 (InterFaceGAN) to ±20 (GANSpace).
MAX_ABS_STRENGTH = 100.0


def check_strengths(strengths: Iterable[float], option: str = "--strengths") -> None:
    """ValueError naming `option` for a strength that is not finite or beyond ±MAX_ABS_STRENGTH."""
    bad = [s for s in strengths if not abs(float(s)) <= MAX_ABS_STRENGTH]
    if bad:
        raise ValueError(
            f"{option} {' '.join(f'{s:g}' for s in bad)}: beyond ±{MAX_ABS_STRENGTH:g}, which moves the latents far "
            f"outside the generator's range (official sweeps use ±3 to ±20); pass smaller values"
        )


def interfacegan_edit(latents: ArrayLike, direction: ArrayLike, factor: float) -> jax.Array:
    """latents (B, n, D) + factor * direction, the direction broadcast over the batch and, when it
    has no layer axis, over layers. Returns (B, n, D) float32."""
    w = _check_latents(latents)
    return w + jnp.float32(factor) * _direction_for(w, direction)


def interfacegan_sweep(latents: ArrayLike, direction: ArrayLike, factors: Iterable[float] | ArrayLike) -> jax.Array:
    """One edit per factor: (F, B, n, D)."""
    w = _check_latents(latents)
    f = _factors(factors)
    return w[None] + f[:, None, None, None] * _direction_for(w, direction)


def official_factor_range(start: int, stop: int) -> list[int]:
    """The factors of the official `apply_interfacegan(..., factor_range=(start, stop))`:
    the integers `range(start, stop)` (stop excluded)."""
    return list(range(int(start), int(stop)))


# ---------------------------------------------------------------------------------- GANSpace


class GanspacePCA(NamedTuple):
    """GANSpace PCA of W: mean (D,), comp (K, D) unit components, std (K,) per component."""

    mean: np.ndarray
    comp: np.ndarray
    std: np.ndarray

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "GANSpace PCA") -> "GanspacePCA":
        """From the official file's dict: mean (1, D), comp (K, 1, D), std (K,)."""
        missing = [k for k in ("mean", "comp", "std") if k not in d]
        if missing:
            raise ValueError(
                f"{source}: missing key(s) {missing}; a GANSpace PCA file holds a dict "
                f"with 'mean', 'comp' and 'std' (found {sorted(map(str, d))})"
            )
        mean = np.asarray(d["mean"], np.float32).reshape(-1)
        comp = np.asarray(d["comp"], np.float32)
        comp = comp.reshape(comp.shape[0], -1) if comp.ndim >= 2 else comp
        std = np.asarray(d["std"], np.float32).reshape(-1)
        if comp.ndim != 2 or comp.shape[1] != mean.shape[0] or std.shape[0] != comp.shape[0]:
            raise ValueError(
                f"{source}: inconsistent shapes mean {np.shape(d['mean'])}, "
                f"comp {np.shape(d['comp'])}, std {np.shape(d['std'])}; expected "
                "(1, D), (K, 1, D), (K,)"
            )
        if not all(np.isfinite(a).all() for a in (mean, comp, std)):
            raise ValueError(f"{source}: mean, comp or std holds NaN or Inf values; re-create the PCA file")
        if not (std > 0).all():  # coordinates are measured in stds: a zero std divides by zero
            raise ValueError(
                f"{source}: std holds values <= 0 (component {int(np.argmin(std))}); re-create the PCA file"
            )
        return cls(mean, comp, std)


def _check_pc(pca: GanspacePCA, pc_idx: int, w: jax.Array) -> None:
    if not 0 <= pc_idx < pca.comp.shape[0]:
        raise ValueError(f"GANSpace component index {pc_idx} out of range [0, {pca.comp.shape[0]})")
    if pca.comp.shape[1] != w.shape[-1]:
        raise ValueError(f"GANSpace PCA has D={pca.comp.shape[1]} but latents have D={w.shape[-1]}")


def ganspace_coordinate(latents: ArrayLike, pca: GanspacePCA, pc_idx: int) -> jax.Array:
    """Coordinate of each latent's layer 0 along component `pc_idx`, in stds: (B,)."""
    w = _check_latents(latents)
    _check_pc(pca, pc_idx, w)
    centered = w[:, 0, :] - jnp.asarray(pca.mean)
    # Sum of products (not a matmul), as the official code, and exact fp32 on every backend.
    return jnp.sum(centered * jnp.asarray(pca.comp[pc_idx]), axis=-1) / pca.std[pc_idx]


def ganspace_delta(latents: ArrayLike, pca: GanspacePCA, pc_idx: int, strength: float) -> jax.Array:
    """The official `get_delta` per latent: (strength - coordinate) * comp * std, (B, D)."""
    c = ganspace_coordinate(latents, pca, pc_idx)
    # Same operation order as the official code: ((strength - c) * comp) * std.
    return (jnp.float32(strength) - c)[:, None] * jnp.asarray(pca.comp[pc_idx]) * pca.std[pc_idx]


def _check_layers(start: int, end: int, n: int) -> None:
    if not 0 <= start < end <= n:
        raise ValueError(
            f"GANSpace layer range {start}:{end} is invalid for {n} latent layers "
            f"(need 0 <= start < end <= {n}; end is exclusive)"
        )


def ganspace_edit(
    latents: ArrayLike, pca: GanspacePCA, pc_idx: int, start: int, end: int, strength: float
) -> jax.Array:
    """Move layers start:end (end exclusive) so that the layer-0 coordinate along component
    `pc_idx` would become `strength` (stds). Other layers are unchanged. (B, n, D) float32."""
    w = _check_latents(latents)
    _check_layers(start, end, w.shape[1])
    return w.at[:, start:end].add(ganspace_delta(w, pca, pc_idx, strength)[:, None, :])


def ganspace_sweep(
    latents: ArrayLike, pca: GanspacePCA, pc_idx: int, start: int, end: int, strengths: Iterable[float] | ArrayLike
) -> jax.Array:
    """One `ganspace_edit` per strength: (F, B, n, D)."""
    w = _check_latents(latents)
    _check_layers(start, end, w.shape[1])
    c = ganspace_coordinate(w, pca, pc_idx)  # (B,)
    coef = _factors(strengths)[:, None] - c[None, :]  # (F, B)
    delta = coef[..., None] * jnp.asarray(pca.comp[pc_idx]) * pca.std[pc_idx]  # (F, B, D)
    return jnp.broadcast_to(w, (delta.shape[0],) + w.shape).at[:, :, start:end].add(delta[:, :, None])


def ganspace_edit_official(
    latents: ArrayLike, pca: GanspacePCA, edit_directions: Sequence[tuple[int, int, int, float]]
) -> jax.Array:
    """The official `ganspace.edit`: for each latent, for each (pc_idx, start, end, strength), one
    edited latent (edits are not combined). Returns (B * E, n, D) in that order."""
    w = _check_latents(latents)
    edits = [ganspace_edit(w, pca, *e) for e in edit_directions]  # E x (B, n, D)
    return jnp.stack(edits, axis=1).reshape((-1,) + w.shape[1:])


# -------------------------------------------------------------------------------------- SeFa


class SefaFactors(NamedTuple):
    """layers: the w indices factorised (and edited); eigvals (D,) in descending order;
    eigvecs (D, D), row k the unit direction of eigval k."""

    layers: tuple[int, ...]
    eigvals: np.ndarray
    eigvecs: np.ndarray


def parse_layers(spec: str | int | Iterable[int], n_latent: int) -> list[int]:
    """W indices from 'all', an int, a list, or a string such as '0-3' or '0,2,4-5' (ranges
    inclusive, as genforce/sefa's `parse_indices`). Sorted, unique, checked to be in range."""
    if isinstance(spec, str) and spec.strip().lower() == "all":
        return list(range(n_latent))
    if isinstance(spec, (int, np.integer)):
        idx = [int(spec)]
    elif isinstance(spec, str):
        idx = []
        for part in spec.replace(" ", "").split(","):
            bounds = part.split("-")
            try:
                nums = [int(b) for b in bounds]
            except ValueError:
                raise ValueError(f'cannot parse layer spec {spec!r}: use "all", "a-b" or "a,b,c"') from None
            if len(nums) == 1:
                idx += nums
            elif len(nums) == 2 and nums[0] <= nums[1]:
                idx += list(range(nums[0], nums[1] + 1))
            else:
                raise ValueError(f'cannot parse layer spec {spec!r}: use "all", "a-b" or "a,b,c"')
    else:
        idx = [int(i) for i in spec]
    idx = sorted(set(idx))
    if not idx:
        raise ValueError(f"layer spec {spec!r} selects no layers")
    bad = [i for i in idx if not 0 <= i < n_latent]
    if bad:
        raise ValueError(f"layer index(es) {bad} out of range [0, {n_latent - 1}] for {n_latent} latent layers")
    return idx


def _synthesis_tree(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accepts the generator's variables, its 'params', or the 'synthesis' subtree."""
    tree = params
    for key in ("params", "synthesis"):
        if key in tree:
            tree = tree[key]
    if "conv1" not in tree or "to_rgb1" not in tree:
        raise ValueError(
            "expected StyleGAN2 generator params with 'synthesis/conv1' and "
            f"'synthesis/to_rgb1' (docs/params_layout.md); found keys {sorted(tree)}"
        )
    return tree


def synthesis_n_latent(params: Mapping[str, Any]) -> int:
    """n_latent of a generator's params: one w per StyledConv, plus one for the last ToRGB."""
    syn = _synthesis_tree(params)
    n_convs = sum(1 for k in syn if k.startswith("convs_"))
    return n_convs + 2


def sefa_modulations(params: Mapping[str, Any], layers: Iterable[int], include_to_rgb: bool = False) -> list[str]:
    """Names of the modulation layers that consume the given w indices (rosinality layout):
    0 -> conv1, i in 1..n-2 -> convs_{i-1}, n-1 -> the last ToRGB (the only consumer of that w).
    Like genforce/sefa, the ToRGBs that share a w index with a conv are left out unless
    `include_to_rgb` (then 1 -> to_rgb1 and 2j+3 -> to_rgbs_j are added)."""
    syn = _synthesis_tree(params)
    n = synthesis_n_latent(syn)
    n_rgbs = sum(1 for k in syn if k.startswith("to_rgbs_"))
    last_rgb = f"to_rgbs_{n_rgbs - 1}" if n_rgbs else "to_rgb1"
    names = []
    for i in layers:
        if i == n - 1:
            names.append(last_rgb)
            continue
        names.append("conv1" if i == 0 else f"convs_{i - 1}")
        if include_to_rgb and i == 1:
            names.append("to_rgb1")
        elif include_to_rgb and i >= 3 and i % 2 == 1:
            names.append(f"to_rgbs_{(i - 3) // 2}")
    return names


def sefa_eigen(weights: Sequence[ArrayLike]) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form factorisation of modulation weights, each (D, C_in) (= A^T of the affine map
    s = A w + b). Columns are normalised to unit length (as genforce/sefa), then W Wᵀ is
    eigendecomposed in float64. Returns eigvals (D,) descending and eigvecs (D, D) as rows, each
    signed so that its largest-magnitude entry is positive (eigenvector signs are arbitrary;
    this makes them reproducible)."""
    w = np.concatenate([np.asarray(a, np.float64) for a in weights], axis=1)
    norms = np.linalg.norm(w, axis=0, keepdims=True)
    w = w / np.where(norms == 0, 1.0, norms)  # an all-zero column carries no direction
    vals, vecs = np.linalg.eigh(w @ w.T)  # symmetric: eigh (real, orthonormal) not eig
    vals, vecs = vals[::-1], vecs[:, ::-1].T
    sign = np.sign(vecs[np.arange(len(vecs)), np.argmax(np.abs(vecs), axis=1)])
    vecs = vecs * np.where(sign == 0, 1.0, sign)[:, None]
    return vals.astype(np.float32), vecs.astype(np.float32)


def sefa_factorize(
    params: Mapping[str, Any], layers: str | int | Iterable[int] = "all", include_to_rgb: bool = False
) -> SefaFactors:
    """SeFa directions of a StyleGAN2 generator (params as in docs/params_layout.md).

    `layers` are w indices ('all', '0-1', [2, 3, 4, 5], ...). The stored `mod_weight` is raw
    (equalized-lr scale applied at run time); the per-column normalisation makes that irrelevant.

    Differences from the official e4e copy (editings/sefa.py), which we do not follow: it never
    uses ToRGB weights (so 'all' there means the convs only) and edits the w indices `l - 1` of
    the convs it factorised rather than the indices asked for; here the w indices factorised are
    the ones edited, as in the SeFa authors' code.
    """
    syn = _synthesis_tree(params)
    idx = parse_layers(layers, synthesis_n_latent(syn))
    names = sefa_modulations(syn, idx, include_to_rgb)
    vals, vecs = sefa_eigen([syn[name]["mod_weight"] for name in names])
    return SefaFactors(tuple(idx), vals, vecs)


def _check_sefa(w: jax.Array, direction: ArrayLike, layers: Sequence[int]) -> tuple[jax.Array, list[int]]:
    d = jnp.asarray(direction, jnp.float32).reshape(-1)
    if d.shape[0] != w.shape[-1]:
        raise ValueError(f"SeFa direction of size {d.shape[0]} does not fit latents of shape {w.shape}")
    idx = parse_layers(list(layers), w.shape[1])
    return d, idx


def sefa_edit(latents: ArrayLike, direction: ArrayLike, layers: Sequence[int], strength: float) -> jax.Array:
    """latents[:, layers] += strength * direction (D,); other layers unchanged. (B, n, D)."""
    w = _check_latents(latents)
    d, idx = _check_sefa(w, direction, layers)
    return w.at[:, np.asarray(idx)].add(jnp.float32(strength) * d)


def sefa_sweep(
    latents: ArrayLike, direction: ArrayLike, layers: Sequence[int], strengths: Iterable[float] | ArrayLike
) -> jax.Array:
    """One `sefa_edit` per strength: (F, B, n, D)."""
    w = _check_latents(latents)
    d, idx = _check_sefa(w, direction, layers)
    f = _factors(strengths)
    out = jnp.broadcast_to(w, (f.shape[0],) + w.shape)
    return out.at[:, :, np.asarray(idx)].add(f[:, None, None, None] * d)


# ------------------------------------------------------------------------------------ loaders


def _load(path: str | os.PathLike) -> Any:
    """The torch file at `path`; ValueError naming it for a missing file, a folder or a read error."""
    if Path(path).is_dir():
        raise ValueError(f"{path} is a folder; pass the direction / PCA file itself")
    try:
        return torchfile.load_checkpoint(path)
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from e


def load_interfacegan_direction(path: str | os.PathLike) -> np.ndarray:
    """An official InterFaceGAN direction file (torch-saved tensor (1, D) or (1, n, D)) as float32
    (D,) or (n, D) (see `canonical_direction`)."""
    obj = _load(path)
    if not isinstance(obj, np.ndarray):
        raise ValueError(
            f"{os.fspath(path)}: expected a single saved tensor (an InterFaceGAN direction), found {type(obj).__name__}"
        )
    try:
        direction = canonical_direction(obj)
    except ValueError as e:
        raise ValueError(f"{os.fspath(path)}: {e}") from None
    if not np.isfinite(direction).all():
        raise ValueError(f"{os.fspath(path)}: the direction holds NaN or Inf values; re-create the file")
    return direction


def load_ganspace_pca(path: str | os.PathLike) -> GanspacePCA:
    """An official GANSpace PCA file (torch-saved dict mean (1, D), comp (K, 1, D), std (K,))."""
    obj = _load(path)
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{os.fspath(path)}: expected a dict with mean/comp/std (a GANSpace PCA file), found {type(obj).__name__}"
        )
    return GanspacePCA.from_dict(obj, source=os.fspath(path))
