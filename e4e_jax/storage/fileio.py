"""Atomic file writes: a reader (or a rerun after `kill -9`) sees the old file or the new one, never
half of one.

Every temporary file is written beside its target as `.<name>.tmp-<pid>-<random>` and renamed over it
with `os.replace`; `remove_stale_temps` clears the ones a killed run left behind. A write that finds no
room (a full disk or quota, a file larger than `ulimit -f` allows) is a `NoRoomError` naming the file, its
temporary file removed; `naming_no_room` gives writers that are not these (orbax, a log) the same.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from e4e_jax.errors import UserError
from e4e_jax.runtime import memory, pause_points

TMP_MARK = ".tmp-"
WRITE_POINT = "write-before-rename"  # pause point (pause_points.py): written, not yet renamed into place
# A write that found no room: a full disk, a full quota, a file larger than the process may write
# (RLIMIT_FSIZE: Python ignores SIGXFSZ, so the write fails with EFBIG).
NO_ROOM_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")  # how tensorstore (orbax's writer) states the OS error


class NoRoomError(UserError, OSError):
    """A write found no room: one line naming the file. Also an OSError (errno, strerror, filename), so
    code that handles the machine's write failures as such (e.g. invert's --resume hint) sees it as one.
    `then`: how to go on once there is room (a command that can resume says so)."""

    then = "run the command again"

    def __str__(self) -> str:
        return f"no room to write {self.filename} ({self.strerror}); free space (or raise the file size limit), then {self.then}"


def no_room_errno(error: BaseException) -> Optional[int]:
    """The errno (NO_ROOM_ERRNOS) when `error` says a write found no room, as an OSError or in the message
    of tensorstore's ValueError (orbax); else None."""
    if isinstance(error, OSError):
        return error.errno if error.errno in NO_ROOM_ERRNOS else None
    match = _OS_ERROR_CODE.search(str(error)) if isinstance(error, (ValueError, RuntimeError)) else None
    code = int(match.group(1)) if match else None
    return code if code in NO_ROOM_ERRNOS else None


def check_room(folder: Path, nbytes: int, target: str | os.PathLike) -> None:
    """Raise NoRoomError naming `target` when `nbytes` cannot be written into `folder`: more than its disk
    has free, or more than this process's file-size limit (RLIMIT_FSIZE, `ulimit -f`). For writers whose
    threads cannot be stopped once one fails (orbax's tensorstore writes, which made a removed temporary
    folder again after a failed save): they start only when the data fits. The limit is compared with the
    whole size, since orbax packs many arrays into one data file."""
    import resource
    import shutil

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and nbytes > limit:
        raise NoRoomError(errno.EFBIG, os.strerror(errno.EFBIG), str(target))
    if nbytes > shutil.disk_usage(folder).free:
        raise NoRoomError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))


@contextlib.contextmanager
def naming_no_room(path: str | os.PathLike) -> Iterator[None]:
    """Within the block, a write that finds no room raises NoRoomError naming `path` (what is written)."""
    try:
        yield
    except NoRoomError:
        raise
    except (OSError, ValueError, RuntimeError) as e:
        code = no_room_errno(e)
        if code is None:
            raise
        raise NoRoomError(code, os.strerror(code), str(path)) from e


def temp_prefix(name: str) -> str:
    """The start of every temporary name made for the target `name` (`.NAME.tmp-`)."""
    return f".{name}{TMP_MARK}"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Files get the permissions the user's umask allows (mkstemp alone would make them 0600).
_FILE_MODE = 0o666 & ~_current_umask()


def _temp_beside(path: Path) -> tuple[int, str]:
    return tempfile.mkstemp(prefix=f"{temp_prefix(path.name)}{os.getpid()}-", dir=path.parent)


def temp_glob(name_pattern: str) -> str:
    """fnmatch pattern of the temporary files made for the targets matching `name_pattern` (for a
    command's list of the names it owns; `outdir.Outputs` owns them with their targets)."""
    return f"{temp_prefix(name_pattern)}*"


