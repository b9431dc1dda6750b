"""The streaming part of batch inversion: decode in a pool, invert on the devices, write in a pool.

    files ──► decoder processes (PIL decode + official resize; or face alignment) ──► batches (ordered)
          ──► device: encoder (+ generator, crop, resize, uint8) with one batch in flight
          ──► writer processes (JPEG/PNG/WebP encode + atomic write) ──► chunk commits (layout.py)

The device never waits on the host while decoded batches are ready: the reader pool reads ahead a
bounded window, `inversion.iter_invert` dispatches batch i+1 before copying batch i back, and the
writers encode off the main thread with a bounded queue (so memory stays flat when the disk is slow).
Timings of each stage are summed per stage (thread time, so stages running in parallel add up to more
than the wall clock) and reported in report.json.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from e4e_jax.data import folder
from e4e_jax.jobs.invert.layout import ChunkResult, Layout, image_name, staged_name
from e4e_jax.jobs.invert.workers import WriterPool, decode_group, decoder_pool

# Files per decode task: amortises the pool's per-task cost (pickling, queue hops) at ~1,000 img/s.
DECODE_GROUP = 8


@dataclasses.dataclass(frozen=True)
class Item:
    """One decoded input image: which file (and face) it came from and which chunk it belongs to."""

    path: str
    face: int  # NO_FACE, or the face index from alignment
    last: bool  # the file's last item (its file is then fully accounted for)
    chunk: int


class StageClock:
    """Seconds spent per stage, summed over threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = collections.defaultdict(float)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds

    def timed(self, stage: str, fn: Callable, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.add(stage, time.perf_counter() - t0)


def iter_items(
    jobs: Sequence[tuple[str, int]],
    prepare: Callable,
    batch_size: int,
    workers: int,
    clock: StageClock,
    pool: Optional[concurrent.futures.Executor] = None,
):
    """Decode `jobs` ((path, chunk) in order) with `prepare(path) -> list[(face, uint8 image)] | Skipped`
    in worker processes with bounded read-ahead; yield (images (b, H, W, 3) uint8, items, skipped) in
    input order, each batch holding `batch_size` images except the last (as `folder.iter_batches`).
    `pool`: an executor already started (so its start overlaps the model load); else one is made."""
    own = pool is None
    if own:
        pool = decoder_pool(workers)
    groups = [jobs[i : i + DECODE_GROUP] for i in range(0, len(jobs), DECODE_GROUP)]
    window = max(2, -(-2 * batch_size // DECODE_GROUP), 2 * workers)
    images: list[np.ndarray] = []
    items: list[Item] = []
    skipped: list[tuple[folder.Skipped, int]] = []
    try:
        pending: collections.deque = collections.deque()
        it = iter(groups)

        def submit_next() -> None:
            group = next(it, None)
            if group is not None:
                pending.append((group, pool.submit(decode_group, prepare, [p for p, _ in group])))

        for _ in range(window):
            submit_next()
        while pending:
            group, fut = pending.popleft()
            submit_next()
            for (path, chunk), (out, seconds) in zip(group, fut.result()):
                clock.add("decode", seconds)
                if isinstance(out, folder.Skipped):
                    skipped.append((out, chunk))
                    continue
                for k, (face, img) in enumerate(out):
                    images.append(img)
                    items.append(Item(path, face, k == len(out) - 1, chunk))
                    if len(images) == batch_size:
                        yield np.stack(images), items, skipped
                        images, items, skipped = [], [], []
        if images or skipped:
            yield (np.stack(images) if images else None), items, skipped
    finally:
        if own:
            pool.shutdown(wait=False, cancel_futures=True)


def latent_shape(model) -> tuple[int, int]:
    """(n_latent, style_dim): the shape of one image's codes in latents.npy."""
    return model.gen_config.n_latent, model.gen_config.style_dim


class ChunkCollector:
    """Gathers results per chunk, names reconstructions, and commits a chunk once every file in it is
    accounted for and its images are written. `latent_shape`: one image's latent rows (`run`'s row_shape)."""

    def __init__(
        self,
        layout: Layout,
        chunk_sizes: dict[int, int],
        latent_shape: tuple[int, int],
        known_rows: Optional[dict[int, int]],
        ext: Optional[str],
        on_commit: Callable[[int], None],
        process: int = 0,
    ):
        self.layout, self.latent_shape, self.ext, self.on_commit = layout, latent_shape, ext, on_commit
        self.process = process
        self.remaining = dict(chunk_sizes)  # files not yet accounted for, per pending chunk
        # Latent rows of each chunk known so far (committed ones, then each finished here); None when
        # other processes invert the chunks in between, so rows are only known at the merge.
        self.known_rows = known_rows
        self.results = {j: ChunkResult([], [], [], [], []) for j in chunk_sizes}
        self.writes: dict[int, list[concurrent.futures.Future]] = collections.defaultdict(list)

    def _row_base(self, chunk: int) -> Optional[int]:
        if self.known_rows is None or any(i not in self.known_rows for i in range(chunk)):
            return None
        return sum(self.known_rows[i] for i in range(chunk))

    def name_for(self, item: Item) -> str:
        k = len(self.results[item.chunk].files)
        stem = Path(item.path).stem
        base = self._row_base(item.chunk)
        if base is not None:
            return image_name(base + k, stem, self.ext, item.face)
        return staged_name(item.chunk, k, stem, self.ext, item.face)

    def add(self, item: Item, latent: np.ndarray, name: str) -> None:
        r = self.results[item.chunk]
        r.latents.append(latent)
        r.files.append(item.path)
        r.faces.append(item.face)
        r.images.append(name)
        if item.last:
            self._account(item.chunk)

    def add_skipped(self, s: folder.Skipped, chunk: int) -> None:
        self.results[chunk].skipped.append((str(s.path), s.reason))
        self._account(chunk)

    def add_write(self, chunk: int, fut: concurrent.futures.Future) -> None:
        self.writes[chunk].append(fut)

    def _account(self, chunk: int) -> None:
        self.remaining[chunk] -= 1
        if self.remaining[chunk] == 0 and self.known_rows is not None:
            self.known_rows[chunk] = len(self.results[chunk].files)

    def commit_ready(self, wait: bool = False) -> None:
        """Commit every fully accounted chunk whose writes are done (all of them if `wait`)."""
        for j in [j for j, left in self.remaining.items() if left == 0]:
            futs = self.writes.pop(j, [])
            if not wait and not all(f.done() for f in futs):
                self.writes[j] = futs
                continue
            for f in futs:
                f.result()  # A failed write (disk full, permissions) stops the run here, uncommitted.
            r = self.results.pop(j)
            lat = np.stack(r.latents) if r.latents else np.zeros((0, *self.latent_shape), np.float32)
            self.layout.commit_chunk(
                j,
                ChunkResult(lat, r.files, np.asarray(r.faces, np.int32), r.images, r.skipped, self.process),
                self.latent_shape,
            )
            del self.remaining[j]
            self.on_commit(j)


@dataclasses.dataclass(frozen=True)
class Run:
    """One process's share of an inversion run, as `run` needs it. `jobs`: (path, chunk index) in order;
    `chunk_sizes`: files per chunk of this share; `known_rows`: rows of the chunks committed earlier (None:
    unknown, several processes); `image_format` None: latents only. `row_shape`: one image's latents as
    `invert_fn` returns them (default `latent_shape(model)`; ReStyle's --save-iterations: (iterations,
    n_latent, 512)). Callbacks (main thread): on_commit(chunk) after each commit, on_skip(path, reason) for
    each file that gives no latent, on_progress(files done)."""

    model: Any
    layout: Layout
    jobs: Sequence[tuple[str, int]]
    chunk_sizes: dict[int, int]
    known_rows: Optional[dict[int, int]]
    prepare: Callable
    batch_size: int
    workers: int
    writers: int
    image_format: Optional[str]
    quality: int
    invert_fn: Any
    variables: Any
    mesh: Any
    clock: StageClock
    decode_pool: Optional[concurrent.futures.Executor] = None
    row_shape: Optional[tuple[int, ...]] = None
    on_commit: Callable[[int], None] = lambda j: None
    on_first_batch: Callable[[], None] = lambda: None
    on_progress: Callable[[int], None] = lambda n: None
    on_skip: Callable[[str, str], None] = lambda path, reason: None


def run(r: Run) -> None:
    """Invert `r.jobs` and commit their chunks (see module doc and `Run`)."""
    import jax

    from e4e_jax.inference import inversion

    collector = ChunkCollector(
        r.layout,
        r.chunk_sizes,
        r.row_shape or latent_shape(r.model),
        r.known_rows,
        r.image_format,
        r.on_commit,
        jax.process_index(),
    )
    if r.image_format is not None:
        r.layout.images.mkdir(parents=True, exist_ok=True)
    batches = iter_items(r.jobs, r.prepare, r.batch_size, r.workers, r.clock, r.decode_pool)
    # iter_invert wants (images, paths, skipped); an all-skipped tail comes with images None.
    host_batches = (
        (b if b is not None else np.zeros((0, *r.model.input_hw, 3), np.uint8), items, skipped)
        for b, items, skipped in batches
    )
    images_mode = "uint8" if r.image_format is not None else "none"
    first = True
    wpool: Optional[WriterPool] = None

    def timed_write(fut: concurrent.futures.Future) -> None:
        if not fut.exception():
            enc, wr = fut.result()
            r.clock.add("encode", enc)
            r.clock.add("write", wr)

    try:
        t_wait = time.perf_counter()
        for lat, imgs, items, skipped in inversion.iter_invert(
            r.model,
            host_batches,
            r.batch_size,
            r.mesh,
            invert_fn=r.invert_fn,
            images=images_mode,
            variables=r.variables,
        ):
            r.clock.add("device_wait", time.perf_counter() - t_wait)
            if first and len(items):
                r.on_first_batch()
                first = False
            for s, chunk in skipped:
                collector.add_skipped(s, chunk)
                r.on_skip(str(s.path), s.reason)
            if r.image_format is not None and len(items) and wpool is None:
                # Slots for four batches: the main thread only waits when the writers fall behind.
                wpool = WriterPool(max(1, r.writers), imgs.shape[1:], 4 * r.batch_size)
            for i, item in enumerate(items):
                name = ""
                if r.image_format is not None:
                    name = collector.name_for(item)
                    fut = r.clock.timed(
                        "hand_to_writers", wpool.submit, imgs[i], r.layout.root / name, r.image_format, r.quality
                    )  # blocks while every slot is in use
                    fut.add_done_callback(timed_write)
                    collector.add_write(item.chunk, fut)
                collector.add(item, lat[i], name)
            collector.commit_ready()
            r.on_progress(len({it.path for it in items if it.last}) + len(skipped))
            t_wait = time.perf_counter()
        collector.commit_ready(wait=True)
    finally:
        if wpool is not None:
            wpool.close()
