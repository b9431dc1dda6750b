"""Rendering with the tuned generators of an `e4e-jax tune` output (`edit --tuned`, `synthesize --tuned`):
photo i's codes are rendered by its own generator, the base generator plus its saved delta
(e4e_jax/pti_bundle.py). Edits are applied to the latents as without --tuned; only the generator that
renders them changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from e4e_jax.errors import UserError


def tuned_bundles(folder: Path, n_rows: int, listed: Optional[Sequence[str]] = None) -> list[Path]:
    """The generator bundle of each of `n_rows` latent rows from the tune output `folder`; UserError
    unless it holds exactly one per row (and, given the latents' files.txt lines `listed`, for the
    same photos in the same order)."""
    from e4e_jax import pti_bundle

    files, bundles = pti_bundle.tuned_generators(folder)
    if len(bundles) != n_rows:
        raise UserError(
            f"--tuned {folder} holds {len(bundles)} tuned generators for {n_rows} latents; pass the latents "
            "of that tune run (its output folder, or its latents.npy)"
        )
    if listed and [Path(p) for p in listed] != [Path(f) for f in files]:
        raise UserError(
            f"--tuned {folder} was tuned for other photos than the latents' files.txt lists; pass the "
            "latents of that tune run (its output folder)"
        )
    return bundles


def iter_render(
    cfg,
    variables: dict,
    bundles: Sequence[Path],
    codes: np.ndarray,
    *,
    batch_size: int = 8,
    modulation: str = "auto",
    dtype: str = "float32",
    noise_mode: str = "const",
    truncation: float = 1.0,
    seed: int = 0,
) -> Iterator[np.ndarray]:
    """Yield float32 (b, M, H, W, 3) for `codes` (N, M, n_latent, D): row i's M codes rendered with
    bundles[i] applied to `variables` (the base generator), b photos at a time. Every delta must have
    been made against this base (BundleError naming it otherwise)."""
    import jax

    from e4e_jax import generate, pti_bundle, sharding, tuning
    from e4e_jax.choices import compute_dtype
    from e4e_jax.models.stylegan2 import Generator

    gen = Generator(
        cfg,
        modulation=generate.resolve_modulation(modulation),
        dtype=compute_dtype(dtype),
        upsample=generate.resolve_upsample("auto"),
    )
    render = tuning.per_photo_renderer(gen, noise_mode, truncation)
    base = variables["params"]["synthesis"]
    fingerprint = pti_bundle.synthesis_fingerprint(base)
    variables = jax.device_put(variables)
    rng = jax.random.key(seed)
    for start in range(0, len(bundles), batch_size):
        part = bundles[start : start + batch_size]
        deltas = [pti_bundle.load(p, fingerprint)[1] for p in part]
        deltas += [deltas[-1]] * (batch_size - len(deltas))  # one compiled shape for every group
        stacked = jax.tree.map(lambda *d: np.stack(d), *deltas)
        ws = sharding.pad_batch(codes[start : start + batch_size], batch_size)
        rng, sub = jax.random.split(rng)
        yield np.asarray(render(variables, tuning.apply_delta(base, stacked), ws, sub))[: len(part)]
