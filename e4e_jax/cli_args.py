"""argparse value types that reject bad numbers at parse time, before any model loads or file is made.

Each raises `argparse.ArgumentTypeError`, which argparse prints as `error: argument --x: ...` with
exit status 2.
"""
from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    """An integer ≥ 1 (batch sizes, step counts, worker counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer ≥ 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


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
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number in [{lo}, {hi}], got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in [{lo}, {hi}], got {value}")
        return value
    parse.__name__ = f"int in [{lo}, {hi}]"
    return parse


def choice(*allowed: str):
    """One of `allowed` (for values outside argparse's own `choices`, e.g. KEY=VALUE options)."""
    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(allowed)}, got {text!r}")
        return text
    parse.__name__ = f"one of {', '.join(allowed)}"
    return parse
