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
- :meth:`Daemon.refresh_forecast`, :meth:`Daemon.refresh_weather` (the Open-Meteo fetch),
  :meth:`Daemon.housekeeping` (retention and compaction, also at start), :meth:`Daemon.reload_config`.

The work is done by four sections the daemon owns (ems/daemon/README.md): :class:`~ems.daemon.links.Links`
(the devices), :class:`~ems.daemon.tracker.Tracker` (windows, vehicles, grid, the forecast miss),
:class:`~ems.daemon.plans.PlanKeeper` (forecasts and plans) and :class:`~ems.daemon.dispatcher.Dispatcher`
(the tick). The daemon holds the config, the store, the two locks that order the jobs, the events
and the re-plan requests, and is the one object the service and the tests talk to.

Everything the daemon must not forget across a restart is in the store: monthly peaks (the
ratchet: metered ones, and those seeded at start from a peaks history of past bills, see
:meth:`Daemon.seed_peaks`), the open demand window's energy, each vehicle's last SOC and its
pending departure, and the last plan (used until the first new one if still fresh).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from operator import attrgetter
from typing import Any

import pandas as pd

from adapters.protocol import ChargerDevice, MeterDevice
from ems.billing import check_history_up_to, site_contract_kw
from ems.clock import Clock
from ems.config import SiteConfig, load_site, peaks_history
from ems.daemon.dispatcher import Dispatcher
from ems.daemon.host import Stats
from ems.daemon.links import Links, UnitLink
from ems.daemon.overrides import Overrides
from ems.daemon.plans import ActivePlan, PlanKeeper
from ems.daemon.tracker import Tracker
from ems.daemon.weather import WeatherFeed
from ems.dispatch import Setpoint
from ems.errors import EmsError
from ems.store import Store, compact

__all__ = ["ActivePlan", "Daemon", "Stats", "UnitLink"]

log = logging.getLogger(__name__)


def _view(path: str, doc: str) -> property:
    """A read-only attribute of the daemon that one of its sections owns (``path``: "section.attribute")."""
    return property(attrgetter(path), doc=doc)


