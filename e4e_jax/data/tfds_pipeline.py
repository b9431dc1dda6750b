"""tf.data / tensorflow-datasets training pipeline over a folder of images (used where TensorFlow exists:
TPU pods, CI). The GPU machines have no TensorFlow: e4e_jax.data.train_input then falls back to its
numpy/PIL loader. Both read the same batches, bit for bit: the same files (train_files.py's listing) in
the same order, decoded by the same rule (train_files.TrainImages: folder.load_image, PIL's resize as the
official transform, an unreadable file replaced by the next readable one). tf.data contributes the
parallel decoding (a `tf.numpy_function` per row) and the prefetching; TensorFlow's own decoders, which
read no TIFF and would drop or loop over files the numpy loader reads, are not used.

Order: the global batch of step s is permutation(seed, epoch)[k·B:(k+1)·B] with epoch, k = divmod(s,
n // B) (e4e_jax/data/epochs.py), computed on the host per epoch, so a run resumed at step s starts
reading at step s with no iterator state. Each process reads only its rows of every global batch (the
positions its devices hold, `sharding.process_rows`).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from e4e_jax.data import epochs, train_files

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
    """(tf.data.Dataset of this process's (len(rows), H, W, 3) float32 batches in [-1, 1], the
    train_files.TrainImages that decodes them).

    rows: positions within each global batch that this process loads, in its local order (default: all).
    """
    tf = _tf()
    h, w = image_size
    rows = np.arange(global_batch) if rows is None else np.asarray(rows, np.int64)
    images = train_files.TrainImages(files, global_batch, image_size, seed, random_flip)

    def items():
        for step, (epoch, mine) in enumerate(epochs.process_slices(len(files), global_batch, seed, start_step, rows)):
            epochs.log_rows(f"train step {start_step + step}", rows, [files[i] for i in mine])
            for i in mine:
                yield epoch, i

    ds = tf.data.Dataset.from_generator(
        items, output_signature=(tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.int64))
    )

    def decode(epoch, index):
        img = tf.numpy_function(lambda e, i: images.load(int(e), int(i)), [epoch, index], tf.float32, stateful=False)
        img.set_shape((h, w, 3))
        return img

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(len(rows), drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE), images


def local_batches(
    files: list[Path],
    global_batch: int,
    image_size: tuple[int, int],
    seed: int,
    random_flip: bool,
    start_step: int,
    rows: Optional[Sequence[int]] = None,
) -> Iterator[np.ndarray]:
    """numpy (len(rows), H, W, 3) float32 batches of the pipeline (tfds.as_numpy). A decoding failure
    inside TensorFlow (all files unreadable: train_files.first_readable's NoInputError) is raised as that
    error, not as TensorFlow's wrapper of it."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    ds, images = build_dataset(files, global_batch, image_size, seed, random_flip, start_step, rows)
    try:
        for x in tfds.as_numpy(ds):
            yield np.asarray(x, np.float32)
    except tf.errors.OpError:
        if len(images.bad) == len(files):
            raise train_files.none_readable(files, images.bad, "training") from None
        raise
