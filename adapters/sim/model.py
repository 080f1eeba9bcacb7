"""Physics of the simulated site: V2H units with vehicles, a building load, PV and a grid meter.

Time: the model runs on *wall seconds since the simulator started* (``w``); simulated time is
``start + w x speed``. Physics (ramps, SOC, plug-in windows, replayed load) follow simulated time;
the reversion watchdog counts wall seconds, because it watches the controller's communication,
which happens in real time whatever the simulation speed.

Per unit, with ``p`` the AC output (+ = discharge, as SunSpec), ``e`` the plugged vehicle's
energy [kWh], over a step of ``dt_h`` hours:

- target: the controller's setpoint if remote control is enabled, else 0; cut to the unit's
  ratings and the vehicle's limits; no discharge at or below the vehicle's minimum SOC, no charge
  at or above its maximum; 0 with no vehicle;
- ramp: ``p`` moves toward the target by at most ``ramp_pct_per_s`` % of the unit's rating per
  second (grid-forming units follow the load at once);
- energy: ``e += (eta_c x charge - discharge / eta_d) x dt_h`` with charge/discharge the step's
  mean AC power; when ``e`` reaches a SOC limit inside a step the step is cut there and the unit
  stops (a BMS cut-off);
- reversion: if the controller wrote no control point for ``reversion_timeout_s`` wall seconds
  while remote control is enabled, the setpoint becomes the reversion setpoint (0 W by default).

Per unit the AC energy charged and discharged is counted (``charged_kwh``/``discharged_kwh``, the
ECHONET Lite 0xD8/0xD6 counters); at every :00/:30 boundary the meter's counters are recorded
(``fixed_time``, ECHONET Lite 0xEA/0xEB).

Site: grid up, ``meter = load - pv + sum(charge) - sum(discharge)`` [kW, + = import]. Grid down
(outage injected): PV inverters trip, units able to island supply the critical load (up to their
``islanded_rating_kw``, in unit order), the meter reads 0, the rest is ``unserved_kw``.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from adapters.convention import soc_kwh
from adapters.convention import soc_pct as soc_pct_of
from adapters.registers import RegisterMap

UTC = dt.timezone.utc
FOREVER_START = dt.datetime(1970, 1, 1, tzinfo=UTC)
FOREVER_END = dt.datetime(2200, 1, 1, tzinfo=UTC)
STAY_FETCH = dt.timedelta(days=7)      # stays are asked for a week ahead at a time
RAMP_STEP_S = 1.0                      # simulated seconds per sub-step while any unit ramps
STEADY_STEP_S = 60.0                   # simulated seconds per sub-step when every unit is steady
SOC_TOL_KWH = 1e-9                     # a vehicle this close to a SOC limit counts as at it
REPLAY_WRAP = dt.timedelta(days=364)   # replay loops by 52 whole weeks: weekday and clock time kept
FIXED_TIME_STEP = dt.timedelta(minutes=30)  # the meter's fixed-time readings (ECHONET Lite 0xEA/0xEB)


@dataclass(frozen=True)
class SimVehicle:
    """A vehicle: capacity [kWh], SOC window [%], its own power limits [kW], SOC at start [%]."""

    id: str
    capacity_kwh: float
    min_soc_pct: float = 10.0
    max_soc_pct: float = 100.0
    max_charge_kw: float | None = None
    max_discharge_kw: float | None = None
    initial_soc_pct: float = 50.0


@dataclass(frozen=True)
class SimStay:
    """A vehicle plugged in from ``arrive`` to ``depart`` (aware datetimes).

    On arrival it holds ``arrival_kwh`` if given, else its energy at departure minus ``trip_kwh``.
    """

    vehicle: str
    arrive: dt.datetime
    depart: dt.datetime
    arrival_kwh: float | None = None
    trip_kwh: float | None = None


StaySource = Callable[[dt.datetime, dt.datetime], Sequence[SimStay]]


def always_plugged(vehicle: str) -> StaySource:
    """A stay source keeping ``vehicle`` plugged in for the whole simulation."""
    stay = SimStay(vehicle, FOREVER_START, FOREVER_END)
    return lambda start, end: [stay]


@dataclass(frozen=True)
class SimUnitParams:
    """One simulated V2H unit. Efficiencies are fractions (0.95); powers in kW.

    ``stays`` says when which vehicle is plugged in; None = the first vehicle, always.
    """

    name: str
    unit_id: int
    max_charge_kw: float
    max_discharge_kw: float
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95
    islanded_rating_kw: float = 0.0
    ramp_pct_per_s: float = 20.0
    profile: str | RegisterMap = "sunspec"
    vehicles: tuple[SimVehicle, ...] = ()
    stays: StaySource | None = None
    model_name: str = "V2H simulator"

    @property
    def rating_kw(self) -> float:
        """The larger of the two ratings [kW] (the ramp rate refers to it)."""
        return max(self.max_charge_kw, self.max_discharge_kw)


@dataclass(frozen=True)
class Replay:
    """Load and PV [kW] at a regular step from ``start`` (aware); loops by 52 weeks (or its span)."""

    start: dt.datetime
    step_s: float
    load_kw: np.ndarray
    pv_kw: np.ndarray

    def at(self, t: dt.datetime) -> tuple[float, float]:
        """(load_kw, pv_kw) of the interval holding ``t``."""
        n = len(self.load_kw)
        span = n * self.step_s
        period = REPLAY_WRAP.total_seconds() if span >= REPLAY_WRAP.total_seconds() else span
        i = int(((t - self.start).total_seconds() % period) // self.step_s)
        return float(self.load_kw[i]), float(self.pv_kw[i])


@dataclass(frozen=True)
class SimSiteParams:
    """The simulated site: units, the meter's unit id and map, critical load [kW], load source.

    Without ``replay`` the load and PV are the constants ``load_kw`` and ``pv_kw``. ``start`` is
    the simulated time at start (None = now); ``speed`` how many simulated seconds pass per
    real second.
    """

    units: tuple[SimUnitParams, ...]
    meter_unit_id: int = 240
    meter_profile: str | RegisterMap = "sunspec-meter"
    critical_load_kw: float = 0.0
    replay: Replay | None = None
    load_kw: float = 0.0
    pv_kw: float = 0.0
    start: dt.datetime | None = None
    speed: float = 1.0

    def __post_init__(self) -> None:
        ids = [u.unit_id for u in self.units] + [self.meter_unit_id]
        if not all(1 <= i <= 247 for i in ids):
            raise ValueError(f"unit ids must be in 1..247 (0 is broadcast, 248-255 reserved); got {ids}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"unit ids must be distinct (meter included); got {ids}")
        if not self.speed > 0:
            raise ValueError(f"speed must be > 0; got {self.speed}")


def _window_floor(t: dt.datetime) -> dt.datetime:
    """The :00/:30 boundary at or before ``t`` (1 ms of slack: a step ending on a boundary is at it)."""
    step = FIXED_TIME_STEP.total_seconds()
    return dt.datetime.fromtimestamp((t.timestamp() + 1e-3) // step * step, tz=UTC)


class WallClock:
    """Real seconds since creation (monotonic)."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self._t0


