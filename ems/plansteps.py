"""The time data of a plan's steps, computed once for a span and sliced for each re-plan.

A plan needs, per step, the tariff's import and export prices, the billing month and the :00/:30
demand window the step falls in. With pandas these cost about as much for a week of steps as for
the 96 of one horizon, and a receding horizon asks for nearly the same steps at every re-plan. A
:class:`StepTable` holds them for a span; a planner keeps one covering its horizon and
:data:`CHUNK_DAYS` more (:class:`StepCache`) and :meth:`StepTable.take` gives the rows of one plan.
Every value is the tariff's own lookup of that step alone (prices, months and windows are per
timestamp), so a slice equals the table of the plan's index built on its own;
:func:`ems.planning.build_problem` builds that one when no planner hands it a slice.

The readable labels of a plan's boundaries (for messages) are :class:`BoundaryLabels`, formatted
only when a message reads one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ems.config import SiteConfig
from ems.timegrid import step_grid, window_starts

CHUNK_DAYS = 7   # a planner's table reaches this far beyond the horizon of the plan that built it
NS_PER_HOUR = 3_600_000_000_000


def _ns(index: pd.DatetimeIndex) -> np.ndarray:
    """Epoch nanoseconds of an aware index (whatever its stored unit)."""
    return index.as_unit("ns").asi8


@dataclass(frozen=True)
class StepTable:
    """Per-step time data on a regular grid of interval starts.

    ``index``: the interval starts (site time zone); ``ns`` the same as epoch nanoseconds;
    ``step_ns`` the step [ns]; ``window_ns``: start of the :00/:30 demand window (tariff-local)
    each step falls in [epoch ns]; ``window_month``: the billing month "YYYY-MM" of that window's
    start; ``month``: the billing month of the step; ``import_price``: the tariff's import price
    [currency/kWh] (energy + adders; the adders alone for a block tariff, whose energy rates are
    the model's blocks); ``export_price``: the export credit [currency/kWh].
    """

    index: pd.DatetimeIndex
    ns: np.ndarray
    step_ns: int
    window_ns: np.ndarray
    window_month: np.ndarray
    month: np.ndarray
    import_price: np.ndarray
    export_price: np.ndarray

    @classmethod
    def build(cls, cfg: SiteConfig, index: pd.DatetimeIndex, step: pd.Timedelta) -> StepTable:
        """The table of ``index`` (a regular grid ``step`` wide) from the config's tariff."""
        tariff = cfg.tariff
        starts = window_starts(index, tariff.zone)
        price = tariff.adder_rate(index) if tariff.blocks else tariff.import_price(index)
        return cls(index, _ns(index), int(step.value), _ns(starts), np.asarray(tariff.months(starts)),
                   np.asarray(tariff.months(index)), np.asarray(price, dtype=float),
                   np.asarray(tariff.export_rate(index), dtype=float))

    def position(self, index: pd.DatetimeIndex) -> int | None:
        """Row of ``index[0]`` when every step of ``index`` (same step) is in the table, else None."""
        if not len(index) or not len(self.ns) or (len(index) > 1 and _step_ns(index) != self.step_ns):
            return None
        offset = int(_ns(index[:1])[0]) - int(self.ns[0])
        row, rest = divmod(offset, self.step_ns)
        return row if rest == 0 and 0 <= row and row + len(index) <= len(self.ns) else None

    def take(self, row: int, index: pd.DatetimeIndex) -> StepTable:
        """The rows of ``index`` (starting at ``row``, :meth:`position`), labelled with ``index`` itself
        (copies: a plan's arrays are its own)."""
        rows = slice(row, row + len(index))
        return StepTable(index, self.ns[rows].copy(), self.step_ns, self.window_ns[rows].copy(),
                         self.window_month[rows].copy(), self.month[rows].copy(), self.import_price[rows].copy(),
                         self.export_price[rows].copy())

    def windows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The demand windows the steps touch, in time order: each step's window (0..W-1), each
        window's start [epoch ns] and its first step. Steps of one window are consecutive."""
        new = np.r_[True, self.window_ns[1:] != self.window_ns[:-1]]
        first = np.flatnonzero(new)
        return np.cumsum(new) - 1, self.window_ns[first], first

    @property
    def end_ns(self) -> int:
        """End of the last step [epoch ns]."""
        return int(self.ns[-1]) + self.step_ns


def _step_ns(index: pd.DatetimeIndex) -> int:
    """The step of a regular index of two or more timestamps [ns]."""
    ns = _ns(index[:2])
    return int(ns[1] - ns[0])


class StepCache:
    """A planner's :class:`StepTable`: rebuilt, from the plan that does not fit, over that plan's
    steps and :data:`CHUNK_DAYS` more (``builds`` counts the tables built)."""

    def __init__(self, cfg: SiteConfig):
        self.cfg = cfg
        self.table: StepTable | None = None
        self.builds = 0

    def steps(self, index: pd.DatetimeIndex, step: pd.Timedelta) -> StepTable:
        """The table of ``index`` (a plan's grid, ``step`` wide), sliced from the kept table."""
        row = None if self.table is None or self.table.step_ns != step.value else self.table.position(index)
        if row is None:
            n = len(index) + int(pd.Timedelta(days=CHUNK_DAYS) / step)
            self.table = StepTable.build(self.cfg, step_grid(index[0], n, step), step)
            self.builds += 1
            row = 0
        return self.table.take(row, index)


class BoundaryLabels(Sequence[str]):
    """Readable local times of a plan's T+1 boundaries ("%H:%M" when the plan lies within one date
    and 24 h, else "%a %H:%M"), formatted when read: only a plan's messages name a few of them."""

    def __init__(self, index: pd.DatetimeIndex, step: pd.Timedelta):
        self.index, self.step = index, step

    def __len__(self) -> int:
        return len(self.index) + 1

    def __getitem__(self, k):   # type: ignore[override]  # int -> str, slice -> tuple of str
        if isinstance(k, slice):
            return tuple(self[i] for i in range(*k.indices(len(self))))
        n = len(self)
        if not -n <= k < n:
            raise IndexError(f"boundary {k} of {n}")
        k %= n
        return self.bound(k).strftime(self.format)

    def bound(self, k: int) -> pd.Timestamp:
        """Boundary k: the start of step k, or the horizon end for k = T."""
        return self.index[k] if k < len(self.index) else self.index[-1] + self.step

    @functools.cached_property
    def format(self) -> str:
        """The strftime format of every label of this plan."""
        first, last = self.index[0], self.bound(len(self.index))
        return "%H:%M" if last - first <= pd.Timedelta(hours=24) and first.date() == last.date() else "%a %H:%M"
