"""Training input: global batches sharded P('data') for step s, s+1, …
(docs/architecture.md, "Data path of a training step").

Sources (config.data.source):
  'folder'    a folder of images with the official train transform (resize to (H, W), horizontal flip
              with p 0.5, scale to [-1, 1]); read by the tensorflow-datasets pipeline
              (e4e_jax/data/tfds_pipeline.py) where TensorFlow imports, else by a numpy/PIL loader over
              e4e_jax/data/folder.py (config.data.loader = 'auto' | 'tfds' | 'numpy').
  'synthetic' samples of the frozen generator itself (z ~ N(0, I), random noise), pooled/cropped like
              the reconstructions; generated on the devices, already sharded.

Every batch is a pure function of (seed, step) (e4e_jax/data/epochs.py: the epoch's permutation of the
sorted file list, drop_last, a flip coin per file), so a resumed run reads exactly the batches the
uninterrupted run would have read, with no iterator state in the checkpoint. Each process loads only its
rows of every global batch — the rows its devices hold under the batch sharding (`sharding.process_rows`), whatever the mesh's device order — and the global
array is built with `jax.make_array_from_process_local_data`. The test set is read the same way.

Both loaders read the same files by the same rule (train_files.py): the inference reader's listing and
decoding, a file that cannot be decoded logged once and replaced by the next readable file of the same
epoch's order (the test set: of the sorted list).
At DEBUG level (`e4e-jax train --log-level debug`) every process logs the rows and files it reads.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.data import folder, train_files
from e4e_jax.data.epochs import log_rows
from e4e_jax.runtime import sharding

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- numpy / PIL loader


class NumpyFolderLoader:
    """TF-free loader: PIL decoding (e4e_jax.data.folder) in a thread pool, the given rows only.

    rows: positions within each global batch that this process loads, in the order of its local array
    (`sharding.process_rows`); default: all of them (one process).
    """

    def __init__(
        self,
        files: list[Path],
        global_batch: int,
        image_size: tuple[int, int],
        seed: int,
        random_flip: bool = True,
        num_workers: int = 8,
        rows: Optional[Sequence[int]] = None,
    ):
        self.images = train_files.TrainImages(files, global_batch, image_size, seed, random_flip)
        self.files, self.order = self.images.files, self.images.order
        self.rows = np.arange(global_batch) if rows is None else np.asarray(rows, np.int64)
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, num_workers))

    def local_batch(self, step: int) -> np.ndarray:
        """(len(rows), H, W, 3) float32: this process's rows of the global batch of `step`."""
        epoch, idx = self.order.indices(step)
        mine = idx[self.rows]
        log_rows(f"train step {step}", self.rows, [self.files[int(i)] for i in mine])
        return np.stack(list(self.pool.map(lambda i: self.images.load(epoch, int(i)), mine))).astype(np.float32)

    def close(self):
        self.pool.shutdown(wait=False, cancel_futures=True)


# ----------------------------------------------------------------------------- synthetic source


@dataclasses.dataclass(frozen=True)
class GeneratorSource:
    """What the synthetic source needs of a run's frozen generator (training builds it:
    networks.Run.generator_source()); data/ knows nothing else of a training run."""

    generator: Any  # StyleGAN2 Generator module: apply(v, z, method='map'), apply(v, w, input_is_latent=True)
    variables: Any  # its frozen variables
    latent_avg: Optional[Any]  # (n_styles, D) truncation centre (row 0 used), or None: no truncation
    z_dim: int  # mapping network input size
    output_size: tuple[int, int]  # (h, w) the reconstructions are pooled to
    crop_rows: Optional[tuple[int, int]]  # (top, bottom) rows kept after pooling (cars), or None


def make_synthetic_sampler(source: GeneratorSource, config, mesh, stream: int = 0) -> Callable[[int, int], jax.Array]:
    """f(step or sample-seed, batch) -> (B, H, W, 3) images of the frozen generator, sharded P('data').

    z ~ N(0, I) from fold_in(data key of `stream`, step) (stream 0: training, 1: validation); truncation ψ towards latent_avg; random noise; pooled and
    cropped as the reconstructions are; optional horizontal flip; clipped to [-1, 1] like image data.
    """
    from e4e_jax.models.resampling import pool_and_crop

    gen = source.generator
    psi = float(config.data.synthetic_truncation)
    flip = bool(config.data.random_flip) and stream == 0  # validation samples are not flipped
    center = None if source.latent_avg is None else jnp.asarray(source.latent_avg[0])
    zdim = source.z_dim
    out_sharding = sharding.batch_sharding(mesh)

    def sample(gen_vars, key, batch: int):
        kz, kn, kf = jax.random.split(key, 3)
        w = gen.apply(gen_vars, jax.random.normal(kz, (batch, zdim)), method="map")
        if psi != 1.0 and center is not None:
            w = center + psi * (w - center)
        img = gen.apply(gen_vars, w, input_is_latent=True, noise_mode="random", rngs={"noise": kn})
        img = pool_and_crop(img.astype(jnp.float32), source.output_size, source.crop_rows)
        if flip:
            img = jnp.where(jax.random.bernoulli(kf, 0.5, (batch, 1, 1, 1)), img[:, :, ::-1], img)
        return jnp.clip(img, -1.0, 1.0)

    jitted = jax.jit(sample, static_argnums=2, out_shardings=out_sharding)
    gen_vars = sharding.replicate(source.variables, mesh)
    base = jax.random.fold_in(jax.random.key(config.seed + 1000), stream)

    def fn(step: int, batch: int) -> jax.Array:
        return jitted(gen_vars, jax.random.fold_in(base, step), batch)

    return fn


