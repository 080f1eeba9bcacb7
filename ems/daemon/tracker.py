"""Tracking: what the daemon has seen of the site (:class:`Tracker`).

After every read of the devices (:meth:`Tracker.observe`): the fixed :00/:30 demand window is
accounted and each closed window is stored and may raise its month's metered peak, unless its data
is flagged (:class:`~ems.daemon.metering.WindowFlag`: a meter reading not believed or missing, a
counter that disagrees with the samples), which never becomes a peak; the plugged
vehicles' SOC and their current stay's departure are noted, and a plug-in or unplug, the loss or
return of the grid and a new billing month each ask for a re-plan. Each dispatch tick also smooths
the forecast miss of the site base (:meth:`Tracker.check_miss`); a large one asks for a re-plan too.

SOC, pending departures and the open window are what a restart needs (:meth:`Tracker.persist`,
:meth:`Tracker.resume`); the monthly peaks are in the store already.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from typing import Any

import pandas as pd

from adapters import ChargerState, MeterReading
from adapters.convention import soc_kwh
from ems.config import SiteConfig, Vehicle
from ems.daemon.host import Host
from ems.daemon.links import UnitLink
from ems.daemon.metering import WindowAccount, WindowFlag, WindowRecord
from ems.daemon.readings import MeterQuality
from ems.devices import vehicle_homes
from ems.planning import holiday_calendar
from ems.timegrid import month_of, window_start
from ems.vehicles import Stay, stays

log = logging.getLogger(__name__)

#: Forecast miss: the measured site base (load - PV) is smoothed with this time constant [h]...
MISS_TAU_H = 0.25
#: ... and a miss larger than max(MISS_MIN_KW, MISS_SHARE x |forecast|) asks for a re-plan. 1 kW is
#: a kettle; 30 % is about twice the household backtest's half-hour load MAE at short lead times.
MISS_MIN_KW = 1.0
MISS_SHARE = 0.15
#: Stays are expanded this far either side of now and re-expanded when now comes within it of an end.
#: A stay lasts at most a week (a window may run to the same weekday next week): 8 days cover it.
STAY_MARGIN = pd.Timedelta(days=8)
#: The restart state's key of the heartbeat written with it at every tick: ``clock`` (the tick's time on
#: the daemon's clock, simulated with --speed), ``at`` (the wall clock, UTC, at that time: ms before the
#: write), ``speed``, ``interval_s`` (the dispatch interval, simulated s), ``running`` (False once the
#: daemon stopped cleanly) and ``pid``. ``ems status`` reads it (ems/commands/status.py).
HEARTBEAT = "heartbeat"
#: What a tick's meter reading means for its demand window.
QUALITY_FLAGS = {MeterQuality.GOOD: WindowFlag.NONE, MeterQuality.ABSENT: WindowFlag.NONE,
                 MeterQuality.HELD: WindowFlag.SAMPLES_IMPLAUSIBLE, MeterQuality.DROPPED: WindowFlag.SAMPLES_IMPLAUSIBLE,
                 MeterQuality.LOST: WindowFlag.SAMPLES_MISSING}


class Tracker:
    """Windows and month, vehicles (SOC, plug state, departures), grid state, the forecast miss."""

    def __init__(self, host: Host):
        self.host = host
        self.window = WindowAccount(host.cfg.tariff.timezone)
        self.windows: deque[WindowRecord] = deque(maxlen=2 * 48 * 62)   # two months of windows
        self.soc_kwh: dict[str, float] = {}
        self._soc_seen: dict[str, tuple[pd.Timestamp, UnitLink]] = {}  # vehicle -> when and on which unit
        self.departures: dict[str, dict[str, Any]] = {}
        self.grid_up = True
        self.outage_since: pd.Timestamp | None = None
        self.miss_kw = 0.0
        self._last_miss_replan: pd.Timestamp | None = None
        self._month: str | None = None
        self._is_holiday = holiday_calendar(host.cfg.tariff)
        self._stays: dict[str, tuple[pd.Timestamp | None, pd.Timestamp | None, list]] = {}

    def reload(self, cfg: SiteConfig) -> None:
        """A reloaded config: its holiday calendar; the stays are expanded again."""
        self._is_holiday, self._stays = holiday_calendar(cfg.tariff), {}

    def month_of(self, t: pd.Timestamp) -> str:
        """Billing month "YYYY-MM" of ``t`` (tariff time zone)."""
        return month_of(t, self.host.cfg.tariff.timezone)

    # ----------------------------------------------------------------- restart state
    def resume(self, now: pd.Timestamp) -> None:
        """SOC, departures and the open window from the store (this month's peak is read at every plan)."""
        cfg, store = self.host.cfg, self.host.store
        self.soc_kwh = {k: float(v) for k, v in (store.get_state("soc_kwh") or {}).items()
                        if k in {v.id for v in cfg.vehicles}}
        self.departures = store.get_state("departures") or {}
        w = store.get_state("window")
        if w and pd.Timestamp(w["start"]) == window_start(now, cfg.tariff.timezone):
            self.window.resume(pd.Timestamp(w["start"]), w["import_kwh"], w["observed_h"], pd.Timestamp(w["t"]),
                               w.get("counter_kwh"), WindowFlag.from_names(w.get("flags", [])))
        self._month = self.month_of(now)

    def persist(self, now: pd.Timestamp, running: bool = True) -> None:
        """Save what a restart needs (SOC, departures, the open window, the simulated time), and the
        heartbeat ``ems status`` reads (:data:`HEARTBEAT`; ``running`` False: the daemon is stopping)."""
        cur = self.window.current
        host = self.host
        at = pd.Timestamp.now(tz="UTC") - (host.clock.now() - now) / host.clock.speed   # the wall clock at ``now``
        state: dict[str, Any] = {"soc_kwh": self.soc_kwh, "departures": self.departures, "now": now.isoformat(),
                                 HEARTBEAT: {"at": at.isoformat(), "clock": now.isoformat(),
                                             "speed": host.clock.speed, "interval_s": host.dispatch_interval_s,
                                             "running": running, "pid": os.getpid()}}
        if cur is not None and self.window.last_t is not None:
            state["window"] = {"start": cur.start.isoformat(), "import_kwh": cur.import_kwh, "observed_h": cur.observed_h,
                               "t": self.window.last_t.isoformat(), "counter_kwh": self.window.last_counter,
                               "flags": cur.flags.names}
        self.host.store.set_states(state)

    # ----------------------------------------------------------------- observation
    def observe(self, now: pd.Timestamp, reading: MeterReading | None, units: list[UnitLink], account: bool = True,
                meter: MeterQuality = MeterQuality.GOOD) -> None:
        """After a read: account the window (``meter``: what the reading is worth, from the links'
        reading guard; anything but GOOD or ABSENT flags the window); react to plug, grid and month changes."""
        flags = QUALITY_FLAGS[meter]
        if account:
            imp = reading.import_kw if reading is not None else 0.0
            for rec in self.window.update(now, imp, reading.import_kwh if reading is not None else None, flags):
                self._close_window(rec, now)
        elif reading is not None and self.window.current is None:
            self.window.update(now, reading.import_kw, reading.import_kwh, flags)
        self._track_vehicles(now, units)
        self._track_grid(now, reading, units)
        month = self.month_of(now)
        if self._month is not None and month != self._month:
            self.host.event("new-month", f"billing month {month} starts (last month's peak kept for the ratchet)")
            self._month = month
            self.host.request_replan("new-month")
        self._month = month

    def _close_window(self, rec: WindowRecord, now: pd.Timestamp) -> None:
        """A demand window ended: keep and store it, and raise the month's metered peak if it beat it,
        unless its data is flagged (then a ``window-flagged`` event if it would have raised the peak)."""
        self.windows.append(rec)
        month = self.month_of(rec.start)
        self.host.store.record_window(month, rec.start, rec.import_kwh, rec.counter_kwh, rec.samples_kwh,
                                      rec.flags.names, now)
        if rec.grid_down and rec.import_kwh <= 0:
            return
        if rec.flags:
            peak = self.host.store.month_peaks().get(month, 0.0)
            if rec.average_kw > peak:
                self.host.event("window-flagged", f"window from {rec.start.tz_convert(self.host.cfg.zone):%H:%M}: "
                                f"{rec.average_kw:.2f} kW not counted toward month {month}'s peak ({peak:.2f} kW): "
                                f"bad meter data ({', '.join(rec.flags.names)})", "warning",
                                window_start=rec.start.isoformat(), average_kw=rec.average_kw, flags=rec.flags.names,
                                counter_kwh=rec.counter_kwh, samples_kwh=rec.samples_kwh)
            return
        if self.host.store.raise_month_peak(month, rec.average_kw, rec.start, now):
            log.info("month %s peak now %.2f kW (window %s)", month, rec.average_kw, rec.start)
            if rec.refill:
                self.host.event("peak-by-refill", f"month {month} peak raised to {rec.average_kw:.2f} kW in the window from "
                                                  f"{rec.start.tz_convert(self.host.cfg.zone):%H:%M} while charging cars "
                                                  "their drivers needed before leaving", "warning", peak_kw=rec.average_kw)

    def _track_vehicles(self, now: pd.Timestamp, units: list[UnitLink]) -> None:
        """SOC of plugged vehicles; plug-in/unplug asks for a re-plan and is logged."""
        for u in units:
            s = u.state
            if s is None or s.plug_unknown is not None:   # neither plugged nor unplugged (e.g. 802 State
                continue                                    # INITIALIZING): no plug-in or unplug to record
            v = self.vehicle_on(u, s)
            if v is not None and s.soc_pct is not None:
                self.soc_kwh[v.id] = soc_kwh(s.soc_pct, v.capacity_kwh)
                self._soc_seen[v.id] = (now, u) if s.plugged else (now, None)
            elif v is not None and v.id in self.soc_kwh:   # SOC not believed: carry the last good one forward
                self._dead_reckon(now, u, s, v)
            vid = v.id if v is not None else (s.vehicle_id if s.plugged else None)
            if u.plugged is not None and (s.plugged != u.plugged or vid != u.vehicle):
                what = f"{vid} plugged in" if s.plugged else f"{u.vehicle or 'vehicle'} unplugged"
                soc = f" at {s.soc_pct:.1f} %" if s.plugged and s.soc_pct is not None else ""
                self.host.event("plug", f"{u.charger.id}: {what}{soc}", device=u.charger.id, vehicle=vid)
                self.host.request_replan("plug-in" if s.plugged else "unplug")
            if v is not None:
                stay = self._stay(v, now)
                if stay is not None:
                    arrived = self._arrived_kwh(v.id, stay)
                    if arrived is None and s.plugged and s.soc_pct is not None:   # first seen in this stay
                        arrived = soc_kwh(s.soc_pct, v.capacity_kwh)
                    self.departures[v.id] = {"depart": stay.depart.isoformat(), "target_kwh": stay.need_kwh(arrived),
                                             "arrived_kwh": arrived}
            u.plugged, u.vehicle = s.plugged, vid

    def _dead_reckon(self, now: pd.Timestamp, u: UnitLink, s: ChargerState, v: Vehicle) -> None:
        """Carry a plugged car's last good SOC [kWh] forward by the unit's measured power since it was
        last seen, within 0..capacity, while its unit's SOC reading is not believed."""
        seen, _ = self._soc_seen.get(v.id, (None, None))
        if seen is not None and now > seen:
            h = (now - seen) / pd.Timedelta(hours=1)
            c = u.charger
            e = self.soc_kwh[v.id] + (s.charge_kw * c.charge_efficiency - s.discharge_kw / c.discharge_efficiency) * h
            self.soc_kwh[v.id] = min(max(e, 0.0), v.capacity_kwh)
        self._soc_seen[v.id] = (now, None)   # the estimate is at now; nothing to carry forward at a setpoint

    def _track_grid(self, now: pd.Timestamp, reading: MeterReading | None, units: list[UnitLink]) -> None:
        """Loss of grid: any unit reporting it disconnected, or the meter reporting a power failure."""
        votes = [u.state.grid_connected for u in units if u.state is not None]
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
            self.host.event("outage", "grid lost: outage mode (units island the critical circuits; backup plan follows)",
                            "warning", critical_kw=self.host.cfg.load.critical_kw)
            self.host.request_replan("outage")
        else:
            hours = (now - self.outage_since) / pd.Timedelta(hours=1) if self.outage_since is not None else 0.0
            self.outage_since = None
            self.host.event("grid-restored", f"grid back after {hours:.2f} h: normal mode", hours=hours)
            self.host.request_replan("grid-restored")

    def check_miss(self, now: pd.Timestamp, base_kw: float, row: pd.Series | None, dt_h: float) -> None:
        """Smooth the forecast error of the site base (load - PV); a large miss asks for a re-plan."""
        fc = float(row["load_kw"] - row["pv_kw"]) if row is not None else math.nan
        if not self.grid_up or not math.isfinite(fc) or not math.isfinite(base_kw):
            return
        a = 1 - math.exp(-dt_h / MISS_TAU_H)
        self.miss_kw += a * ((base_kw - fc) - self.miss_kw)
        step = pd.Timedelta(minutes=self.host.cfg.planner.step_minutes)
        recent = self._last_miss_replan is not None and now - self._last_miss_replan < step
        if abs(self.miss_kw) > max(MISS_MIN_KW, MISS_SHARE * abs(fc)) and not recent:
            self._last_miss_replan = now
            self.host.event("forecast-miss", f"site load - PV is {base_kw:.2f} kW against {fc:.2f} kW forecast "
                                             f"(smoothed miss {self.miss_kw:+.2f} kW): re-plan", miss_kw=self.miss_kw)
            self.host.request_replan("forecast-miss")

    # ----------------------------------------------------------------- vehicles
    def vehicle_on(self, u: UnitLink, state: ChargerState) -> Vehicle | None:
        """The configured vehicle plugged into ``u``: by the id the unit reports, else its only home vehicle."""
        if not state.plugged:
            return None
        by_id = {v.id: v for v in self.host.cfg.vehicles}
        if state.vehicle_id and state.vehicle_id in by_id:
            return by_id[state.vehicle_id]
        homes = vehicle_homes(self.host.cfg)[u.charger.id]
        return homes[0] if len(homes) == 1 else None

    def _arrived_kwh(self, vid: str, stay: Stay) -> float | None:
        """Energy the car had when first seen plugged in during ``stay`` [kWh] (None: not seen yet)."""
        d = self.departures.get(vid) or {}
        return d.get("arrived_kwh") if d.get("depart") == stay.depart.isoformat() else None

    def _stay(self, v: Vehicle, now: pd.Timestamp):
        """The configured stay of ``v`` holding ``now`` (None if it is not expected here now).

        Stays are expanded for four days around ``now`` and reused while ``now`` stays in the middle
        two (expanding the weekly windows and the holiday calendar every tick cost ~3 ms a car)."""
        lo, hi, found = self._stays.get(v.id, (None, None, []))
        if lo is None or not lo + STAY_MARGIN <= now < hi - STAY_MARGIN:
            lo, hi = now - 2 * STAY_MARGIN, now + 2 * STAY_MARGIN
            found = stays(v, lo, hi, self.host.cfg.zone, self._is_holiday)
            self._stays[v.id] = (lo, hi, found)
        return next((s for s in found if s.arrive <= now < s.depart), None)

    def departure(self, v: Vehicle, now: pd.Timestamp) -> tuple[float, float] | None:
        """(target kWh, hours to departure) of the car's current stay: from its windows, else the stored one."""
        stay = self._stay(v, now)
        if stay is not None:
            return stay.need_kwh(self._arrived_kwh(v.id, stay)), (stay.depart - now) / pd.Timedelta(hours=1)
        d = self.departures.get(v.id)
        if d is not None and pd.Timestamp(d["depart"]) > now:
            return float(d["target_kwh"]), (pd.Timestamp(d["depart"]) - now) / pd.Timedelta(hours=1)
        return None

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
        return soc + (u.setpoint.charge_kw * c.charge_efficiency - u.setpoint.discharge_kw / c.discharge_efficiency) * h
