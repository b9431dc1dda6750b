"""Worker processes of the inversion pipeline: decoding and image writing off the main interpreter.

Threads are not enough here: PIL releases the GIL inside its codecs but runs its chunk loops, mode
conversions and numpy glue under it, so 16 decoding threads reached 362 img/s on a 16-core host where
the official script's 2 DataLoader processes reach 185 (BUILD_NOTES.md, "Batch inversion end to end").
Decoders return the resized uint8 pixels (a quarter of float32's bytes through the pipe; the
normalisation to [-1, 1] runs on the device). Writers read reconstructions from a shared-memory slot
ring instead of a pipe (3 MB per 1024² image), encode and write them.

Pools come from `e4e_jax.runtime.worker_pool`: forkserver processes (never `fork`: the parent runs JAX's
threads) with this module preloaded so a worker starts in a fraction of a second, which ignore Ctrl-C
and end with the main process even when it is killed (`kill -9`, the OOM killer). The slot ring is
unlinked by `WriterPool.close`, or, after such a kill, by the resource tracker once the writers are gone.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from multiprocessing import shared_memory
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from e4e_jax.jobs.invert.options import IMAGE_FORMATS  # noqa: F401 (the formats this module writes)
from e4e_jax.runtime import worker_pool
from e4e_jax.storage import fileio

# Imported once in the forkserver, not in every worker.
PRELOAD = ("e4e_jax.jobs.invert.workers", "e4e_jax.data.folder", "PIL.Image")
# Encoder settings per output format. PNG at compress_level 1: lossless either way, ~3x faster to
# write than PIL's default level 6 for ~25% more bytes.
PNG_COMPRESS_LEVEL = 1


def decoder_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """The decoder processes (`decode_group` tasks)."""
    return worker_pool.process_pool(workers, preload=PRELOAD)


def decode_group(prepare: Callable, paths: Sequence[str]) -> list[tuple[object, float]]:
    """Run `prepare` on each path (in a worker); returns [(result, seconds)] in order."""
    out = []
    for p in paths:
        t0 = time.perf_counter()
        r = prepare(p)
        out.append((r, time.perf_counter() - t0))
    return out


# ---- writers ---------------------------------------------------------------------------------------
_SLOTS: Optional[np.ndarray] = None
_SHM: Optional[shared_memory.SharedMemory] = None


def _writer_init(shm_name: str, shape: tuple, n_slots: int) -> None:
    global _SLOTS, _SHM
    _SHM = shared_memory.SharedMemory(name=shm_name)
    _SLOTS = np.ndarray((n_slots, *shape), np.uint8, buffer=_SHM.buf)


def encode_image(img: np.ndarray, fmt: str, quality: int) -> bytes:
    """(H, W, 3) uint8 -> the file's bytes in `fmt` (a key of IMAGE_FORMATS)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    kw = {"compress_level": PNG_COMPRESS_LEVEL} if fmt == "png" else {"quality": quality}
    Image.fromarray(img).save(buf, format=IMAGE_FORMATS[fmt], **kw)
    return buf.getvalue()


def write_image(path: str, img: np.ndarray, fmt: str, quality: int) -> tuple[float, float]:
    """Encode and write one reconstruction atomically; returns (encode s, write s).

    No fsync per image: a kill -9 cannot lose page-cache data, and a power cut is caught on --resume
    (a chunk whose images are missing is redone, `Layout.is_committed`)."""
    t0 = time.perf_counter()
    data = encode_image(img, fmt, quality)
    t1 = time.perf_counter()
    fileio.write_bytes(Path(path), data, fsync=False)
    return t1 - t0, time.perf_counter() - t1


def _write_slot(slot: int, path: str, fmt: str, quality: int) -> tuple[float, float]:
    return write_image(path, _SLOTS[slot], fmt, quality)


class WriterPool:
    """Writer processes fed through `n_slots` shared-memory image slots (back-pressure: `submit`
    blocks while every slot is in use)."""

    def __init__(self, workers: int, shape: tuple, n_slots: int):
        self.shape, self.n_slots = tuple(shape), n_slots
        self._shm = shared_memory.SharedMemory(create=True, size=int(np.prod(shape)) * n_slots)
        self._slots = np.ndarray((n_slots, *shape), np.uint8, buffer=self._shm.buf)
        self._free = list(range(n_slots))
        self._lock = threading.Lock()
        self._sem = threading.Semaphore(n_slots)
        self._pool = worker_pool.process_pool(
            workers, initializer=_writer_init, initargs=(self._shm.name, self.shape, n_slots), preload=PRELOAD
        )

    def submit(self, img: np.ndarray, path: Path, fmt: str, quality: int) -> concurrent.futures.Future:
        self._sem.acquire()
        with self._lock:
            slot = self._free.pop()
        self._slots[slot] = img
        fut = self._pool.submit(_write_slot, slot, str(path), fmt, quality)

        def release(_f, slot=slot):
            with self._lock:
                self._free.append(slot)
            self._sem.release()

        fut.add_done_callback(release)
        return fut

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        del self._slots
        self._shm.close()
        self._shm.unlink()
