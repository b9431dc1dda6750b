"""How much memory this process may still take, and refusing work that needs more before allocating it:
one `error:` line instead of a MemoryError, an abort inside XLA or the OOM killer.

`available_bytes()` is the smaller of what the kernel says is available to new allocations (MemAvailable
in /proc/meminfo; elsewhere the free physical pages) and the room left under the process's address-space
limit (`ulimit -v`, RLIMIT_AS). It is an upper bound of what will fit, so `require_room` refuses only
what cannot fit; callers pass their estimate of the bytes a step needs.
"""

from __future__ import annotations

import os
from typing import Optional

from e4e_jax.errors import UserError

MEMINFO = "/proc/meminfo"
STATUS = "/proc/self/status"


def _meminfo_kib(path: str, key: str) -> Optional[int]:
    """The `key:  N kB` value of a /proc file, in KiB, or None where there is none."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _physical_bytes() -> Optional[int]:
    kib = _meminfo_kib(MEMINFO, "MemAvailable")
    if kib is not None:
        return kib * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _address_space_room() -> Optional[int]:
    """RLIMIT_AS minus the address space already mapped (None: no limit, or not knowable)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    used_kib = _meminfo_kib(STATUS, "VmSize") or 0
    return max(0, soft - used_kib * 1024)


def available_bytes() -> Optional[int]:
    """Bytes this process may still allocate (see the module docstring); None when nothing is known."""
    known = [b for b in (_physical_bytes(), _address_space_room()) if b is not None]
    return min(known) if known else None


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB', 1.6e12 -> '1.5 TiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # unreachable


def require_room(nbytes: int, what: str, fix: str, available: Optional[int] = None) -> None:
    """Raise UserError when `nbytes` (what the work needs) exceed the memory available (`available_bytes()`
    unless given). what: the work, e.g. '--batch-size 100000'; fix: the remedy, e.g. 'pass a smaller
    --batch-size'."""
    room = available_bytes() if available is None else available
    if room is not None and nbytes > room:
        raise UserError(
            f"{what} needs about {format_bytes(nbytes)} of memory, more than the {format_bytes(room)} available; {fix}"
        )
