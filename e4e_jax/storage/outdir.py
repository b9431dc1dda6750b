"""Output folders that commands own: one writer at a time, never an input or a foreign file overwritten.

`lock(folder)` takes an exclusive lock held for the life of the command: the file
`<folder>/.e4e-jax.lock` holds the owner's pid, host and command, and an `fcntl.flock` on it is what
excludes (the kernel drops it when the owner dies, so a lock left by a killed run is stale and is taken
over). A second writer is refused with a `LockedError` naming the owner. `lock_target(path)` does the
same for one file or bundle written into a folder the command does not own.

Ownership (issue 30): a command writes into a folder only what its `Outputs` name, and marks the folder
as its own (`.e4e-jax.owner`, written by `own` before any output, so a killed run's partial output is
recognised too). `own` refuses, naming the entries (the first few and a count), a folder that holds
anything else: another command's output, files it did not write, or a folder without the mark (the
user's files, or an output of a version before the mark: the message says to move it away), `--overwrite`
or not. `Outputs.remove` then clears a command's own earlier results for `--overwrite`, and nothing else.
`claim(folder)` is `lock` + `own`, and removes the folder again if the command fails before writing
anything into it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import fnmatch
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional

from e4e_jax.errors import UserError
from e4e_jax.storage import fileio

LOCK_NAME = ".e4e-jax.lock"
OWNER_NAME = ".e4e-jax.owner"  # {"command", "format", "e4e_jax_version"}: whose output a folder is
OWNER_FORMAT = 1
SHOWN_ENTRIES = 5  # entries a refusal names before "and N more"


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
def claim(
    folder: str | os.PathLike,
    command: str | None = None,
    *,
    outputs: Optional[Outputs] = None,
    resume: bool = False,
    flag: str = "--output",
) -> Iterator[Path]:
    """`lock(folder)`, then `own(folder, outputs, ...)` when `outputs` are given; if the block raises and
    the folder then holds nothing but the lock and the mark, the mark is removed, and the folder too if
    this call created it (so a failed run does not leave an output that blocks the rerun)."""
    folder = Path(folder)
    created = not folder.exists()
    try:
        with lock(folder, command) as path:
            if outputs is not None:
                own(folder, outputs, resume=resume, flag=flag)
            try:
                yield path
            except BaseException:
                disown_if_empty(folder)
                raise
    except BaseException:
        if created and is_empty_dir(folder):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


@dataclasses.dataclass(frozen=True)
class Outputs:
    """What one command writes into a folder it owns, as fnmatch patterns relative to the folder.

    `NAME` owns the entries it matches (a folder whole); `DIR/PATTERN` owns entries of the sub-folder
    DIR (then a container only, never followed through a symbolic link). The temporary and lock files
    made for an owned name (`.NAME.tmp-*`, `.NAME.e4e-jax.lock`) are owned with it.
    legacy: paths (patterns) whose presence shows an unfinished run of a version that did not mark its
    folders; `own(..., resume=True)` adopts such a folder when it holds nothing foreign.
    """

    command: str  # the e4e-jax sub-command (or "bundle"), as the mark records it
    names: tuple[str, ...]
    legacy: tuple[str, ...] = ()

    def foreign(self, folder: str | os.PathLike) -> list[str]:
        """The entries of `folder` (paths relative to it, sorted) that are not this command's."""
        return _foreign(Path(folder), list(self.names), "")

    def remove(self, folder: str | os.PathLike) -> int:
        """--overwrite: delete what an earlier run of this command left in `folder` (its outputs, temporary
        files; not the mark), and nothing else, in the order of `names` (e.g. the file that marks a run
        finished first, so a removal killed half-way never leaves a finished-looking folder). Call it while
        holding the folder's lock. Returns how many entries were removed."""
        return _remove(Path(folder), list(self.names))

    def has_legacy(self, folder: str | os.PathLike) -> bool:
        folder = Path(folder)
        return any(any(folder.glob(pattern)) for pattern in self.legacy)


