"""The control strategies a study compares, each a step-by-step controller of :class:`SiteSim`.

- ``building``: the building alone, no cars at all (what the site would pay without any car
  plugged in, so the cars' contribution to the peak is visible);
- ``none``: unmanaged charging; each car charges at full power from plug-in until it is full
  (its max SOC), no discharge.
- ``rule``: the installer's timer: charge at full power in the cheap night window, discharge in the
  peak window down to the outage reserve (and never below what the driver still needs, from
  :func:`ems.dispatch.departure_floor_kwh`), otherwise (and in the peak window once at that floor)
  charge just in time for the departure (:func:`ems.dispatch.fallback_setpoint`). The windows are the day's cheapest and dearest import
  prices of the tariff; a tariff with one price all day gets 23:00-07:00 and 13:00-16:00.
- ``mpc``: at every step forecast from the past only (:class:`ems.forecast.SiteForecaster`), plan
  with the daemon's :class:`ems.planning.Planner`, apply the first step through the daemon's
  :func:`ems.dispatch.dispatch` (plan, then the demand guard holding the plan's peak against the
  step's actual load, then the clamps), carry SOC and peaks forward. While the load profile's weeks
  before the step's date hold less than a day of measurements (a span without recent history: its
  first day) there is no forecast and the step runs dispatch's no-plan rule (``steps_without_forecast``).
- ``oracle``: :func:`ems.planning.plan_span` over the actual data (perfect foresight), replayed;
  energy left in the cars at the span's end is worth nothing to it (what the bill sees), so its
  bill is the bound the others are measured against.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ems.config import SiteConfig
from ems.dispatch import (REFILL_HOURS, DispatchInput, PluggedCar, UnitRules, UnitState, WindowMeter,
                          departure_floor_kwh, peak_aware_dispatch,
                          fallback_setpoint, guard_target_kw, reserve_to_hold_kwh, share_floors)
from ems.planning import Planner, PlanResult, SiteState, plan_span
from ems.study.site import Flow, SiteSim, known_stays
from ems.timegrid import hours_into_window

STRATEGIES = ("building", "none", "rule", "mpc", "oracle")
FLAT_CHEAP_HOURS = (23, 7)   # a tariff with one price all day: the installer's usual night window
FLAT_PEAK_HOURS = (13, 16)   # ... and afternoon discharge window
MIN_HISTORY_DAYS = 1         # mpc forecasts once the load profile has a day of recent measurements to build on


class Controller:
    """Base: ``flows(sim)`` gives the flows for the sim's current step."""

    def __init__(self, cfg: SiteConfig, sim: SiteSim):
        self.cfg, self.sim = cfg, sim
        self.next_dep, self.next_target = sim.fleet.departure_after()

    def flows(self) -> dict[int, Flow]:
        raise NotImplementedError

    def unit(self, v: int, c: int) -> UnitState:
        """The dispatch view of vehicle v on charger c now."""
        rc, rd = self.sim.rating(v, c)
        return UnitState(self.cfg.chargers[c].id, True, float(self.sim.soc[v]), rc, rd,
                         float(self.sim.eta_c[c]), float(self.sim.eta_d[c]))

    def car(self, v: int, c: int) -> PluggedCar:
        """Vehicle v on charger c for the floor rule, its departure counted from the end of this step
        (so a step's discharge never leaves too little time to recharge)."""
        sim, t, dt_h = self.sim, self.sim.t, self.sim.span.dt_h
        k = self.next_dep[v, t]
        target, hours = (0.0, math.inf) if k < 0 else (float(self.next_target[v, t]), max((k - t - 1) * dt_h, 0.0))
        return PluggedCar(self.cfg.chargers[c].id, float(sim.soc[v]), float(sim.min_kwh[v]), float(sim.cap[v]),
                          float(sim.eta_d[c]), target, hours, sim.rating(v, c)[0], float(sim.eta_c[c]), sim.rating(v, c)[1])

    def floors(self, attached: dict[int, int], reserve_kwh: float) -> dict[int, UnitRules]:
        """Each attached vehicle's floor and departure needs: :func:`ems.dispatch.share_floors`, the daemon's rule."""
        rules = share_floors([self.car(v, c) for v, c in attached.items()], reserve_kwh)
        return {v: rules[self.cfg.chargers[c].id] for v, c in attached.items()}

    def reserve_kwh(self, following_plan: bool, planned_kwh: float | None) -> float:
        """The reserve dispatch holds now (:func:`ems.dispatch.reserve_to_hold_kwh`) [kWh]."""
        o = self.cfg.outage
        return reserve_to_hold_kwh(o.mode == "hard", following_plan, planned_kwh, self.cfg.load.critical_kw, o.reserve_hours)


