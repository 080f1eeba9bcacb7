"""Number types for command-line flags: finite, in range, never a bool or a NaN.

argparse reports a refused value as ``error: argument --hours: must be ...; got 'nan'`` and exits
with status 2, before any work is done. Each type names what is allowed.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _bounds_text(lo: float, hi: float, lo_open: bool) -> str:
    """``> 0`` / ``>= 0`` and ``<= hi`` in words."""
    low = f"{'>' if lo_open else '>='} {lo:g}"
    return low if math.isinf(hi) else f"{low} and <= {hi:g}"


def number(lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False) -> Callable[[str], float]:
    """A type for a finite number in [lo, hi] (or (lo, hi] with ``lo_open``)."""
    allowed = _bounds_text(lo, hi, lo_open)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {allowed}; got {text[:40]!r}") from None
        if not math.isfinite(value) or value < lo or value > hi or (lo_open and value == lo):
            raise argparse.ArgumentTypeError(f"must be a finite number {allowed}; got {text[:40]!r}")
        return value
    return parse


def integer(lo: int, hi: int) -> Callable[[str], int]:
    """A type for a whole number in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {lo} and <= {hi}; got {text[:40]!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {lo} and <= {hi}; got {value}")
        return value
    return parse


#: a horizon or a stride [h]: more than 0, at most a month (the planner's own limit)
HOURS = number(0.0, 24 * 31, lo_open=True)
#: a simulated clock's speed: more than 0, at most 100,000 simulated seconds per real second
SPEED = number(0.0, 1e5, lo_open=True)
