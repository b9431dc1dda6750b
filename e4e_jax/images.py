"""Image helpers for every writer of pictures (invert, edit, synthesize, quickstart, training summaries):
[-1, 1] floats to 8-bit pixels, atomic PNG files, and grids of images for reports.

Reading images is `e4e_jax.data.folder`; this module only turns arrays into pixels and files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from e4e_jax.storage import fileio


def normalize(pixels, xp=np):
    """uint8 pixels -> float32 in [-1, 1] exactly as the official ToTensor + Normalize(0.5, 0.5); `xp` is
    numpy (host) or jax.numpy (device: the same operations; under jit XLA may round x / 255 an ulp apart)."""
    x = xp.asarray(pixels, dtype=xp.float32) / xp.float32(255.0)  # ToTensor
    return (x - xp.float32(0.5)) / xp.float32(0.5)  # Normalize(0.5, 0.5)


def to_uint8(img, xp=np):
    """[-1, 1] float image(s) -> uint8, rounded and clipped (NaN -> 0); any shape; `xp` is numpy (host) or
    jax.numpy (device: the same values, a quarter of the bytes to copy back).

    The official `tensor2im` truncates ((x + 1) / 2 * 255).astype(uint8) instead of rounding,
    which is up to one level darker and does not round-trip; we round so that
    `to_uint8(folder.load_image(p))` gives back the 8-bit pixels of an unresized input.
    """
    x = xp.nan_to_num(xp.asarray(img, dtype=xp.float32), nan=-1.0)
    return xp.clip(xp.rint((x + 1.0) * 127.5), 0, 255).astype(xp.uint8)


def save_png(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write an (H, W, 3) or (H, W) image as PNG atomically (`fileio.write_atomic`), so readers never
    see a partial file. uint8 is written as is; floats are taken to be in [-1, 1] and go through
    `to_uint8`."""
    path = Path(path)
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
        raise ValueError(f"save_png({str(path)!r}): expected an (H, W, 3) or (H, W) image, got shape {a.shape}")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"save_png({str(path)!r}): expected uint8 or float in [-1, 1], got dtype {a.dtype}")
        a = to_uint8(a)
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_atomic(path, lambda f: Image.fromarray(a).save(f, format="PNG"))


def fit(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """uint8 or [-1, 1] float (H, W, 3) → uint8 (h, w, 3), bilinear-resized if the size differs."""
    u8 = img if img.dtype == np.uint8 else to_uint8(img)
    if u8.shape[:2] == tuple(hw):
        return u8
    return np.asarray(Image.fromarray(u8).resize((hw[1], hw[0]), Image.BILINEAR))


# Column headers: PIL's built-in font (no font files needed) at a size that follows the cells.
LABEL_FRACTION = 10  # font size = cell height / 10 ...
LABEL_MIN_PX, LABEL_MAX_PX = 11, 40  # ... within these bounds
LABEL_COLOUR = (0, 0, 0)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, ValueError, OSError, ImportError):
        return ImageFont.load_default()  # the fixed bitmap font


def _fitted(draw, text: str, font, width: int) -> str:
    """`text`, cut with '…' until it is at most `width` pixels wide."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def header_band(labels: Sequence[str], cell_w: int, cell_h: int, pad: int) -> np.ndarray:
    """A white band with `labels` centred over columns of `cell_w` pixels (uint8 (band_h, width, 3))."""
    from PIL import ImageDraw

    font = _font(min(LABEL_MAX_PX, max(LABEL_MIN_PX, cell_h // LABEL_FRACTION)))
    height = font.getbbox("Ag")[3] + 2 * pad + 2
    band = Image.new("RGB", (len(labels) * (cell_w + pad) + pad, height), (255, 255, 255))
    draw = ImageDraw.Draw(band)
    for j, label in enumerate(labels):
        text = _fitted(draw, label, font, cell_w)
        x = pad + j * (cell_w + pad) + (cell_w - draw.textlength(text, font=font)) / 2
        draw.text((x, pad), text, fill=LABEL_COLOUR, font=font)
    return np.asarray(band)


def make_grid(
    rows: Sequence[Sequence[np.ndarray]],
    cell_hw: tuple[int, int] | None = None,
    pad: int = 2,
    headers: Sequence[str] | None = None,
) -> np.ndarray:
    """Tile rows of images (each uint8 or [-1, 1] float, (H, W, 3)) into one uint8 image.

    Every cell is resized to `cell_hw` (default: the first image's size); short rows are padded
    with white cells. `headers`: a label over each column (e.g. source | inversion | strengths).
    """
    if not rows or not rows[0]:
        raise ValueError("make_grid needs at least one image")
    h, w = cell_hw or rows[0][0].shape[:2]
    n_cols = max(len(r) for r in rows)
    if headers is not None:
        n_cols = max(n_cols, len(headers))
    grid = np.full((len(rows) * (h + pad) + pad, n_cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y : y + h, x : x + w] = fit(np.asarray(img), (h, w))
    if headers is None:
        return grid
    band = header_band(list(headers) + [""] * (n_cols - len(headers)), w, h, pad)
    return np.concatenate([band, grid])
