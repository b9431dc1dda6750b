"""Image grids for reports (edit sweeps, quickstart, training summaries)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from e4e_jax.data.folder import to_uint8


def fit(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """uint8 or [-1, 1] float (H, W, 3) → uint8 (h, w, 3), bilinear-resized if the size differs."""
    u8 = img if img.dtype == np.uint8 else to_uint8(img)
    if u8.shape[:2] == tuple(hw):
        return u8
    return np.asarray(Image.fromarray(u8).resize((hw[1], hw[0]), Image.BILINEAR))


def make_grid(rows: Sequence[Sequence[np.ndarray]], cell_hw: tuple[int, int] | None = None, pad: int = 2) -> np.ndarray:
    """Tile rows of images (each uint8 or [-1, 1] float, (H, W, 3)) into one uint8 image.

    Every cell is resized to `cell_hw` (default: the first image's size); short rows are padded
    with white cells.
    """
    if not rows or not rows[0]:
        raise ValueError("make_grid needs at least one image")
    h, w = cell_hw or rows[0][0].shape[:2]
    n_cols = max(len(r) for r in rows)
    grid = np.full((len(rows) * (h + pad) + pad, n_cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y:y + h, x:x + w] = fit(np.asarray(img), (h, w))
    return grid