def _split(names: Iterable[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Patterns of this level, and those of each sub-folder pattern (`DIR/REST` -> {DIR: [REST]})."""
    top: list[str] = []
    nested: dict[str, list[str]] = {}
    for pattern in names:
        head, _, rest = pattern.partition("/")
        if rest:
            nested.setdefault(head, []).append(rest)
        else:
            top.append(head)
    return top, nested


def _target(name: str) -> Optional[str]:
    """The name a temporary or lock file was made for (`.NAME.tmp-*`, `.NAME.e4e-jax.lock`), else None."""
    if fileio.is_temp_name(name):
        return name[1 : name.index(fileio.TMP_MARK)]
    if name.startswith(".") and name.endswith(LOCK_NAME) and len(name) > len(LOCK_NAME) + 1:
        return name[1 : -len(LOCK_NAME)]
    return None


def _owning_pattern(name: str, top: list[str], nested: dict[str, list[str]]) -> Optional[int]:
    """The position of the pattern owning `name` in `top` (a temporary or lock file: its target's pattern in
    `top`, then in the sub-folder patterns), None if none owns it."""
    hit = next((i for i, p in enumerate(top) if fnmatch.fnmatchcase(name, p)), None)
    target = _target(name) if hit is None else None
    if target is not None:
        hit = next((i for i, p in enumerate([*top, *nested]) if fnmatch.fnmatchcase(target, p)), None)
    return hit


def _owned_here(name: str, top: list[str], nested: dict[str, list[str]]) -> bool:
    return _owning_pattern(name, top, nested) is not None


def _inner(name: str, nested: dict[str, list[str]]) -> list[str]:
    """The patterns that apply inside the sub-folder `name`."""
    return [rest for head, rests in nested.items() if fnmatch.fnmatchcase(name, head) for rest in rests]


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as e:
        raise UserError(f"cannot list {folder} ({e.strerror or e}); choose another output folder") from e


def _foreign(folder: Path, names: list[str], prefix: str) -> list[str]:
    top, nested = _split(names)
    out = []
    for entry in _entries(folder):
        name = entry.name
        if (not prefix and name in (LOCK_NAME, OWNER_NAME)) or _owned_here(name, top, nested):
            continue
        inner = _inner(name, nested)
        if inner and entry.is_dir() and not entry.is_symlink():
            out += _foreign(entry, inner, f"{prefix}{name}/")
        else:
            out.append(f"{prefix}{name}{'/' if entry.is_dir() and not entry.is_symlink() else ''}")
    return out


def _remove(folder: Path, names: list[str]) -> int:
    top, nested = _split(names)
    removed = 0
    if not folder.is_dir():
        return removed
    entries = [e for e in _entries(folder) if e.name not in (LOCK_NAME, OWNER_NAME)]
    owner_of = {e.name: _owning_pattern(e.name, top, nested) for e in entries}
    owned = [e for e in entries if owner_of[e.name] is not None]
    for entry in sorted(owned, key=lambda e: owner_of[e.name]):  # in the order of `names`
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    for entry in entries:
        name = entry.name
        if owner_of[name] is not None:
            continue
        inner = _inner(name, nested)
        if inner and entry.is_dir() and not entry.is_symlink():
            removed += _remove(entry, inner)
            with contextlib.suppress(OSError):
                entry.rmdir()  # only when nothing else is left in it
    return removed


def owner(folder: str | os.PathLike) -> Optional[str]:
    """The command whose output `folder` is (its mark), '?' for an unreadable mark, None without one."""
    path = Path(folder) / OWNER_NAME
    if not path.exists():
        return None
    try:
        command = json.loads(path.read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        return "?"
    return command if isinstance(command, str) else "?"


def named(entries: list[str]) -> str:
    """The first SHOWN_ENTRIES of `entries`, and how many more there are (for messages)."""
    shown = ", ".join(entries[:SHOWN_ENTRIES])
    more = len(entries) - SHOWN_ENTRIES
    return shown + (f" (and {more} more)" if more > 0 else "")


def check_owned(folder: str | os.PathLike, outputs: Outputs, *, resume: bool = False, flag: str = "--output") -> bool:
    """Raise UserError unless `folder` may receive `outputs.command`'s outputs: it is missing or empty
    (nothing but a lock or a mark), or marked as that command's and holding nothing else than its
    outputs, or (with `resume`) an unmarked unfinished run of an older version holding nothing else.
    Writes nothing. Returns True when the folder is to be marked (it is not yet)."""
    folder = Path(folder)
    cmd = f"e4e-jax {outputs.command}"
    if not folder.is_dir() or is_empty_dir(folder):
        return True
    mark = owner(folder)
    foreign = outputs.foreign(folder)
    if mark is not None and mark != outputs.command:
        other = "an unknown command" if mark == "?" else f"`e4e-jax {mark}`"
        raise UserError(f"{flag} {folder} holds the output of {other}, not of `{cmd}`; choose another folder")
    if mark is None and (not foreign and outputs.has_legacy(folder)):
        if resume:
            return True  # an unfinished run of a version that wrote no mark: adopted
        raise UserError(
            f"{flag} {folder} holds an unfinished run of an older `{cmd}` (no {OWNER_NAME}); finish it with "
            "--resume, or choose another folder"
        )
    if mark is None:
        entries = _foreign(folder, [], "")
        raise UserError(
            f"{flag} {folder} is not empty and `{cmd}` did not write it (no {OWNER_NAME} mark): it holds "
            f"{named(entries)}. Nothing was changed; choose a new or empty folder (the output of an older "
            "e4e-jax, which left no mark, is not recognised either: move it away first)"
        )
    if foreign:
        raise UserError(
            f"{flag} {folder} holds files `{cmd}` did not write: {named(foreign)}. Nothing was changed "
            f"(--overwrite replaces only {outputs.command}'s own files); move them out of the folder or choose "
            "another one"
        )
    return False


def own(folder: str | os.PathLike, outputs: Outputs, *, resume: bool = False, flag: str = "--output") -> None:
    """`check_owned`, then mark `folder` (created if missing) as `outputs.command`'s output before any
    output is written. Call it while holding the folder's lock."""
    folder = Path(folder)
    if check_owned(folder, outputs, resume=resume, flag=flag):
        from e4e_jax import __version__

        _make_folder(folder)
        mark = {"command": outputs.command, "format": OWNER_FORMAT, "e4e_jax_version": __version__}
        fileio.write_text(folder / OWNER_NAME, json.dumps(mark) + "\n")


def disown_if_empty(folder: str | os.PathLike) -> None:
    """Remove the mark of `folder` if nothing but the mark and the lock is left in it (a run that failed
    before its first output leaves the folder as it found it)."""
    folder = Path(folder)
    if folder.is_dir() and is_empty_dir(folder):
        (folder / OWNER_NAME).unlink(missing_ok=True)


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
    """True if `folder` does not exist or holds nothing but our own lock file and mark."""
    folder = Path(folder)
    if not folder.exists():
        return True
    return all(p.name in (LOCK_NAME, OWNER_NAME) for p in folder.iterdir())


UNFINISHED_HINT = " (an unfinished run: add --resume to finish it)"  # where a plan without results lies


def refuse_not_empty(folder: Path, flag: str, overwrite_does: str, hint: str = "") -> None:
    """Refuse a folder holding more than our lock and mark (a run without --overwrite or --resume).

    `overwrite_does` ends the message, e.g. "removes only what an earlier invert wrote there"; `hint`
    follows "is not empty" (e.g. " (an unfinished run: add --resume to finish it)").
    """
    if not is_empty_dir(folder):
        raise UserError(
            f"{flag} {folder} is not empty{hint}; choose another folder or pass --overwrite (which {overwrite_does})"
        )
