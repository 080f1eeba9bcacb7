"""Planning for a configured site: config + forecasts + state in, a checked schedule out.

This module translates a :class:`~ems.config.SiteConfig` and the inputs of one re-plan into the
plain arrays of :class:`models.data.PlanProblem`, solves it (:mod:`models.solve`), checks the
result (:mod:`models.verify`) and returns a :class:`PlanResult` (schedule + summary).

What a plan guarantees: the schedule has been verified (power balance every step, every flow
within its bounds, export only from PV unless the site allows vehicle export, no charger charging
and discharging at once, one car per charger, SOC following from the flows within its limits).
A requirement that cannot be met is a typed :class:`~ems.plan_summary.Shortfall` in
``outcome.shortfalls`` (with a sentence for people in ``outcome.messages``), relaxed to what can
be met; a solver failure gives the safe rule-based schedule of
:mod:`models.fallback`, flagged ``fallback``.

Pricing the demand charge inside a short horizon: a horizon month's peak is billed at
rate x max(peak, what the month's contract already holds); the same peak also sets the contract
of each of the following ``ratchet_months`` months unless an older peak still in their ratchet
window holds a higher level. The model charges rate x (contract - held level) for each of those
later months too, assuming their own peaks stay lower (the planner cannot see them; the
assumption makes it cautious about new peaks, which is the intent). So a new record peak costs
rate x (ratchet_months + 1) = 12 months per kW, a peak below an old record costs only the months
until that record leaves the ratchet window, and a peak below this month's metered peak costs
nothing. ``outcome.demand_cost`` is the horizon months' own basic charge (what their bills
show); ``outcome.ratchet_cost`` what the plan adds to later months.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ems.config import SiteConfig
from ems.errors import DataError, Problem
from ems.plan_summary import PlanStatus, PlanSummary, Shortfall, ShortfallKind, add_up
from ems.plansteps import NS_PER_HOUR, BoundaryLabels, StepCache, StepTable
from ems.tariff import Tariff
from ems.timegrid import WINDOW as WINDOW  # re-exported: the demand window
from ems.timegrid import WINDOW_H, is_whole, month_add, step_count, step_grid
from ems.timegrid import window_starts as _window_starts
from ems.vehicles import Stay, timeline
from models import (
    SOFT_FAMILIES, BlockSpec, ChargerSpec, DemandSpec, PlanProblem, Requirements, Session, Solution, SolveOptions, Values,
    VehicleSpec, check_problem, needs_grid_direction_binary, pairs, plan_costs, requirements, reserve_requirement_kwh,
    rule_based, violations,
)

log = logging.getLogger(__name__)

#: a plan's shortfall (missed target, SOC below minimum, reserve short, unserved load...) smaller
#: than this [kWh] is solver round-off, not worth a message to people (1 Wh)
MESSAGE_KWH = 1e-3


@dataclass
class SiteState:
    """What the site knows at the plan start.

    ``soc_kwh``: energy in each vehicle's battery [kWh] (for a car away, the last known value);
    ``month_peak_kw``: highest 30-minute average import metered so far this billing month;
    ``peak_history_kw``: "YYYY-MM" -> peak of past months [kW] (the ratchet: metered, or from past
    bills; a value for the plan's own month counts as metered so far);
    ``window_import_kwh``: import already metered in the current 30-minute window when the plan
    starts mid-window (15-minute steps); ``month_import_kwh``: this month's import so far (blocks);
    ``arrival_kwh``: vehicle id -> energy it arrived with in the stay under way [kWh] (measured at
    plug-in; energy-neutral windows hold the car to it at departure).
    """

    soc_kwh: dict[str, float]
    month_peak_kw: float = 0.0
    peak_history_kw: dict[str, float] = field(default_factory=dict)
    window_import_kwh: float = 0.0
    month_import_kwh: float = 0.0
    arrival_kwh: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class OperatorLimits:
    """Limits an operator set for the plans to come (the daemon's overrides, ems/daemon/overrides.py).

    ``no_discharge``: vehicle ids that must not discharge over the horizon (V2B paused, or boosting);
    ``reserve_hours``: the outage reserve [h of the critical load, net of forecast PV] held in the
    steps that start before ``reserve_until`` (None: the whole horizon) when above
    ``outage.reserve_hours`` (the config's reserve after).
    """

    no_discharge: frozenset[str] = frozenset()
    reserve_hours: float = 0.0
    reserve_until: pd.Timestamp | None = None


class PlanResult:
    """A checked schedule and its typed outcome.

    ``schedule``: index = aware interval starts (site time zone); columns pv_kw, load_kw,
    import_kw, export_kw, curtail_kw, <charger>_charge_kw, <charger>_discharge_kw,
    <vehicle>_soc_kwh (at the interval start; the end SOC is ``outcome.final_soc_kwh``), and
    unserved_kw when an outage is planned. ``assignment``: the charger each vehicle uses in each
    step ("" = none). ``outcome``: the :class:`~ems.plan_summary.PlanSummary` code branches on;
    ``summary`` the same as a JSON dict.

    A planner's result holds the checked flows (``values``, on ``index``) and builds the two tables
    when first read (a study reads only :meth:`step_flows`); pickling builds them first, so a
    result solved in a worker process arrives with its tables.
    """

    def __init__(self, schedule: pd.DataFrame | None, outcome: PlanSummary, assignment: pd.DataFrame | None = None,
                 problem: PlanProblem | None = None, values: Values | None = None,
                 index: pd.DatetimeIndex | None = None):
        if schedule is None and (values is None or problem is None or index is None):
            raise ValueError("a PlanResult needs its schedule, or the problem, values and index to build it from")
        self.outcome, self.problem, self.values, self.index = outcome, problem, values, index
        self._schedule, self._assignment = schedule, assignment

    @property
    def summary(self) -> dict:
        """The outcome as the JSON summary (a new dict each time: change ``outcome``, not this)."""
        return self.outcome.as_dict()

    def _tables(self) -> None:
        """Build the schedule and assignment tables from the flows, once."""
        if self._schedule is None:
            self._schedule, self._assignment = _frames(self.problem, self.index, self.values)

    @property
    def schedule(self) -> pd.DataFrame:
        """The schedule table (built on first access)."""
        self._tables()
        return self._schedule

    @property
    def assignment(self) -> pd.DataFrame | None:
        """The vehicle -> charger table (built on first access; None when the result came without one)."""
        self._tables()
        return self._assignment

    def step_flows(self, t: int = 0) -> dict[str, tuple[str, float, float]]:
        """Vehicle id -> (charger id, the charger's charge kW, its discharge kW) in step ``t`` for each
        vehicle on a charger: the schedule's charger columns and the assignment at ``t``, in the
        assignment's vehicle order."""
        if self.values is None:
            row, s = self.assignment.iloc[t], self.schedule.iloc[t]
            return {vid: (cid, float(s[f"{cid}_charge_kw"]), float(s[f"{cid}_discharge_kw"]))
                    for vid, cid in row.items() if cid}
        charge, discharge, assign = _unit_flows(self.problem, self.values)
        return {veh.id: (cid, float(charge[cid][t]), float(discharge[cid][t]))
                for veh, cid in zip(self.problem.vehicles, assign[:, t]) if cid}

    def __getstate__(self) -> dict:
        self._tables()   # built where the plan was solved (a solver process), not where it is read
        return self.__dict__


# ----- inputs onto the planning grid ------------------------------------------------------------

def _bad(path: str, value: object, message: str) -> DataError:
    return DataError(Problem("plan", None, path, value, message))


def plan_index(cfg: SiteConfig, start: pd.Timestamp, hours: float | None = None) -> pd.DatetimeIndex:
    """Interval starts of the horizon in the site's time zone; the start must lie on a step boundary."""
    step = pd.Timedelta(minutes=cfg.planner.step_minutes)
    hours = cfg.planner.horizon_hours if hours is None else hours
    if not isinstance(start, pd.Timestamp) or start.tzinfo is None:
        raise _bad("start", str(start), "the plan start needs a time zone or UTC offset")
    steps = step_count(hours, step)
    if hours <= 0 or not is_whole(steps):
        raise _bad("hours", hours, f"the horizon must be a positive whole number of {cfg.planner.step_minutes}-minute steps")
    local = start.tz_convert(cfg.zone)
    if (local.minute * 60 + local.second) % (cfg.planner.step_minutes * 60) or local.microsecond or local.nanosecond:
        raise _bad("start", local.isoformat(), f"the plan start must lie on a {cfg.planner.step_minutes}-minute step "
                                                f"(floor it, e.g. {local.floor(step).isoformat()})")
    return step_grid(local, steps, step)


def on_grid(series: pd.Series, index: pd.DatetimeIndex, name: str) -> np.ndarray:
    """Values of ``series`` [kW] on the planning steps.

    Interval-start average powers: a coarser series is held over the steps it covers (a 30-minute
    value applies to both 15-minute halves); a finer one is averaged over each step, which it must
    cover completely. Missing, NaN or negative values are errors naming the first timestamps.
    """
    if not isinstance(series, pd.Series) or not isinstance(series.index, pd.DatetimeIndex) or series.index.tz is None:
        raise _bad(name, type(series).__name__, "expected a pandas Series indexed by time-zone aware timestamps")
    s = series if series.index.is_monotonic_increasing else series.sort_index()
    if not s.index.is_unique:
        s = s[~s.index.duplicated(keep="first")]
    at_ns, of_ns = index.as_unit("ns").asi8, s.index.as_unit("ns").asi8   # epoch ns of the steps, of the series
    step = pd.Timedelta(int(at_ns[1] - at_ns[0]), "ns") if len(index) > 1 else pd.Timedelta(index.freq)
    sstep = pd.Timedelta(int(np.diff(of_ns).min()), "ns") if len(s) > 1 else step
    if not len(s):
        values = np.full(len(index), np.nan)
    elif sstep >= step:
        pos = np.searchsorted(of_ns, at_ns, side="right") - 1
        held = np.clip(pos, 0, None)
        ok = (pos >= 0) & (at_ns < of_ns[held] + sstep.value)
        values = np.where(ok, s.to_numpy(dtype=float)[held], np.nan)
    else:
        bins = np.floor((s.index - index[0]) / step).astype(int)
        inside = (bins >= 0) & (bins < len(index))
        grouped = pd.Series(s.to_numpy(dtype=float)[inside]).groupby(bins[inside])
        full = grouped.count() == int(round(step / sstep))
        means = grouped.mean()[full]
        values = np.full(len(index), np.nan)
        values[means.index.to_numpy()] = means.to_numpy()
    missing = np.flatnonzero(np.isnan(values))
    if missing.size:
        raise _bad(name, index[missing[0]].isoformat(),
                   f"no value for this and {missing.size - 1} more of the {len(index)} planning steps; the series must "
                   f"cover {index[0].isoformat()} to {(index[-1] + step).isoformat()}")
    negative = np.flatnonzero(values < 0)
    if negative.size:
        raise _bad(name, float(values[negative[0]]), f"negative power at {index[negative[0]].isoformat()}; kW must be >= 0")
    return values


def holiday_calendar(tariff: Tariff) -> Callable[[dt.date], bool]:
    """``is_holiday(date)`` from the tariff's own calendar (its day type "holiday")."""
    @functools.lru_cache(maxsize=4096)
    def is_holiday(day: dt.date) -> bool:
        ts = pd.DatetimeIndex([pd.Timestamp(day).tz_localize(tariff.zone) + pd.Timedelta(hours=12)])
        return bool(tariff.day_types(ts)[0] == "holiday")
    return is_holiday


# ----- config -> model data -------------------------------------------------------------------

def charger_specs(cfg: SiteConfig) -> tuple[ChargerSpec, ...]:
    """Each configured charger as model data (percentages -> fractions)."""
    return tuple(ChargerSpec(c.id, c.max_charge_kw, c.max_discharge_kw, c.charge_efficiency,
                             c.discharge_efficiency, c.islanded_rating_kw) for c in cfg.chargers)


def vehicle_specs(cfg: SiteConfig, index: pd.DatetimeIndex, state: SiteState,
                  is_holiday: Callable[[dt.date], bool],
                  stays: Mapping[str, Sequence[Stay]] | None = None,
                  no_discharge: frozenset[str] = frozenset()) -> tuple[VehicleSpec, ...]:
    """Each vehicle's limits and stays on the grid; its SOC at the start from ``state``; the
    vehicles in ``no_discharge`` (:class:`OperatorLimits`) may not discharge.

    ``stays``: vehicle id -> the stays to plan with instead of the configured windows (a study's
    drawn stays); vehicles not in it use their windows.
    """
    missing = [v.id for v in cfg.vehicles if v.id not in state.soc_kwh]
    if missing:
        raise _bad("state.soc_kwh", sorted(state.soc_kwh), f"no state of charge for vehicle(s) {missing}")
    out = []
    every = tuple(c.id for c in cfg.chargers)
    for v in cfg.vehicles:
        soc0 = float(state.soc_kwh[v.id])
        if not 0 <= soc0 <= v.capacity_kwh:
            raise _bad(f"state.soc_kwh[{v.id}]", soc0, f"must be between 0 and the capacity {v.capacity_kwh:g} kWh")
        arrived = state.arrival_kwh.get(v.id)
        tl = timeline(v, index, cfg.zone, is_holiday, None if stays is None else stays.get(v.id), arrived)
        # energy already taken from a driver's car in the stay under way (settled with the rest of the stay)
        settled = arrived - soc0 if arrived is not None and tl.plugged[0] and v.owner == "driver" else 0.0
        out.append(VehicleSpec(
            id=v.id, capacity_kwh=v.capacity_kwh, min_kwh=v.min_soc_kwh,
            max_kwh=v.max_soc_kwh, soc0_kwh=soc0, plugged=tl.plugged,
            target_kwh=tl.target_kwh, arrival_set_kwh=tl.arrival_set_kwh, arrival_trip_kwh=tl.arrival_trip_kwh,
            chargers=tuple(v.chargers) or every,
            max_charge_kw=np.inf if v.max_charge_kw is None else v.max_charge_kw,
            max_discharge_kw=0.0 if v.id in no_discharge else np.inf if v.max_discharge_kw is None else v.max_discharge_kw,
            wear_cost_per_kwh=v.wear_cost_per_kwh, settlement_price_per_kwh=v.settlement_price_per_kwh,
            settled_kwh=float(np.clip(settled, -v.capacity_kwh, v.capacity_kwh))))
    return tuple(out)


def step_table(cfg: SiteConfig, index: pd.DatetimeIndex) -> StepTable:
    """The time data of a plan's ``index`` on its own (a :class:`Planner` slices them from its table)."""
    step = index[1] - index[0] if len(index) > 1 else pd.Timedelta(minutes=cfg.planner.step_minutes)
    return StepTable.build(cfg, index, step)


def window_starts(index: pd.DatetimeIndex, tariff: Tariff) -> pd.DatetimeIndex:
    """Start of the fixed :00/:30 demand window (tariff-local) each interval falls in
    (:func:`ems.timegrid.window_starts` in the tariff's zone)."""
    return _window_starts(index, tariff.zone)


def demand_spec(cfg: SiteConfig, index: pd.DatetimeIndex, state: SiteState,
                uplift_kw: np.ndarray | None = None, steps: StepTable | None = None) -> DemandSpec | None:
    """Windows, months and ratchet levels of a demand tariff (None without a demand charge).

    ``uplift_kw`` (per step): import the site may add above the forecast in the windows after the
    current one (the forecast error's high quantile, :mod:`ems.forecast.uncertainty`); the demand
    windows are priced with it, as if already metered, so the plan's peak and the car energy held
    for it cover it. The current window is left to the measured import and the guard.
    ``steps``: the time data of ``index`` (:func:`step_table` when not given).
    """
    basic = cfg.tariff.basic
    rate = basic.demand_rate()
    if basic.kind != "demand" or rate <= 0:
        return None
    steps = steps or step_table(cfg, index)
    window_of_step, ws, first = steps.windows()
    pre = np.zeros(len(ws))
    if steps.ns[0] != ws[0]:
        pre[0] = state.window_import_kwh
    elif state.window_import_kwh:
        raise _bad("state.window_import_kwh", state.window_import_kwh,
                   "the plan starts on a :00/:30 window boundary, so nothing can be metered in its window yet; give 0")
    if uplift_kw is not None:
        extra = np.where(window_of_step > 0, np.asarray(uplift_kw, dtype=float), 0.0) * (steps.step_ns / NS_PER_HOUR)
        pre += np.bincount(window_of_step, weights=extra, minlength=len(ws))
    hours = np.minimum((steps.end_ns - ws) / NS_PER_HOUR, WINDOW_H)
    labels, month_of_window = np.unique(steps.window_month[first], return_inverse=True)
    labels = tuple(str(x) for x in labels)
    billed, reach, links = _ratchet_reach(labels, basic.ratchet_months)
    M = len(labels)
    history = {k: float(v) for k, v in state.peak_history_kw.items()}
    floor = np.array([history.get(m, 0.0) for m in labels])
    floor[0] = max(floor[0], state.month_peak_kw)
    held = np.zeros(len(billed))
    for b, window in enumerate(reach):
        old = [history[h] for h in window if h in history and h not in labels]
        # a peak already metered in a horizon month holds the later months whose ratchet reaches it,
        # whatever the plan does: only what the plan adds above it is the plan's ratchet cost
        metered = [floor[i] for i in np.flatnonzero(links[b])] if b >= M else []
        held[b] = max([basic.minimum_contract_kw, *old, *metered])
    hedge = np.flatnonzero((month_of_window == 0) & ((ws - steps.ns[0]) / NS_PER_HOUR < cfg.planner.peak_hedge_hours))
    return DemandSpec(rate, window_of_step.astype(int), pre, hours, month_of_window.astype(int),
                      floor, held, links.copy(), np.arange(len(billed)) < M, billed,
                      hedge if cfg.planner.peak_hedge > 0 else hedge[:0], cfg.planner.peak_hedge * rate)


@functools.lru_cache(maxsize=64)
def _ratchet_reach(labels: tuple[str, ...], ratchet_months: int) -> tuple[tuple[str, ...], tuple[frozenset[str], ...],
                                                                            np.ndarray]:
    """For a horizon over the billing months ``labels``: the billed months (``labels`` and the
    ``ratchet_months`` after), the ratchet window of each (itself and the ``ratchet_months`` before),
    and ``links[b, m]``: horizon month m lies in billed month b's window (read-only: copy it)."""
    billed = labels + tuple(month_add(labels[-1], j) for j in range(1, ratchet_months + 1))
    reach = tuple(frozenset(month_add(month, -j) for j in range(ratchet_months + 1)) for month in billed)
    links = np.array([[m in window for m in labels] for window in reach], dtype=bool)
    links.flags.writeable = False
    return billed, reach, links


def block_spec(cfg: SiteConfig, index: pd.DatetimeIndex, state: SiteState,
               steps: StepTable | None = None) -> BlockSpec | None:
    """Room left in each increasing block of each month in the horizon (None for time-of-use tariffs);
    ``steps`` the time data of ``index`` (:func:`step_table` when not given)."""
    tariff = cfg.tariff
    if not tariff.blocks:
        return None
    months, month_of_step = np.unique((steps or step_table(cfg, index)).month, return_inverse=True)
    uppers = [np.inf if b.up_to_kwh is None else b.up_to_kwh for b in tariff.blocks]
    lowers = [0.0] + uppers[:-1]
    room = np.zeros((len(months), len(uppers)))
    for n in range(len(months)):
        used = state.month_import_kwh if n == 0 else 0.0
        room[n] = [max(0.0, u - max(lo, used)) for lo, u in zip(lowers, uppers)]
    return BlockSpec(month_of_step.astype(int), np.array([b.rate_per_kwh for b in tariff.blocks]), room)


def build_problem(cfg: SiteConfig, start: pd.Timestamp, pv_kw: pd.Series, load_kw: pd.Series, state: SiteState,
                  outage: tuple[pd.Timestamp, pd.Timestamp] | None = None, hours: float | None = None,
                  stays: Mapping[str, Sequence[Stay]] | None = None,
                  peak_uplift_kw: pd.Series | None = None,
                  is_holiday: Callable[[dt.date], bool] | None = None,
                  limits: OperatorLimits | None = None, steps: StepTable | None = None) -> PlanProblem:
    """The model data of one re-plan (see the module docstring); ``stays`` as in :func:`vehicle_specs`;
    ``limits``: an operator's :class:`OperatorLimits`;
    ``is_holiday`` the tariff's calendar (:func:`holiday_calendar`; a planner keeps one);
    ``peak_uplift_kw`` the load allowed for above the forecast in the demand windows (see :func:`demand_spec`);
    ``steps`` the time data of the plan's grid (:func:`plan_index` of ``start`` and ``hours``; a planner
    slices it from its table), else built here."""
    index = plan_index(cfg, start, hours) if steps is None else steps.index
    steps = steps or step_table(cfg, index)
    T = len(index)
    dt_h = cfg.planner.step_minutes / 60
    pv, load = on_grid(pv_kw, index, "pv_kw"), on_grid(load_kw, index, "load_kw")
    uplift = None if peak_uplift_kw is None else on_grid(peak_uplift_kw, index, "peak_uplift_kw")
    mask = np.zeros(T, dtype=bool)
    if outage is not None:
        o0, o1 = outage
        if o0.tzinfo is None or o1.tzinfo is None or not o1 > o0:
            raise _bad("outage", f"{o0} .. {o1}", "an outage is (start, end) with time zones, end after start")
        mask = (index >= o0) & (index < o1)
        load = np.where(mask, cfg.load.critical_kw, load)
    tariff = cfg.tariff
    blocks = block_spec(cfg, index, state, steps)
    import_price = steps.import_price
    reserve = None
    lim = limits or OperatorLimits()
    if max(cfg.outage.reserve_hours, lim.reserve_hours) > 0 and cfg.load.critical_kw > 0 and cfg.vehicles:
        reserve = reserve_requirement_kwh(cfg.load.critical_kw, pv, dt_h, cfg.outage.reserve_hours)
        if lim.reserve_hours > cfg.outage.reserve_hours:   # an operator's raised reserve, in the steps before its end
            raised = reserve_requirement_kwh(cfg.load.critical_kw, pv, dt_h, lim.reserve_hours)
            reserve = raised if lim.reserve_until is None else np.where(index < lim.reserve_until, raised, reserve)
    terminal = cfg.planner.terminal_value_per_kwh
    if terminal is None:   # without blocks the price does not depend on the month's use: reuse it
        terminal = float(np.mean(import_price if blocks is None else tariff.import_price(index, state.month_import_kwh)))
    problem = PlanProblem(
        dt_h=dt_h, pv_kw=pv, load_kw=load, import_price=import_price, export_price=steps.export_price,
        import_limit_kw=np.full(T, cfg.grid.import_limit_kw), export_limit_kw=np.full(T, cfg.grid.export_limit_kw),
        chargers=charger_specs(cfg), vehicles=vehicle_specs(cfg, index, state, is_holiday or holiday_calendar(tariff), stays,
                                                                lim.no_discharge),
        vehicle_export_allowed=cfg.grid.vehicle_export_allowed, demand=demand_spec(cfg, index, state, uplift, steps),
        blocks=blocks,
        reserve_kwh=reserve, reserve_soft=cfg.outage.mode == "soft",
        reserve_penalty_per_kwh_h=cfg.outage.soft_penalty_per_kwh, outage=mask if outage is not None else None,
        value_of_lost_load_per_kwh=cfg.outage.value_of_lost_load_per_kwh, terminal_value_per_kwh=terminal,
        final_soc_at_least_initial=cfg.planner.require_final_soc_at_least_initial,
        labels=BoundaryLabels(index, pd.Timedelta(steps.step_ns, "ns")))
    check_problem(problem)
    return problem


# ----- solving and reporting ------------------------------------------------------------------

def solve_options(cfg: SiteConfig, **overrides) -> SolveOptions:
    """Solver settings from the config's planner section (time limit, gap in % -> fraction)."""
    opts = {"time_limit_s": cfg.planner.solver_time_limit_s, "mip_rel_gap": cfg.planner.mip_gap}
    opts.update(overrides)
    return SolveOptions(**opts)


def _pct(problem: PlanProblem, vi: int, kwh: float) -> str:
    return f"{100 * kwh / problem.vehicles[vi].capacity_kwh:.0f} %"


def _short(kind: ShortfallKind, subject: str, at: str, amount: float, text: str) -> Shortfall:
    """A shortfall found in the solved schedule."""
    return Shortfall(kind, subject, at, float(amount), True, text)


def _vehicle_shortfalls(problem: PlanProblem, vi: int, v: Values) -> list[Shortfall]:
    """One car's missed departure targets, time below its minimum, and final SOC option."""
    veh, out = problem.vehicles[vi], []
    for k in np.flatnonzero(~np.isnan(veh.target_kwh)):
        short = veh.target_kwh[k] - v.soc[vi, k]
        if short > MESSAGE_KWH:
            at = problem.label(int(k))
            out.append(_short(ShortfallKind.TARGET, veh.id, at, short,
                              f"car {veh.id} leaves at {at} with {_pct(problem, vi, v.soc[vi, k])}, "
                              f"{short:.1f} kWh short of its {_pct(problem, vi, veh.target_kwh[k])} target"))
    below = veh.min_kwh - v.soc[vi, 1:]
    if np.any(below > MESSAGE_KWH):
        k = int(np.argmax(below)) + 1
        out.append(_short(ShortfallKind.MIN_SOC, veh.id, problem.label(k), below[k - 1],
                          f"car {veh.id} is at {_pct(problem, vi, v.soc[vi, k])} at {problem.label(k)}, below its "
                          f"{_pct(problem, vi, veh.min_kwh)} minimum"))
    lost = veh.soc0_kwh - v.soc[vi, -1]
    if problem.final_soc_at_least_initial and lost > MESSAGE_KWH:
        out.append(_short(ShortfallKind.FINAL, veh.id, problem.label(problem.n_steps), lost,
                          f"car {veh.id} ends at {_pct(problem, vi, v.soc[vi, -1])}, below its initial "
                          f"{_pct(problem, vi, veh.soc0_kwh)}"))
    return out


def shortfalls(problem: PlanProblem, v: Values) -> list[Shortfall]:
    """What the schedule does not meet: targets, minimum SOC, final SOC, reserve, import limit,
    unserved load (amounts above 1 Wh)."""
    out = [s for vi in range(len(problem.vehicles)) for s in _vehicle_shortfalls(problem, vi, v)]
    if v.res_short.max(initial=0.0) > MESSAGE_KWH:
        t = int(np.argmax(v.res_short))
        out.append(_short(ShortfallKind.RESERVE, "site", problem.label(t), v.res_short[t],
                          f"the outage reserve is short by up to {v.res_short[t]:.1f} kWh (at {problem.label(t)}; "
                          f"{int(np.sum(v.res_short > MESSAGE_KWH))} step(s))"))
    if v.over is not None and v.over.max(initial=0.0) > MESSAGE_KWH:
        t = int(np.argmax(v.over))
        out.append(_short(ShortfallKind.IMPORT, "site", problem.label(t), v.over[t],
                          f"import exceeds the {problem.import_limit_kw[t]:g} kW limit by up to {v.over[t]:.1f} kW "
                          f"(at {problem.label(t)}; {int(np.sum(v.over > MESSAGE_KWH))} step(s))"))
    if v.uns.sum() * problem.dt_h > MESSAGE_KWH:
        t = int(np.flatnonzero(v.uns > MESSAGE_KWH)[0])
        out.append(_short(ShortfallKind.UNSERVED, "site", problem.label(t), v.uns.sum() * problem.dt_h,
                          f"the outage leaves {v.uns.sum() * problem.dt_h:.1f} kWh of critical load unserved, "
                          f"from {problem.label(t)}"))
    return out


def found_before_solving(problem: PlanProblem, req: Requirements) -> list[Shortfall]:
    """The requirements found out of reach before solving (:attr:`Requirements.findings`)."""
    return [Shortfall(ShortfallKind(f.kind), f.subject, problem.label(f.k), float(f.shortfall), False, f.text)
            for f in req.findings]


def _check(problem: PlanProblem, req: Requirements, v: Values, soft: frozenset[str]) -> list[str]:
    """:func:`models.verify.violations` with the requirement set the plan was solved for."""
    hard_reserve = problem.reserve_kwh is not None and not problem.reserve_soft and "reserve" not in soft
    return violations(problem, v, req.soc_lb(soft), req.soc_ub, req.fixed, req.reserve_kwh, hard_reserve,
                      import_soft="import" in soft, grid_direction=needs_grid_direction_binary(problem))


def _unit_flows(problem: PlanProblem, v: Values) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Each charger's charge and discharge [kW] per step (its pairs summed), and the id of the charger
    each vehicle (rows, in the problem's order) uses in each step ("" = none)."""
    ps = pairs(problem)
    charge: dict[str, np.ndarray] = {}
    discharge: dict[str, np.ndarray] = {}
    for ci, c in enumerate(problem.chargers):
        rows = [i for i, p in enumerate(ps) if p.c == ci]
        charge[c.id] = v.ch[rows].sum(axis=0) if rows else np.zeros(problem.n_steps)
        discharge[c.id] = v.dis[rows].sum(axis=0) if rows else np.zeros(problem.n_steps)
    assign = np.full((len(problem.vehicles), problem.n_steps), "", dtype=object)
    for i, p in enumerate(ps):
        assign[p.v, (v.ch[i] > 1e-6) | (v.dis[i] > 1e-6)] = problem.chargers[p.c].id
    return charge, discharge, assign


def _frames(problem: PlanProblem, index: pd.DatetimeIndex, v: Values) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The schedule and the vehicle -> charger assignment as DataFrames."""
    charge, discharge, assign = _unit_flows(problem, v)
    cols: dict[str, np.ndarray] = {"pv_kw": problem.pv_kw, "load_kw": problem.load_kw, "import_kw": v.imp,
                                   "export_kw": v.exp, "curtail_kw": v.curt}
    for c in problem.chargers:
        cols[f"{c.id}_charge_kw"] = charge[c.id]
        cols[f"{c.id}_discharge_kw"] = discharge[c.id]
    for vi, veh in enumerate(problem.vehicles):
        cols[f"{veh.id}_soc_kwh"] = v.soc[vi, :-1]
    if problem.outage is not None:
        cols["unserved_kw"] = v.uns
    schedule = pd.DataFrame(cols, index=index)
    schedule.index.name = "timestamp"
    table = pd.DataFrame({veh.id: assign[vi] for vi, veh in enumerate(problem.vehicles)}, index=index, dtype=object)
    return schedule, table


def _schedule_window_kw(problem: PlanProblem, import_kw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each demand window's average of the schedule's own import [kW] (nothing metered before the
    plan, no allowance for forecast error) and its number of steps in the horizon."""
    return _window_means(problem.demand.window_of_step, import_kw, problem.demand.n_windows)


def _window_means(window_of_step: np.ndarray, import_kw: np.ndarray, n_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """Each window's average of ``import_kw`` over its steps [kW] and its number of steps."""
    n = np.bincount(window_of_step, minlength=n_windows)
    kw = np.bincount(window_of_step, weights=import_kw, minlength=n_windows)
    return kw / np.maximum(n, 1), n


def _near_peak(problem: PlanProblem, import_kw: np.ndarray) -> dict[str, float]:
    """With a near-term hedge: {first month: the schedule's highest window average in the hedge
    windows, at least the month's metered peak} [kW]; else empty."""
    d = problem.demand
    if d is None or not d.hedged:
        return {}
    kw, _ = _schedule_window_kw(problem, import_kw)
    return {d.labels[0]: max(float(d.month_floor_kw[0]), float(kw[d.hedge_windows].max()))}


def _planned_peaks_kw(problem: PlanProblem, import_kw: np.ndarray) -> dict[str, float]:
    """Per horizon billing month, the schedule's highest window average on the point forecast [kW]
    (nothing metered before the plan, no allowance for forecast error); empty without a demand charge."""
    d = problem.demand
    if d is None:
        return {}
    kw, n = _schedule_window_kw(problem, import_kw)
    out: dict[str, float] = {}
    for w in np.flatnonzero(n):
        label = d.labels[int(d.month_of_window[w])]
        out[label] = max(out.get(label, 0.0), float(kw[w]))
    return out


def window_peak_kw(steps: StepTable, import_kw: np.ndarray) -> float:
    """Largest average import over the fixed :00/:30 windows the plan's ``steps`` cover [kW]
    (partial windows: over the part covered)."""
    window_of_step, starts, _ = steps.windows()
    return float(_window_means(window_of_step, import_kw, len(starts))[0].max())


def _fixed_cost(cfg: SiteConfig, steps: StepTable) -> float:
    """Monthly basic charges that do not depend on the plan, for each billing month touched [currency]."""
    if cfg.tariff.basic.kind == "demand":
        return 0.0
    return cfg.tariff.basic.fixed_amount() * len(set(steps.month))


class Planner:
    """Plans for one site; keeps a persistent model between calls of the same shape.

    ``options`` overrides the solver settings taken from ``cfg.planner`` (e.g. the interface).
    """

    def __init__(self, cfg: SiteConfig, options: SolveOptions | None = None):
        self.cfg = cfg
        self.session = Session(options or solve_options(cfg))
        self.is_holiday = holiday_calendar(cfg.tariff)   # cached across re-plans
        self.steps = StepCache(cfg)                      # the steps' prices, months and windows, likewise

    def plan(self, start: pd.Timestamp, pv_kw: pd.Series, load_kw: pd.Series, state: SiteState, *,
             outage: tuple[pd.Timestamp, pd.Timestamp] | None = None, hours: float | None = None,
             stays: Mapping[str, Sequence[Stay]] | None = None, peak_uplift_kw: pd.Series | None = None,
             limits: OperatorLimits | None = None) -> PlanResult:
        """A checked schedule from ``start`` for ``hours`` (default: the config's horizon).

        ``stays``: vehicle id -> stays to plan with instead of the configured windows; ``limits``:
        an operator's :class:`OperatorLimits` (the daemon's overrides);
        ``peak_uplift_kw``: load to allow for above the forecast in the demand windows after the
        current one (:func:`demand_spec`; see :mod:`ems.forecast.uncertainty`).

        Raises :class:`~ems.errors.DataError` for invalid inputs; never for an infeasible or failed solve.
        """
        t0 = time.perf_counter()
        index = plan_index(self.cfg, start, hours)
        steps = self.steps.steps(index, pd.Timedelta(minutes=self.cfg.planner.step_minutes))
        problem = build_problem(self.cfg, start, pv_kw, load_kw, state, outage, hours, stays, peak_uplift_kw,
                                self.is_holiday, limits, steps)
        req = requirements(problem)
        prep = time.perf_counter() - t0
        messages = [f.text for f in req.findings]
        soft = req.soften
        sol = self.session.solve(problem, req, soft)
        build, solve = sol.build_seconds, sol.solve_seconds
        infeasible = sol.status == "infeasible"
        if infeasible:
            soft = frozenset(SOFT_FAMILIES)
            messages.append("the requirements cannot all be met together; planning with each of them relaxed "
                            "(shortfalls below)")
            sol = self.session.solve(problem, req, soft)
            build, solve = build + sol.build_seconds, solve + sol.solve_seconds
        return self._result(steps, problem, req, sol, soft, messages, infeasible, prep + build, solve)

    def _result(self, steps: StepTable, problem: PlanProblem, req: Requirements, sol: Solution,
                soft: frozenset[str], messages: list[str], infeasible: bool, build_s: float, solve_s: float) -> PlanResult:
        """Verify the solution (or the fallback) and assemble the result."""
        messages = messages + sol.messages
        fallback = sol.values is None
        values = None if fallback else sol.values.cleaned()
        if values is not None:
            problems = _check(problem, req, values, soft)
            cost = plan_costs(problem, req, values, soft)
            if sol.objective is not None and abs(cost.objective - sol.objective) > 1e-6 * max(1.0, abs(sol.objective)) + 1e-3:
                problems.append(f"the solver's objective {sol.objective:.4f} differs from the plan's priced cost "
                                f"{cost.objective:.4f}")
            if problems:
                log.error("solution failed verification: %s", problems)
                messages.append("the solver's schedule failed verification (" + "; ".join(problems[:3]) + ")")
                fallback = True
        if fallback:
            messages.append("no optimised schedule: using the safe rule (no discharge while the grid is up, charge "
                            "toward each departure target)")
            soft = frozenset(SOFT_FAMILIES)
            values = rule_based(problem, req)
            leftover = _check(problem, req, values, soft)
            if leftover:
                messages.append("the safe rule breaks: " + "; ".join(leftover[:3]))
        found = shortfalls(problem, values)
        messages += [f.text for f in found]
        if fallback:   # else the verified solution's cost above
            cost = plan_costs(problem, req, values, soft)
        fixed = _fixed_cost(self.cfg, steps)
        planned = _planned_peaks_kw(problem, values.imp)
        outcome = PlanSummary(
            status=PlanStatus.FALLBACK if fallback else PlanStatus(sol.status), method="rule" if fallback else sol.method,
            fallback=fallback, infeasible=infeasible, relaxed=sorted(soft), objective=cost.objective,
            energy_cost=cost.energy, demand_cost=cost.demand, ratchet_cost=cost.ratchet,
            export_credit=cost.export_credit, wear_cost=cost.wear, driver_settlement=cost.settlement,
            penalty_cost=cost.penalty,
            terminal_value=cost.terminal_value, fixed_cost=fixed,
            bill_cost=cost.energy + cost.demand + fixed - cost.export_credit,
            peak_kw=max(planned.values()) if planned else window_peak_kw(steps, values.imp),
            unserved_kwh=cost.unserved_kwh, month_peaks_kw=cost.month_peaks_kw, planned_peaks_kw=planned,
            near_peak_kw=_near_peak(problem, values.imp), hedge_cost=cost.hedge,
            final_soc_kwh={veh.id: float(values.soc[vi, -1]) for vi, veh in enumerate(problem.vehicles)},
            build_seconds=build_s, solve_seconds=solve_s,
            shortfalls=found_before_solving(problem, req) + found, messages=messages)
        return PlanResult(None, outcome, None, problem, values, steps.index)


def plan_site(cfg: SiteConfig, start: pd.Timestamp, pv_kw: pd.Series, load_kw: pd.Series, state: SiteState,
              **kw) -> PlanResult:
    """One plan with a fresh :class:`Planner` (``kw``: outage, hours)."""
    return Planner(cfg).plan(start, pv_kw, load_kw, state, **kw)


def _month_starts(first: pd.Timestamp, end: pd.Timestamp, zone) -> list[pd.Timestamp]:
    """Chunk boundaries: ``first``, every local month start inside (first, end), and ``end``."""
    local = first.tz_convert(zone)
    m = pd.Timestamp(year=local.year, month=local.month, day=1).tz_localize(zone)
    out = [first]
    while True:
        m = (m + pd.Timedelta(days=32)).replace(day=1)
        m = m.tz_localize(None).tz_localize(zone)
        if m >= end:
            break
        out.append(m)
    return out + [end]


def plan_span(cfg: SiteConfig, pv_kw: pd.Series, load_kw: pd.Series, state: SiteState,
              options: SolveOptions | None = None, stays: Mapping[str, Sequence[Stay]] | None = None,
              final_terminal_value_per_kwh: float | None = None) -> PlanResult:
    """Perfect-foresight plan over the whole span of the series, one billing month at a time.

    ``stays``: vehicle id -> stays to plan with instead of the configured windows;
    ``final_terminal_value_per_kwh``: the value of energy left in the cars at the end of the span
    (default: the config's, as for every month end; a study gives 0 so the bound is on the bill).

    Each month is one problem over exactly that month (in the tariff's time zone); the next month
    starts from its final SOC, with its metered peak added to the ratchet history. The figures in
    the summary add up over the months (``peak_kw`` is the largest; seconds are totals). The
    near-term hedge (``planner.peak_hedge_pct``) is off: the series are known, not forecast.
    """
    cfg = cfg.model_copy(update={"planner": cfg.planner.model_copy(update={"peak_hedge_pct": 0.0})})
    step = pd.Timedelta(minutes=cfg.planner.step_minutes)
    idx = load_kw.index.intersection(pv_kw.index).sort_values()
    if len(idx) < 2:
        raise _bad("load_kw", len(idx), "plan_span needs load and PV series covering the same span")
    first, end = idx[0], idx[-1] + (idx[1] - idx[0])
    bounds = _month_starts(first, end, cfg.tariff.zone)
    planner = Planner(cfg, options or solve_options(cfg, persistent=False))
    last = planner
    if final_terminal_value_per_kwh is not None:
        end_cfg = cfg.model_copy(update={"planner": cfg.planner.model_copy(
            update={"terminal_value_per_kwh": final_terminal_value_per_kwh})})
        last = Planner(end_cfg, options or solve_options(cfg, persistent=False))
    results: list[PlanResult] = []
    state = SiteState(dict(state.soc_kwh), state.month_peak_kw, dict(state.peak_history_kw),
                      state.window_import_kwh, state.month_import_kwh, dict(state.arrival_kwh))
    for a, b in zip(bounds[:-1], bounds[1:]):
        hours = (b - a) / pd.Timedelta(hours=1)
        hours = np.floor(hours / (step / pd.Timedelta(hours=1)) + 1e-9) * (step / pd.Timedelta(hours=1))
        if hours <= 0:
            continue
        res = (last if b == bounds[-1] else planner).plan(a, pv_kw, load_kw, state, hours=hours, stays=stays)
        results.append(res)
        month = str(cfg.tariff.months(pd.DatetimeIndex([a]))[0])
        history = dict(state.peak_history_kw)
        history[month] = max(history.get(month, 0.0), state.month_peak_kw, res.outcome.peak_kw)
        state = SiteState(dict(res.outcome.final_soc_kwh), 0.0, history, 0.0, 0.0)
    return _combine(results)


def _combine(results: list[PlanResult]) -> PlanResult:
    """One result from consecutive monthly results."""
    outcome = add_up([r.outcome for r in results], [f"{r.schedule.index[0]:%Y-%m}" for r in results])
    schedule = pd.concat([r.schedule for r in results])
    assignment = pd.concat([r.assignment for r in results])
    return PlanResult(schedule, outcome, assignment, None)
