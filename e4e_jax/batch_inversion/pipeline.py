"""The streaming part of batch inversion: decode in a pool, invert on the devices, write in a pool.

    files ──► reader pool (PIL decode + official resize; or face alignment) ──► batches (ordered)
          ──► device: encoder (+ generator, crop, resize, uint8) with one batch in flight
          ──► writer pool (JPEG/PNG/WebP encode + atomic write)   ──► chunk commits (layout.py)

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
import io
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from e4e_jax import fileio
from e4e_jax.batch_inversion.layout import ChunkResult, Layout, image_name, staged_name
from e4e_jax.data import folder

# Encoder settings per output format. PNG at compress_level 1: lossless either way, ~3x faster to
# write than PIL's default level 6 for ~25% more bytes.
IMAGE_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
PNG_COMPRESS_LEVEL = 1


@dataclasses.dataclass(frozen=True)
class Item:
    """One decoded input image: which file (and face) it came from and which chunk it belongs to."""
    path: str
    face: int          # NO_FACE, or the face index from alignment
    last: bool         # the file's last item (its file is then fully accounted for)
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


def encode_image(img: np.ndarray, fmt: str, quality: int) -> bytes:
    """(H, W, 3) uint8 -> the file's bytes in `fmt` (a key of IMAGE_FORMATS)."""
    buf = io.BytesIO()
    kw = {"compress_level": PNG_COMPRESS_LEVEL} if fmt == "png" else {"quality": quality}
    Image.fromarray(img).save(buf, format=IMAGE_FORMATS[fmt], **kw)
    return buf.getvalue()


def iter_items(jobs: Sequence[tuple[str, int]], prepare: Callable, batch_size: int, workers: int,
               clock: StageClock, executor: str = "thread"):
    """Decode `jobs` ((path, chunk) in order) with `prepare(path) -> list[(face, image)] | Skipped` in a
    pool with bounded read-ahead; yield (images (b, H, W, 3) float32, items, skipped) in input order,
    each batch holding `batch_size` images except the last (as `folder.iter_batches`)."""
    pool_cls = concurrent.futures.ProcessPoolExecutor if executor == "process" else concurrent.futures.ThreadPoolExecutor
    window = max(2 * batch_size, 4 * workers)
    images: list[np.ndarray] = []
    items: list[Item] = []
    skipped: list[tuple[folder.Skipped, int]] = []

    def timed_prepare(path):
        t0 = time.perf_counter()
        out = prepare(path)
        return out, time.perf_counter() - t0

    with pool_cls(workers) as pool:
        pending: collections.deque = collections.deque()
        it = iter(jobs)

        def submit_next() -> None:
            job = next(it, None)
            if job is not None:
                pending.append((job, pool.submit(timed_prepare, job[0])))

        for _ in range(window):
            submit_next()
        while pending:
            (path, chunk), fut = pending.popleft()
            submit_next()
            out, seconds = fut.result()
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


class ChunkCollector:
    """Gathers results per chunk, names reconstructions, and commits a chunk once every file in it is
    accounted for and its images are written."""

    def __init__(self, layout: Layout, chunk_sizes: dict[int, int], n_latent: int,
                 known_rows: Optional[dict[int, int]], ext: Optional[str], on_commit: Callable[[int], None],
                 process: int = 0):
        self.layout, self.n_latent, self.ext, self.on_commit = layout, n_latent, ext, on_commit
        self.process = process
        self.remaining = dict(chunk_sizes)         # files not yet accounted for, per pending chunk
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
            lat = np.stack(r.latents) if r.latents else np.zeros((0, self.n_latent, 512), np.float32)
            self.layout.commit_chunk(j, ChunkResult(lat, r.files, np.asarray(r.faces, np.int32), r.images,
                                                    r.skipped, self.process), self.n_latent)
            del self.remaining[j]
            self.on_commit(j)


def write_image(root: Path, name: str, img: np.ndarray, fmt: str, quality: int, clock: StageClock) -> None:
    data = clock.timed("encode", encode_image, img, fmt, quality)
    # No fsync per image: a kill -9 cannot lose page-cache data, and a power cut is caught on --resume
    # (a chunk whose images are missing is redone, `Layout.is_committed`).
    clock.timed("write", fileio.write_bytes, root / name, data, fsync=False)


def run(model, layout: Layout, jobs: Sequence[tuple[str, int]], chunk_sizes: dict[int, int],
        known_rows: Optional[dict[int, int]], *, prepare: Callable, batch_size: int, workers: int, writers: int,
        image_format: Optional[str], quality: int, invert_fn, variables, mesh, clock: StageClock,
        executor: str = "thread", on_commit: Callable[[int], None] = lambda j: None,
        on_first_batch: Callable[[], None] = lambda: None, on_progress: Callable[[int], None] = lambda n: None) -> None:
    """Invert `jobs` and commit their chunks (see module doc). `image_format` None: latents only."""
    from e4e_jax import inversion

    n_latent = model.gen_config.n_latent
    import jax

    collector = ChunkCollector(layout, chunk_sizes, n_latent, known_rows, image_format, on_commit, jax.process_index())
    if image_format is not None:
        layout.images.mkdir(parents=True, exist_ok=True)
    max_pending_writes = 4 * batch_size
    pending_writes: collections.deque = collections.deque()
    batches = iter_items(jobs, prepare, batch_size, workers, clock, executor)
    # iter_invert wants (images, paths, skipped); an all-skipped tail comes with images None.
    host_batches = ((b if b is not None else np.zeros((0, *model.input_hw, 3), np.float32), items, skipped)
                    for b, items, skipped in batches)
    images_mode = "uint8" if image_format is not None else "none"
    first = True
    with concurrent.futures.ThreadPoolExecutor(max(1, writers), thread_name_prefix="e4e-write") as wpool:
        t_wait = time.perf_counter()
        for lat, imgs, items, skipped in inversion.iter_invert(model, host_batches, batch_size, mesh,
                                                                invert_fn=invert_fn, images=images_mode,
                                                                variables=variables):
            clock.add("device_wait", time.perf_counter() - t_wait)
            if first and len(items):
                on_first_batch()
                first = False
            for s, chunk in skipped:
                collector.add_skipped(s, chunk)
            for i, item in enumerate(items):
                name = collector.name_for(item) if image_format is not None else ""
                if image_format is not None:
                    while len(pending_writes) >= max_pending_writes:  # Back-pressure on a slow disk.
                        pending_writes.popleft().result()
                    fut = wpool.submit(write_image, layout.root, name, imgs[i], image_format, quality, clock)
                    pending_writes.append(fut)
                    collector.add_write(item.chunk, fut)
                collector.add(item, lat[i], name)
            while pending_writes and pending_writes[0].done():
                pending_writes.popleft().result()
            collector.commit_ready()
            on_progress(len({it.path for it in items if it.last}) + len(skipped))
            t_wait = time.perf_counter()
        collector.commit_ready(wait=True)
