"""tf.data / tensorflow-datasets training pipeline over a folder of images (used where TensorFlow exists:
TPU pods, CI). The GPU machines have no TensorFlow: e4e_jax.data.train_input then falls back to its
numpy/PIL loader, which reads the same batches in the same order (up to resize and decode rounding).

The official train transform (omertov/encoder4editing configs/transforms_config.py): Resize((H, W)) —
(256, 256), cars (192, 256) — RandomHorizontalFlip(0.5), ToTensor, Normalize(0.5, 0.5) to [-1, 1].
TF's bilinear resize with antialias=True stands in for PIL's bilinear (area-aware when shrinking).

Order: the global batch of step s is permutation(seed, epoch)[k·B:(k+1)·B] with epoch, k = divmod(s,
n // B) — the same numpy permutation as the numpy loader (e4e_jax/data/epochs.py), computed on the host
per epoch — so a run resumed at step s starts reading at step s with no iterator state. Each process
reads only its rows of every global batch (the positions its devices hold, `sharding.process_rows`). Files that fail to decode are dropped by
`Dataset.ignore_errors` (logged by TF), which shifts the later rows of that batch.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from e4e_jax.data import epochs

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def tf_available() -> bool:
    try:
        import tensorflow  # noqa: F401
        import tensorflow_datasets  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means: no TF path
        return False
    return True


def _tf():
    import tensorflow as tf

    # TF must never grab the accelerators JAX uses.
    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):  # already initialised / no such device type
        pass
    return tf


def build_dataset(
    files: list[Path],
    global_batch: int,
    image_size: tuple[int, int],
    seed: int,
    random_flip: bool,
    start_step: int,
    rows: Optional[Sequence[int]] = None,
):
    """A tf.data.Dataset of this process's (len(rows), H, W, 3) float32 batches in [-1, 1].

    rows: positions within each global batch that this process loads, in its local order (default: all).
    """
    tf = _tf()
    h, w = image_size
    rows = np.arange(global_batch) if rows is None else np.asarray(rows, np.int64)

    def items():
        for paths, flips in epochs.process_slices(files, global_batch, seed, start_step, rows):
            for p, f in zip(paths, flips):
                yield p, bool(f and random_flip)

    ds = tf.data.Dataset.from_generator(
        items, output_signature=(tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.bool))
    )

    def decode(path, flip):
        raw = tf.io.read_file(path)
        img = tf.io.decode_image(raw, channels=3, expand_animations=False)
        img = tf.image.resize(tf.cast(img, tf.float32), (h, w), method="bilinear", antialias=True)
        img = tf.cond(flip, lambda: tf.reverse(img, axis=[1]), lambda: img)
        img = tf.clip_by_value(img, 0.0, 255.0) / 255.0
        return (img - 0.5) / 0.5

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors(log_warning=True)
    ds = ds.batch(len(rows), drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def local_batches(
    files: list[Path],
    global_batch: int,
    image_size: tuple[int, int],
    seed: int,
    random_flip: bool,
    start_step: int,
    rows: Optional[Sequence[int]] = None,
) -> Iterator[np.ndarray]:
    """numpy (len(rows), H, W, 3) float32 batches of the pipeline (tfds.as_numpy)."""
    import tensorflow_datasets as tfds

    ds = build_dataset(files, global_batch, image_size, seed, random_flip, start_step, rows)
    for x in tfds.as_numpy(ds):
        yield np.asarray(x, np.float32)
