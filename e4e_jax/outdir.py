"""Output folders that commands own: one writer at a time, never an input overwritten.

`lock(folder)` takes an exclusive lock held for the life of the command: the file
`<folder>/.e4e-jax.lock` holds the owner's pid, host and command, and an `fcntl.flock` on it is what
excludes (the kernel drops it when the owner dies, so a lock left by a killed run is stale and is taken
over). A second writer is refused with a `LockedError` naming the owner.
"""
from __future__ import annotations

import contextlib
import fcntl
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
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise UserError(f"{folder} exists and is not a folder; choose another output folder") from e
    except PermissionError as e:
        raise UserError(f"cannot create {folder}: permission denied; choose a writable output folder") from e
    path = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError as e:
            raise UserError(f"{folder} is not writable; choose a writable output folder") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(f"{folder} is in use by {_describe(path)}; wait for that run to finish, "
                              "or choose another output folder") from None
        # The owner before us may have unlinked the file between our open and our flock: then we hold
        # a lock on a dead inode and must retry on the path's current file.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command or " ".join(sys.argv[:2]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(info) + "\n").encode())
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def _resolved(p: str | os.PathLike) -> Path:
    return Path(p).expanduser().resolve()


def refuse_input_overlap(output: str | os.PathLike, inputs: Iterable[str | os.PathLike], flag: str = "--output") -> None:
    """Refuse an output that is one of the inputs, lies inside an input folder, or contains an input.

    Raises UserError naming both paths.
    """
    out = _resolved(output)
    for inp in inputs:
        if inp is None:
            continue
        src = _resolved(inp)
        if out == src or src in out.parents or out in src.parents:
            raise UserError(f"{flag} {output} overlaps the input {inp}; writing there could replace your input. "
                            f"Choose an output outside it")


def is_empty_dir(folder: Path) -> bool:
    """True if `folder` does not exist or holds nothing but our own lock file."""
    if not folder.exists():
        return True
    return all(p.name == LOCK_NAME for p in folder.iterdir())
