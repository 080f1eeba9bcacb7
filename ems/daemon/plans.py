"""Plans: the plan in force and how it is made and judged (:class:`PlanKeeper`, :class:`ActivePlan`).

:meth:`PlanKeeper.make` takes the forecast (:class:`~ems.daemon.forecasts.Forecasts`, refreshed
if it does not cover the horizon), the site state (store and :class:`~ems.daemon.tracker.Tracker`)
and the measured forecast miss, and solves in the plan worker thread or, with ``solver_process``,
in a worker process that keeps its own planner, so a dispatch tick never waits for the solver. The
plan is stored with an inputs summary, then judged: a failed or fallback solve, infeasible
departure targets, a stale plan or one made for the other grid state make dispatch use the safe
rule instead, with a ``fallback`` event (``plan-restored`` when a plan is followed again).
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ems.config import SiteConfig
from ems.daemon.forecasts import Forecasts
from ems.daemon.host import Host
from ems.daemon.overrides import Overrides, PlanOverrides
from ems.daemon.tracker import Tracker
from ems.plan_summary import PlanSummary
from ems.planning import OperatorLimits, PlanResult, Planner, SiteState
from ems.timegrid import WINDOW
from ems.workers import quiet_spawn_context

log = logging.getLogger(__name__)

#: A plan older than this many planning steps is stale: dispatch falls back to the safe rule.
#: Plans come every step; two missed re-plans in a row mean the planner is not keeping up.
STALE_STEPS = 2.5
#: The measured miss is carried into the next plan's load, fading with this e-folding time [h]
#: (the forecast module's own level offset fades over 1.5 h).
NOWCAST_TAU_H = 1.0


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
    overrides: tuple[str, ...] = ()        # the operator overrides it was made with (ems.daemon.overrides)

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


class PlanKeeper:
    """The planner, the forecasts, the plan worker thread (and solver process), the plan in force."""

    def __init__(self, host: Host, tracker: Tracker, history: pd.DataFrame | None, solver_process: bool,
                 overrides: Overrides):
        self.host = host
        self.tracker = tracker
        self.overrides = overrides
        self.planner = Planner(host.cfg)
        self.plan: ActivePlan | None = None
        self.solver_process = solver_process
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ems-plan")
        self._solver: ProcessPoolExecutor | None = None
        self._fallback_reason: str | None = None
        self.forecasts = Forecasts(host, history, self._pool)

    def reload(self, cfg: SiteConfig) -> None:
        """A reloaded config: a new planner and forecaster (a solver process is replaced at the next plan)."""
        self.planner = Planner(cfg)
        if self._solver is not None:   # the solver process plans for the old config: replaced at the next plan
            solver, self._solver = self._solver, None
            solver.shutdown(wait=False)
        self.forecasts.reset()

    def resume(self, now: pd.Timestamp) -> None:
        """The last stored plan is in force again if it is still fresh."""
        last = self.host.store.last_plan()
        if last is not None and last["schedule"] is not None:
            created = pd.Timestamp(last["created_at"])
            result = PlanResult(last["schedule"].tz_convert(self.host.cfg.zone), PlanSummary.from_dict(last["summary"]))
            reserve = last["inputs"].get("reserve_kwh")
            plan = ActivePlan(result, created, pd.Timestamp(last["start"]), last["inputs"].get("mode", "normal"),
                              plan_id=last["id"], reserve_kwh=None if reserve is None else np.asarray(reserve, dtype=float),
                              overrides=tuple(last["inputs"].get("overrides") or ()))
            plan.unusable = self.unusable(plan, now)
            if plan.unusable is None:
                self.plan = plan

    def close(self) -> None:
        """Wait for the worker thread; stop the solver process."""
        self._pool.shutdown(wait=True)
        self._close_solver()

    # ----------------------------------------------------------------- making a plan
    def site_state(self, now: pd.Timestamp, start: pd.Timestamp) -> tuple[SiteState, list[str]]:
        """What the planner needs from the store and the devices; notes for assumed values."""
        cfg, tr = self.host.cfg, self.tracker
        peaks = self.host.store.month_peaks()
        month = tr.month_of(start)
        notes = []
        soc = {}
        for v in cfg.vehicles:
            if v.id in tr.soc_kwh:
                soc[v.id] = min(max(tr.projected_soc_kwh(v.id, start), 0.0), v.capacity_kwh)
            else:
                soc[v.id] = v.min_soc_kwh
                notes.append(f"SOC of {v.id} unknown (not seen yet): assumed at its minimum {v.min_soc_pct:g} %")
        pre = 0.0
        cur = tr.window.current
        if cur is not None and cur.start < start < cur.start + WINDOW and tr.window.last_t is not None:
            seen_h = (tr.window.last_t - cur.start) / pd.Timedelta(hours=1)
            pre = cur.import_kwh * min((start - cur.start) / pd.Timedelta(hours=1) / seen_h, 1.0) if seen_h > 0 else 0.0
        history = {m: p for m, p in peaks.items() if m != month}
        arrived = {vid: float(d["arrived_kwh"]) for vid, d in tr.departures.items()
                   if d.get("arrived_kwh") is not None and pd.Timestamp(d["depart"]) > start}
        return SiteState(soc, peaks.get(month, 0.0), history, pre, arrival_kwh=arrived), notes

    def _nowcast(self, load: pd.Series, now: pd.Timestamp) -> pd.Series:
        """Carry the measured miss into the first hours of the load forecast (faded, never below 0)."""
        miss_kw = self.tracker.miss_kw
        if abs(miss_kw) < 1e-9:
            return load
        lead_h = np.maximum((load.index - now) / pd.Timedelta(hours=1), 0.0)
        return (load + miss_kw * np.exp(-lead_h / NOWCAST_TAU_H)).clip(lower=0.0)

    async def make(self, reason: str) -> ActivePlan | None:
        """One re-plan (normal, or the backup plan while the grid is down). Never raises for a failed solve.
        The caller holds the daemon's plan lock."""
        host, fc = self.host, self.forecasts
        now = host.clock.now()
        start = fc.step_start(now)
        loop = asyncio.get_running_loop()
        if not fc.covers(start):
            await fc.refresh()
            if not fc.covers(start):
                self.set_fallback(now, "no forecast covers the horizon")
                return None
        state, notes = self.site_state(now, start)
        mode = "normal" if self.tracker.grid_up else "outage"
        outage = None
        if mode == "outage":
            outage = (start, start + pd.Timedelta(hours=host.cfg.planner.horizon_hours))
        load = self._nowcast(fc.forecast.load_kw, now)
        ops = self.overrides.for_plan(now, start, start + pd.Timedelta(hours=host.cfg.planner.horizon_hours),
                                      self.planner.is_holiday)
        limits = ops.limits if mode == "normal" else None   # in an outage the cars power the critical circuits
        solve_state = state if ops.peak_floor_kw is None or mode != "normal" else \
            dataclasses.replace(state, month_peak_kw=max(state.month_peak_kw, ops.peak_floor_kw))
        t0 = time.perf_counter()
        try:
            uplift = fc.peak_uplift_kw(start, load.index) if mode == "normal" else None
            result = await loop.run_in_executor(*self._solve_call(), start, fc.forecast.pv_kw, load, solve_state, outage,
                                                uplift, ops.stays, limits)
        except Exception as exc:  # noqa: BLE001 - any solver/model failure: the safe rule, never a crash
            log.exception("planning failed")
            host.event("plan-failed", f"planning failed: {type(exc).__name__}: {exc}; using the safe rule", "error")
            self.plan = None
            self.set_fallback(now, "planning failed")
            return None
        host.stats.plans += 1
        host.stats.plan_seconds.append(time.perf_counter() - t0)
        result.outcome.messages[:0] = notes
        problem = result.problem
        plan = ActivePlan(result, now, start, mode,
                          reserve_kwh=None if problem is None or problem.reserve_kwh is None else problem.reserve_kwh,
                          overrides=ops.ids)
        plan.plan_id = host.store.record_plan(now, start, result.summary, result.schedule, self._inputs(
            reason, mode, state, outage, plan.reserve_kwh, ops))
        plan.unusable = self._judge(plan)
        self.plan = plan
        if mode == "outage":
            self._outage_event(plan)
        if plan.unusable is None:
            self._clear_fallback(now)
        else:
            self.set_fallback(now, plan.unusable)
        return plan

    def _solve_call(self) -> tuple[Any, Callable[..., PlanResult]]:
        """Where the solve runs: the worker thread, or (``solver_process``) a worker process that
        keeps its own persistent planner, so building a plan never competes with dispatch for the GIL."""
        if not self.solver_process:
            return self._pool, self._solve
        if self._solver is None:
            self._solver = ProcessPoolExecutor(1, mp_context=quiet_spawn_context(),   # Ctrl-C is the daemon's
                                               initializer=_solver_init, initargs=(self.host.cfg, os.getpid()))
        return self._solver, _solver_plan

    def _close_solver(self) -> None:
        """Stop the solver process (a new one starts with the next plan)."""
        if self._solver is not None:
            self._solver.shutdown(wait=True)
            self._solver = None

    def _solve(self, start, pv, load, state, outage, uplift=None, stays=None, limits=None) -> PlanResult:
        """Run in the worker thread: the planner."""
        return self.planner.plan(start, pv, load, state, outage=outage, peak_uplift_kw=uplift, stays=stays, limits=limits)

    def _inputs(self, reason: str, mode: str, state: SiteState, outage, reserve: np.ndarray | None,
                ops: PlanOverrides) -> dict[str, Any]:
        """The inputs summary stored with a plan (``overrides``: the ids of the operator overrides in force)."""
        meta = getattr(self.forecasts.forecast, "meta", {}) or {}
        return {"reason": reason, "mode": mode, "soc_kwh": state.soc_kwh, "month_peak_kw": state.month_peak_kw,
                "peak_history_kw": state.peak_history_kw, "window_import_kwh": state.window_import_kwh,
                "forecast_origin": str(self.forecasts.origin), "forecast_miss_kw": self.tracker.miss_kw,
                "forecast": {k: meta.get(k) for k in ("pv_source", "pv_clearness", "pv_ratio", "level_offset_kw",
                                                      "history_end")},
                "outage": None if outage is None else [str(outage[0]), str(outage[1])],
                "reserve_kwh": None if reserve is None else [round(float(x), 4) for x in reserve],
                "overrides": list(ops.ids)}

    # ----------------------------------------------------------------- judging a plan
    def _judge(self, plan: ActivePlan) -> str | None:
        """Why dispatch must not follow ``plan`` (None: follow it). Events for fallback and infeasibility."""
        out = plan.result.outcome
        if out.fallback:
            self.host.event("plan-fallback", "the solver gave no usable schedule: " + "; ".join(out.messages[-3:]), "error")
            return "the solver gave no usable schedule"
        if (out.infeasible or out.departures_short) and plan.mode == "normal":
            unmet = [s.text for s in out.shortfalls] or out.messages
            self.host.event("infeasible", "requirements cannot all be met: " + "; ".join(unmet), "warning")
            return "infeasible requirements (departure targets cannot be met)"
        return None

    def unusable(self, plan: ActivePlan, now: pd.Timestamp) -> str | None:
        """A stored or current plan is stale when too old or past its horizon."""
        age = (now - plan.created) / pd.Timedelta(minutes=self.host.cfg.planner.step_minutes)
        if age > STALE_STEPS:
            return f"the plan is stale ({age:.1f} steps old)"
        if now >= plan.end():
            return "the plan's horizon has ended"
        if (plan.mode == "outage") == self.tracker.grid_up:
            return "the plan was made for another grid state"
        return plan.unusable

    def _outage_event(self, plan: ActivePlan) -> None:
        """What the backup plan promises: how long the critical circuits stay powered."""
        sched = plan.result.schedule
        uns = sched["unserved_kw"] if "unserved_kw" in sched else pd.Series(0.0, index=sched.index)
        short = uns[uns > 1e-3]
        hours = ((short.index[0] - sched.index[0]) if len(short) else (plan.end() - sched.index[0])) / pd.Timedelta(hours=1)
        self.host.event("backup-plan", f"backup plan: critical circuits ({self.host.cfg.load.critical_kw:.2f} kW) powered "
                                       f"for {hours:.1f} h{' (whole horizon)' if not len(short) else ''}, "
                                       f"{plan.result.outcome.unserved_kwh:.1f} kWh unserved over the horizon",
                        "warning", survival_hours=hours)

    def set_fallback(self, now: pd.Timestamp, reason: str) -> None:
        """Dispatch uses the safe rule for ``reason`` (one ``fallback`` event per reason)."""
        if self._fallback_reason != reason:
            self._fallback_reason = reason
            self.host.event("fallback", f"dispatch uses the safe rule (no discharge below reserve, charge toward departure "
                                        f"targets): {reason}", "warning")

    def _clear_fallback(self, now: pd.Timestamp) -> None:
        if self._fallback_reason is not None:
            self.host.event("plan-restored", f"following the plan again (was: {self._fallback_reason})")
            self._fallback_reason = None