class Building(Controller):
    """``building``: no cars (the study runs it on the site without its vehicles)."""

    def flows(self) -> dict[int, Flow]:
        return {}


class NoV2H(Controller):
    """``none``: unmanaged charging, full power from plug-in until full, no discharge."""

    def flows(self) -> dict[int, Flow]:
        return {v: Flow(c, self.sim.rating(v, c)[0], 0.0) for v, c in self.sim.attach().items()}


def rule_windows(cfg: SiteConfig, index: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """(cheap, peak) flags per step: the day's lowest and highest import price of the tariff, or the
    fixed FLAT_* hours on days with a single price."""
    price = np.asarray(cfg.tariff.import_price(index), dtype=float)
    local = index.tz_convert(cfg.zone)
    day = pd.Series(price).groupby(np.asarray(local.normalize().asi8))
    lo = day.transform("min").to_numpy()
    hi = day.transform("max").to_numpy()
    spread = hi - lo > 1e-9
    hour = np.asarray(local.hour)
    flat_cheap = (hour >= FLAT_CHEAP_HOURS[0]) | (hour < FLAT_CHEAP_HOURS[1])
    flat_peak = (hour >= FLAT_PEAK_HOURS[0]) & (hour < FLAT_PEAK_HOURS[1])
    cheap = np.where(spread, price <= lo + 1e-9, flat_cheap)
    peak = np.where(spread, price >= hi - 1e-9, flat_peak)
    return cheap, peak


class Rule(Controller):
    """``rule``: timer charging in the cheap window, discharging in the peak window to the reserve."""

    def __init__(self, cfg: SiteConfig, sim: SiteSim):
        super().__init__(cfg, sim)
        self.cheap, self.peak = rule_windows(cfg, sim.span.index)

    def flows(self) -> dict[int, Flow]:
        t = self.sim.t
        attached = self.sim.attach()
        floors = self.floors(attached, self.reserve_kwh(False, None))
        out = {}
        for v, c in attached.items():
            unit, rules = self.unit(v, c), floors[v]
            floor = departure_floor_kwh(unit, rules)
            if self.peak[t] and unit.soc_kwh > floor + 1e-9:
                out[v] = Flow(c, 0.0, unit.max_discharge_kw, floor)
            elif self.cheap[t]:
                out[v] = Flow(c, unit.max_charge_kw, 0.0, floor)
            else:
                out[v] = Flow(c, fallback_setpoint(unit, rules)[0], 0.0, floor)
        return out


class Oracle(Controller):
    """``oracle``: the perfect-foresight plan of the whole span, replayed step by step."""

    def __init__(self, cfg: SiteConfig, sim: SiteSim):
        super().__init__(cfg, sim)
        pv, load = sim.span.series()
        soc0 = {vid: float(sim.soc[v]) for v, vid in enumerate(sim.fleet.ids)}
        stays = dict(sim.fleet.stays) if sim.fleet.drawn else None
        self.result = plan_span(cfg, pv, load, SiteState(soc0), stays=stays, final_terminal_value_per_kwh=0.0)
        self.flow_table = plan_flows(cfg, self.result.schedule, self.result.assignment)
        self.outcome = self.result.outcome

    def flows(self) -> dict[int, Flow]:
        return self.flow_table(self.sim.t)


def plan_flows(cfg: SiteConfig, schedule: pd.DataFrame, assignment: pd.DataFrame):
    """A function t -> {vehicle: Flow} reading the schedule's per-charger flows and the assignment."""
    cids = {c.id: i for i, c in enumerate(cfg.chargers)}
    ch = {c.id: schedule[f"{c.id}_charge_kw"].to_numpy() for c in cfg.chargers}
    dis = {c.id: schedule[f"{c.id}_discharge_kw"].to_numpy() for c in cfg.chargers}
    assign = assignment.to_numpy()

    def at(t: int) -> dict[int, Flow]:
        out = {}
        for v, cid in enumerate(assign[t]):
            if cid:
                out[v] = Flow(cids[cid], float(ch[cid][t]), float(dis[cid][t]))
        return out
    return at


class Mpc(Controller):
    """``mpc``: forecast, plan, dispatch the first step, every step."""

    def __init__(self, cfg: SiteConfig, sim: SiteSim, forecaster, planner: Planner | None = None):
        super().__init__(cfg, sim)
        self.forecaster = forecaster
        self.planner = planner or Planner(cfg)
        self.hours = cfg.planner.horizon_hours
        self.months = cfg.tariff.months(sim.span.index)
        self.plans = 0
        self.fallbacks = 0
        self.unplanned = 0                  # steps without a forecast (warm-up): dispatch's no-plan rule
        self.refill_steps: list[int] = []   # steps where the guard kept charging drivers needed over the target
        self.error_q = None                 # (local day, NetErrorQuantile or None) for planner.peak_quantile_pct

    def state(self) -> SiteState:
        """What the daemon would know now: SOCs, this month's metered peak and import, the past peaks."""
        sim, month = self.sim, str(self.months[self.sim.t])
        history = {m: p for m, p in sim.month_peak_kw.items() if m != month}
        arrived = {vid: float(sim.arrived_kwh[v]) for v, vid in enumerate(sim.fleet.ids)
                   if sim.fleet.plugged[v, sim.t] and not np.isnan(sim.arrived_kwh[v])}
        return SiteState({vid: float(sim.soc[v]) for v, vid in enumerate(sim.fleet.ids)},
                         sim.month_peak_kw.get(month, 0.0), history, sim.window_import_kwh(),
                         sim.month_import_kwh.get(month, 0.0), arrived)

    def can_forecast(self, now: pd.Timestamp) -> bool:
        """Whether the forecaster has a day of history to forecast from at ``now``: at least
        MIN_HISTORY_DAYS of load measurements in the load profile's weeks before ``now``'s date (the
        config's history when it is that recent, else the span's own past as it accrues)."""
        return self.forecaster.history_days(now, recent=True) >= MIN_HISTORY_DAYS - 1e-9

    def flows(self) -> dict[int, Flow]:
        sim, t = self.sim, self.sim.t
        now = sim.span.index[t]
        state = self.state()
        if not self.can_forecast(now):   # too little history to forecast: the daemon's no-plan rule
            self.unplanned += 1
            return self.guard({}, None, None)
        fc = self.forecaster.forecast(now, self.hours)
        stays = known_stays(sim.fleet, now, now + pd.Timedelta(hours=self.hours))
        res = self.planner.plan(now, fc.pv_kw, fc.load_kw, state, stays=stays,
                                peak_uplift_kw=self.peak_uplift_kw(now, fc.load_kw.index))
        self.plans += 1
        self.fallbacks += res.outcome.fallback
        planned = self.first_flows(res)
        usable = not (res.outcome.fallback or res.outcome.infeasible or res.outcome.departures_short)
        if not usable:   # the daemon's judgement: such a plan is not followed
            return self.guard({}, None, None)
        reserve = res.problem.reserve_kwh if res.problem is not None else None
        net = (fc.load_kw.to_numpy(dtype=float) - fc.pv_kw.to_numpy(dtype=float))[:int(round(REFILL_HOURS / sim.span.dt_h))]
        return self.guard(planned, res.outcome.peak_in(str(self.months[t])), None if reserve is None else float(reserve[0]),
                          net)

    def first_flows(self, res: PlanResult) -> dict[int, Flow]:
        """The plan's flows in its first step for each vehicle on a charger (its charger's flows, as
        :func:`plan_flows` reads them from the schedule, without building the schedule)."""
        cids = {c.id: i for i, c in enumerate(self.cfg.chargers)}
        vehicle = {vid: v for v, vid in enumerate(self.sim.fleet.ids)}
        return {vehicle[vid]: Flow(cids[cid], ch, dis) for vid, (cid, ch, dis) in res.step_flows(0).items()}

    def peak_uplift_kw(self, now: pd.Timestamp, index: pd.DatetimeIndex) -> pd.Series | None:
        """The daemon's allowance above the forecast for the later demand windows (``planner.peak_quantile_pct``):
        the error quantile from the weeks before, refreshed once a local day [kW]; None when off."""
        quantile = self.cfg.planner.peak_quantile
        if quantile is None:
            return None
        day = now.tz_convert(self.cfg.zone).date()
        if self.error_q is None or self.error_q[0] != day:
            from ems.forecast.uncertainty import net_error_quantile
            self.error_q = (day, net_error_quantile(self.forecaster, now, quantile, self.hours))
        q = self.error_q[1]
        return None if q is None else pd.Series(q.uplift_kw(now, index, self.cfg.zone), index=index)

    def guard(self, planned: dict[int, Flow], plan_peak_kw: float | None, planned_reserve_kwh: float | None,
              expected_net_kw: np.ndarray | None = None) -> dict[int, Flow]:
        """The daemon's dispatch over the step: the plan's flows (``plan_peak_kw`` None: no plan is
        followed, the fallback rule), the demand guard at the daemon's target against the step's
        actual load (the daemon measures it within seconds), the floors of the daemon's rule, the clamps."""
        sim, t = self.sim, self.sim.t
        have_plan = plan_peak_kw is not None
        attached = sim.attach({v: f.charger for v, f in planned.items()})
        if not attached:
            return {}
        dt_h = sim.span.dt_h
        month = str(self.months[t])
        target_peak_kw = guard_target_kw(plan_peak_kw, sim.month_peak_kw.get(month, 0.0), self.cfg.grid.import_limit_kw,
                                         self.cfg.daemon.peak_guard_margin_kw)
        cars = [self.car(v, c) for v, c in attached.items()]
        units = [self.unit(v, c) for v, c in attached.items()]
        base = float(sim.span.load_kw[t] - sim.span.pv_kw[t])
        elapsed = hours_into_window(sim.span.index[t], self.cfg.tariff.zone)   # [h] into the window
        inp = DispatchInput(units, {u.charger_id: UnitRules(car.min_kwh) for u, car in zip(units, cars)}, base,
                            WindowMeter(sim.window_import_kwh(), elapsed), target_peak_kw,
                            {self.cfg.chargers[f.charger].id: (f.charge_kw, f.discharge_kw) for f in planned.values()}
                            if have_plan else None,
                            vehicle_export_allowed=self.cfg.grid.vehicle_export_allowed,
                            import_limit_kw=self.cfg.grid.import_limit_kw)
        net = None
        if expected_net_kw is not None and self.cfg.tariff.basic.kind == "demand":
            net = [float(x) for x in expected_net_kw]
        result = peak_aware_dispatch(inp, cars, self.reserve_kwh(have_plan, planned_reserve_kwh), net, dt_h)
        if result.refill_over_kw > 1e-6:
            self.refill_steps.append(t)
        by_id = {sp.charger_id: sp for sp in result.setpoints}
        out = {}
        for (v, c), unit in zip(attached.items(), units):
            f = planned.get(v, Flow(c, 0.0, 0.0))
            planned_end = sim.soc[v] + (sim.eta_c[c] * f.charge_kw - f.discharge_kw / sim.eta_d[c]) * dt_h
            sp = by_id[unit.charger_id]
            out[v] = Flow(c, sp.charge_kw, sp.discharge_kw,
                          min(departure_floor_kwh(unit, result.rules[unit.charger_id]), planned_end))
        return out


def controller(name: str, cfg: SiteConfig, sim: SiteSim, forecaster=None) -> Controller:
    """The controller for strategy ``name`` (one of STRATEGIES)."""
    if name == "building":
        return Building(cfg, sim)
    if name == "none":
        return NoV2H(cfg, sim)
    if name == "rule":
        return Rule(cfg, sim)
    if name == "oracle":
        return Oracle(cfg, sim)
    if name == "mpc":
        return Mpc(cfg, sim, forecaster)
    raise ValueError(f"unknown strategy {name!r}; one of {STRATEGIES}")
