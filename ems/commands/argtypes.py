"""Types for command-line flags: numbers finite and in range (never a bool or a NaN), output
paths that can be written.

argparse reports a refused value as ``error: argument --hours: must be ...; got 'nan'`` and exits
with status 2, before any work is done. Each type names what is allowed.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


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


def _folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (None when they can)."""
    if not folder.exists():
        return f"the folder {str(folder)[:120]!r} does not exist; create it first"
    if not folder.is_dir():
        return f"{str(folder)[:120]!r} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {str(folder)[:120]!r} is not writable"
    return None


def output_file(text: str) -> str:
    """A file to write (``plan --out``): not a folder nor a device, in a folder that exists and is
    writable. Checked when the flags are read, before any work; the file is written whole or not at
    all (:func:`ems.outputs.write_atomic`)."""
    path = Path(text)
    if not text or text.endswith(os.sep) or path.is_dir():
        raise argparse.ArgumentTypeError(f"is a folder; give a file name, e.g. {str(path / 'schedule.csv')[:120]!r}")
    if path.exists() and not path.is_file():
        raise argparse.ArgumentTypeError(f"{text[:120]!r} exists and is not a regular file (a device or FIFO)")
    problem = _folder_problem(path.parent)
    if problem:
        raise argparse.ArgumentTypeError(f"cannot write {text[:120]!r}: {problem}")
    return text


def output_folder(text: str) -> str:
    """A folder to write files into (``study --out``): an existing writable folder, or a new one
    whose parent folder exists and is writable. Checked when the flags are read, before any work."""
    path = Path(text)
    if not text:
        raise argparse.ArgumentTypeError("give a folder")
    if path.exists():
        problem = _folder_problem(path)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem} (--out names the folder the outputs go to)")
        return text
    problem = _folder_problem(path.parent)
    if problem:
        raise argparse.ArgumentTypeError(f"cannot create {text[:120]!r}: {problem}")
    return text


_SCHEDULER = re.compile(r"(?:(tcp|tls)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")


def scheduler_address(text: str) -> str:
    """A Dask scheduler address, ``tcp://HOST:PORT`` or ``tls://HOST:PORT`` (``HOST:PORT``: tcp)."""
    m = _SCHEDULER.fullmatch(text)
    if m is None or not 1 <= int(m.group(3)) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a Dask scheduler address tcp://HOST:PORT or tls://HOST:PORT "
                                         f"(port 1-65535), e.g. tcp://127.0.0.1:8786; got {text[:60]!r}")
    return text


def insecure_scheduler(address: str) -> bool:
    """Whether a scheduler address is plain tcp to another machine (not loopback, not TLS)."""
    m = _SCHEDULER.fullmatch(address)
    if m is None or m.group(1) == "tls":
        return False
    host = m.group(2).strip("[]")
    if host.lower() == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:   # a host name: not resolved here, so not known to be this machine
        return True


def aware_time(text: str, option: str, key: str | None = None) -> pd.Timestamp:
    """``--start``/``--until``: an ISO 8601 time with a UTC offset in ``ems.timeseries.YEARS``, as a pandas
    Timestamp; DataError (exit 2) naming the option and the value otherwise."""
    import pandas as pd   # not at import: ``ems --help`` reads this module

    from ems.errors import DataError, Problem
    from ems.timeseries import YEARS

    def bad(why: str) -> DataError:
        return DataError(Problem(option, None, key or option, text, why))
    try:
        t = pd.Timestamp(text)
    except (ValueError, OverflowError):
        raise bad("not an ISO 8601 time, e.g. 2024-07-01T18:00+09:00") from None
    if t is pd.NaT:
        raise bad("not an ISO 8601 time, e.g. 2024-07-01T18:00+09:00")
    if t.tzinfo is None:
        raise bad("needs a UTC offset, e.g. 2024-07-01T18:00+09:00")
    if not YEARS[0] <= t.year <= YEARS[1]:
        raise bad(f"must be in the years {YEARS[0]}-{YEARS[1]}")
    return t