_SOLVER: Planner | None = None   # the planner of a solver process (see PlanKeeper._solve_call)


#: how often a solver process checks that the daemon that started it is still there [s]
PARENT_CHECK_S = 1.0


def _solver_init(cfg: SiteConfig, parent_pid: int) -> None:
    """Solver process start: one persistent planner for the site; the process never outlives the
    daemon (:func:`_follow_parent`) and leaves Ctrl-C to it (no traceback of its own)."""
    global _SOLVER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _follow_parent(parent_pid)
    _SOLVER = Planner(cfg)


def _follow_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` is gone, even after a ``kill -9`` of the daemon: the
    kernel's parent-death signal where Linux offers it, and a watch thread on any system."""
    if sys.platform.startswith("linux"):
        try:   # prctl(PR_SET_PDEATHSIG, SIGTERM)
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_S)
            if os.getppid() != parent_pid:
                os._exit(0)
    threading.Thread(target=watch, name="ems-parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:   # the daemon died before this process got here
        os._exit(0)


def _solver_plan(start, pv, load, state, outage, uplift=None, stays=None, limits: OperatorLimits | None = None) -> PlanResult:
    """One plan in the solver process."""
    assert _SOLVER is not None
    return _SOLVER.plan(start, pv, load, state, outage=outage, peak_uplift_kw=uplift, stays=stays, limits=limits)
