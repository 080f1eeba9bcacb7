"""The daemon's logic, one cycle at a time: :class:`Daemon`.

Each job is one method a scheduler (or a test on a :class:`~ems.clock.ManualClock`) calls:

- :meth:`Daemon.plan_once`: forecast + state -> a new plan (solved in a worker thread, so a
  dispatch tick never waits for the solver), stored with an inputs summary; a failed or
  fallback solve, infeasible requirements or a stale plan make dispatch use the safe rule, with
  an event;
- :meth:`Daemon.dispatch_once`: read the meter and every unit, account the fixed demand window,
  detect plug-in/unplug, a large forecast miss, a new month and loss of the grid (each asks for
  a re-plan at once through :attr:`Daemon.request_replan`), run :func:`ems.dispatch.dispatch` and
  write the setpoints, store telemetry;
- :meth:`Daemon.heartbeat_once`: refresh each unit's reversion watchdog (real seconds);
- :meth:`Daemon.refresh_forecast`, :meth:`Daemon.housekeeping` (retention),
  :meth:`Daemon.reload_config`.

Everything the daemon must not forget across a restart is in the store: monthly peaks (the
ratchet: metered ones, and those seeded at start from a peaks history of past bills, see
:meth:`Daemon.seed_peaks`), the open demand window's energy, each vehicle's last SOC and its
pending departure, and the last plan (used until the first new one if still fresh).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from adapters import AdapterError, CallerLimits, ChargerAdapter, ChargerState, MeterAdapter, MeterReading
from ems.billing import check_history_up_to, site_contract_kw
from ems.clock import Clock
from ems.config import Charger, SiteConfig, Vehicle, load_site, peaks_history
from ems.daemon.metering import WINDOW, WindowAccount, WindowRecord, window_start
from ems.devices import vehicle_homes
from ems.dispatch import (DispatchInput, DispatchResult, PluggedCar, Setpoint, UnitRules, UnitState, WindowMeter,
                          REFILL_HOURS, guard_target_kw, peak_aware_dispatch, reserve_to_hold_kwh)
from ems.errors import EmsError
from ems.plan_summary import PlanSummary
from ems.planning import PlanResult, Planner, SiteState, holiday_calendar
from ems.store import Store
from ems.vehicles import Stay, stays

log = logging.getLogger(__name__)

#: A plan older than this many planning steps is stale: dispatch falls back to the safe rule.
#: Plans come every step; two missed re-plans in a row mean the planner is not keeping up.
STALE_STEPS = 2.5
#: Forecast miss: the measured site base (load - PV) is smoothed with this time constant [h]...
MISS_TAU_H = 0.25
#: ... and a miss larger than max(MISS_MIN_KW, MISS_SHARE x |forecast|) asks for a re-plan. 1 kW is
#: a kettle; 30 % is about twice the household backtest's half-hour load MAE at short lead times.
MISS_MIN_KW = 1.0
MISS_SHARE = 0.15
#: The measured miss is carried into the next plan's load, fading with this e-folding time [h]
#: (the forecast module's own level offset fades over 1.5 h).
NOWCAST_TAU_H = 1.0
#: After a failed device start the next attempt waits this many real seconds (no connect storm).
RECONNECT_S = 1.0
#: Stays are expanded this far either side of now and re-expanded when now comes within it of an end.
#: A stay lasts at most a week (a window may run to the same weekday next week): 8 days cover it.
STAY_MARGIN = pd.Timedelta(days=8)
#: Dispatch tick latencies kept for statistics (a day at a 5-s tick is 17,280 ticks).
LATENCY_KEEP = 20000


@dataclass
class ActivePlan:
    """The plan in force: result, when made [UTC], its start, and why it may not be followed."""

    result: PlanResult
    created: pd.Timestamp
    start: pd.Timestamp
    mode: str = "normal"                 # normal | outage
    unusable: str | None = None          # why dispatch must use the safe rule instead (None: follow it)
    plan_id: int | None = None
    reserve_kwh: np.ndarray | None = None  # outage reserve per step [kWh] the plan holds (None: none)

    def step_of(self, t: pd.Timestamp) -> int:
        """Index of the schedule step holding ``t`` (0 just before the start)."""
        idx = self.result.schedule.index
        return max(int(idx.searchsorted(t.as_unit(idx.unit, round_ok=True), side="right")) - 1, 0)

    @property
    def peak_kw(self) -> float:
        """The plan's highest 30-minute average import [kW]."""
        return float(self.result.outcome.peak_kw)

    def end(self) -> pd.Timestamp:
        """End of the plan's horizon."""
        idx = self.result.schedule.index
        return idx[-1] + (idx[1] - idx[0] if len(idx) > 1 else WINDOW)

    def row(self, t: pd.Timestamp) -> pd.Series | None:
        """The schedule step holding ``t`` (the first step if ``t`` is just before the start)."""
        if t >= self.end():
            return None
        return self.result.schedule.iloc[self.step_of(t)]


@dataclass
class UnitLink:
    """One charger as the daemon sees it: config, adapter, last state, fault and plug history."""

    charger: Charger
    adapter: ChargerAdapter
    state: ChargerState | None = None
    fault: str | None = None
    next_connect_real: float = 0.0
    plugged: bool | None = None
    vehicle: str | None = None
    setpoint: Setpoint | None = None


@dataclass
class Stats:
    """Counters and timings for the status, the demo and the benchmark."""

    ticks: int = 0
    plans: int = 0
    plan_seconds: list[float] = field(default_factory=list)
    tick_seconds: deque = field(default_factory=lambda: deque(maxlen=LATENCY_KEEP))
    tick_during_plan: deque = field(default_factory=lambda: deque(maxlen=LATENCY_KEEP))   # a plan was solving
    replans: dict[str, int] = field(default_factory=dict)
    skipped_jobs: int = 0
    charged_kwh: float = 0.0
    discharged_kwh: float = 0.0