def temp_path_beside(path: str | os.PathLike) -> Path:
    """A fresh, empty temporary file beside `path` with the name pattern `remove_stale_temps` clears
    (for writers that need a path rather than a file object, e.g. `np.lib.format.open_memmap`);
    the caller renames it over `path` with `os.replace` or deletes it (`replacing` does both)."""
    fd, tmp = _temp_beside(Path(path))
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """`with replacing(path) as tmp:` write the file `tmp` (a `temp_path_beside(path)`); it is renamed
    over `path` when the block ends, and deleted instead if the block raises. Close the file first."""
    tmp = temp_path_beside(path)
    try:
        with naming_no_room(path):
            yield tmp
        pause_points.reached(WRITE_POINT)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def allocated_memmap(tmp: str | os.PathLike, shape: tuple[int, ...], dtype, final: str | os.PathLike) -> np.memmap:
    """A .npy memmap of `shape` and `dtype` at `tmp` (e.g. a `replacing(final)` file) with its blocks
    reserved: a sparse memmap on a full disk fails later with SIGBUS, not an OSError. NoRoomError naming
    `final` when there is no room."""
    with naming_no_room(final):
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        with open(tmp, "r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # no fallocate here: go on
                    raise
        return out


def write_atomic(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None], *, fsync: bool = True) -> Path:
    """Write `path` through `write(f)` on a temporary file in the same folder, then rename it into place.

    fsync: flush the file to disk before the rename (the durable default); a caller writing many small
    files whose loss on a power cut is repaired by `--resume` may pass False.
    """
    path = Path(path)
    with naming_no_room(path):
        fd, tmp = _temp_beside(path)
    try:
        os.fchmod(fd, _FILE_MODE)
        with naming_no_room(path), os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        pause_points.reached(WRITE_POINT)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text(path: str | os.PathLike, text: str, **kw) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")), **kw)


def write_bytes(path: str | os.PathLike, data: bytes, **kw) -> Path:
    return write_atomic(path, lambda f: f.write(data), **kw)


class _PlainWriter:
    """A file seen through its `write` only: numpy then writes an array in chunks with `write`, whose
    failures carry their errno, instead of `ndarray.tofile`, which reports a full disk as an OSError
    without one ("N requested and M written")."""

    def __init__(self, f: io.BufferedWriter):
        self.write = f.write


def save_npy(path: str | os.PathLike, array: np.ndarray, **kw) -> Path:
    arr = np.asarray(array)
    return write_atomic(path, lambda f: np.lib.format.write_array(_PlainWriter(f), arr, allow_pickle=False), **kw)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """`np.load` of a .npy file (no pickles), with a UserError naming the file for a missing, empty,
    truncated or foreign file or a folder."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; expected a .npy file")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes); re-create it")
    _check_npy_size(path)
    try:
        out = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise UserError(f"{path} is not a readable .npy array ({type(e).__name__}: {e}); re-create it") from e
    if not isinstance(out, np.ndarray):  # np.load opens any zip (.npz, a torch .pt) as an archive
        out.close()
        raise UserError(f"{path} is a zip archive (.npz or a torch file), not a .npy array; pass a .npy file")
    return out


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int] | None:
    """(shape, dtype, data offset) from a .npy header of format 1 or 2; None for anything else (a zip,
    a damaged or a format-3 header), which `np.load` then reports."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                return None
            shape, _, dtype = read[version](f)
            return tuple(shape), np.dtype(dtype), f.tell()
    except (ValueError, OSError, EOFError, TypeError):
        return None


def _check_npy_size(path: Path) -> None:
    """Before np.load allocates the array its header describes: the file must hold that many bytes (a
    damaged or forged header may claim terabytes), and they must fit in memory (UserError naming the file)."""
    header = _npy_header(path)
    if header is None:
        return
    shape, dtype, offset = header
    need = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    held = path.stat().st_size - offset
    if held < need:
        raise UserError(
            f"{path}: its header describes a {dtype} array of shape {shape} ({memory.format_bytes(need)}), "
            f"but the file holds {memory.format_bytes(held)} of data: it is truncated or damaged; re-create it"
        )
    memory.require_room(need, f"reading {path} ({dtype} array of shape {shape})", "split it into smaller files")


def is_temp_name(name: str) -> bool:
    """True for the names `write_atomic` (and `bundle.save`) give their temporary files."""
    return name.startswith(".") and TMP_MARK in name


def remove_stale_temps(folder: str | os.PathLike, target: str | None = None) -> list[Path]:
    """Delete the temporary files and folders a killed run left directly in `folder`; returns them.

    Only names of our own temporary pattern are touched, and with `target` only those made for the file
    or folder of that name. Call it while holding the lock of what they belong to (`e4e_jax.storage.outdir.lock`
    for the folder, `outdir.lock_target` for the target), so no live writer's temporary file is removed.
    """
    import shutil

    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if is_temp_name(p.name) and (target is None or p.name.startswith(temp_prefix(target))):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed
