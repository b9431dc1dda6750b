"""argparse value types that reject bad numbers and unusable paths at parse time, before any model loads
or file is made.

Each raises `argparse.ArgumentTypeError`, which argparse prints as `error: argument --x: ...` with
exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
from pathlib import Path


def _whole_number(text: str, expected: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number {expected}, got {text!r}") from None


def int_at_least(lo: int):
    """An integer ≥ lo."""

    def parse(text: str) -> int:
        value = _whole_number(text, f"≥ {lo}")
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be ≥ {lo}, got {value}")
        return value

    parse.__name__ = f"int ≥ {lo}"
    return parse


positive_int = int_at_least(1)  # batch sizes, step counts, worker counts
non_negative_int = int_at_least(0)  # indices, optional counts (0 = off)


def finite_float(text: str) -> float:
    """A finite float (no nan, inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def int_in(lo: int, hi: int):
    """An integer in [lo, hi] (e.g. a JPEG quality)."""

    def parse(text: str) -> int:
        value = _whole_number(text, f"in [{lo}, {hi}]")
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in [{lo}, {hi}], got {value}")
        return value

    parse.__name__ = f"int in [{lo}, {hi}]"
    return parse


SEED_MAX = 2**32 - 1  # seeds feed numpy's and JAX's generators: a whole number in [0, 2**32)
seed = int_in(0, SEED_MAX)


def choice(*allowed: str):
    """One of `allowed` (for values outside argparse's own `choices`, e.g. KEY=VALUE options)."""

    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(allowed)}, got {text!r}")
        return text

    parse.__name__ = f"one of {', '.join(allowed)}"
    return parse


def _shown(text: str) -> str:
    """A path as it can be printed: bytes that are not UTF-8 as \\xNN escapes."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def path_text(text: str) -> str:
    """A file or folder path (existing or not) that the commands can use, kept as the text typed (for
    options that take a path or a name, or are passed on as text): its name is valid UTF-8 (paths are
    written into UTF-8 manifests and JSON, and orbax takes only UTF-8 paths), and it does not lead through
    a loop of symbolic links."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(
            f"{_shown(text)} is not valid UTF-8; rename it, or pass a link to it whose name is UTF-8"
        ) from None
    try:
        os.stat(text)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise argparse.ArgumentTypeError(
                f"{text} leads through a loop of symbolic links; fix the link or pass another path"
            ) from None
    except ValueError:  # an embedded NUL byte
        raise argparse.ArgumentTypeError(f"{text!r} is not a usable path (it holds a NUL byte)") from None
    return text


def path(text: str) -> Path:
    """`path_text`, as a Path."""
    return Path(path_text(text))


path.__name__ = path_text.__name__ = "path"
