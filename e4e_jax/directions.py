"""Edit directions in the one form every method shares, and the combined edit of several of them.

    edit(w, {k: s_k}) = w + sum_k (s_k - c_k(w)) * step_k

step_k (n_latent, D) is the change of w per unit of strength (zero on the layers the edit leaves alone) and
c_k(w) the latent's own coordinate along the direction, measured on the unedited latent:
  InterFaceGAN (`editing.interfacegan_edit`): step = the direction (repeated over layers when (D,)), c = 0;
  SeFa (`editing.sefa_edit`): step = an eigenvector on the chosen layers, c = 0;
  GANSpace (`editing.ganspace_edit`): step = comp * std on layers start:end, c = <w[0] - mean, comp> / std,
    so an edit *sets* the coordinate to s (the official semantics; `neutral` gives the s that moves nothing).
Several edits add their steps, each measured on the unedited latent, so their order does not matter; one
edit is the official one. The arithmetic is numpy on the host (float32 steps, float64 coordinates): the
same bits for one latent or a batch on every backend, so the studio's slider and `e4e-jax edit` agree.
The files are read by `editing.py`'s loaders and checks (the safe torch reader); `load_folder` reads a
`--directions` folder of InterFaceGAN directions (.pt / .npy) and GANSpace PCA files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from e4e_jax import editing, fileio, torchfile

INTERFACEGAN, GANSPACE, SEFA = "interfacegan", "ganspace", "sefa"
# A slider's range, +/- this many strength units: the official sweeps (InterFaceGAN factor_range (-5, 5);
# GANSpace strengths up to ~20 stds in the official notebook; SeFa distances up to ~15).
SPAN = {INTERFACEGAN: 5.0, GANSPACE: 20.0, SEFA: 10.0}
SEFA_COUNT = 5  # SeFa sliders: the strongest eigenvectors of all layers
GANSPACE_COUNT = 5  # sliders of a PCA file without named edits: its first components over all layers
# The named GANSpace edits (component, start layer, end layer exclusive, strength) of the official e4e
# inference notebook, keyed by the stem of the PCA file they were made for.
GANSPACE_PRESETS: dict[str, dict[str, tuple[int, int, int, float]]] = {
    "ffhq_pca": {
        "eye_openness": (54, 7, 8, 20),
        "smile": (46, 4, 5, -20),
        "trimmed_beard": (58, 7, 9, 20),
        "white_hair": (57, 7, 10, -24),
        "lipstick": (34, 10, 11, 20),
    },
    "cars_pca": {
        "viewpoint": (0, 0, 5, 2),
        "cube": (16, 3, 6, 25),
        "color": (22, 9, 11, -8),
        "grass": (41, 9, 11, -18),
    },
}
DIRECTION_SUFFIXES = (".pt", ".pth", ".npy")


@dataclasses.dataclass(frozen=True, eq=False)
class Direction:
    """One edit direction (module docstring). step (n_latent, D) float32; for GANSpace also the PCA's
    mean (D,), unit component `axis` (D,) and `scale` (its std); `span`: a slider's +/- range."""

    name: str
    kind: str
    step: np.ndarray
    label: str
    span: float
    mean: Optional[np.ndarray] = None
    axis: Optional[np.ndarray] = None
    scale: float = 1.0

    def coordinate(self, latents: np.ndarray) -> np.ndarray:
        """c(w) of each latent (B, n, D): float64 (B,), zeros for the linear methods."""
        if self.axis is None:
            return np.zeros(latents.shape[0])
        centred = latents[:, 0, :].astype(np.float64) - self.mean
        return np.sum(centred * self.axis, axis=-1) / self.scale


def interfacegan(name: str, direction: Any, n_latent: int, style_dim: int, source: str) -> Direction:
    """An InterFaceGAN direction ((D,) for every layer or (n, D) per layer), checked against the generator
    (`editing.check_direction`: ValueError naming `source` and both shapes)."""
    d = editing.check_direction(direction, n_latent, style_dim, source)
    step = np.ascontiguousarray(np.broadcast_to(d, (n_latent, style_dim)), np.float32)
    return Direction(name, INTERFACEGAN, step, f"{name} (InterFaceGAN)", SPAN[INTERFACEGAN])


def ganspace(name: str, pca: editing.GanspacePCA, component: int, start: int, end: int, n_latent: int) -> Direction:
    """GANSpace component `component` on layers start:end (end exclusive), as `editing.ganspace_edit`."""
    k, d = pca.comp.shape
    if not 0 <= component < k:
        raise ValueError(f"GANSpace component index {component} out of range [0, {k})")
    if not 0 <= start < end <= n_latent:
        raise ValueError(
            f"GANSpace layer range {start}:{end} is invalid for {n_latent} latent layers "
            f"(need 0 <= start < end <= {n_latent}; end is exclusive)"
        )
    step = np.zeros((n_latent, d), np.float32)
    step[start:end] = pca.comp[component] * pca.std[component]
    label = f"{name} (GANSpace PC{component}, layers {start}-{end - 1})"
    return Direction(
        name,
        GANSPACE,
        step,
        label,
        SPAN[GANSPACE],
        pca.mean.astype(np.float64),
        pca.comp[component].astype(np.float64),
        float(pca.std[component]),
    )


