"""The simulated site of a study: the span's measured data, the vehicles' stays, and the physics.

Everything runs on the planning grid (``planner.step_minutes``). One step of :class:`SiteSim`
takes what a strategy wants from each charger (charge and discharge kW) and applies it against
the *actual* load and PV of that step: ratings, SOC limits and floors, no vehicle energy into the
grid unless the site allows it, the PV export limit (the rest is curtailed). The SOC recursion and
the arrival rules (a known arrival SOC replaces the SOC; a trip's energy is taken off at arrival)
are those of :mod:`models.verify`, so an oracle plan replays exactly.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ems.config import SiteConfig, Vehicle
from ems.errors import DataError, Problem
from ems.planning import holiday_calendar, on_grid, window_starts
from ems.timegrid import WINDOW_H
from ems.timeseries import read_series_csv
from ems.vehicles import Stay, stays, timeline

#: a departure counts as missed in the study when the car is more than this short of its target [kWh]
MISSED_DEPARTURE_KWH = 0.01


@dataclass(frozen=True)
class Span:
    """The study span on the planning grid: interval starts (site zone), actual load and PV [kW]."""

    index: pd.DatetimeIndex
    load_kw: np.ndarray
    pv_kw: np.ndarray
    source: str
    frame: pd.DataFrame | None = None   # the data as read (UTC index), the forecaster's history
    filled: dict[str, int] = field(default_factory=dict)   # cells filled per column (--fill-gaps)

    @functools.cached_property
    def dt_h(self) -> float:
        """Step length [h] (read at every simulated step: computed once)."""
        return (self.index[1] - self.index[0]) / pd.Timedelta(hours=1)

    @property
    def end(self) -> pd.Timestamp:
        """End of the last interval."""
        return self.index[-1] + (self.index[1] - self.index[0])

    def series(self) -> tuple[pd.Series, pd.Series]:
        """(pv_kw, load_kw) as Series on the index (the oracle's perfect forecast)."""
        return pd.Series(self.pv_kw, index=self.index), pd.Series(self.load_kw, index=self.index)


FILL_MAX_DAYS = 7   # --fill-gaps looks this many days back (then forward) for the same clock time


def fill_gaps(frame: pd.DataFrame, zone: dt.tzinfo) -> tuple[pd.DataFrame, dict[str, int]]:
    """Missing rows and empty cells filled with the value at the same local clock time on the nearest
    earlier day that has one (up to FILL_MAX_DAYS), else the nearest later day; PV still missing is
    0 kW (meters often leave night PV empty). Returns the frame and the number of cells filled per column."""
    step = frame.attrs["step"]
    full = pd.date_range(frame.index[0], frame.index[-1], freq=step)
    out = frame.reindex(full)
    local = full.tz_convert(zone)
    clock = np.asarray((local - local.normalize()) // step)
    filled = {}
    for col in out.columns:
        before = out[col].isna().sum()
        by_clock = out[col].groupby(clock)
        out[col] = by_clock.ffill(limit=FILL_MAX_DAYS).fillna(out[col].groupby(clock).bfill(limit=FILL_MAX_DAYS))
        if col == "pv_kw":
            out[col] = out[col].fillna(0.0)
        filled[col] = int(before)
    out.attrs.update(frame.attrs)
    return out, filled


def read_span(cfg: SiteConfig, path: str | Path, fill: bool = False) -> Span:
    """The study data (CSV: timestamp, load_kw, pv_kw at 15 or 30 minutes) on the planning grid.

    Finer data is averaged to the planning step; a gap, a missing value, a negative power or a step
    coarser than the plan's is an error naming the file, row and column. ``fill``: gaps and empty
    cells are filled by :func:`fill_gaps` instead (counts in ``Span.filled``).
    """
    where = str(path)
    if not Path(path).is_file():
        raise DataError(Problem(where, None, "--data", where, "no such file; give a CSV with timestamp,load_kw,pv_kw"))
    frame = read_series_csv(path, ["load_kw", "pv_kw"], allow_gaps=fill, allow_empty=fill)
    filled = {}
    if fill:
        frame, filled = fill_gaps(frame, cfg.zone)
        if frame["load_kw"].isna().any():
            at = frame.index[frame["load_kw"].isna().to_numpy()][0]
            raise DataError(Problem(where, None, "load_kw", str(at), f"a gap of more than {FILL_MAX_DAYS} days "
                                    "either side at this clock time; --fill-gaps cannot fill it"))
    step = pd.Timedelta(minutes=cfg.planner.step_minutes)
    data_step = frame.attrs["step"]
    if data_step > step or step % data_step:
        raise DataError(Problem(where, None, "timestamp", str(data_step),
                                f"the data step must divide the planning step {step} (planner.step_minutes in "
                                f"{cfg.source or 'the config'}); give 15- or 30-minute data"))
    first = frame.index[0].tz_convert(cfg.zone)
    align = max(step, pd.Timedelta(minutes=30))   # whole 30-minute demand windows
    start = first.ceil(align)
    end = (frame.index[-1] + data_step).tz_convert(cfg.zone).floor(align)
    n = int((end - start) / step)
    if n < 2:
        raise DataError(Problem(where, None, "timestamp", f"{first} .. {end}", "the data must cover at least two planning steps"))
    index = pd.date_range(start, periods=n, freq=step)
    try:
        load = on_grid(frame["load_kw"], index, "load_kw")
        pv = on_grid(frame["pv_kw"], index, "pv_kw")
    except DataError as exc:
        raise DataError([Problem(where, None, p.path, p.value, p.message) for p in exc.problems]) from None
    return Span(index, load, pv, where, frame, filled)


@dataclass(frozen=True)
class Fleet:
    """The vehicles' actual stays on the span grid (V vehicles x T steps).

    ``plugged[v, t]``: present the whole step; ``target_kwh[v, k]``: required at boundary k (a
    departure) else NaN; ``arrival_set_kwh[v, t]``/``arrival_trip_kwh[v, t]``: arrival rules at
    boundary t (see :class:`ems.vehicles.Timeline`); ``stays``: vehicle id -> its stays;
    ``expected``: vehicle id -> the configured (undrawn) stays, what a controller expects.
    """

    ids: tuple[str, ...]
    plugged: np.ndarray
    target_kwh: np.ndarray
    arrival_set_kwh: np.ndarray
    arrival_trip_kwh: np.ndarray
    stays: dict[str, tuple[Stay, ...]]
    expected: dict[str, tuple[Stay, ...]]
    drawn: bool = False

    def departure_after(self) -> tuple[np.ndarray, np.ndarray]:
        """(boundary index of the next departure at or after t+1, its target [kWh]) per vehicle and step;
        index -1 / NaN when none follows in the span."""
        V, T = self.plugged.shape
        nxt = np.full((V, T), -1, dtype=int)
        tgt = np.full((V, T), np.nan)
        for v in range(V):
            k_next, t_next = -1, np.nan
            for t in range(T - 1, -1, -1):
                if not np.isnan(self.target_kwh[v, t + 1]):
                    k_next, t_next = t + 1, self.target_kwh[v, t + 1]
                nxt[v, t], tgt[v, t] = k_next, t_next
        return nxt, tgt


def draw_stays(vehicle: Vehicle, configured: list[Stay], rng: np.random.Generator, jitter_minutes: float = 45.0,
               trip_spread: float = 0.3, arrival_soc_spread_pct: float = 10.0, charge_kw: float = 6.0,
               charge_efficiency: float = 0.95) -> list[Stay]:
    """Stays drawn around the configured ones: arrival and departure moved by up to ``jitter_minutes``
    (uniform, whole 5 minutes), trip energy x U(1 - spread, 1 + spread), arrival SOC +- the spread.

    A draw that would leave too little time to reach the target from the arrival SOC at
    ``charge_kw`` is made feasible by arriving with more energy (a driver would top up on the way):
    a study measures control, not impossible stays.
    """
    def shift() -> pd.Timedelta:
        return pd.Timedelta(minutes=5 * int(rng.integers(-jitter_minutes // 5, jitter_minutes // 5 + 1)))

    out: list[Stay] = []
    for s in configured:
        arrive, depart = s.arrive + shift(), s.depart + shift()
        if depart - arrive < pd.Timedelta(hours=1):
            arrive, depart = s.arrive, s.depart
        trip = None if s.trip_kwh is None else s.trip_kwh * rng.uniform(1 - trip_spread, 1 + trip_spread)
        arrival = s.arrival_kwh
        if arrival is not None:
            arrival += rng.uniform(-1, 1) * vehicle.pct_kwh(arrival_soc_spread_pct)
            lo, hi = vehicle.min_soc_kwh, vehicle.max_soc_kwh
            reachable = 0.8 * charge_kw * charge_efficiency * (depart - arrive) / pd.Timedelta(hours=1)
            arrival = float(min(max(arrival, lo, s.target_kwh - reachable), hi))
        out.append(Stay(s.vehicle, arrive, depart, s.target_kwh, arrival, trip, s.energy_neutral))
    return sorted(out, key=lambda x: x.arrive)


def make_fleet(cfg: SiteConfig, span: Span, horizon_h: float, seed: int | None = None) -> Fleet:
    """The fleet's stays over the span (and one horizon beyond, for planners looking ahead).

    ``seed`` None: the configured windows exactly; else stays drawn with :func:`draw_stays` from
    ``numpy.random.default_rng([seed, vehicle position])`` (the same draws for every strategy).
    """
    is_holiday = holiday_calendar(cfg.tariff)
    end = span.end + pd.Timedelta(hours=horizon_h)
    V, T = len(cfg.vehicles), len(span.index)
    plugged = np.zeros((V, T), dtype=bool)
    target = np.full((V, T + 1), np.nan)
    aset, atrip = np.full((V, T), np.nan), np.zeros((V, T))
    actual, expected = {}, {}
    for vi, v in enumerate(cfg.vehicles):
        configured = stays(v, span.index[0], end, cfg.zone, is_holiday)
        expected[v.id] = tuple(configured)
        if seed is None:
            found = configured
        else:
            ch = [c for c in cfg.chargers if not v.chargers or c.id in v.chargers][0]
            found = draw_stays(v, configured, np.random.default_rng([seed, vi]), charge_kw=ch.max_charge_kw,
                               charge_efficiency=ch.charge_efficiency)
        actual[v.id] = tuple(found)
        tl = timeline(v, span.index, cfg.zone, is_holiday, known=found)
        plugged[vi], target[vi], aset[vi], atrip[vi] = tl.plugged, tl.target_kwh, tl.arrival_set_kwh, tl.arrival_trip_kwh
    return Fleet(tuple(v.id for v in cfg.vehicles), plugged, target, aset, atrip, actual, expected, seed is not None)


def known_stays(fleet: Fleet, now: pd.Timestamp, end: pd.Timestamp) -> dict[str, list[Stay]]:
    """The stays a controller knows at ``now`` that overlap [now, end): with drawn stays, the actual
    ones that have begun (the driver enters the departure time at plug-in) and the configured ones
    after them; otherwise the configured ones (which are the actual ones)."""
    out = {}
    for vid in fleet.ids:
        actual = fleet.stays[vid]
        first = bisect.bisect_right([s.depart for s in actual], now)   # stays are sorted and disjoint
        begun = [s for s in actual[first:] if s.arrive <= now]
        if not fleet.drawn:
            out[vid] = [s for s in actual[first:] if s.arrive < end]
            continue
        last = begun[-1].depart if begun else now
        later = [s for s in fleet.expected[vid] if now < s.arrive < end and s.arrive >= last]
        out[vid] = begun + later
    return out


@dataclass
class Records:
    """What the simulation metered and did, per step (V vehicles x T steps)."""

    import_kw: np.ndarray
    export_kw: np.ndarray
    curtail_kw: np.ndarray
    charge_kw: np.ndarray
    discharge_kw: np.ndarray
    soc_kwh: np.ndarray            # V x (T + 1): at each boundary, after arrivals
    charger: np.ndarray            # V x T: the charger index each car used (-1: none)
    misses: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Flow:
    """What a strategy wants from one vehicle this step [kW]; ``floor_kwh``: SOC it may not discharge below."""

    charger: int
    charge_kw: float
    discharge_kw: float
    floor_kwh: float = 0.0


class SiteSim:
    """Steps the site through the span; :meth:`step` applies one step's flows to the actual data."""

    def __init__(self, cfg: SiteConfig, span: Span, fleet: Fleet, soc0_kwh: dict[str, float]):
        self.cfg, self.span, self.fleet = cfg, span, fleet
        V, T = len(cfg.vehicles), len(span.index)
        self.cap = np.array([v.capacity_kwh for v in cfg.vehicles])
        self.min_kwh = np.array([v.min_soc_kwh for v in cfg.vehicles])
        self.max_kwh = np.array([v.max_soc_kwh for v in cfg.vehicles])
        self.veh_ch = np.array([np.inf if v.max_charge_kw is None else v.max_charge_kw for v in cfg.vehicles])
        self.veh_dis = np.array([np.inf if v.max_discharge_kw is None else v.max_discharge_kw for v in cfg.vehicles])
        self.chg_ch = np.array([c.max_charge_kw for c in cfg.chargers])
        self.chg_dis = np.array([c.max_discharge_kw for c in cfg.chargers])
        self.eta_c = np.array([c.charge_efficiency for c in cfg.chargers])
        self.eta_d = np.array([c.discharge_efficiency for c in cfg.chargers])
        every = list(range(len(cfg.chargers)))
        ids = {c.id: i for i, c in enumerate(cfg.chargers)}
        self.allowed = [[ids[c] for c in v.chargers] or every for v in cfg.vehicles]
        self.rec = Records(np.zeros(T), np.zeros(T), np.zeros(T), np.zeros((V, T)), np.zeros((V, T)),
                           np.zeros((V, T + 1)), np.full((V, T), -1, dtype=int))
        self.soc = np.array([float(soc0_kwh[v.id]) for v in cfg.vehicles])
        known = fleet.arrival_set_kwh[:, 0]
        self.soc = np.where(np.isnan(known), self.soc, known)
        self.rec.soc_kwh[:, 0] = self.soc
        # energy each car held when its current stay began [kWh] (NaN: not plugged in yet)
        self.arrived_kwh = np.where(fleet.plugged[:, 0], self.soc, np.nan) if T else np.full(V, np.nan)
        self.t = 0
        starts = window_starts(span.index, cfg.tariff)
        self._window = np.asarray(starts.asi8)
        self._month = cfg.tariff.months(starts)
        self.month_peak_kw: dict[str, float] = {}
        self.month_import_kwh: dict[str, float] = {}
        self._win_kwh = 0.0

    # ---- state a controller sees --------------------------------------------------------------
    def window_import_kwh(self) -> float:
        """Import metered so far in the current 30-minute window [kWh] (0 on a window boundary)."""
        return self._win_kwh

    def attach(self, preferred: dict[int, int] | None = None) -> dict[int, int]:
        """Vehicle -> charger for the plugged cars now: ``preferred`` first, then the first free allowed charger."""
        t, out, busy = self.t, {}, set()
        for v, c in (preferred or {}).items():
            if self.fleet.plugged[v, t] and c in self.allowed[v] and c not in busy:
                out[v] = c
                busy.add(c)
        for v in range(len(self.cap)):
            if self.fleet.plugged[v, t] and v not in out:
                free = [c for c in self.allowed[v] if c not in busy]
                if free:
                    out[v] = free[0]
                    busy.add(free[0])
        return out

    def rating(self, v: int, c: int) -> tuple[float, float]:
        """(charge, discharge) rating of vehicle v on charger c [kW]."""
        return float(min(self.veh_ch[v], self.chg_ch[c])), float(min(self.veh_dis[v], self.chg_dis[c]))

    # ---- physics --------------------------------------------------------------------------------
    def step(self, flows: dict[int, Flow]) -> None:
        """Apply one step: clamp the flows, meter the site, move the SOCs, handle departures and arrivals."""
        t, dt_h, cfg = self.t, self.span.dt_h, self.cfg
        V = len(self.cap)
        ch, dis = np.zeros(V), np.zeros(V)
        for v, f in flows.items():
            if not self.fleet.plugged[v, t] or f.charger < 0:
                continue
            c = f.charger
            rc, rd = self.rating(v, c)
            room = max(self.max_kwh[v] - self.soc[v], 0.0) / (self.eta_c[c] * dt_h)
            floor = max(self.min_kwh[v], f.floor_kwh)
            avail = max(self.soc[v] - floor, 0.0) * self.eta_d[c] / dt_h
            ch[v] = min(max(f.charge_kw, 0.0), rc, room)
            dis[v] = min(max(f.discharge_kw, 0.0), rd, avail)
            if ch[v] > 0 and dis[v] > 0:
                net = ch[v] - dis[v]
                ch[v], dis[v] = max(net, 0.0), max(-net, 0.0)
            self.rec.charger[v, t] = c
        base = self.span.load_kw[t] - self.span.pv_kw[t]
        net = base + ch.sum() - dis.sum()
        if not cfg.grid.vehicle_export_allowed and net < min(base, 0.0) - 1e-12:
            over = min(base, 0.0) - net
            for v in np.argsort(-dis):
                cut = min(dis[v], over)
                dis[v] -= cut
                over -= cut
            net = base + ch.sum() - dis.sum()
        imp = max(net, 0.0)
        exp = min(max(-net, 0.0), cfg.grid.export_limit_kw)
        self.rec.import_kw[t], self.rec.export_kw[t] = imp, exp
        self.rec.curtail_kw[t] = max(-net, 0.0) - exp
        self.rec.charge_kw[:, t], self.rec.discharge_kw[:, t] = ch, dis
        for v in range(V):
            c = self.rec.charger[v, t]
            if c >= 0:
                self.soc[v] += (self.eta_c[c] * ch[v] - dis[v] / self.eta_d[c]) * dt_h
        self._meter(t, imp * dt_h)
        self._boundary(t + 1)
        self.t = t + 1

    def _meter(self, t: int, kwh: float) -> None:
        """Add the step's import to its 30-minute window; close the window at its end (month peak)."""
        self._win_kwh += kwh
        month = str(self._month[t])
        self.month_import_kwh[month] = self.month_import_kwh.get(month, 0.0) + kwh
        last = t + 1 == len(self.span.index) or self._window[t + 1] != self._window[t]
        if last:
            self.month_peak_kw[month] = max(self.month_peak_kw.get(month, 0.0), self._win_kwh / WINDOW_H)
            self._win_kwh = 0.0

    def _boundary(self, k: int) -> None:
        """Departures checked and arrivals applied at boundary k."""
        f = self.fleet
        for v in range(len(self.cap)):
            want = f.target_kwh[v, k]
            if not np.isnan(want) and self.soc[v] < want - MISSED_DEPARTURE_KWH:
                self.rec.misses.append(f"{f.ids[v]} left at {self._label(k)} with {self.soc[v]:.2f} kWh, "
                                       f"{want - self.soc[v]:.2f} kWh short of its {want:.2f} kWh target")
            if k < f.plugged.shape[1]:
                if not np.isnan(f.arrival_set_kwh[v, k]):
                    self.soc[v] = f.arrival_set_kwh[v, k]
                elif f.arrival_trip_kwh[v, k]:
                    self.soc[v] -= f.arrival_trip_kwh[v, k]
                    if self.soc[v] < 0:
                        self.rec.notes.append(f"{f.ids[v]} came back at {self._label(k)} having used more than it held")
                        self.soc[v] = 0.0
            if k < f.plugged.shape[1] and f.plugged[v, k] and (k == 0 or not f.plugged[v, k - 1]):
                self.arrived_kwh[v] = self.soc[v]
        self.rec.soc_kwh[:, k] = self.soc

    def _label(self, k: int) -> str:
        ts = self.span.index[k] if k < len(self.span.index) else self.span.end
        return ts.strftime("%Y-%m-%d %H:%M")


def reserve_need_kwh(cfg: SiteConfig, span: Span) -> np.ndarray:
    """Energy the plugged-in cars should hold at each step start to carry the critical load for
    ``outage.reserve_hours`` net of the actual PV [kWh] (zeros without a reserve)."""
    from models import reserve_requirement_kwh
    if cfg.outage.reserve_hours <= 0 or cfg.load.critical_kw <= 0 or not cfg.vehicles:
        return np.zeros(len(span.index))
    return reserve_requirement_kwh(cfg.load.critical_kw, span.pv_kw, span.dt_h, cfg.outage.reserve_hours)


def initial_soc_kwh(cfg: SiteConfig) -> dict[str, float]:
    """Each car's SOC at the span start: its first window's departure target (a car after a normal charge)."""
    return {v.id: v.target_kwh(v.windows[0]) if v.windows else v.max_soc_kwh
            for v in cfg.vehicles}

