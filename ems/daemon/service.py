"""The daemon as a service: clock, store, devices (the in-process simulator for ``simulator``
chargers), the :class:`~ems.daemon.core.Daemon`, and APScheduler 3 jobs around it.

Jobs (``AsyncIOScheduler``; every job ``max_instances=1``, ``coalesce=True``, no misfire limit):

============== ================================================= ===============================
job            when                                              what
============== ================================================= ===============================
``plan``       every planning step on the :00/:30 (or 15-min)    :meth:`Daemon.plan_once` (solve
               grid of the simulated clock; at once on a          in a worker thread)
               re-plan request
``dispatch``   every dispatch interval (simulated seconds)        :meth:`Daemon.dispatch_once`
``heartbeat``  every ``heartbeat_interval_s`` real seconds        :meth:`Daemon.heartbeat_once`
``forecast``   every ``forecast_refresh_minutes`` (simulated)     :meth:`Daemon.refresh_forecast`
``retention``  daily at local midnight (simulated), and at start  :meth:`Daemon.housekeeping` (purge,
                                                                 then incremental vacuum)
``weather``    every ``daemon.weather.every_hours`` real hours,   :meth:`Daemon.refresh_weather`
               the first at start; wall clock and                 (Open-Meteo into the store's
               ``daemon.weather.fetch`` only                      cache)
``config``     every 2 real seconds                               reload if the file changed (read
                                                                 in a worker thread, at most 10 s)
============== ================================================= ===============================

The heartbeat counts real seconds because the units' reversion watchdogs do (they watch the
controller's communication, whatever the simulation speed). With ``--speed X`` one
:class:`~ems.clock.SimClock` drives the simulator and the daemon, so both see the same time; the
dispatch interval is raised to at least ``X x MIN_REAL_TICK_S`` simulated seconds, because a tick
(Modbus round trips and a database write) takes several milliseconds of real time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from adapters import ChargerParams
from adapters.factory import charger_device, meter_device
from adapters.protocol import ChargerDevice, MeterDevice
from adapters.sim import SimulatorThread
from ems.clock import Clock, ManualClock, SimClock, WallClock
from ems.config import SimulatorAdapter, SiteConfig, load_site
from ems.daemon.core import Daemon
from ems.devices import charger_params, check_profiles, meter_params, sim_address, sim_site
from ems.errors import ConfigError, EmsError, Problem
from ems.sdnotify import notify
from ems.store import Store

if TYPE_CHECKING:
    from ems.web import HttpServer

log = logging.getLogger(__name__)

#: Least real time between two dispatch ticks [s]: a tick costs 5-20 ms on a 2-core gateway
#: (bench/daemon.py), so 50 ms leaves the event loop time for the other jobs and the simulator.
MIN_REAL_TICK_S = 0.05
#: The interpreter's thread switch interval while the daemon runs [s] (Python's default: 5 ms). A
#: plan built in the worker thread (the problem data in pandas and numpy) holds the GIL between
#: releases; a dispatch tick waiting for it would lose up to 5 ms at each of its ~20 await points.
#: bench/daemon.py measures the tick latency with plans in a thread or a worker process.
SWITCH_INTERVAL_S = 0.0005
#: Real time within which a fire counts as at its boundary [s] (the scheduler's clocks agree far closer).
FIRE_SLACK_REAL_S = 0.01
#: How often the config file's modification time is checked [real s].
CONFIG_POLL_S = 2.0
#: Longest a config reload may take to read and validate its files [real s] (in a worker thread; the
#: bounded YAML reader of adapters.yamlsafe keeps a hostile file far below this).
RELOAD_TIMEOUT_S = 10.0


class SimTimeTrigger(BaseTrigger):
    """Fire whenever the (simulated) clock crosses a multiple of ``period_s`` on ``zone``'s wall
    clock (:00/:30 for 1800 s). Real fire times are derived from the clock's speed."""

    def __init__(self, clock: Clock, period_s: float, zone: str = "UTC"):
        self.clock = clock
        self.period = pd.Timedelta(seconds=period_s)
        self.zone = zone

    def get_next_fire_time(self, previous_fire_time: dt.datetime | None, now: dt.datetime) -> dt.datetime:
        """The real time at which the clock reaches the next boundary after now (or after the last fire)."""
        sim_now = self.clock.now()
        ref = sim_now
        if previous_fire_time is not None:   # never the same boundary twice (the last fire time, mapped back to
            # simulated time, may fall a hair before its boundary); an off-grid fire (a re-plan now) keeps the grid
            prev_sim = sim_now + pd.Timedelta(seconds=(previous_fire_time - now).total_seconds() * self.clock.speed)
            ref = max(ref, prev_sim + min(self.period / 2, pd.Timedelta(seconds=FIRE_SLACK_REAL_S * self.clock.speed)))
        nxt = ref.tz_convert(self.zone).floor(self.period) + self.period
        return now + dt.timedelta(seconds=max((nxt - sim_now).total_seconds(), 0.0) / self.clock.speed)

    def __str__(self) -> str:
        return f"simulated every {self.period} ({self.zone})"