def sefa(name: str, factors: editing.SefaFactors, index: int, n_latent: int) -> Direction:
    """SeFa eigenvector `index` (0 = strongest) on the layers it was factorised on (`editing.sefa_edit`)."""
    if not 0 <= index < factors.eigvecs.shape[0]:
        raise ValueError(f"SeFa index {index} out of range 0..{factors.eigvecs.shape[0] - 1}")
    step = np.zeros((n_latent, factors.eigvecs.shape[1]), np.float32)
    step[list(factors.layers)] = factors.eigvecs[index]
    layers = "all layers" if len(factors.layers) == n_latent else f"layers {','.join(map(str, factors.layers))}"
    return Direction(name, SEFA, step, f"{name} (SeFa {index}, {layers})", SPAN[SEFA])


def sefa_directions(gen_params: Mapping[str, Any], n_latent: int, count: int = SEFA_COUNT) -> list[Direction]:
    """The `count` strongest SeFa directions of a generator over all its layers: sefa_0, sefa_1, ..."""
    factors = editing.sefa_factorize(gen_params, "all")
    return [sefa(f"sefa_{i}", factors, i, n_latent) for i in range(min(count, factors.eigvecs.shape[0]))]


def _stack(latents: np.ndarray) -> np.ndarray:
    w = np.asarray(latents, np.float32)
    if w.ndim == 2:
        return w[None]
    if w.ndim != 3:
        raise ValueError(f"edits take W+ latents (n_latent, D) or (B, n_latent, D), got shape {w.shape}")
    return w


def apply(latents: np.ndarray, directions: Sequence[Direction], strengths: Sequence[float]) -> np.ndarray:
    """latents (n, D) or (B, n, D) edited by every (direction, strength) pair at once (module docstring);
    the same shape, float32."""
    w = _stack(latents)
    if len(directions) != len(strengths):
        raise ValueError(f"{len(directions)} directions but {len(strengths)} strengths")
    out = w.copy()
    for d, s in zip(directions, strengths):
        if d.step.shape != w.shape[1:]:
            raise ValueError(f"direction {d.name!r} has shape {d.step.shape}; the latents have {w.shape[1:]}")
        coef = (np.float64(s) - d.coordinate(w)).astype(np.float32)  # (B,)
        out += coef[:, None, None] * d.step
    return out if np.ndim(latents) == 3 else out[0]


def neutral(direction: Direction, latent: np.ndarray) -> float:
    """The strength at which `direction` leaves `latent` (n, D) unchanged: 0, or its GANSpace coordinate."""
    return float(direction.coordinate(_stack(latent))[0])


# ------------------------------------------------------------------------------------ files


def _load_any(path: Path) -> Any:
    if path.suffix.lower() == ".npy":
        return fileio.load_npy(path)
    try:
        return torchfile.load_checkpoint(path)
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from e


def load_file(path: str | os.PathLike, n_latent: int, style_dim: int) -> list[Direction]:
    """The directions of one file: an InterFaceGAN direction (.pt tensor or .npy array; named after the
    file), or a GANSpace PCA file (a dict with mean/comp/std): its named official edits when the file is
    one of GANSPACE_PRESETS (those whose layers fit the generator; named ganspace_NAME), else its first
    GANSPACE_COUNT components over all layers (STEM_pcK). ValueError naming the file for anything else, or for a direction that does not fit."""
    path = Path(path)
    obj = _load_any(path)
    if isinstance(obj, Mapping):
        pca = editing.GanspacePCA.from_dict(obj, source=str(path))
        if pca.comp.shape[1] != style_dim:
            raise ValueError(f"{path}: GANSpace PCA of D={pca.comp.shape[1]}; this generator's styles have {style_dim}")
        presets = GANSPACE_PRESETS.get(path.stem)
        if presets is None:
            n = min(GANSPACE_COUNT, pca.comp.shape[0])
            return [ganspace(f"{path.stem}_pc{k}", pca, k, 0, n_latent, n_latent) for k in range(n)]
        fit = {name: p for name, p in presets.items() if p[2] <= n_latent}
        return [ganspace(f"{GANSPACE}_{name}", pca, k, a, b, n_latent) for name, (k, a, b, _) in fit.items()]
    if not isinstance(obj, np.ndarray):
        raise ValueError(
            f"{path}: neither a direction (one saved tensor or array) nor a GANSpace PCA file (a dict with "
            f"mean/comp/std); found {type(obj).__name__}"
        )
    try:
        arr = editing.canonical_direction(obj)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: the direction holds NaN or Inf values; re-create the file")
    return [interfacegan(path.stem, arr, n_latent, style_dim, str(path))]


def load_folder(folder: str | os.PathLike, n_latent: int, style_dim: int) -> tuple[list[Direction], list[str]]:
    """Every direction in the files of `folder` and its sub-folders (DIRECTION_SUFFIXES, sorted), and one
    sentence per file or name that was left out (a file that cannot be read or does not fit, a name that
    an earlier file already took)."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    found: dict[str, Direction] = {}
    notes: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in DIRECTION_SUFFIXES and p.is_file()):
        try:
            loaded = load_file(path, n_latent, style_dim)
        except (ValueError, KeyError) as e:
            notes.append(f"left out {path.relative_to(root)}: {e}")
            continue
        for d in loaded:
            if d.name in found:
                notes.append(f"left out {d.name!r} of {path.relative_to(root)}: an earlier file has that name")
            else:
                found[d.name] = d
    return list(found.values()), notes
