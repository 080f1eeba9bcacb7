"""Fixed-window demand metering for the daemon: import energy per :00/:30 window, as the utility bills it.

Each dispatch tick brings the meter's import power [kW] and, when the meter has one, its import
energy counter [kWh]. The energy between two ticks is the counter's increase (or, without a
usable counter, the trapezoid of the two power readings); it is split over window boundaries in
proportion to time. A window that closes becomes a :class:`WindowRecord` whose average
``import_kwh / 0.5 h`` is what the demand charge sees.

When the daemon starts in the middle of a window, the part before the first reading is estimated
at the first reading's power (``estimated_kwh``), unless the store holds the window's energy
from before a restart.

Each window also keeps the energy of its power samples alone (``samples_kwh``, the trapezoids) and
of the counter alone (``counter_kwh``, None unless the counter covered the whole window), and
:class:`WindowFlag` flags for bad data: a power sample the daemon did not believe or did not get
(the tick's :class:`~ems.daemon.readings.MeterQuality`), a counter that rose faster than the power
allows, or a counter and samples that disagree by more than :data:`MISMATCH_KWH` and
:data:`MISMATCH_SHARE`. A flagged window never raises a month's metered peak (the tracker skips it)
and is stored with its flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Flag, auto

import pandas as pd

from ems.timegrid import WINDOW, WINDOW_H
from ems.timegrid import window_start as window_start  # re-exported: the daemon imports it from here

#: A counter increase larger than this many times what the larger of the two power readings
#: could deliver is not believed (counter reset, a replaced meter): the trapezoid is used instead.
COUNTER_SLACK = 3.0
#: A window's counter energy and its samples' energy disagree when they differ by more than
#: MISMATCH_KWH [kWh] (0.5 kW on the window's average) and more than MISMATCH_SHARE of the larger:
#: ticks every few seconds sample a building closely, so a larger gap means one of the two is wrong.
MISMATCH_KWH = 0.25
MISMATCH_SHARE = 0.2


class WindowFlag(Flag):
    """Why a demand window's data is not trusted (combinable; ``NONE``: trusted)."""

    NONE = 0
    SAMPLES_IMPLAUSIBLE = auto()   # a meter power sample was unknown or implausible (held, or dropped after the hold)
    SAMPLES_MISSING = auto()       # the meter did not answer at a tick
    COUNTER_IMPLAUSIBLE = auto()   # the energy counter rose faster than the power readings could deliver
    COUNTER_MISMATCH = auto()      # the counter's energy and the power samples' disagree beyond the tolerance

    @property
    def names(self) -> list[str]:
        """The names of the flags set, lower case with dashes (``["samples-implausible"]``)."""
        return [f.name.lower().replace("_", "-") for f in WindowFlag if f.name and f.value and f in self]

    @classmethod
    def from_names(cls, names: list[str] | str) -> WindowFlag:
        """The flags named (a list, or comma-separated text as stored); unknown names are ignored."""
        parts = names.split(",") if isinstance(names, str) else names
        out = cls.NONE
        for f in cls:
            if f.name and f.name.lower().replace("_", "-") in parts:
                out |= f
        return out


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
    samples_kwh: float = 0.0               # import energy from the power samples alone [kWh]
    counter_kwh: float | None = None       # ... from the energy counter alone (None: it did not cover the window)
    flags: WindowFlag = WindowFlag.NONE    # bad data seen: a flagged window never sets a metered peak

    @property
    def average_kw(self) -> float:
        """The window's average import [kW] (billed demand)."""
        return self.import_kwh / WINDOW_H

    def cross_check(self) -> None:
        """Flag COUNTER_MISMATCH if the counter's and the samples' energy disagree beyond the tolerance
        (only for a window the counter covered whole)."""
        if self.counter_kwh is None:
            return
        gap = abs(self.counter_kwh - self.samples_kwh)
        if gap > MISMATCH_KWH and gap > MISMATCH_SHARE * max(self.counter_kwh, self.samples_kwh):
            self.flags |= WindowFlag.COUNTER_MISMATCH

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
    resumed: bool = False   # the next reading is the first after a restart: a counter jump is not held against it

    def resume(self, start: pd.Timestamp, import_kwh: float, observed_h: float, t: pd.Timestamp, counter: float | None,
               flags: WindowFlag = WindowFlag.NONE) -> None:
        """Continue a window persisted before a restart (the caller checks it is the current one)."""
        self.current = WindowRecord(start, import_kwh, observed_h, flags=flags)
        self.last_t, self.last_counter, self.resumed = t, counter, True

    def elapsed_h(self, t: pd.Timestamp) -> float:
        """Time since the open window started [h]."""
        return 0.0 if self.current is None else (t - self.current.start) / pd.Timedelta(hours=1)

    def update(self, t: pd.Timestamp, import_kw: float, counter_kwh: float | None,
               flags: WindowFlag = WindowFlag.NONE) -> list[WindowRecord]:
        """Account the energy since the last reading up to ``t`` [kW, kWh]; return the windows that closed.

        ``flags``: what is wrong with this reading (SAMPLES_IMPLAUSIBLE, SAMPLES_MISSING), set on every
        window the interval up to ``t`` touches."""
        out: list[WindowRecord] = []
        if self.current is None or self.last_t is None:
            ws = window_start(t, self.zone)
            if self.current is None or self.current.start != ws:
                if self.current is not None:
                    out.append(self.current)
                before = (t - ws) / pd.Timedelta(hours=1)
                self.current = WindowRecord(ws, import_kw * before, 0.0, import_kw * before, samples_kwh=import_kw * before)
            self.current.flags |= flags
            self.last_t, self.last_kw, self.last_counter = t, import_kw, counter_kwh
            return out
        if t <= self.last_t:
            return out
        dt_h = (t - self.last_t) / pd.Timedelta(hours=1)
        samples = energy = (self.last_kw + import_kw) / 2 * dt_h
        counted: float | None = None
        if counter_kwh is not None and self.last_counter is not None:
            delta = counter_kwh - self.last_counter
            if 0 <= delta <= COUNTER_SLACK * max(self.last_kw, import_kw, 0.1) * dt_h:
                energy = counted = delta
            elif delta > 0 and not self.resumed:   # backwards is a reset or a new meter: not garbage
                flags |= WindowFlag.COUNTER_IMPLAUSIBLE
        self.resumed = False
        a = self.last_t
        while True:
            end = self.current.start + WINDOW
            b = min(t, end)
            part = (b - a) / (t - self.last_t)
            rec = self.current
            rec.import_kwh += energy * part
            rec.samples_kwh += samples * part
            first = rec.observed_h == 0 and a == rec.start   # the counter may cover this window whole
            rec.counter_kwh = None if counted is None or (rec.counter_kwh is None and not first) else \
                (rec.counter_kwh or 0.0) + counted * part
            rec.observed_h += (b - a) / pd.Timedelta(hours=1)
            rec.flags |= flags
            if t < end:
                break
            rec.cross_check()
            out.append(rec)
            self.current = WindowRecord(end)
            a = end
        self.last_t, self.last_kw, self.last_counter = t, import_kw, counter_kwh
        return out
