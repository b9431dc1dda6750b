"""Output folders that commands own: one writer at a time, never an input overwritten.

`lock(folder)` takes an exclusive lock held for the life of the command: the file
`<folder>/.e4e-jax.lock` holds the owner's pid, host and command, and an `fcntl.flock` on it is what
excludes (the kernel drops it when the owner dies, so a lock left by a killed run is stale and is taken
over). A second writer is refused with a `LockedError` naming the owner. `lock_target(path)` does the
same for one file or bundle written into a folder the command does not own, `claim(folder)` also removes
the folder again if the command fails before writing anything into it, and `remove_owned` clears a
command's own earlier results for `--overwrite`.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

from e4e_jax.errors import UserError

LOCK_NAME = ".e4e-jax.lock"


class LockedError(UserError):
    """Another live run is writing into the same folder."""


def _describe(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another run"
    return f"pid {info.get('pid')} on {info.get('host')} ({info.get('command', '?')}, since {info.get('started', '?')})"


@contextlib.contextmanager
def lock(folder: str | os.PathLike, command: str | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if missing) for the `with` block.

    Raises LockedError if another live process holds it. On a shared file system the lock works
    where the file system supports `flock` (local disks, NFSv4, Lustre, GCS FUSE does not: there,
    do not start two runs into one folder).
    """
    folder = Path(folder)
    _make_folder(folder)
    with _hold(folder / LOCK_NAME, folder, command) as path:
        yield path


@contextlib.contextmanager
def lock_target(path: str | os.PathLike, command: str | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on writing `path` (a file or a folder that may not exist yet) for the
    `with` block, through the lock file `.<name>.e4e-jax.lock` beside it (its parent is created).

    For outputs that replace one thing whole (a bundle, an .npy) in a folder the command does not own;
    raises LockedError like `lock`.
    """
    path = Path(path)
    _make_folder(path.parent)
    with _hold(path.parent / f".{path.name}{LOCK_NAME}", path, command) as lock_path:
        yield lock_path


@contextlib.contextmanager
def claim(folder: str | os.PathLike, command: str | None = None) -> Iterator[Path]:
    """`lock(folder)`; if the block raises and this call created the folder, it is removed again when it
    holds nothing (so a failed run does not leave an empty output that blocks the rerun)."""
    folder = Path(folder)
    created = not folder.exists()
    try:
        with lock(folder, command) as path:
            yield path
    except BaseException:
        if created and is_empty_dir(folder):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def remove_owned(folder: str | os.PathLike, patterns: Iterable[str]) -> list[Path]:
    """Delete the files directly in `folder` whose names match one of `patterns` (fnmatch globs naming
    what a command writes there), so `--overwrite` leaves no result of an earlier run beside the new one;
    anything else is kept. Call it while holding the folder's lock. Returns the removed paths."""
    folder = Path(folder)
    patterns = list(patterns)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns) and (p.is_file() or p.is_symlink()):
            p.unlink()
            removed.append(p)
    return removed


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise UserError(f"{blocker} exists and is not a folder; choose another output folder than {folder}") from e
    except PermissionError as e:
        raise UserError(f"cannot create {folder}: permission denied; choose a writable output folder") from e
    except OSError as e:  # a read-only file system, a full disk, ...
        raise UserError(f"cannot create {folder} ({e.strerror or e}); choose another output folder") from e


@contextlib.contextmanager
def _hold(path: Path, what: Path, command: str | None) -> Iterator[Path]:
    """flock the file `path` (created) on behalf of the output `what`; see `lock`."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError as e:
            raise UserError(f"{path.parent} is not writable; choose a writable output folder") from e
        except OSError as e:  # e.g. a read-only file system (EROFS)
            raise UserError(f"cannot write in {path.parent} ({e.strerror}); choose a writable output folder") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = "output folder" if what == path.parent else "output"
            raise LockedError(
                f"{what} is in use by {_describe(path)}; wait for that run to finish, or choose another {other}"
            ) from None
        # The owner before us may have unlinked the file between our open and our flock: then we hold
        # a lock on a dead inode and must retry on the path's current file.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command or " ".join(sys.argv[:2]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(info) + "\n").encode())
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def refuse_unwritable(path: str | os.PathLike, flag: str = "--output") -> None:
    """UserError unless `path` (an output file or folder, existing or not) can be created or written: its
    nearest existing ancestor must be a writable folder. A fail-fast check before any work; the writes
    themselves still report what goes wrong."""
    p = Path(path).absolute()
    while not p.exists() and not p.is_symlink() and p != p.parent:
        p = p.parent
        if p.exists() and not p.is_dir():
            raise UserError(f"{flag} {path}: {p} is a file, not a folder; choose another output")
    target = p if p.is_dir() else p.parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {target} is not writable; choose a writable output")


def in_use(folder: str | os.PathLike) -> str | None:
    """Who holds `lock(folder)` now ('pid N on HOST (...)'), or None: for readers that must not take a
    half-written output as a finished one."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _describe(path)
    finally:
        os.close(fd)  # also releases a shared lock we got
    return None


def refuse_in_use(folder: str | os.PathLike, flag: str) -> None:
    """UserError if a live run is writing into `folder`, the input of `flag`."""
    owner = in_use(folder)
    if owner is not None:
        raise UserError(f"{flag} {folder} is still being written by {owner}; wait for that run to finish")


def _resolved(p: str | os.PathLike) -> Path:
    return Path(p).expanduser().resolve()


def refuse_input_overlap(
    output: str | os.PathLike, inputs: Iterable[str | os.PathLike], flag: str = "--output"
) -> None:
    """Refuse an output that is one of the inputs, lies inside an input folder, or contains an input.

    Raises UserError naming both paths.
    """
    out = _resolved(output)
    for inp in inputs:
        if inp is None:
            continue
        src = _resolved(inp)
        if out == src or src in out.parents or out in src.parents:
            raise UserError(
                f"{flag} {output} overlaps the input {inp}; writing there could replace your input. "
                f"Choose an output outside it"
            )


def is_empty_dir(folder: Path) -> bool:
    """True if `folder` does not exist or holds nothing but our own lock file."""
    if not folder.exists():
        return True
    return all(p.name == LOCK_NAME for p in folder.iterdir())