class ManualClock:
    """A clock that moves only when told (tests): ``advance(seconds)`` of wall time."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        """Move wall time forward [s]."""
        self.t += seconds


@dataclass
class UnitModel:
    """Mutable state of one unit. ``output_kw`` and setpoints: + = discharge [kW]."""

    p: SimUnitParams
    output_kw: float = 0.0
    setpoint_kw: float = 0.0
    remote_enabled: bool = False
    rvrt_setpoint_kw: float = 0.0
    rvrt_enable: bool = True
    rvrt_timeout_s: float = 0.0
    last_control_w: float = 0.0
    reverted: bool = False
    controller_hb: int = 0
    alarm_bits: int = 0
    stay: SimStay | None = None
    charged_kwh: float = 0.0       # AC energy into the vehicle since the start [kWh]
    discharged_kwh: float = 0.0    # AC energy out of the vehicle since the start [kWh]

    @property
    def armed(self) -> bool:
        """True while the reversion watchdog is counting."""
        return self.rvrt_timeout_s > 0 and self.remote_enabled and not self.reverted

    def deadline_w(self) -> float:
        """Wall time at which the watchdog fires (inf if not armed)."""
        return self.last_control_w + self.rvrt_timeout_s if self.armed else math.inf

    def touch(self, w: float) -> None:
        """A control write: restart the watchdog."""
        self.last_control_w = w
        self.reverted = False


@dataclass
class SiteModel:
    """The whole simulated site; :meth:`advance` integrates it up to a wall time."""

    p: SimSiteParams
    start: dt.datetime
    w: float = 0.0
    grid_up: bool = True
    meter_kw: float = 0.0
    import_kwh: float = 0.0
    export_kwh: float = 0.0
    unserved_kw: float = 0.0
    #: the meter's counters at the last :00/:30 boundary: (boundary, import_kwh, export_kwh)
    fixed_time: tuple[dt.datetime, float, float] | None = None
    units: list[UnitModel] = field(default_factory=list)
    energy_kwh: dict[str, float] = field(default_factory=dict)
    vehicles: dict[str, SimVehicle] = field(default_factory=dict)
    _stays: dict[str, list[SimStay]] = field(default_factory=dict)
    _fetched_to: dict[str, dt.datetime] = field(default_factory=dict)
    _arrived: set[tuple[str, dt.datetime]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.units = [UnitModel(u) for u in self.p.units]
        for u in self.p.units:
            for v in u.vehicles:
                self.vehicles[v.id] = v
                self.energy_kwh[v.id] = soc_kwh(v.initial_soc_pct, v.capacity_kwh)
            self._stays[u.name] = []
            self._fetched_to[u.name] = self.start
        self._ensure_stays(self.start + STAY_FETCH)
        self._events()
        self.meter_kw = self._net_kw([u.output_kw for u in self.units])

    # ---------------------------------------------------------------- time
    def time_at(self, w: float) -> dt.datetime:
        """Simulated time at wall time ``w``."""
        return self.start + dt.timedelta(seconds=w * self.p.speed)

    def w_at(self, t: dt.datetime) -> float:
        """Wall time at which simulated time ``t`` is reached."""
        return (t - self.start).total_seconds() / self.p.speed

    @property
    def now(self) -> dt.datetime:
        """Current simulated time."""
        return self.time_at(self.w)

    # ---------------------------------------------------------------- queries
    def unit(self, name: str) -> UnitModel:
        """The unit called ``name``."""
        for u in self.units:
            if u.p.name == name:
                return u
        raise KeyError(f"no simulated unit {name!r}; units: {[u.p.name for u in self.units]}")

    def vehicle_of(self, u: UnitModel) -> SimVehicle | None:
        """The vehicle plugged into ``u``."""
        return None if u.stay is None else self.vehicles.get(u.stay.vehicle)

    def soc_pct(self, u: UnitModel) -> float | None:
        """SOC of the vehicle plugged into ``u`` [%] (None if none)."""
        v = self.vehicle_of(u)
        return None if v is None else soc_pct_of(self.energy_kwh[v.id], v.capacity_kwh)

    def load_pv_kw(self, t: dt.datetime) -> tuple[float, float]:
        """Building load and PV at ``t`` [kW]."""
        return self.p.replay.at(t) if self.p.replay is not None else (self.p.load_kw, self.p.pv_kw)

    # ---------------------------------------------------------------- stays
    def _ensure_stays(self, until: dt.datetime) -> None:
        """Ask each unit's stay source for stays up to ``until``, a week at a time."""
        for up in self.p.units:
            source = up.stays or (always_plugged(up.vehicles[0].id) if up.vehicles else None)
            known = {(s.vehicle, s.arrive) for s in self._stays[up.name]}
            while self._fetched_to[up.name] < until:
                a = self._fetched_to[up.name]
                for s in (source(a, a + STAY_FETCH) if source else []):
                    if (s.vehicle, s.arrive) not in known and s.vehicle in self.vehicles:
                        self._stays[up.name].append(s)
                        known.add((s.vehicle, s.arrive))
                self._fetched_to[up.name] = a + STAY_FETCH
            now = self.now
            self._stays[up.name] = sorted((s for s in self._stays[up.name] if s.depart > now), key=lambda s: s.arrive)

    def _plug_events(self) -> None:
        """Unplug vehicles whose stay ended, plug in those whose stay is on."""
        t = self.now
        for u in self.units:
            if u.stay is not None and u.stay.depart <= t:
                u.stay, u.output_kw = None, 0.0
        for u in self.units:
            if u.stay is not None:
                continue
            busy = {x.stay.vehicle for x in self.units if x.stay is not None}
            for s in self._stays[u.p.name]:
                if s.arrive <= t < s.depart and s.vehicle not in busy:
                    self._arrive(u, s)
                    break

    def _arrive(self, u: UnitModel, s: SimStay) -> None:
        """Plug ``s.vehicle`` into ``u``; apply the arrival energy once per stay."""
        u.stay = s
        key = (s.vehicle, s.arrive)
        if key in self._arrived or s.arrive < self.start:
            return
        self._arrived.add(key)
        v = self.vehicles[s.vehicle]
        if s.arrival_kwh is not None:
            self.energy_kwh[v.id] = min(max(s.arrival_kwh, 0.0), v.capacity_kwh)
        elif s.trip_kwh is not None:
            self.energy_kwh[v.id] = max(self.energy_kwh[v.id] - s.trip_kwh, 0.0)

    def _events(self) -> None:
        """Everything that happens at an instant: watchdog reversions, plug-in/out, the meter's
        fixed-time reading at a :00/:30 boundary."""
        for u in self.units:
            if u.armed and self.w >= u.deadline_w() - 1e-9:
                u.setpoint_kw, u.remote_enabled, u.reverted = u.rvrt_setpoint_kw, u.rvrt_enable, True
        self._plug_events()
        boundary = _window_floor(self.now)
        if self.fixed_time is None or boundary > self.fixed_time[0]:
            self.fixed_time = (boundary, self.import_kwh, self.export_kwh)

    def _next_event_w(self) -> float:
        """Wall time of the next instantaneous event after now."""
        t = self.now
        nxt = min([u.deadline_w() for u in self.units] + [self.w_at(_window_floor(t) + FIXED_TIME_STEP)])
        for stays in self._stays.values():
            for s in stays:
                for edge in (s.arrive, s.depart):
                    if edge > t:
                        nxt = min(nxt, self.w_at(edge))
        return nxt

    # ---------------------------------------------------------------- physics
    def _limits_kw(self, u: UnitModel) -> tuple[float, float, float, float]:
        """(charge cap, discharge cap, e_min, e_max) for the plugged vehicle [kW, kWh]."""
        v = self.vehicle_of(u)
        assert v is not None
        cap_c = min(u.p.max_charge_kw, v.max_charge_kw if v.max_charge_kw is not None else math.inf)
        cap_d = min(u.p.max_discharge_kw, v.max_discharge_kw if v.max_discharge_kw is not None else math.inf)
        return cap_c, cap_d, soc_kwh(v.min_soc_pct, v.capacity_kwh), soc_kwh(v.max_soc_pct, v.capacity_kwh)

    def _targets(self) -> tuple[list[float], float]:
        """Target output of every unit [kW, + = discharge] and the unserved critical load [kW]."""
        out: list[float] = []
        if self.grid_up:
            for u in self.units:
                if u.stay is None or not u.remote_enabled:
                    out.append(0.0)
                    continue
                cap_c, cap_d, e_lo, e_hi = self._limits_kw(u)
                e = self.energy_kwh[u.stay.vehicle]
                sp = min(max(u.setpoint_kw, -cap_c), cap_d)
                if (sp > 0 and e <= e_lo + SOC_TOL_KWH) or (sp < 0 and e >= e_hi - SOC_TOL_KWH):
                    sp = 0.0
                out.append(sp)
            return out, 0.0
        remaining = self.p.critical_load_kw
        for u in self.units:
            share = 0.0
            if u.stay is not None and u.p.islanded_rating_kw > 0:
                _, cap_d, e_lo, _ = self._limits_kw(u)
                if self.energy_kwh[u.stay.vehicle] > e_lo + SOC_TOL_KWH:
                    share = min(remaining, u.p.islanded_rating_kw, cap_d)
            remaining -= share
            out.append(share)
        return out, remaining

    def _net_kw(self, outputs: list[float]) -> float:
        """Grid power [kW, + = import] for unit outputs (0 when the grid is down)."""
        if not self.grid_up:
            return 0.0
        load, pv = self.load_pv_kw(self.now)
        return load - pv - sum(outputs)

    def _step(self, dt_w: float) -> float:
        """Integrate at most ``dt_w`` wall seconds; returns the time taken (a step ends at a SOC limit)."""
        dt_h = dt_w * self.p.speed / 3600.0
        targets, unserved = self._targets()
        new: list[float] = []
        for u, tgt in zip(self.units, targets):
            if not self.grid_up:
                new.append(tgt)  # grid-forming: follows the critical load at once
            else:
                r = u.p.ramp_pct_per_s / 100.0 * u.p.rating_kw * dt_w * self.p.speed
                new.append(u.output_kw + min(max(tgt - u.output_kw, -r), r))
        frac, deltas, means = 1.0, [], []
        for i, u in enumerate(self.units):
            mean = (u.output_kw + new[i]) / 2 if u.stay is not None else 0.0  # AC power over the step
            de = (-mean * u.p.charge_efficiency if mean < 0 else -mean / u.p.discharge_efficiency) * dt_h
            if u.stay is not None:
                _, _, e_lo, e_hi = self._limits_kw(u)
                e = self.energy_kwh[u.stay.vehicle]
                if (de < 0 and e <= e_lo + SOC_TOL_KWH) or (de > 0 and e >= e_hi - SOC_TOL_KWH):
                    de, mean, new[i] = 0.0, 0.0, 0.0  # at the limit already: nothing flows
                elif de < 0 and e + de < e_lo:
                    frac = min(frac, (e - e_lo) / -de)
                elif de > 0 and e + de > e_hi:
                    frac = min(frac, (e_hi - e) / de)
            deltas.append(de)
            means.append(mean)
        for i, u in enumerate(self.units):
            p1 = u.output_kw + (new[i] - u.output_kw) * frac
            if u.stay is not None:
                _, _, e_lo, e_hi = self._limits_kw(u)
                e = self.energy_kwh[u.stay.vehicle] + deltas[i] * frac
                if deltas[i] < 0 and e <= e_lo + SOC_TOL_KWH:
                    e, p1 = e_lo, 0.0  # BMS cut-off at the SOC floor
                elif deltas[i] > 0 and e >= e_hi - SOC_TOL_KWH:
                    e, p1 = e_hi, 0.0  # full: charging stops
                self.energy_kwh[u.stay.vehicle] = e
            u.output_kw = p1
            u.charged_kwh += max(-means[i], 0.0) * dt_h * frac
            u.discharged_kwh += max(means[i], 0.0) * dt_h * frac
        grid_kw = self._net_kw(means)
        self.import_kwh += max(grid_kw, 0.0) * dt_h * frac
        self.export_kwh += max(-grid_kw, 0.0) * dt_h * frac
        self.unserved_kw = unserved
        return dt_w * frac

    def _steady(self) -> bool:
        targets, _ = self._targets()
        return all(abs(u.output_kw - t) < 1e-9 for u, t in zip(self.units, targets))

    def advance(self, w: float) -> None:
        """Integrate the site up to wall time ``w`` (no-op if already there)."""
        if w <= self.w:
            return
        self._ensure_stays(self.time_at(w) + STAY_FETCH)
        while self.w < w - 1e-12:
            stop_w = min(w, self._next_event_w())
            while self.w < stop_w - 1e-12:
                limit = (STEADY_STEP_S if self._steady() else RAMP_STEP_S) / self.p.speed
                self.w += self._step(min(stop_w - self.w, limit))
            self.w = max(self.w, stop_w)
            self._events()
        self.meter_kw = self._net_kw([u.output_kw for u in self.units])
