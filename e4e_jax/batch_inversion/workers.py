"""Worker processes of the inversion pipeline: decoding and image writing off the main interpreter.

Threads are not enough here: PIL releases the GIL inside its codecs but runs its chunk loops, mode
conversions and numpy glue under it, so 16 decoding threads reached 362 img/s on a 16-core host where
the official script's 2 DataLoader processes reach 185 (BUILD_NOTES.md, "Batch inversion end to end").
Decoders return the resized uint8 pixels (a quarter of float32's bytes through the pipe; the
normalisation to [-1, 1] runs on the device). Writers read reconstructions from a shared-memory slot
ring instead of a pipe (3 MB per 1024² image), encode and write them.

Processes start with `forkserver` (never `fork`: the parent runs JAX's threads), with this module
preloaded so a worker starts in a fraction of a second.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import signal
import threading
import time
from multiprocessing import shared_memory
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from e4e_jax import fileio, interrupts

_CTX: Optional[multiprocessing.context.BaseContext] = None
# Encoder settings per output format. PNG at compress_level 1: lossless either way, ~3x faster to
# write than PIL's default level 6 for ~25% more bytes.
IMAGE_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
PNG_COMPRESS_LEVEL = 1


def context() -> multiprocessing.context.BaseContext:
    """The forkserver context, with the decode/encode modules preloaded in the server, which is started
    here with SIGINT blocked: no worker ever gets Ctrl-C (e4e_jax/interrupts.py)."""
    global _CTX
    if _CTX is None:
        _CTX = multiprocessing.get_context("forkserver")
        _CTX.set_forkserver_preload(["e4e_jax.batch_inversion.workers", "e4e_jax.data.folder", "PIL.Image"])
        interrupts.start_forkserver(_CTX)
    return _CTX


def ignore_sigint() -> None:
    """Pool initializer: Ctrl-C reaches the whole foreground process group; the parent alone handles it
    (and stops the pools), so workers do not each print a KeyboardInterrupt traceback. (Workers of
    `context()` have SIGINT blocked from birth already; this covers a pool of another context.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
    ignore_sigint()
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
        self._pool = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context(), initializer=_writer_init, initargs=(self._shm.name, self.shape, n_slots)
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
