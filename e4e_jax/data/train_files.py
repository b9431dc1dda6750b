"""The images of a training folder and the one rule both training loaders read them by (the numpy loader
of train_input.py and the tf.data pipeline of tfds_pipeline.py accept exactly the same files).

Listing: `folder.list_images` (the inference reader's extensions and entry checks). Decoding:
`folder.load_image` (PIL; the official transform's resize and [-1, 1] scaling; 16-bit and float TIFFs,
bombs, truncated files as the inference reader treats them). A file that does not decode is logged once
and replaced by the next readable file of the same order (`first_readable`), so every batch is full and
a pure function of (seed, step). `check_usable` stops a run before any work when the folder holds no file
that decodes, with one message (`errors.NoInputError`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from e4e_jax.data import folder
from e4e_jax.data.epochs import EpochOrder, flip_draw
from e4e_jax.errors import NoInputError

log = logging.getLogger(__name__)

REASONS_SHOWN = 3  # unreadable files named in the message of a folder with none readable


def list_training_files(config) -> list[Path]:
    """The image files of config.data.train_dir, sorted (folder.list_images); NoInputError if there are
    none, a ValueError if no folder is given."""
    if not config.data.train_dir:
        raise ValueError(
            "config.data.train_dir is empty: pass --config.data.train_dir=/path/to/images "
            "(or use a synthetic-data config such as configs/tiny.py)"
        )
    files, unusable = folder.scan_images(config.data.train_dir)
    if not files:
        also = (
            f" ({len(unusable)} entries named like images are not files: e.g. {unusable[0].path.name})"
            if unusable
            else ""
        )
        raise NoInputError(
            f"config.data.train_dir={config.data.train_dir}: no image files "
            f"({', '.join(sorted(folder.IMAGE_EXTENSIONS))}){also}; pass a folder of training images"
        )
    return files


def none_readable(files: Sequence[Path], bad: dict[int, str], what: str) -> NoInputError:
    examples = "; ".join(f"{files[i].name}: {why}" for i, why in list(bad.items())[:REASONS_SHOWN])
    where = files[0].parent if files else "the folder"
    return NoInputError(f"none of the {len(files)} {what} images in {where} can be read (e.g. {examples})")


def first_readable(
    files: Sequence[Path], order: Sequence[int], start: int, size: tuple[int, int], bad: dict[int, str], what: str
) -> tuple[int, np.ndarray]:
    """(file index, (H, W, 3) float32 image) of the first decodable file of `order` from position `start`
    on (cyclic). Undecodable files are logged once and remembered in `bad` (index -> reason), which only
    spares decoding them again: the answer does not depend on it. NoInputError if none decodes."""
    n = len(order)
    for j in range(n):
        i = int(order[(start + j) % n])
        if i in bad:
            continue
        x = folder.load_image(files[i], size)
        if isinstance(x, folder.Skipped):
            bad[i] = x.reason
            log.warning("skipping %s image %s: %s", what, x.path, x.reason)
            continue
        return i, x
    raise none_readable(files, bad, what)


def check_usable(config) -> list[Path]:
    """The training files of `config` (a 'folder' source), after checking that at least one decodes and
    that they fill a global batch; raised before any work: NoInputError (none found, none readable),
    ValueError (fewer files than one batch). Decodes files in sorted order up to the first readable one."""
    files = list_training_files(config)
    first_readable(files, range(len(files)), 0, tuple(config.data.image_size), {}, "training")
    b = int(config.batch_size)
    if len(files) < b:
        raise ValueError(
            f"config.data.train_dir={config.data.train_dir}: {len(files)} training images are fewer than one "
            f"batch of {b}; lower --config.batch_size or add images"
        )
    return files


class TrainImages:
    """Row contents of the training batches: file `index` of `epoch` decoded by the one rule (unreadable
    files replaced by the next readable one of the epoch's order), flipped by its coin. Thread-safe enough
    for decoding threads: `bad` only ever gains entries that any thread would add."""

    def __init__(self, files: Sequence[Path], global_batch: int, image_size: tuple[int, int], seed: int, flip: bool):
        self.files, self.size, self.seed, self.flip = list(files), tuple(image_size), seed, flip
        self.order = EpochOrder(len(self.files), global_batch, seed)
        self.bad: dict[int, str] = {}

    def load(self, epoch: int, index: int) -> np.ndarray:
        """(H, W, 3) float32 in [-1, 1]: the image standing at file `index`'s place in `epoch`."""
        perm = self.order.permutation(epoch)
        i, x = first_readable(self.files, perm, self.order.position(epoch, index), self.size, self.bad, "training")
        return np.ascontiguousarray(x[:, ::-1]) if self.flip and flip_draw(self.seed, epoch, i) else x
