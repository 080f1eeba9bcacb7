"""The one home for time on the site: demand windows, billing months and step grids.

- Demand window: Japanese demand is metered on fixed 30-minute windows starting at :00 and :30 of
  the tariff's local wall clock; a window's demand is its import energy / :data:`WINDOW_H`.
- Billing month: ``"YYYY-MM"`` of a timestamp in the tariff's time zone; :func:`month_add` is the
  month arithmetic (the ratchet looks back ``ratchet_months`` of them).
- Step grid: interval starts ``start, start + step, ...`` of a plan or forecast horizon.

No fiscal-year arithmetic is needed anywhere (bills are per calendar month).
This module imports nothing from the rest of the application; ``models`` takes the window length
as data (``DemandSpec.window_hours``).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

WINDOW = pd.Timedelta(minutes=30)                 # Japanese demand metering: fixed :00/:30 windows
WINDOW_H = WINDOW / pd.Timedelta(hours=1)         # the same window in hours (0.5)

Zone = str | dt.tzinfo


# ----- demand windows --------------------------------------------------------------------------

def window_start(t: pd.Timestamp, zone: Zone) -> pd.Timestamp:
    """Start of the :00/:30 window (local wall clock of ``zone``) holding ``t``, in UTC."""
    return t.tz_convert(zone).floor(WINDOW).tz_convert("UTC")


def window_starts(index: pd.DatetimeIndex, zone: Zone) -> pd.DatetimeIndex:
    """Start of the fixed :00/:30 demand window (local to ``zone``) each interval falls in."""
    local = index.tz_convert(zone)
    return local - pd.to_timedelta((np.asarray(local.minute) % 30) * 60 + np.asarray(local.second), unit="s")


def hours_into_window(t: pd.Timestamp, zone: Zone) -> float:
    """Whole minutes since the start of ``t``'s demand window, in hours."""
    return (t.tz_convert(zone).minute % 30) / 60


def ns_into_window(local: pd.DatetimeIndex) -> np.ndarray:
    """Time since the start of the enclosing :00/:30 window of each (already local) timestamp [ns]."""
    def part(values: object) -> np.ndarray:
        return np.asarray(values, dtype=np.int64)

    return ((part(local.minute) % 30) * 60 + part(local.second)) * 1_000_000_000 \
        + part(local.microsecond) * 1000 + part(local.nanosecond)


def divides_window(step: pd.Timedelta) -> bool:
    """Whether ``step`` is a positive step that divides the demand window."""
    return step > pd.Timedelta(0) and WINDOW % step == pd.Timedelta(0)


# ----- billing months --------------------------------------------------------------------------

def month_of(t: pd.Timestamp, zone: Zone) -> str:
    """Billing month ``"YYYY-MM"`` of ``t`` in ``zone``."""
    return t.tz_convert(zone).strftime("%Y-%m")


def months(index: pd.DatetimeIndex, zone: Zone) -> np.ndarray:
    """Billing month ``"YYYY-MM"`` of each timestamp of an aware index in ``zone``."""
    return np.asarray(index.tz_convert(zone).strftime("%Y-%m"))


def local_iso(t: pd.Timestamp | dt.datetime, zone: Zone) -> str:
    """``t`` in ``zone`` as ISO 8601 with its offset, to the second (``2024-07-08T16:00:00+09:00``):
    how every time is shown to people and in the API (no sub-second noise)."""
    return pd.Timestamp(t).tz_convert(zone).floor("s").isoformat()


def month_add(month: str, k: int) -> str:
    """The month ``k`` months after ``"YYYY-MM"`` (k may be negative)."""
    n = int(month[:4]) * 12 + int(month[5:7]) - 1 + k
    return f"{n // 12:04d}-{n % 12 + 1:02d}"


def month_start(month: str, zone: Zone) -> pd.Timestamp:
    """Local midnight of the first day of ``"YYYY-MM"`` in ``zone``."""
    return pd.Timestamp(f"{month}-01").tz_localize(zone)


def whole_months(index: pd.DatetimeIndex, zone: Zone) -> np.ndarray:
    """Mask of the intervals of a regular aware ``index`` that lie in a billing month the index
    covers from its first local midnight to its end (a month cut at either end is left out)."""
    if len(index) < 2:
        return np.zeros(len(index), dtype=bool)
    local = index.tz_convert(zone).tz_localize(None)
    labels = local.to_period("M")
    first = labels[0] + (0 if local[0] == local[0].normalize().replace(day=1) else 1)
    last = (local[-1] + (local[1] - local[0])).to_period("M") - 1
    return np.asarray((labels >= first) & (labels <= last))


# ----- step grids ------------------------------------------------------------------------------

def step_count(hours: float, step: pd.Timedelta) -> float:
    """How many ``step`` steps ``hours`` holds (not rounded: callers check it is whole)."""
    return hours * 3600 / step.total_seconds()


def is_whole(n: float) -> bool:
    """Whether a step count is a whole number (to round-off)."""
    return abs(n - round(n)) <= 1e-9


def step_grid(start: pd.Timestamp, n: float, step: pd.Timedelta) -> pd.DatetimeIndex:
    """Interval starts ``start, start + step, ...``: ``n`` (rounded) of them."""
    return pd.date_range(start, periods=int(round(n)), freq=step)