def wall_seconds(clock: Clock, zero: pd.Timestamp) -> Callable[[], float]:
    """Real seconds since ``zero`` as the clock sees them (manual clocks: their own seconds / speed)."""
    if isinstance(clock, SimClock):
        offset = clock.elapsed_real_s() - (clock.now() - zero).total_seconds() / clock.speed
        return lambda: clock.elapsed_real_s() - offset
    if isinstance(clock, WallClock):
        t0 = time.monotonic()
        return lambda: time.monotonic() - t0
    return lambda: (clock.now() - zero).total_seconds() / clock.speed


def min_dispatch_s(clock: Clock) -> float:
    """Least dispatch interval [simulated s]: MIN_REAL_TICK_S real seconds (none on a manual clock)."""
    return 0.0 if isinstance(clock, ManualClock) else clock.speed * MIN_REAL_TICK_S


def effective_dispatch_s(cfg: SiteConfig, clock: Clock) -> float:
    """The dispatch interval [simulated s]: the configured one, at least MIN_REAL_TICK_S real seconds."""
    return max(cfg.daemon.dispatch_interval_s, min_dispatch_s(clock))


class Service:
    """One site's daemon with its devices. ``async with Service(cfg, clock=...) as svc: await svc.serve(until)``.

    ``database`` overrides ``cfg.daemon.database``; ``dispatch_interval_s`` the dispatch interval;
    ``reversion_timeout_s`` the simulated units' watchdog (tests); ``initial_soc_pct`` the simulated
    vehicles' SOC at start; ``solver_process`` solves plans in a worker process instead of a thread;
    ``peaks_history_csv`` overrides the config's ``peaks_history_csv`` (seeded into the store at start).
    Real Modbus chargers need the wall clock.
    """

    def __init__(self, cfg: SiteConfig, *, clock: Clock | None = None, database: str | None = None,
                 dispatch_interval_s: float | None = None, config_path: str | None = None,
                 reversion_timeout_s: float | None = None, initial_soc_pct: float | None = None,
                 replay: str | None = None, solver_process: bool = False, peaks_history_csv: str | None = None):
        self.cfg = cfg
        self.peaks_history_csv = peaks_history_csv
        self.clock = clock or WallClock()
        self.config_path = config_path or cfg.source or None
        check_profiles(cfg)   # register maps and device addresses, before anything starts or is written
        simulated = [c for c in cfg.chargers if isinstance(c.adapter, SimulatorAdapter)]
        if self.clock.speed != 1.0 and len(simulated) != len(cfg.chargers):
            raise ConfigError(Problem(cfg.source or "<config>", None, "chargers[].adapter.kind", "modbus",
                                      "--speed runs a simulated clock: every charger must use the simulator adapter"))
        if isinstance(self.clock, SimClock):
            self.clock.freeze()    # simulated time stands still until the daemon is up (released in __aenter__)
        self.zero = self.clock.now()
        self.real = wall_seconds(self.clock, self.zero)
        self.sim: SimulatorThread | None = None
        if simulated:
            host, port = sim_address(cfg)
            site = sim_site(cfg, replay=replay, speed=self.clock.speed, start=self.zero.floor("us").to_pydatetime(),
                            initial_soc_pct=initial_soc_pct)
            self.sim = SimulatorThread(site, host=host, port=port, clock=self.real)
        self.database = database or cfg.daemon.database
        self.dispatch_interval_s = dispatch_interval_s
        self.reversion_timeout_s = reversion_timeout_s
        self.solver_process = solver_process
        self.store: Store | None = None
        self.daemon: Daemon | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.http: HttpServer | None = None   # the page, API and metrics while serve() runs (daemon.http)
        self._stop: asyncio.Event | None = None
        self._reload_task: asyncio.Future | None = None
        self._mtime = self._config_mtime()

    def _adapters(self, port: int | None) -> tuple[list[ChargerDevice], MeterDevice | None]:
        """Charger adapters, Modbus or ECHONET Lite (write pacing scaled to the clock's speed), and the meter adapter."""
        out = []
        for p in charger_params(self.cfg, sim_port=port):
            changes: dict[str, Any] = {"min_write_interval_s": p.min_write_interval_s / self.clock.speed}
            if self.reversion_timeout_s is not None and isinstance(p, ChargerParams):
                changes["reversion_timeout_s"] = self.reversion_timeout_s
            out.append(charger_device(dataclasses.replace(p, **changes), clock=self.real))
        mp = meter_params(self.cfg, sim_port=port)
        return out, (meter_device(mp) if mp is not None else None)

    async def __aenter__(self) -> Service:
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        port = None
        if self.sim is not None:
            port = await asyncio.to_thread(self.sim.start)
        try:
            self.store = Store(self.database, exclusive=True)   # one daemon per database (its pid in F.lock)
            chargers, meter = self._adapters(port)
            self.daemon = Daemon(self.cfg, self.clock, self.store, chargers, meter,
                                 dispatch_interval_s=self.dispatch_interval_s, min_dispatch_s=min_dispatch_s(self.clock),
                                 real_clock=self.real, solver_process=self.solver_process,
                                 peaks_history_csv=self.peaks_history_csv)
            await self.daemon.start()
        except BaseException:
            await self._close()
            raise
        finally:
            if isinstance(self.clock, SimClock):
                self.clock.release()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        """Daemon stopped (0 W, control released), store closed, simulator stopped."""
        try:
            await self.stop_http()
            if self.daemon is not None:
                await self.daemon.stop()
        finally:
            if self.store is not None:
                self.store.close()
            if self.sim is not None:
                await asyncio.to_thread(self.sim.stop)
            sys.setswitchinterval(self._switch)

    # ----------------------------------------------------------------- scheduling
    def _schedule(self) -> AsyncIOScheduler:
        """The jobs of the module docstring on an AsyncIOScheduler bound to the running loop."""
        d = self.daemon
        assert d is not None
        zone = self.cfg.tariff.timezone
        sched = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=dt.timezone.utc,
                                 job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})

        async def plan_job() -> None:
            await d.plan_once(d.replan_reason or "scheduled")
            # a re-plan asked for while that plan was solving (a plug-in seen by the tick at the same
            # :00/:30) finds this job running and is skipped by the scheduler (max_instances=1): run it
            # now, or the plan made without the event stays in force until the next step
            while d.replan_reason is not None:
                await d.plan_once(d.replan_reason)

        sched.add_job(plan_job, SimTimeTrigger(self.clock, self.cfg.planner.step_minutes * 60, zone), id="plan")
        sched.add_job(d.dispatch_once, SimTimeTrigger(self.clock, d.dispatch_interval_s, zone), id="dispatch")
        beat = min([self.cfg.daemon.heartbeat_interval_s] + [u.adapter.refresh_interval_s for u in d.units])
        sched.add_job(d.heartbeat_once, IntervalTrigger(seconds=beat), id="heartbeat")
        sched.add_job(d.refresh_forecast, SimTimeTrigger(self.clock, self.cfg.daemon.forecast_refresh_minutes * 60, zone),
                      id="forecast")
        sched.add_job(d.housekeeping_job, SimTimeTrigger(self.clock, 86400, zone), id="retention")
        weather = self.cfg.daemon.weather
        if weather.fetch and isinstance(self.clock, WallClock):   # a forecast is for the real now, never a simulated one
            sched.add_job(d.refresh_weather, IntervalTrigger(hours=weather.every_hours), id="weather",
                          next_run_time=dt.datetime.now(dt.timezone.utc))
        if self.config_path:
            sched.add_job(self._watch_config, IntervalTrigger(seconds=CONFIG_POLL_S), id="config")

        def replan_now(reason: str) -> None:
            if sched.running:
                sched.modify_job("plan", next_run_time=dt.datetime.now(dt.timezone.utc))

        def on_event(ev: JobExecutionEvent) -> None:
            if ev.code == EVENT_JOB_ERROR and not isinstance(ev.exception, asyncio.CancelledError):   # cancelled: the stop
                d.event("job-error", f"job {ev.job_id} failed: {ev.exception!r}; the daemon keeps running", "error")
            else:
                d.stats.skipped_jobs += 1

        d.on_replan = replan_now
        sched.add_listener(on_event, EVENT_JOB_ERROR | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        if self.clock.speed > 1:   # at high speed skipped dispatch ticks are expected (counted in stats)
            logging.getLogger("apscheduler").setLevel(logging.ERROR)
        return sched

    def _config_mtime(self) -> float | None:
        try:
            return os.stat(self.config_path).st_mtime if self.config_path else None
        except OSError:
            return None

    async def _watch_config(self) -> None:
        """Reload when the config file's modification time changed."""
        m = self._config_mtime()
        if m is not None and m != self._mtime:
            self._mtime = m
            await self.reload_in_worker()

    async def reload_in_worker(self) -> bool:
        """:meth:`reload`, with the files read and validated in a worker thread (at most
        RELOAD_TIMEOUT_S): dispatch ticks go on meanwhile, whatever the file holds."""
        assert self.config_path
        path = self.config_path
        try:
            loaded: SiteConfig | EmsError = await asyncio.wait_for(asyncio.to_thread(load_site, path), RELOAD_TIMEOUT_S)
        except EmsError as exc:
            loaded = exc
        except asyncio.TimeoutError:
            loaded = ConfigError(Problem(path, None, "", None, f"reading it took more than {RELOAD_TIMEOUT_S:g} s",
                                         has_value=False))
        return self.reload(loaded)

    def reload(self, loaded: SiteConfig | EmsError | None = None) -> bool:
        """Reload the config file (SIGHUP, file change); the daemon keeps the old one if it is invalid.
        ``loaded``: the file as :meth:`reload_in_worker` read it (default: read it here)."""
        assert self.daemon is not None and self.config_path
        before = self.daemon.dispatch_interval_s
        ok = self.daemon.reload_config(self.config_path, loaded)
        if ok:
            self.cfg = self.daemon.cfg
            if self.daemon.dispatch_interval_s != before and self.scheduler is not None and self.scheduler.running:
                self.scheduler.reschedule_job("dispatch", trigger=SimTimeTrigger(
                    self.clock, self.daemon.dispatch_interval_s, self.cfg.tariff.timezone))
        return ok

    def _reload_soon(self) -> None:
        """SIGHUP: reload in a worker (a task of the loop; the handler itself returns at once)."""
        self._reload_task = asyncio.ensure_future(self.reload_in_worker())

    def stop(self) -> None:
        """Ask :meth:`serve` to return (signal handlers call this)."""
        if self._stop is not None:
            self._stop.set()

    async def serve(self, until: pd.Timestamp | None = None, *, signals: bool = False) -> None:
        """Run the jobs until ``until`` (simulated time), :meth:`stop`, or SIGINT/SIGTERM (``signals``)."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._mtime = self._config_mtime()
        handled = []
        if signals:
            for sig, fn in ((signal.SIGINT, self.stop), (signal.SIGTERM, self.stop), (signal.SIGHUP, self._reload_soon)):
                loop.add_signal_handler(sig, fn)
                handled.append(sig)
        self.scheduler = sched = self._schedule()
        sched.start()
        if self.cfg.daemon.http.enabled:
            await self.start_http()
        notify("READY=1")   # systemd (Type=notify): started; then a watchdog ping per turn of this loop
        try:
            while not self._stop.is_set():
                notify("WATCHDOG=1")
                wait = 1.0
                if until is not None:
                    left = (until - self.clock.now()).total_seconds() / self.clock.speed
                    if left <= 0:
                        break
                    wait = min(wait, left)
                try:
                    await asyncio.wait_for(self._stop.wait(), wait)
                except asyncio.TimeoutError:
                    pass
        finally:
            notify("STOPPING=1")
            for sig in handled:
                loop.remove_signal_handler(sig)
            await self.stop_http()   # no override is taken while the daemon stops
            await self._shutdown(sched)

    async def start_http(self) -> bool:
        """Serve the page, the API and the metrics on this loop (:class:`ems.web.HttpServer`; ``serve``
        does it when ``daemon.http.enabled``); False when its address cannot be used (an event; the daemon runs on)."""
        from ems.web import HttpServer   # Starlette and uvicorn: loaded only by a daemon that serves
        assert self.daemon is not None
        self.http = HttpServer(self.daemon)
        return await self.http.start()

    async def stop_http(self) -> None:
        """Stop serving (open requests get a few seconds). Safe to call more than once."""
        if self.http is not None:
            await self.http.stop()

    async def _shutdown(self, sched: AsyncIOScheduler) -> None:
        """Stop the scheduler between jobs: a running plan or tick finishes first (never cut mid-write);
        jobs still waiting for their turn are cancelled and awaited, so no task is left behind."""
        d = self.daemon
        assert d is not None
        d.on_replan = None
        sched.pause()
        if self._reload_task is not None:   # a SIGHUP reload still reading its files
            await asyncio.wait([self._reload_task], timeout=RELOAD_TIMEOUT_S)
        async with d.plan_lock, d.io_lock:
            sched.shutdown(wait=False)
        me = asyncio.current_task()
        for _ in range(3):   # the executor's cancellations take effect at the next loop iterations
            pending = [t for t in asyncio.all_tasks() if t is not me and "run_coroutine_job" in repr(t.get_coro())]
            if not pending:
                break
            await asyncio.wait(pending, timeout=5.0)


async def run_site(cfg: SiteConfig, *, clock: Clock, until: pd.Timestamp | None = None, signals: bool = False,
                   service: Service | None = None, **service_kw: Any) -> Daemon:
    """Run a site's daemon until ``until`` or a signal; returns the (stopped) daemon for its statistics.
    ``service``: one built already (``ems run`` builds it first: its checks come before the database is touched)."""
    async with service or Service(cfg, clock=clock, **service_kw) as svc:
        await svc.serve(until, signals=signals)
        assert svc.daemon is not None
        return svc.daemon
