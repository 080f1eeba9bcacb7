"""Vehicle plug-in windows expanded onto a time grid: when each car is plugged in and what it needs.

The weekly windows of the config (:class:`ems.config.PlugWindow`) become concrete *stays*
(arrival, departure, energy needed at departure, energy known at arrival), and stays become
per-step arrays on a planning grid. The planner, the simulator, the daemon and the studies all
use these functions, so they agree on when a car is there.

Grid alignment: a car counts as plugged in for a step only if it is there for the whole step
(arrival rounded up, departure rounded down to the step), so a plan never schedules power for a
car that has not arrived yet or has already left.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ems.config import DAYS, PlugWindow, Vehicle, parse_clock


@dataclass(frozen=True)
class Stay:
    """One concrete stay of a vehicle at the site.

    ``arrive``/``depart`` are aware timestamps; ``target_kwh`` is the energy the car must hold at
    departure; ``arrival_kwh`` the energy it is expected to bring (from ``arrival_soc_pct``) or
    None; ``trip_kwh`` the energy used while away before this arrival (from ``trip_km``) or None;
    ``energy_neutral``: the car must also leave with at least the energy it arrived with.
    """

    vehicle: str
    arrive: pd.Timestamp
    depart: pd.Timestamp
    target_kwh: float
    arrival_kwh: float | None
    trip_kwh: float | None
    energy_neutral: bool = False

    def need_kwh(self, arrived_kwh: float | None = None) -> float:
        """Energy the car must hold when it leaves [kWh]: the target, and for an energy-neutral
        stay at least what it arrived with (``arrived_kwh`` measured, else the expected arrival)."""
        arrived = arrived_kwh if arrived_kwh is not None else self.arrival_kwh
        if self.energy_neutral and arrived is not None:
            return max(self.target_kwh, arrived)
        return self.target_kwh


def stays(vehicle: Vehicle, start: pd.Timestamp, end: pd.Timestamp, zone: dt.tzinfo,
          is_holiday: Callable[[dt.date], bool] = lambda d: False) -> list[Stay]:
    """All stays of ``vehicle`` that overlap [start, end), sorted by arrival.

    Windows with ``on_holidays: false`` are skipped when their arrival day is a holiday.
    Overlapping stays of one vehicle are merged into the earlier one's arrival and the later
    one's departure and target (a car cannot be parked twice).
    """
    local_start = start.tz_convert(zone)
    first_day = (local_start - pd.Timedelta(days=8)).date()
    last_day = end.tz_convert(zone).date()
    out: list[Stay] = []
    day = first_day
    while day <= last_day:
        for w in vehicle.windows:
            if DAYS[day.weekday()] not in w.days or (not w.on_holidays and is_holiday(day)):
                continue
            stay = _stay_on(vehicle, w, day, zone)
            if stay.depart > start and stay.arrive < end:
                out.append(stay)
        day += dt.timedelta(days=1)
    return _merge(sorted(out, key=lambda s: s.arrive))


def _stay_on(vehicle: Vehicle, w: PlugWindow, day: dt.date, zone: dt.tzinfo) -> Stay:
    """The stay that window ``w`` makes when the car arrives on ``day``."""
    _, atime = parse_clock(w.arrive)
    wall = dt.datetime.combine(day, atime)
    arrive = pd.Timestamp(wall, tz=zone)
    # wall-clock arithmetic: "07:30" stays 07:30 local even across a daylight-saving change
    depart = pd.Timestamp(wall + w.depart_offset(day.weekday()), tz=zone)
    arrival_kwh = vehicle.arrival_kwh(w)
    trip_kwh = None if w.trip_km is None else w.trip_km / vehicle.efficiency_km_per_kwh
    return Stay(vehicle.id, arrive, depart, vehicle.target_kwh(w), arrival_kwh, trip_kwh, w.energy_neutral)


def _merge(items: list[Stay]) -> list[Stay]:
    """Merge overlapping stays of one vehicle (keep the first arrival, the last departure)."""
    merged: list[Stay] = []
    for s in items:
        if merged and s.arrive < merged[-1].depart:
            prev = merged[-1]
            later = s if s.depart >= prev.depart else prev
            merged[-1] = Stay(prev.vehicle, prev.arrive, later.depart, later.target_kwh, prev.arrival_kwh, prev.trip_kwh,
                              prev.energy_neutral or s.energy_neutral)
        else:
            merged.append(s)
    return merged


@dataclass(frozen=True)
class Timeline:
    """A vehicle's stays on a grid of T steps (interval-start index, step ``dt_h`` hours).

    - ``plugged[t]``: present for the whole of step t;
    - ``target_kwh[k]`` for boundary k = 0..T (the instant at the start of step k, k = T is the
      horizon end): energy required at that instant (a departure), else NaN;
    - ``arrival_set_kwh[t]``: the car arrives at the start of step t holding this energy, else NaN;
    - ``arrival_trip_kwh[t]``: the car arrives at the start of step t having used this energy
      since it left, else 0;
    - ``stays``: the stays that produced it.
    """

    plugged: np.ndarray
    target_kwh: np.ndarray
    arrival_set_kwh: np.ndarray
    arrival_trip_kwh: np.ndarray
    stays: tuple[Stay, ...]


def timeline(vehicle: Vehicle, index: pd.DatetimeIndex, zone: dt.tzinfo,
             is_holiday: Callable[[dt.date], bool] = lambda d: False, known: Sequence[Stay] | None = None,
             arrived_kwh: float | None = None) -> Timeline:
    """Expand ``vehicle``'s windows onto ``index`` (regular, aware, interval-start).

    ``known``: use these stays instead of the configured windows (e.g. a study's drawn stays);
    those that do not overlap the index are ignored. ``arrived_kwh``: the energy the car arrived
    with in the stay under way at ``index[0]`` (measured), for an energy-neutral departure.
    Departure targets are :meth:`Stay.need_kwh`; a later energy-neutral stay whose arrival energy
    is not known ahead (a trip) is held to its target only until the car arrives and is measured.
    """
    if len(index) < 1 or index.tz is None:
        raise ValueError("timeline needs a non-empty, time-zone aware index")
    if index.freq is None and len(index) < 2:
        raise ValueError("timeline needs the step: an index with a freq or at least two timestamps")
    step = pd.Timedelta(index.freq) if index.freq is not None else index[1] - index[0]
    n = len(index)
    end = index[-1] + step
    plugged = np.zeros(n, dtype=bool)
    target = np.full(n + 1, np.nan)
    arr_set = np.full(n, np.nan)
    arr_trip = np.zeros(n)
    if known is None:
        found = stays(vehicle, index[0], end, zone, is_holiday)
    else:
        found = [s for s in known if s.depart > index[0] and s.arrive < end]
    t0 = index[0].value
    for s in found:
        a = int(np.ceil((s.arrive.value - t0) / step.value))   # first whole step present
        d = int(np.floor((s.depart.value - t0) / step.value))  # boundary at or before departure
        lo, hi = max(a, 0), min(d, n)
        if hi > lo:
            plugged[lo:hi] = True
        if 0 < d <= n and d > a:
            # never above the charge ceiling (a car that arrived above it leaves at the ceiling)
            need = min(s.need_kwh(arrived_kwh if a <= 0 else None), vehicle.max_soc_kwh)
            target[d] = need if np.isnan(target[d]) else max(target[d], need)
        if 0 <= a < n:
            if s.arrival_kwh is not None:
                arr_set[a] = s.arrival_kwh
            elif s.trip_kwh is not None:
                arr_trip[a] += s.trip_kwh
    return Timeline(plugged, target, arr_set, arr_trip, tuple(found))
