"""Fixed-window demand metering for the daemon: import energy per :00/:30 window, as the utility bills it.

Each dispatch tick brings the meter's import power [kW] and, when the meter has one, its import
energy counter [kWh]. The energy between two ticks is the counter's increase (or, without a
usable counter, the trapezoid of the two power readings); it is split over window boundaries in
proportion to time. A window that closes becomes a :class:`WindowRecord` whose average
``import_kwh / 0.5 h`` is what the demand charge sees.

When the daemon starts in the middle of a window, the part before the first reading is estimated
at the first reading's power (``estimated_kwh``), unless the store holds the window's energy
from before a restart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from ems.timegrid import WINDOW, WINDOW_H
from ems.timegrid import window_start as window_start  # re-exported: the daemon imports it from here

#: A counter increase larger than this many times what the larger of the two power readings
#: could deliver is not believed (counter reset, a replaced meter): the trapezoid is used instead.
COUNTER_SLACK = 3.0


@dataclass
class WindowRecord:
    """One demand window: start (UTC), import energy [kWh], how much of it was observed [h],
    the guard's highest target during it [kW] (nan without one), the peak of the plan in force
    [kW] (nan without a plan) and whether the guard ran short of means to hold it."""

    start: pd.Timestamp
    import_kwh: float = 0.0
    observed_h: float = 0.0
    estimated_kwh: float = 0.0
    target_kw: float = math.nan
    planned_peak_kw: float = math.nan
    guard_short: bool = False
    grid_down: bool = False
    refill: bool = False   # the guard kept charging a driver needed while the window ran over its target

    @property
    def average_kw(self) -> float:
        """The window's average import [kW] (billed demand)."""
        return self.import_kwh / WINDOW_H

    def note(self, target_kw: float | None, planned_peak_kw: float | None, guard_short: bool, grid_up: bool,
             refill: bool = False) -> None:
        """Remember the guard's target, the plan's peak and shortfalls seen during the window (``refill``:
        charging a driver needs was kept over the target)."""
        if target_kw is not None:
            self.target_kw = target_kw if math.isnan(self.target_kw) else max(self.target_kw, target_kw)
        if planned_peak_kw is not None:
            self.planned_peak_kw = planned_peak_kw if math.isnan(self.planned_peak_kw) else max(self.planned_peak_kw, planned_peak_kw)
        self.guard_short |= guard_short
        self.grid_down |= not grid_up
        self.refill |= refill


@dataclass
class WindowAccount:
    """The open window and the last reading; :meth:`update` per tick returns windows that closed."""

    zone: str
    current: WindowRecord | None = None
    last_t: pd.Timestamp | None = None
    last_kw: float = 0.0
    last_counter: float | None = None
    closed: list[WindowRecord] = field(default_factory=list)

    def resume(self, start: pd.Timestamp, import_kwh: float, observed_h: float, t: pd.Timestamp, counter: float | None) -> None:
        """Continue a window persisted before a restart (the caller checks it is the current one)."""
        self.current = WindowRecord(start, import_kwh, observed_h)
        self.last_t, self.last_counter = t, counter

    def elapsed_h(self, t: pd.Timestamp) -> float:
        """Time since the open window started [h]."""
        return 0.0 if self.current is None else (t - self.current.start) / pd.Timedelta(hours=1)

    def update(self, t: pd.Timestamp, import_kw: float, counter_kwh: float | None) -> list[WindowRecord]:
        """Account the energy since the last reading up to ``t``; return the windows that closed."""
        out: list[WindowRecord] = []
        if self.current is None or self.last_t is None:
            ws = window_start(t, self.zone)
            if self.current is None or self.current.start != ws:
                if self.current is not None:
                    out.append(self.current)
                before = (t - ws) / pd.Timedelta(hours=1)
                self.current = WindowRecord(ws, import_kw * before, 0.0, import_kw * before)
            self.last_t, self.last_kw, self.last_counter = t, import_kw, counter_kwh
            return out
        if t <= self.last_t:
            return out
        dt_h = (t - self.last_t) / pd.Timedelta(hours=1)
        energy = (self.last_kw + import_kw) / 2 * dt_h
        if counter_kwh is not None and self.last_counter is not None:
            delta = counter_kwh - self.last_counter
            if 0 <= delta <= COUNTER_SLACK * max(self.last_kw, import_kw, 0.1) * dt_h:
                energy = delta
        a = self.last_t
        while True:
            end = self.current.start + WINDOW
            b = min(t, end)
            share = energy * ((b - a) / (t - self.last_t))
            self.current.import_kwh += share
            self.current.observed_h += (b - a) / pd.Timedelta(hours=1)
            if t < end:
                break
            out.append(self.current)
            self.current = WindowRecord(end)
            a = end
        self.last_t, self.last_kw, self.last_counter = t, import_kw, counter_kwh
        return out