class Daemon:
    """Receding-horizon control of one site. See the module docstring.

    ``chargers``: one adapter per configured charger (same order as ``cfg.chargers``);
    ``meter``: the site meter or None (then the site import is not measured: the guard sees only
    the chargers). ``real_clock`` gives real (or, in tests, manual) seconds for the reconnect
    pacing. ``dispatch_interval_s`` overrides ``cfg.daemon.dispatch_interval_s`` [simulated s], which
    is otherwise raised to at least ``min_dispatch_s``. ``peaks_history_csv`` (``ems run
    --peaks-history``) overrides the config's ``peaks_history_csv``.
    """

    def __init__(self, cfg: SiteConfig, clock: Clock, store: Store, chargers: list[ChargerDevice],
                 meter: MeterDevice | None = None, *, history: pd.DataFrame | None = None,
                 dispatch_interval_s: float | None = None, min_dispatch_s: float = 0.0,
                 real_clock: Callable[[], float] = time.monotonic, solver_process: bool = False,
                 peaks_history_csv: str | None = None):
        self.cfg = cfg
        self.peaks_history_csv = peaks_history_csv
        self.clock = clock
        self.store = store
        self._interval_override = dispatch_interval_s
        self._min_dispatch_s = min_dispatch_s
        self.dispatch_interval_s = dispatch_interval_s or max(cfg.daemon.dispatch_interval_s, min_dispatch_s)
        self.replan_reason: str | None = None
        self.on_replan: Callable[[str], None] | None = None
        self.stats = Stats()
        self.plan_lock = asyncio.Lock()    # plan and forecast jobs (and the solver worker) one at a time
        self.io_lock = asyncio.Lock()      # device I/O and the store's restart state: ticks, heartbeats, retention
        self.started = False
        self._stopped = False
        self.links = Links(self, chargers, meter, real_clock)
        self.tracker = Tracker(self)
        self.overrides = Overrides(self, self.tracker, self.links)
        self.plans = PlanKeeper(self, self.tracker, history, solver_process, self.overrides)
        self.dispatcher = Dispatcher(self, self.links, self.tracker, self.plans, self.overrides)
        self.weather = WeatherFeed(self, self.plans.forecasts.learning)

    # ----------------------------------------------------------------- what the sections own, read-only
    plan = _view("plans.plan", "The plan in force (:class:`~ems.daemon.plans.ActivePlan`), or None.")
    planner = _view("plans.planner", "The planner (:class:`ems.planning.Planner`) plans are solved with in the thread.")
    solver_process = _view("plans.solver_process", "Whether plans are solved in a worker process.")
    history = _view("plans.forecasts.history", "The measured history the forecaster was given (None: the config's).")
    site_state = _view("plans.site_state", "What the planner needs from the store and the devices (a method).")
    units = _view("links.units", "One :class:`~ems.daemon.links.UnitLink` per configured charger.")
    meter = _view("links.meter", "The site meter's adapter, or None.")
    meter_fault = _view("links.meter_fault", "The meter's current fault, or None.")
    last_reading = _view("links.last_reading", "The last meter reading, or None.")
    real_clock = _view("links.real_clock", "Real seconds for the reconnect pacing.")
    window = _view("tracker.window", "The demand window account (:class:`~ems.daemon.metering.WindowAccount`).")
    windows = _view("tracker.windows", "The closed demand windows of the last two months.")
    soc_kwh = _view("tracker.soc_kwh", "Each vehicle's last measured SOC [kWh].")
    departures = _view("tracker.departures", "Each vehicle's pending departure (depart, target_kwh, arrived_kwh).")
    grid_up = _view("tracker.grid_up", "False while the grid is lost.")
    outage_since = _view("tracker.outage_since", "When the grid was lost (None while it is up).")
    miss_kw = _view("tracker.miss_kw", "The smoothed forecast miss of the site base (load - PV) [kW].")
    projected_soc_kwh = _view("tracker.projected_soc_kwh", "A vehicle's SOC carried forward to a time (a method).")

    def _guard_target_kw(self, now: pd.Timestamp) -> float:
        """The window average the guard holds [kW] (:meth:`Dispatcher.guard_target_kw`)."""
        return self.dispatcher.guard_target_kw(now)

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Seed the ratchet from the peaks history, resume from the store, connect the devices
        (failures are retried later), read, plan."""
        now = self.clock.now()
        self.seed_peaks(now)
        self._resume(now)
        self.housekeeping()   # retention at start too: a daemon restarted after weeks drops what is due at once
        self.event("start", f"daemon started for {self.cfg.site.name} (dispatch every {self.dispatch_interval_s:g} s)",
                   speed=self.clock.speed)
        if self.links.meter is None:
            self.event("no-meter", "no site meter: the demand guard and this month's peak see only the chargers' "
                       "own power, not the building; add a meter section to the site config", "warning")
        await self.links.connect_all()
        async with self.io_lock:
            reading = await self.links.read_all()
            self.tracker.observe(now, reading, self.links.units, account=False)
        await self.plan_once("start")
        self.started = True

    async def stop(self) -> None:
        """Clean exit: wait for running jobs, every unit to 0 W with remote control released, store flushed.

        Safe to call after a failed :meth:`start` and more than once."""
        if self._stopped:
            return
        self._stopped = True
        async with self.plan_lock, self.io_lock:
            await self.links.close()
            self.tracker.persist(self.clock.now(), running=False)
            self.event("stop", "daemon stopped: setpoints 0 W, remote control released")
        self.plans.close()
        self.started = False

    def event(self, kind: str, message: str, severity: str = "info", **data: Any) -> None:
        """Log and store an event."""
        level = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}[severity]
        log.log(level, "%s: %s", kind, message)
        self.stats.count_event(kind, data.get("device"))
        self.store.record_event(self.clock.now(), kind, message, severity, **data)

    def request_replan(self, reason: str) -> None:
        """Ask for a re-plan at once (the scheduler runs the plan job now; tests call plan_once)."""
        self.replan_reason = reason
        self.stats.replans[reason] = self.stats.replans.get(reason, 0) + 1
        if self.on_replan is not None:
            self.on_replan(reason)

    # ----------------------------------------------------------------- jobs
    async def plan_once(self, reason: str = "scheduled") -> ActivePlan | None:
        """One re-plan (normal, or the backup plan while the grid is down). Never raises for a failed solve."""
        async with self.plan_lock:
            self.replan_reason = None
            return await self.plans.make(reason)

    async def refresh_forecast(self) -> None:
        """Forecast job: PV and load from the current step for the horizon and a margin (never during a plan).
        Nothing to do when the plan job at the same boundary already forecast from this step."""
        async with self.plan_lock:
            if self.plans.forecasts.is_current():
                return
            await self.plans.forecasts.refresh()

    async def dispatch_once(self) -> list[Setpoint]:
        """One dispatch tick: observe, decide, write, record. Device faults never end the daemon."""
        async with self.io_lock:
            t0 = time.perf_counter()
            planning = self.plan_lock.locked()
            setpoints = await self.dispatcher.tick(self.clock.now())
            self.stats.ticks += 1
            self.stats.tick_seconds.append(time.perf_counter() - t0)
            self.stats.tick_during_plan.append(planning or self.plan_lock.locked())
            return setpoints

    async def heartbeat_once(self) -> None:
        """Refresh each started unit's reversion watchdog (and its controller heartbeat) when due."""
        async with self.io_lock:
            await self.links.heartbeat()

    async def housekeeping_job(self) -> None:
        """Retention as a scheduler job (on the event loop, like every other store access)."""
        async with self.io_lock:
            self.housekeeping()

    async def refresh_weather(self) -> bool:
        """Weather job: fetch and cache a weather forecast (:class:`~ems.daemon.weather.WeatherFeed`)."""
        return await self.weather.refresh()

    def housekeeping(self) -> dict[str, Any]:
        """Retention: drop telemetry, plans, events and day-ahead forecasts older than
        ``daemon.retention_days`` (monthly peaks and the 30-minute aggregates are kept for ever), then
        give the freed pages back to the file system (:func:`ems.store.compact`). Returns the rows
        removed per table and the compaction's figures (``compaction``)."""
        now, days = self.clock.now(), self.cfg.daemon.retention_days
        removed: dict[str, Any] = dict(self.store.apply_retention(now, days))
        done = compact(self.store, now, days)
        removed["day_ahead"] = done.pop("day_ahead")
        removed["compaction"] = done
        if done["converted"]:
            self.event("store-compacted", f"store converted to incremental vacuum (a one-time full VACUUM): "
                       f"{(done['bytes_before'] or 0) / 2**20:.1f} MB -> {(done['bytes_after'] or 0) / 2**20:.1f} MB", **done)
        if any(v for k, v in removed.items() if k != "compaction"):
            log.info("retention removed %s", removed)
        return removed

    # ----------------------------------------------------------------- resume, peaks history, config
    def _resume(self, now: pd.Timestamp) -> None:
        """This month's peak is read from the store at every plan; here: SOC, departures, window, last plan."""
        self.tracker.resume(now)
        self.overrides.resume(now)
        self.plans.resume(now)
        month = self.tracker.month_of(now)
        peaks = self.store.month_peaks()
        soc = self.tracker.soc_kwh
        if soc or peaks.get(month):
            self.event("resume", f"resumed: month {month} peak {peaks.get(month, 0.0):.2f} kW, "
                                 f"SOC {', '.join(f'{k} {v:.1f} kWh' for k, v in soc.items()) or 'unknown'}"
                                 + (", last plan still fresh" if self.plans.plan else ""))

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
        month = self.tracker.month_of(now)
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

    def reload_config(self, path: str, loaded: SiteConfig | EmsError | None = None) -> bool:
        """Load ``path``; apply it at once if valid and compatible, else keep the running config. Returns True if applied.

        Devices and the database cannot change under a running daemon: such an edit is rejected
        (restart to apply it), like an invalid file. A valid config's peaks history is seeded again
        (:meth:`seed_peaks`: idempotent; a month after the current one rejects the reload).
        ``loaded``: the file already read (or the error reading it gave), as the service does in a
        worker thread so that a slow or hostile file never stalls the event loop.
        """
        try:
            if isinstance(loaded, EmsError):
                raise loaded
            new = loaded if loaded is not None else load_site(path)
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
        self.plans.reload(new)
        self.tracker.reload(new)
        if not self._interval_override:
            self.dispatch_interval_s = max(new.daemon.dispatch_interval_s, self._min_dispatch_s)
        self.links.rebind(new.chargers)
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
        old_http, new_http = self.cfg.daemon.http, new.daemon.http
        if (new_http.enabled, new_http.listen, new_http.port) != (old_http.enabled, old_http.listen, old_http.port):
            out.append("daemon.http.enabled/listen/port changed (the token applies at once)")
        return out