class Daemon:
    """Receding-horizon control of one site. See the module docstring.

    ``chargers``: one adapter per configured charger (same order as ``cfg.chargers``);
    ``meter``: the site meter or None (then the site import is not measured: the guard sees only
    the chargers). ``real_clock`` gives real (or, in tests, manual) seconds for the reconnect
    pacing. ``dispatch_interval_s`` overrides ``cfg.daemon.dispatch_interval_s`` [simulated s], which
    is otherwise raised to at least ``min_dispatch_s``. ``peaks_history_csv`` (``ems run
    --peaks-history``) overrides the config's ``peaks_history_csv``.
    """

    def __init__(self, cfg: SiteConfig, clock: Clock, store: Store, chargers: list[ChargerAdapter],
                 meter: MeterAdapter | None = None, *, history: pd.DataFrame | None = None,
                 dispatch_interval_s: float | None = None, min_dispatch_s: float = 0.0,
                 real_clock: Callable[[], float] = time.monotonic, solver_process: bool = False,
                 peaks_history_csv: str | None = None):
        self.cfg = cfg
        self.peaks_history_csv = peaks_history_csv
        self.clock = clock
        self.store = store
        self.meter = meter
        self.units = [UnitLink(c, a) for c, a in zip(cfg.chargers, chargers, strict=True)]
        self.history = history
        self._interval_override = dispatch_interval_s
        self._min_dispatch_s = min_dispatch_s
        self.dispatch_interval_s = dispatch_interval_s or max(cfg.daemon.dispatch_interval_s, min_dispatch_s)
        self.real_clock = real_clock
        self.planner = Planner(cfg)
        self._is_holiday = holiday_calendar(cfg.tariff)
        self._stays: dict[str, tuple[pd.Timestamp | None, pd.Timestamp | None, list]] = {}
        self._forecaster: Any = None
        self._forecast: Any = None
        self._net_cache: tuple[tuple, np.ndarray] | None = None   # (step, origin) -> expected import per step
        self._error_q: tuple[Any, Any] | None = None   # (local day, NetErrorQuantile or None) for peak_quantile_pct
        self._forecast_origin: pd.Timestamp | None = None
        self.plan: ActivePlan | None = None
        self.window = WindowAccount(cfg.tariff.timezone)
        self.windows: deque[WindowRecord] = deque(maxlen=2 * 48 * 62)   # two months of windows
        self.soc_kwh: dict[str, float] = {}
        self._soc_seen: dict[str, tuple[pd.Timestamp, UnitLink]] = {}  # vehicle -> when and on which unit
        self.departures: dict[str, dict[str, Any]] = {}
        self.grid_up = True
        self.outage_since: pd.Timestamp | None = None
        self.meter_fault: str | None = None
        self.last_reading: MeterReading | None = None
        self.miss_kw = 0.0
        self._last_miss_replan: pd.Timestamp | None = None
        self._month: str | None = None
        self._fallback_reason: str | None = None
        self.replan_reason: str | None = None
        self.on_replan: Callable[[str], None] | None = None
        self.stats = Stats()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ems-plan")
        self.solver_process = solver_process
        self._solver: ProcessPoolExecutor | None = None
        self.plan_lock = asyncio.Lock()
        self.io_lock = asyncio.Lock()
        self._meter_started = False
        self._meter_next_connect = 0.0
        self.started = False
        self._stopped = False

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Seed the ratchet from the peaks history, resume from the store, connect the devices
        (failures are retried later), read, plan."""
        now = self.clock.now()
        self.seed_peaks(now)
        self._resume(now)
        self.event("start", f"daemon started for {self.cfg.site.name} (dispatch every {self.dispatch_interval_s:g} s)",
                   speed=self.clock.speed)
        if self.meter is None:
            self.event("no-meter", "no site meter: the demand guard and this month's peak see only the chargers' "
                       "own power, not the building; add a meter section to the site config", "warning")
        await self._connect_all()
        async with self.io_lock:
            await self._observe(now, account=False)
        await self.plan_once("start")
        self.started = True

    async def stop(self) -> None:
        """Clean exit: wait for running jobs, every unit to 0 W with remote control released, store flushed.

        Safe to call after a failed :meth:`start` and more than once."""
        if self._stopped:
            return
        self._stopped = True
        async with self.plan_lock, self.io_lock:
            for u in self.units:
                if u.adapter.started:
                    try:
                        await u.adapter.stop()
                    except AdapterError as exc:
                        log.warning("%s: clean stop failed: %s", u.charger.id, exc)
                else:
                    await u.adapter.dev.close()
            if self.meter is not None:
                await self.meter.stop()
                self._meter_started = False
            self._persist(self.clock.now())
            self.event("stop", "daemon stopped: setpoints 0 W, remote control released")
        self._pool.shutdown(wait=True)
        self._close_solver()
        self.started = False

    def event(self, kind: str, message: str, severity: str = "info", **data: Any) -> None:
        """Log and store an event."""
        level = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}[severity]
        log.log(level, "%s: %s", kind, message)
        self.store.record_event(self.clock.now(), kind, message, severity, **data)

    def request_replan(self, reason: str) -> None:
        """Ask for a re-plan at once (the scheduler runs the plan job now; tests call plan_once)."""
        self.replan_reason = reason
        self.stats.replans[reason] = self.stats.replans.get(reason, 0) + 1
        if self.on_replan is not None:
            self.on_replan(reason)

    # ----------------------------------------------------------------- resume / persist
    def seed_peaks(self, now: pd.Timestamp, cfg: SiteConfig | None = None) -> dict[str, list[str]] | None:
        """Seed the store with the monthly peaks of past bills: ``peaks_history_csv`` given to the
        daemon, else the config's (``cfg``, default the running one). One transaction, idempotent
        (:meth:`~ems.store.Store.seed_bill_peaks`); None without a history. DataError, with nothing
        written, for an invalid file or a month after the current one."""
        site = cfg or self.cfg
        found = peaks_history(site, self.peaks_history_csv)
        if found is None:
            return None
        history, path = found
        month = self._month_of(now)
        check_history_up_to(history, month, path, "the daemon's current month")
        seeded = self.store.seed_bill_peaks(history, path, now)
        sources = self.store.month_peak_sources()
        kw, by = site_contract_kw(month, {m: r["peak_kw"] for m, r in sources.items()}, site.tariff)
        setter = "no peak" if by is None else "minimum_contract_kw" if by == "minimum" else \
            f"the peak of {by} ({'bill history' if sources[by]['source'] == 'bill' else 'metered'})"
        self.event("peaks-seeded", f"peaks history {path}: {len(history)} month(s) {min(history)}..{max(history)} "
                                   f"({len(seeded['added'])} new, {len(seeded['changed'])} changed, "
                                   f"{len(seeded['unchanged'])} unchanged); contract for {month} now {kw:.2f} kW, "
                                   f"set by {setter}", file=path, contract_kw=kw, contract_month=by, **seeded)
        return seeded

    def _resume(self, now: pd.Timestamp) -> None:
        """This month's peak is read from the store at every plan; here: SOC, departures, window, last plan."""
        self.soc_kwh = {k: float(v) for k, v in (self.store.get_state("soc_kwh") or {}).items()
                        if k in {v.id for v in self.cfg.vehicles}}
        self.departures = self.store.get_state("departures") or {}
        w = self.store.get_state("window")
        if w and pd.Timestamp(w["start"]) == window_start(now, self.cfg.tariff.timezone):
            self.window.resume(pd.Timestamp(w["start"]), w["import_kwh"], w["observed_h"], pd.Timestamp(w["t"]),
                               w.get("counter_kwh"))
        last = self.store.last_plan()
        if last is not None and last["schedule"] is not None:
            created = pd.Timestamp(last["created_at"])
            result = PlanResult(last["schedule"].tz_convert(self.cfg.zone), PlanSummary.from_dict(last["summary"]))
            reserve = last["inputs"].get("reserve_kwh")
            plan = ActivePlan(result, created, pd.Timestamp(last["start"]), last["inputs"].get("mode", "normal"),
                              plan_id=last["id"], reserve_kwh=None if reserve is None else np.asarray(reserve, dtype=float))
            plan.unusable = self._unusable(plan, now)
            if plan.unusable is None:
                self.plan = plan
        self._month = self._month_of(now)
        peaks = self.store.month_peaks()
        if self.soc_kwh or peaks.get(self._month):
            self.event("resume", f"resumed: month {self._month} peak {peaks.get(self._month, 0.0):.2f} kW, "
                                 f"SOC {', '.join(f'{k} {v:.1f} kWh' for k, v in self.soc_kwh.items()) or 'unknown'}"
                                 + (", last plan still fresh" if self.plan else ""))

    def _persist(self, now: pd.Timestamp) -> None:
        """Save what a restart needs (SOC, departures, the open window, the simulated time)."""
        cur = self.window.current
        state: dict[str, Any] = {"soc_kwh": self.soc_kwh, "departures": self.departures, "now": now.isoformat()}
        if cur is not None and self.window.last_t is not None:
            state["window"] = {"start": cur.start.isoformat(), "import_kwh": cur.import_kwh, "observed_h": cur.observed_h,
                               "t": self.window.last_t.isoformat(), "counter_kwh": self.window.last_counter}
        self.store.set_states(state)

    def _month_of(self, t: pd.Timestamp) -> str:
        """Billing month "YYYY-MM" of ``t`` (tariff time zone)."""
        return t.tz_convert(self.cfg.tariff.timezone).strftime("%Y-%m")

    # ----------------------------------------------------------------- devices
    async def _connect_all(self) -> None:
        """Start every adapter that is not started (and the meter); failures become faults."""
        for u in self.units:
            await self._connect(u)
        if self.meter is not None:
            try:
                await self._start_meter()
            except AdapterError as exc:
                self._meter_failed(exc)

    async def _connect(self, u: UnitLink) -> bool:
        """Start one unit's adapter (reads before writing, arms its watchdog); paced by RECONNECT_S."""
        if u.adapter.started:
            return True
        if self.real_clock() < u.next_connect_real:
            return False
        try:
            await u.adapter.start()
        except AdapterError as exc:
            u.next_connect_real = self.real_clock() + RECONNECT_S
            self._unit_failed(u, exc)
            return False
        if u.fault is not None:
            self.event("device-recovered", f"{u.charger.id}: connected again after: {u.fault}", device=u.charger.id)
            u.fault = None
        return True

    def _unit_failed(self, u: UnitLink, exc: Exception) -> None:
        """Record a unit fault once per episode (the unit's own watchdog takes it to 0 W)."""
        u.state = None
        if u.fault is None:
            u.fault = str(exc)
            self.event("device-fault", f"{u.charger.id}: {exc}; retrying, the unit reverts to 0 W by its own watchdog",
                       "error", device=u.charger.id)

    def _meter_failed(self, exc: Exception) -> None:
        self.last_reading = None
        if self.meter_fault is None:
            self.meter_fault = str(exc)
            self.event("device-fault", f"meter: {exc}; the demand guard sees only the chargers until it is back",
                       "error", device="meter")

    def _clear_meter_fault(self) -> None:
        if self.meter_fault is not None:
            self.event("device-recovered", f"meter: reading again after: {self.meter_fault}", device="meter")
            self.meter_fault = None

    async def _read_unit(self, u: UnitLink) -> ChargerState | None:
        """The unit's state, or None (fault recorded, reconnect paced)."""
        if not await self._connect(u):
            return None
        try:
            u.state = await u.adapter.read_state()
        except AdapterError as exc:
            self._unit_failed(u, exc)
            await self._drop(u)
            return None
        if u.fault is not None:
            self.event("device-recovered", f"{u.charger.id}: answering again after: {u.fault}", device=u.charger.id)
            u.fault = None
        return u.state

    async def _drop(self, u: UnitLink) -> None:
        """Forget a failed connection: the next tick starts the adapter again (read first, watchdog re-armed)."""
        u.adapter.started = False
        u.next_connect_real = self.real_clock() + RECONNECT_S
        await u.adapter.dev.close()

    async def _start_meter(self) -> None:
        """Connect the meter if it is not connected (paced by RECONNECT_S after a failure)."""
        assert self.meter is not None
        if not self._meter_started and self.real_clock() >= self._meter_next_connect:
            self._meter_next_connect = self.real_clock() + RECONNECT_S
            await self.meter.start()
            self._meter_started = True

    async def _read_meter(self) -> MeterReading | None:
        """One meter reading, or None (fault recorded, the connection dropped for a fresh start)."""
        if self.meter is None:
            return None
        try:
            await self._start_meter()
            if not self._meter_started:
                return None
            reading = await self.meter.read()
        except AdapterError as exc:
            self._meter_failed(exc)
            self._meter_started = False
            await self.meter.stop()
            return None
        self._clear_meter_fault()
        return reading

    # ----------------------------------------------------------------- observation
    async def _observe(self, now: pd.Timestamp, account: bool = True) -> MeterReading | None:
        """Read the meter and the units; account the window; react to plug, grid and month changes."""
        reading = await self._read_meter()
        await self._each(self._read_unit(u) for u in self.units)
        self.last_reading = reading
        if account:
            imp = reading.import_kw if reading is not None else 0.0
            for rec in self.window.update(now, imp, reading.import_kwh if reading is not None else None):
                self._close_window(rec, now)
        elif reading is not None and self.window.current is None:
            self.window.update(now, reading.import_kw, reading.import_kwh)
        self._track_vehicles(now)
        self._track_grid(now, reading)
        month = self._month_of(now)
        if self._month is not None and month != self._month:
            self.event("new-month", f"billing month {month} starts (last month's peak kept for the ratchet)")
            self._month = month
            self.request_replan("new-month")
        self._month = month
        return reading

    def _close_window(self, rec: WindowRecord, now: pd.Timestamp) -> None:
        """A demand window ended: keep it, and raise the month's metered peak if it beat it."""
        self.windows.append(rec)
        if rec.grid_down and rec.import_kwh <= 0:
            return
        month = self._month_of(rec.start)
        if self.store.raise_month_peak(month, rec.average_kw, rec.start, now):
            log.info("month %s peak now %.2f kW (window %s)", month, rec.average_kw, rec.start)
            if rec.refill:
                self.event("peak-by-refill", f"month {month} peak raised to {rec.average_kw:.2f} kW in the window from "
                                             f"{rec.start.tz_convert(self.cfg.zone):%H:%M} while charging cars their drivers "
                                             "needed before leaving", "warning", peak_kw=rec.average_kw)

    def _vehicle_on(self, u: UnitLink, state: ChargerState) -> Vehicle | None:
        """The configured vehicle plugged into ``u``: by the id the unit reports, else its only home vehicle."""
        if not state.plugged:
            return None
        by_id = {v.id: v for v in self.cfg.vehicles}
        if state.vehicle_id and state.vehicle_id in by_id:
            return by_id[state.vehicle_id]
        homes = vehicle_homes(self.cfg)[u.charger.id]
        return homes[0] if len(homes) == 1 else None

    def _track_vehicles(self, now: pd.Timestamp) -> None:
        """SOC of plugged vehicles; plug-in/unplug asks for a re-plan and is logged."""
        for u in self.units:
            s = u.state
            if s is None:
                continue
            v = self._vehicle_on(u, s)
            if v is not None and s.soc_pct is not None:
                self.soc_kwh[v.id] = s.soc_pct / 100 * v.capacity_kwh
                self._soc_seen[v.id] = (now, u) if s.plugged else (now, None)
            vid = v.id if v is not None else (s.vehicle_id if s.plugged else None)
            if u.plugged is not None and (s.plugged != u.plugged or vid != u.vehicle):
                what = f"{vid} plugged in" if s.plugged else f"{u.vehicle or 'vehicle'} unplugged"
                soc = f" at {s.soc_pct:.1f} %" if s.plugged and s.soc_pct is not None else ""
                self.event("plug", f"{u.charger.id}: {what}{soc}", device=u.charger.id, vehicle=vid)
                self.request_replan("plug-in" if s.plugged else "unplug")
            if v is not None:
                stay = self._stay(v, now)
                if stay is not None:
                    arrived = self._arrived_kwh(v.id, stay)
                    if arrived is None and s.plugged and s.soc_pct is not None:   # first seen in this stay
                        arrived = s.soc_pct / 100 * v.capacity_kwh
                    self.departures[v.id] = {"depart": stay.depart.isoformat(), "target_kwh": stay.need_kwh(arrived),
                                             "arrived_kwh": arrived}
            u.plugged, u.vehicle = s.plugged, vid

    def _arrived_kwh(self, vid: str, stay: Stay) -> float | None:
        """Energy the car had when first seen plugged in during ``stay`` [kWh] (None: not seen yet)."""
        d = self.departures.get(vid) or {}
        return d.get("arrived_kwh") if d.get("depart") == stay.depart.isoformat() else None

    def _track_grid(self, now: pd.Timestamp, reading: MeterReading | None) -> None:
        """Loss of grid: any unit reporting it disconnected, or the meter reporting a power failure."""
        votes = [u.state.grid_connected for u in self.units if u.state is not None]
        if reading is not None and reading.grid_available is not None:
            votes.append(reading.grid_available)
        if not votes:
            return
        up = all(votes)
        if up == self.grid_up:
            return
        self.grid_up = up
        if not up:
            self.outage_since = now
            self.event("outage", "grid lost: outage mode (units island the critical circuits; backup plan follows)",
                       "warning", critical_kw=self.cfg.load.critical_kw)
            self.request_replan("outage")
        else:
            hours = (now - self.outage_since) / pd.Timedelta(hours=1) if self.outage_since is not None else 0.0
            self.outage_since = None
            self.event("grid-restored", f"grid back after {hours:.2f} h: normal mode", hours=hours)
            self.request_replan("grid-restored")

    def _stay(self, v: Vehicle, now: pd.Timestamp):
        """The configured stay of ``v`` holding ``now`` (None if it is not expected here now).

        Stays are expanded for four days around ``now`` and reused while ``now`` stays in the middle
        two (expanding the weekly windows and the holiday calendar every tick cost ~3 ms a car)."""
        lo, hi, found = self._stays.get(v.id, (None, None, []))
        if lo is None or not lo + STAY_MARGIN <= now < hi - STAY_MARGIN:
            lo, hi = now - 2 * STAY_MARGIN, now + 2 * STAY_MARGIN
            found = stays(v, lo, hi, self.cfg.zone, self._is_holiday)
            self._stays[v.id] = (lo, hi, found)
        return next((s for s in found if s.arrive <= now < s.depart), None)

    # ----------------------------------------------------------------- planning
    def _forecast_hours(self) -> float:
        """Forecast span: the horizon plus two refresh periods, in whole steps [h]."""
        step_h = self.cfg.planner.step_minutes / 60
        extra = 2 * self.cfg.daemon.forecast_refresh_minutes / 60
        return self.cfg.planner.horizon_hours + math.ceil(extra / step_h) * step_h

    def _make_forecast(self, origin: pd.Timestamp):
        """Build the forecaster once (history cleaned) and forecast from ``origin`` (worker thread)."""
        from ems.forecast import SiteForecaster  # lazy: pvlib import is slow and unused without a plan
        if self._forecaster is None:
            self._forecaster = SiteForecaster(self.cfg, self.history)
        self._refresh_error_quantile(origin)
        return self._forecaster.forecast(origin, self._forecast_hours())

    def _refresh_error_quantile(self, origin: pd.Timestamp) -> None:
        """Once a local day, the net import forecast's error quantile from the weeks before
        (``planner.peak_quantile_pct``; :mod:`ems.forecast.uncertainty`), in the worker thread."""
        pct = self.cfg.planner.peak_quantile_pct
        day = origin.tz_convert(self.cfg.zone).date()
        if pct is None or (self._error_q is not None and self._error_q[0] == day):
            return
        from ems.forecast.uncertainty import net_error_quantile
        self._error_q = (day, net_error_quantile(self._forecaster, origin, pct, self.cfg.planner.horizon_hours))

    def _peak_uplift_kw(self, start: pd.Timestamp, index: pd.DatetimeIndex) -> pd.Series | None:
        """The load the plan allows for above the forecast in its later demand windows [kW] (None: off)."""
        q = self._error_q[1] if self._error_q is not None else None
        if q is None:
            return None
        return pd.Series(q.uplift_kw(start, index, self.cfg.zone), index=index)

    async def refresh_forecast(self) -> None:
        """Forecast job: PV and load from the current step for the horizon and a margin (never during a plan).
        Nothing to do when the plan job at the same boundary already forecast from this step."""
        async with self.plan_lock:
            if self._forecast is not None and self._forecast_origin == self._step_start(self.clock.now()):
                return
            await self._refresh_forecast()

    async def _refresh_forecast(self) -> None:
        """A new forecast in the worker thread; a failure is an event and leaves the old forecast."""
        origin = self._step_start(self.clock.now())
        try:
            fc = await asyncio.get_running_loop().run_in_executor(self._pool, self._make_forecast, origin)
        except (EmsError, ValueError) as exc:
            self.event("forecast-failed", f"no forecast: {exc}", "error")
            return
        self._forecast, self._forecast_origin = fc, origin

    def _step_start(self, t: pd.Timestamp) -> pd.Timestamp:
        """Start of the planning step holding ``t`` (site-local wall clock)."""
        return t.tz_convert(self.cfg.zone).floor(f"{self.cfg.planner.step_minutes}min")

    def _forecast_covers(self, start: pd.Timestamp) -> bool:
        """Whether the forecast in hand serves a plan from ``start``: it covers the horizon and is less
        than ``forecast_refresh_minutes`` old. A forecast exactly one refresh period old is due: the plan
        and forecast jobs fire at the same boundary in either order, and with the default 30-minute
        refresh a plan that ran first would otherwise miss the last step's measurements (the study's
        mpc forecasts from every step; tests/ems/test_parity.py)."""
        if self._forecast is None or self._forecast_origin is None:
            return False
        end = start + pd.Timedelta(hours=self.cfg.planner.horizon_hours)
        age_min = (start - self._forecast_origin) / pd.Timedelta(minutes=1)
        return self._forecast_origin <= start and self._forecast.pv_kw.index[-1] >= end - WINDOW / 2 \
            and age_min < self.cfg.daemon.forecast_refresh_minutes

    def projected_soc_kwh(self, vehicle_id: str, start: pd.Timestamp) -> float:
        """The vehicle's last measured SOC carried forward to ``start`` at its unit's current setpoint [kWh].

        The plan starts from where the car will be when its first step begins, not from where it was at
        the last dispatch tick: the unit keeps the last setpoint in between (a whole tick, up to 2
        simulated minutes at high speed), which would otherwise go missing from the departure target.
        """
        soc = self.soc_kwh[vehicle_id]
        seen, u = self._soc_seen.get(vehicle_id, (None, None))
        if seen is None or u is None or u.setpoint is None or start <= seen:
            return soc
        h = (start - seen) / pd.Timedelta(hours=1)
        c = u.charger
        return soc + (u.setpoint.charge_kw * c.charge_efficiency_pct / 100
                      - u.setpoint.discharge_kw / (c.discharge_efficiency_pct / 100)) * h

    def site_state(self, now: pd.Timestamp, start: pd.Timestamp) -> tuple[SiteState, list[str]]:
        """What the planner needs from the store and the devices; notes for assumed values."""
        peaks = self.store.month_peaks()
        month = self._month_of(start)
        notes = []
        soc = {}
        for v in self.cfg.vehicles:
            if v.id in self.soc_kwh:
                soc[v.id] = min(max(self.projected_soc_kwh(v.id, start), 0.0), v.capacity_kwh)
            else:
                soc[v.id] = v.min_soc_pct / 100 * v.capacity_kwh
                notes.append(f"SOC of {v.id} unknown (not seen yet): assumed at its minimum {v.min_soc_pct:g} %")
        pre = 0.0
        cur = self.window.current
        if cur is not None and cur.start < start < cur.start + WINDOW and self.window.last_t is not None:
            seen_h = (self.window.last_t - cur.start) / pd.Timedelta(hours=1)
            pre = cur.import_kwh * min((start - cur.start) / pd.Timedelta(hours=1) / seen_h, 1.0) if seen_h > 0 else 0.0
        history = {m: p for m, p in peaks.items() if m != month}
        arrived = {vid: float(d["arrived_kwh"]) for vid, d in self.departures.items()
                   if d.get("arrived_kwh") is not None and pd.Timestamp(d["depart"]) > start}
        return SiteState(soc, peaks.get(month, 0.0), history, pre, arrival_kwh=arrived), notes

    def _nowcast(self, load: pd.Series, now: pd.Timestamp) -> pd.Series:
        """Carry the measured miss into the first hours of the load forecast (faded, never below 0)."""
        if abs(self.miss_kw) < 1e-9:
            return load
        lead_h = np.maximum((load.index - now) / pd.Timedelta(hours=1), 0.0)
        return (load + self.miss_kw * np.exp(-lead_h / NOWCAST_TAU_H)).clip(lower=0.0)

    async def plan_once(self, reason: str = "scheduled") -> ActivePlan | None:
        """One re-plan (normal, or the backup plan while the grid is down). Never raises for a failed solve."""
        async with self.plan_lock:
            self.replan_reason = None
            now = self.clock.now()
            start = self._step_start(now)
            loop = asyncio.get_running_loop()
            if not self._forecast_covers(start):
                await self._refresh_forecast()
                if not self._forecast_covers(start):
                    self._set_fallback(now, "no forecast covers the horizon")
                    return None
            state, notes = self.site_state(now, start)
            mode = "normal" if self.grid_up else "outage"
            outage = None
            if mode == "outage":
                outage = (start, start + pd.Timedelta(hours=self.cfg.planner.horizon_hours))
            load = self._nowcast(self._forecast.load_kw, now)
            t0 = time.perf_counter()
            try:
                uplift = self._peak_uplift_kw(start, load.index) if mode == "normal" else None
                result = await loop.run_in_executor(*self._solve_call(), start, self._forecast.pv_kw, load, state, outage,
                                                    uplift)
            except Exception as exc:  # noqa: BLE001 - any solver/model failure: the safe rule, never a crash
                log.exception("planning failed")
                self.event("plan-failed", f"planning failed: {type(exc).__name__}: {exc}; using the safe rule", "error")
                self.plan = None
                self._set_fallback(now, "planning failed")
                return None
            self.stats.plans += 1
            self.stats.plan_seconds.append(time.perf_counter() - t0)
            result.outcome.messages[:0] = notes
            problem = result.problem
            plan = ActivePlan(result, now, start, mode,
                              reserve_kwh=None if problem is None or problem.reserve_kwh is None else problem.reserve_kwh)
            plan.plan_id = self.store.record_plan(now, start, result.summary, result.schedule, self._inputs(
                reason, mode, state, outage, plan.reserve_kwh))
            plan.unusable = self._judge(plan)
            self.plan = plan
            if mode == "outage":
                self._outage_event(plan)
            if plan.unusable is None:
                self._clear_fallback(now)
            else:
                self._set_fallback(now, plan.unusable)
            return plan

    def _solve_call(self) -> tuple[Any, Callable[..., PlanResult]]:
        """Where the solve runs: the worker thread, or (``solver_process``) a worker process that
        keeps its own persistent planner, so the pyomo build never competes with dispatch for the GIL."""
        if not self.solver_process:
            return self._pool, self._solve
        if self._solver is None:
            self._solver = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                               initializer=_solver_init, initargs=(self.cfg,))
        return self._solver, _solver_plan

    def _close_solver(self) -> None:
        """Stop the solver process (a new one starts with the next plan)."""
        if self._solver is not None:
            self._solver.shutdown(wait=True)
            self._solver = None

    def _solve(self, start, pv, load, state, outage, uplift=None) -> PlanResult:
        """Run in the worker thread: the planner."""
        return self.planner.plan(start, pv, load, state, outage=outage, peak_uplift_kw=uplift)

    def _inputs(self, reason: str, mode: str, state: SiteState, outage, reserve: np.ndarray | None) -> dict[str, Any]:
        """The inputs summary stored with a plan."""
        meta = getattr(self._forecast, "meta", {}) or {}
        return {"reason": reason, "mode": mode, "soc_kwh": state.soc_kwh, "month_peak_kw": state.month_peak_kw,
                "peak_history_kw": state.peak_history_kw, "window_import_kwh": state.window_import_kwh,
                "forecast_origin": str(self._forecast_origin), "forecast_miss_kw": self.miss_kw,
                "forecast": {k: meta.get(k) for k in ("pv_source", "pv_clearness", "pv_ratio", "level_offset_kw",
                                                      "history_end")},
                "outage": None if outage is None else [str(outage[0]), str(outage[1])],
                "reserve_kwh": None if reserve is None else [round(float(x), 4) for x in reserve]}

    def _judge(self, plan: ActivePlan) -> str | None:
        """Why dispatch must not follow ``plan`` (None: follow it). Events for fallback and infeasibility."""
        out = plan.result.outcome
        if out.fallback:
            self.event("plan-fallback", "the solver gave no usable schedule: " + "; ".join(out.messages[-3:]), "error")
            return "the solver gave no usable schedule"
        if (out.infeasible or out.departures_short) and plan.mode == "normal":
            unmet = [s.text for s in out.shortfalls] or out.messages
            self.event("infeasible", "requirements cannot all be met: " + "; ".join(unmet), "warning")
            return "infeasible requirements (departure targets cannot be met)"
        return None

    def _unusable(self, plan: ActivePlan, now: pd.Timestamp) -> str | None:
        """A stored or current plan is stale when too old or past its horizon."""
        age = (now - plan.created) / pd.Timedelta(minutes=self.cfg.planner.step_minutes)
        if age > STALE_STEPS:
            return f"the plan is stale ({age:.1f} steps old)"
        if now >= plan.end():
            return "the plan's horizon has ended"
        if (plan.mode == "outage") == self.grid_up:
            return "the plan was made for another grid state"
        return plan.unusable

    def _outage_event(self, plan: ActivePlan) -> None:
        """What the backup plan promises: how long the critical circuits stay powered."""
        sched = plan.result.schedule
        uns = sched["unserved_kw"] if "unserved_kw" in sched else pd.Series(0.0, index=sched.index)
        short = uns[uns > 1e-3]
        hours = ((short.index[0] - sched.index[0]) if len(short) else (plan.end() - sched.index[0])) / pd.Timedelta(hours=1)
        self.event("backup-plan", f"backup plan: critical circuits ({self.cfg.load.critical_kw:.2f} kW) powered for "
                                  f"{hours:.1f} h{' (whole horizon)' if not len(short) else ''}, "
                                  f"{plan.result.outcome.unserved_kwh:.1f} kWh unserved over the horizon",
                   "warning", survival_hours=hours)

    def _set_fallback(self, now: pd.Timestamp, reason: str) -> None:
        if self._fallback_reason != reason:
            self._fallback_reason = reason
            self.event("fallback", f"dispatch uses the safe rule (no discharge below reserve, charge toward departure "
                                   f"targets): {reason}", "warning")

    def _clear_fallback(self, now: pd.Timestamp) -> None:
        if self._fallback_reason is not None:
            self.event("plan-restored", f"following the plan again (was: {self._fallback_reason})")
            self._fallback_reason = None

    # ----------------------------------------------------------------- dispatch
    def _reserve_kwh(self, now: pd.Timestamp, following_plan: bool) -> float:
        """Outage reserve to hold in the plugged cars now [kWh] (:func:`ems.dispatch.reserve_to_hold_kwh`)."""
        p, planned = self.plan, None
        if p is not None and p.reserve_kwh is not None and now < p.end():
            planned = float(p.reserve_kwh[min(p.step_of(now), len(p.reserve_kwh) - 1)])
        o = self.cfg.outage
        return reserve_to_hold_kwh(o.mode == "hard", following_plan, planned, self.cfg.load.critical_kw, o.reserve_hours)

    def _expected_net_kw(self, now: pd.Timestamp) -> np.ndarray | None:
        """The building's expected import (forecast load less forecast PV) per plan step from this
        step for a day [kW] (the current step's is replaced by the measurement in
        :func:`ems.dispatch.peak_aware_dispatch`); None without a forecast. Cached per step."""
        fc = self._forecast
        if fc is None:
            return None
        start = self._step_start(now)
        key = (start, self._forecast_origin)
        if self._net_cache is None or self._net_cache[0] != key:
            net = (fc.load_kw - fc.pv_kw).loc[start:start + pd.Timedelta(hours=REFILL_HOURS)]
            self._net_cache = (key, net.to_numpy(dtype=float)[:-1] if len(net) > 1 else net.to_numpy(dtype=float))
        return self._net_cache[1]

    def _unit_inputs(self, now: pd.Timestamp,
                     following_plan: bool) -> tuple[list[UnitState], dict[str, UnitRules], list[PluggedCar], float]:
        """Dispatch inputs of every reachable unit: their states, each unit's floor (the driver's
        minimum), the plugged cars with their departures and the outage reserve to share among them
        [kWh] (:func:`ems.dispatch.peak_aware_dispatch` shares it with :func:`ems.dispatch.share_floors`,
        the rule the study shares)."""
        states, rules, cars = [], {}, []
        for u in self.units:
            s = u.state
            if s is None:
                continue
            c = u.charger
            v = self._vehicle_on(u, s)
            cap = (v.capacity_kwh if v is not None else s.capacity_kwh) or 0.0
            soc = (s.soc_pct or 0.0) / 100 * cap
            vmax_c = v.max_charge_kw if v is not None and v.max_charge_kw is not None else math.inf
            vmax_d = v.max_discharge_kw if v is not None and v.max_discharge_kw is not None else math.inf
            ok = s.plugged and cap > 0 and s.soc_pct is not None
            unit = UnitState(c.id, ok, soc, min(c.max_charge_kw, s.max_charge_kw, vmax_c),
                             min(c.max_discharge_kw, s.max_discharge_kw, vmax_d),
                             c.charge_efficiency_pct / 100, c.discharge_efficiency_pct / 100,
                             s.charge_kw, s.discharge_kw)
            states.append(unit)
            min_kwh = (v.min_soc_pct if v is not None else (s.soc_min_pct or 0.0)) / 100 * cap
            rules[c.id] = UnitRules(min_kwh)
            if ok:
                target, hours = 0.0, math.inf
                dep = self._departure(v, now) if v is not None else None
                if dep is not None:   # one tick less: what this tick discharges cannot be charged back within it
                    target, hours = dep[0], max(dep[1] - self.dispatch_interval_s / 3600, 0.0)
                cars.append(PluggedCar(c.id, soc, min_kwh, cap, unit.discharge_efficiency, target, hours,
                                       unit.max_charge_kw, unit.charge_efficiency))
        return states, rules, cars, self._reserve_kwh(now, following_plan)

    def _departure(self, v: Vehicle, now: pd.Timestamp) -> tuple[float, float] | None:
        """(target kWh, hours to departure) of the car's current stay: from its windows, else the stored one."""
        stay = self._stay(v, now)
        if stay is not None:
            return stay.need_kwh(self._arrived_kwh(v.id, stay)), (stay.depart - now) / pd.Timedelta(hours=1)
        d = self.departures.get(v.id)
        if d is not None and pd.Timestamp(d["depart"]) > now:
            return float(d["target_kwh"]), (pd.Timestamp(d["depart"]) - now) / pd.Timedelta(hours=1)
        return None

    def _guard_target_kw(self, now: pd.Timestamp) -> float:
        """The window average the guard holds [kW] (:func:`ems.dispatch.guard_target_kw`, with
        ``daemon.peak_guard_margin_kw``)."""
        month = self._month_of(now)
        month_peak = self.store.month_peaks().get(month, 0.0)
        plan_peak = self.plan.result.outcome.peak_in(month) if self.plan is not None and self.plan.mode == "normal" else None
        return guard_target_kw(plan_peak, month_peak, self.cfg.grid.import_limit_kw, self.cfg.daemon.peak_guard_margin_kw)

    def _check_miss(self, now: pd.Timestamp, base_kw: float, row: pd.Series | None, dt_h: float) -> None:
        """Smooth the forecast error of the site base (load - PV); a large miss asks for a re-plan."""
        if row is None or not self.grid_up:
            return
        fc = float(row["load_kw"] - row["pv_kw"])
        a = 1 - math.exp(-dt_h / MISS_TAU_H)
        self.miss_kw += a * ((base_kw - fc) - self.miss_kw)
        step = pd.Timedelta(minutes=self.cfg.planner.step_minutes)
        recent = self._last_miss_replan is not None and now - self._last_miss_replan < step
        if abs(self.miss_kw) > max(MISS_MIN_KW, MISS_SHARE * abs(fc)) and not recent:
            self._last_miss_replan = now
            self.event("forecast-miss", f"site load - PV is {base_kw:.2f} kW against {fc:.2f} kW forecast "
                                        f"(smoothed miss {self.miss_kw:+.2f} kW): re-plan", miss_kw=self.miss_kw)
            self.request_replan("forecast-miss")

    async def dispatch_once(self) -> list[Setpoint]:
        """One dispatch tick: observe, decide, write, record. Device faults never end the daemon."""
        async with self.io_lock:
            t0 = time.perf_counter()
            planning = self.plan_lock.locked()
            now = self.clock.now()
            reading = await self._observe(now)
            plan = self.plan
            if plan is not None and plan.unusable is None:
                reason = self._unusable(plan, now)
                if reason is not None:
                    plan.unusable = reason
            following = plan is not None and plan.unusable is None and plan.mode == "normal"
            if plan is None:
                self._set_fallback(now, "no plan yet")
            elif plan.unusable is not None:
                self._set_fallback(now, plan.unusable)
            row = plan.row(now) if following and plan is not None else None
            target = self._guard_target_kw(now)
            states, rules, cars, reserve = self._unit_inputs(now, following)
            site_kw = (reading.import_kw - reading.export_kw) if reading is not None else \
                sum(s.charge_kw - s.discharge_kw for s in states)
            planned = None
            if row is not None:
                planned = {u.charger.id: (float(row[f"{u.charger.id}_charge_kw"]), float(row[f"{u.charger.id}_discharge_kw"]))
                           for u in self.units}
            tick_h = self.dispatch_interval_s / 3600
            inp = DispatchInput(states, rules, site_kw, WindowMeter(self.window.current.import_kwh if self.window.current else 0.0,
                                                                     self.window.elapsed_h(now)),
                                target, planned, grid_up=self.grid_up,
                                vehicle_export_allowed=self.cfg.grid.vehicle_export_allowed,
                                import_limit_kw=self.cfg.grid.import_limit_kw, tick_h=tick_h)
            net = self._expected_net_kw(now) if self.cfg.tariff.basic.kind == "demand" else None
            result = peak_aware_dispatch(inp, cars, reserve, None if net is None else net.tolist(),
                                         self.cfg.planner.step_minutes / 60) if states else DispatchResult([])
            caps = {car.charger_id: car.capacity_kwh for car in cars}
            floor_pct = {cid: 100 * result.rules[cid].floor_kwh / cap for cid, cap in caps.items()}
            setpoints = result.setpoints
            if self.window.current is not None:
                self.window.current.note(target, plan.peak_kw if following and plan is not None else None,
                                         result.guard_short, self.grid_up, result.refill_over_kw > 1e-6)
            if reading is not None:
                self._check_miss(now, site_kw - sum(s.charge_kw - s.discharge_kw for s in states), row, tick_h)
            await self._write(setpoints, floor_pct)
            self._record(now, setpoints, site_kw)
            self.stats.ticks += 1
            self.stats.tick_seconds.append(time.perf_counter() - t0)
            self.stats.tick_during_plan.append(planning or self.plan_lock.locked())
            return setpoints

    async def _write(self, setpoints: list[Setpoint], floor_pct: dict[str, float]) -> None:
        """Send each setpoint (the adapter clamps again, with the SOC floor as its reserve)."""
        by_id = {u.charger.id: u for u in self.units}
        sends = []
        for sp in setpoints:
            u = by_id[sp.charger_id]
            u.setpoint = sp
            if u.state is not None and u.adapter.started:
                sends.append(self._send(u, sp, CallerLimits(soc_reserve_pct=floor_pct.get(sp.charger_id, 0.0))))
        await self._each(sends)

    async def _each(self, calls) -> None:
        """Await device calls: together over TCP (one connection per unit, so the round trips
        overlap), one after another when any unit is on a serial bus (RS-485 is half duplex)."""
        calls = list(calls)
        if any(u.charger.adapter.kind == "modbus_rtu" for u in self.units):
            for c in calls:
                await c
        else:
            await asyncio.gather(*calls)

    async def _send(self, u: UnitLink, sp: Setpoint, limits: CallerLimits) -> None:
        """Write one unit's setpoint; a failure is recorded and the link dropped, never raised."""
        try:
            await u.adapter.set_power(sp.charge_kw, sp.discharge_kw, limits, u.state)
        except AdapterError as exc:
            self._unit_failed(u, exc)
            await self._drop(u)

    def _record(self, now: pd.Timestamp, setpoints: list[Setpoint], site_kw: float) -> None:
        """Telemetry: one row per unit (unreachable units too), then the restart state."""
        sp = {s.charger_id: s for s in setpoints}
        rows = []
        tick_h = self.dispatch_interval_s / 3600
        for u in self.units:
            s, p = u.state, sp.get(u.charger.id)
            v = self._vehicle_on(u, s) if s is not None else None
            soc = None if s is None or v is None or s.soc_pct is None else s.soc_pct / 100 * v.capacity_kwh
            if s is not None:
                self.stats.charged_kwh += s.charge_kw * tick_h
                self.stats.discharged_kwh += s.discharge_kw * tick_h
            rows.append({"device": u.charger.id, "plugged": None if s is None else s.plugged, "soc_kwh": soc,
                         "charge_kw": None if s is None else s.charge_kw,
                         "discharge_kw": None if s is None else s.discharge_kw,
                         "setpoint_charge_kw": p.charge_kw if p else None,
                         "setpoint_discharge_kw": p.discharge_kw if p else None,
                         "site_import_kw": site_kw, "grid_up": self.grid_up,
                         "reason": (p.reason if p else "unreachable") if s is not None else "unreachable"})
        self.store.record_telemetry(now, rows)
        self._persist(now)

    async def heartbeat_once(self) -> None:
        """Refresh each started unit's reversion watchdog (and its controller heartbeat) when due."""
        async with self.io_lock:
            for u in self.units:
                if not u.adapter.started:
                    continue
                try:
                    await u.adapter.refresh()
                except AdapterError as exc:
                    self._unit_failed(u, exc)
                    await self._drop(u)

    # ----------------------------------------------------------------- housekeeping, config
    async def housekeeping_job(self) -> None:
        """Retention as a scheduler job (on the event loop, like every other store access)."""
        async with self.io_lock:
            self.housekeeping()

    def housekeeping(self) -> dict[str, int]:
        """Retention: drop telemetry, plans and events older than ``daemon.retention_days`` (peaks kept)."""
        removed = self.store.apply_retention(self.clock.now(), self.cfg.daemon.retention_days)
        if any(removed.values()):
            log.info("retention removed %s", removed)
        return removed

    def reload_config(self, path: str) -> bool:
        """Load ``path``; apply it at once if valid and compatible, else keep the running config. Returns True if applied.

        Devices and the database cannot change under a running daemon: such an edit is rejected
        (restart to apply it), like an invalid file. A valid config's peaks history is seeded again
        (:meth:`seed_peaks`: idempotent; a month after the current one rejects the reload).
        """
        try:
            new = load_site(path)
            problems = self._incompatible(new)
            if not problems:
                self.seed_peaks(self.clock.now(), new)
        except EmsError as exc:
            text = str(exc)
            log.error("config reload rejected, keeping the running config:\n%s", text)
            self.event("config-rejected", f"{path}: invalid, the running config is kept: {text}", "error", file=path)
            return False
        if problems:
            self.event("config-rejected", f"{path}: needs a restart, the running config is kept: " + "; ".join(problems),
                       "error", file=path)
            return False
        self.cfg = new
        self.planner = Planner(new)
        if self._solver is not None:   # the solver process plans for the old config: replaced at the next plan
            solver, self._solver = self._solver, None
            solver.shutdown(wait=False)
        self._is_holiday, self._stays = holiday_calendar(new.tariff), {}
        self._forecaster, self._forecast, self._forecast_origin = None, None, None
        if not self._interval_override:
            self.dispatch_interval_s = max(new.daemon.dispatch_interval_s, self._min_dispatch_s)
        self.units = [UnitLink(c, u.adapter, u.state, u.fault, u.next_connect_real, u.plugged, u.vehicle, u.setpoint)
                      for c, u in zip(new.chargers, self.units)]
        self.event("config-reloaded", f"{path}: applied", file=path)
        self.request_replan("config")
        return True

    def _incompatible(self, new: SiteConfig) -> list[str]:
        """Changes a running daemon cannot apply (chargers' ids and adapters, the database)."""
        out = []
        if [(c.id, c.adapter) for c in new.chargers] != [(c.id, c.adapter) for c in self.cfg.chargers]:
            out.append("chargers[].id/adapter changed")
        if new.daemon.database != self.cfg.daemon.database:
            out.append(f"daemon.database changed ({self.cfg.daemon.database} -> {new.daemon.database})")
        if new.tariff.timezone != self.cfg.tariff.timezone:
            out.append("the tariff's time zone changed")
        return out


_SOLVER: Planner | None = None   # the planner of a solver process (see Daemon._solve_call)


def _solver_init(cfg: SiteConfig) -> None:
    """Solver process start: one persistent planner for the site."""
    global _SOLVER
    _SOLVER = Planner(cfg)


def _solver_plan(start, pv, load, state, outage, uplift=None) -> PlanResult:
    """One plan in the solver process."""
    assert _SOLVER is not None
    return _SOLVER.plan(start, pv, load, state, outage=outage, peak_uplift_kw=uplift)
