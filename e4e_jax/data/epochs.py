"""Which files the global batch of a training step holds, flipped or not, and which of them this process
reads: pure functions of (seed, step), shared by both training loaders (train_input.NumpyFolderLoader
and tfds_pipeline).

Epoch e of n files uses permutation(seed, e) of the sorted file list and drops the last partial batch
(official DataLoader drop_last=True); a file's horizontal flip is a coin drawn from (seed, epoch, file).
So a resumed run reads exactly the batches the uninterrupted run would have read, with no iterator state
in the checkpoint. Each process reads only its rows of every global batch (`sharding.process_rows`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterator, Sequence

import jax
import numpy as np

log = logging.getLogger(__name__)


class EpochOrder:
    """Global positions of step s: permutation(seed, epoch)[k·B:(k+1)·B], epoch = s // (n // B)."""

    def __init__(self, n: int, global_batch: int, seed: int):
        if n < global_batch:
            raise ValueError(f"{n} training images are fewer than one global batch of {global_batch}")
        self.n, self.batch, self.seed = n, global_batch, seed
        self.steps_per_epoch = n // global_batch
        self._cache: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        return self._perm(epoch)[0]

    def position(self, epoch: int, index: int) -> int:
        """Where file `index` sits in `epoch`'s order."""
        return int(self._perm(epoch)[1][index])

    def _perm(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        cached = self._cache  # one read: decoding threads of two epochs may replace it meanwhile
        if cached is None or cached[0] != epoch:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            cached = self._cache = (epoch, (perm, np.argsort(perm)))
        return cached[1]

    def indices(self, step: int) -> tuple[int, np.ndarray]:
        """(epoch, file indices (B,)) of the global batch of `step`."""
        epoch, k = divmod(step, self.steps_per_epoch)
        return epoch, self.permutation(epoch)[k * self.batch : (k + 1) * self.batch]


def flip_draw(seed: int, epoch: int, index: int) -> bool:
    """The horizontal-flip coin of file `index` in `epoch` (p = 0.5)."""
    return bool(np.random.default_rng([seed, epoch, index, 7]).random() < 0.5)


def log_rows(what: str, rows: Sequence[int], files: Sequence[Path | str]) -> None:
    """DEBUG record of the rows (of a global batch) and files this process reads: `what rows=[..] files=[..]`."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "process %d reads %s rows=%s files=%s",
            jax.process_index(),
            what,
            json.dumps([int(r) for r in rows]),
            json.dumps([Path(f).name for f in files]),
        )


def process_slices(
    n_files: int, global_batch: int, seed: int, start_step: int, rows: np.ndarray
) -> Iterator[tuple[int, list[int]]]:
    """(epoch, file indices) of this process's `rows` of each global batch, from `start_step` on (endless)."""
    order = EpochOrder(n_files, global_batch, seed)
    step = start_step
    while True:
        epoch, idx = order.indices(step)
        yield epoch, [int(i) for i in idx[rows]]
        step += 1