# ----------------------------------------------------------------------------- dispatch + prefetch


def _choose_loader(config) -> str:
    want = config.data.loader
    if want not in ("auto", "tfds", "numpy"):
        raise ValueError(f"config.data.loader must be 'auto', 'tfds' or 'numpy', got {want!r}")
    if want == "numpy":
        return "numpy"
    from e4e_jax.data import tfds_pipeline

    if tfds_pipeline.tf_available():
        return "tfds"
    if want == "tfds":
        raise RuntimeError(
            "config.data.loader='tfds' but tensorflow / tensorflow-datasets cannot be imported; "
            "pip install 'e4e-jax[train]' or use --config.data.loader=numpy"
        )
    log.info("tensorflow is not importable: using the numpy/PIL training loader")
    return "numpy"


def _prefetch(gen: Iterator[Any], size: int) -> Iterator[Any]:
    """Run `gen` in a background thread, `size` items ahead (host loading and H2D overlap the step)."""
    if size <= 0:
        yield from gen
        return
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    sentinel = object()

    def worker():
        try:
            for item in gen:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put(e)
            return
        q.put(sentinel)

    t = threading.Thread(target=worker, daemon=True, name="train-input-prefetch")
    t.start()
    try:
        while True:
            item = q.get()
            if item is sentinel:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join()  # never leave a thread inside a JAX call at interpreter exit


def _sampler(config, source: Optional[GeneratorSource], mesh, stream: int, cache: Optional[dict]):
    if cache is None:
        return make_synthetic_sampler(source, config, mesh, stream)
    if stream not in cache:
        cache[stream] = make_synthetic_sampler(source, config, mesh, stream)
    return cache[stream]


def train_batches(
    config, source: Optional[GeneratorSource], mesh, start_step: int, sampler_cache: Optional[dict] = None
) -> Iterator[dict]:
    """Global batches {'image': (B, H, W, 3)} for steps start_step, start_step + 1, … (endless).
    `source`: the frozen generator of config.data.source 'synthetic' (None for 'folder').
    `sampler_cache` (a dict kept by the caller) reuses compiled synthetic samplers across runs."""
    b = int(config.batch_size)
    if b % mesh.size:
        raise ValueError(f"batch_size {b} must be divisible by the number of devices {mesh.size}")
    bsh = sharding.batch_sharding(mesh)
    if config.data.source == "synthetic":
        sample = _sampler(config, source, mesh, 0, sampler_cache)

        def gen():
            step = start_step
            while True:
                yield {"image": sample(step, b)}
                step += 1

        return _prefetch(gen(), int(config.data.prefetch))
    if config.data.source != "folder":
        raise ValueError(f"config.data.source must be 'folder' or 'synthetic', got {config.data.source!r}")
    files = train_files.list_training_files(config)
    size = tuple(config.data.image_size)
    rows = sharding.process_rows(bsh, b)
    if _choose_loader(config) == "tfds":
        from e4e_jax.data import tfds_pipeline

        local = tfds_pipeline.local_batches(files, b, size, config.seed, config.data.random_flip, start_step, rows)
    else:
        loader = NumpyFolderLoader(files, b, size, config.seed, config.data.random_flip, config.data.num_workers, rows)

        def local_gen():
            step = start_step
            try:
                while True:
                    yield loader.local_batch(step)
                    step += 1
            finally:
                loader.close()

        local = local_gen()

    shape = (b, *size, 3)

    def gen():
        for x in local:
            yield {"image": jax.make_array_from_process_local_data(bsh, np.ascontiguousarray(x), shape)}

    return _prefetch(gen(), int(config.data.prefetch))


def eval_batches(config, source: Optional[GeneratorSource], mesh, sampler_cache: Optional[dict] = None) -> list[dict]:
    """Held-out batches for validation (no flip): the test folder in sorted order, batches of
    test_batch_size rounded up to the device count, last partial batch dropped (official drop_last);
    or `num_eval_samples` synthetic samples from a seed the training stream never uses.

    Test folder: batch k holds files k·b … k·b + b − 1 of the sorted list; each process decodes only its
    rows of each batch. An undecodable file is replaced by the next readable one of the list (the same
    choice on every process, without any of them decoding the others' rows)."""
    b = sharding.round_up(int(config.test_batch_size), mesh.size)
    limit = int(config.max_val_batches)
    if config.data.source == "synthetic":
        sample = _sampler(config, source, mesh, 1, sampler_cache)
        n = max(1, int(config.data.num_eval_samples) // b)
        n = n if limit < 0 else min(n, limit)
        return [{"image": sample(i, b)} for i in range(n)]
    if not config.data.test_dir:
        return []
    files = folder.list_images(config.data.test_dir)
    n = len(files) // b
    if n == 0:
        log.warning(
            "config.data.test_dir %s holds %d images, fewer than one test batch of %d: no validation",
            config.data.test_dir,
            len(files),
            b,
        )
    n = n if limit < 0 else min(n, limit)
    size = tuple(config.data.image_size)
    bsh = sharding.batch_sharding(mesh)
    rows = sharding.process_rows(bsh, b)
    order, bad = range(len(files)), {}
    batches = []
    for k in range(n):
        log_rows(f"test batch {k}", rows, [files[k * b + int(r)] for r in rows])
        local = np.stack([train_files.first_readable(files, order, k * b + int(r), size, bad, "test")[1] for r in rows])
        batches.append({"image": jax.make_array_from_process_local_data(bsh, local, (b, *size, 3))})
    return batches
