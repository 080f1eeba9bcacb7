"""Dispatch: one tick (:meth:`Dispatcher.tick`): observe, decide, write, record.

The decision itself is :func:`ems.dispatch.peak_aware_dispatch` (the rule the study shares); this
module gathers its inputs from the other sections: the plan step in force (or none: the safe
rule), the window average the demand guard holds, each reachable unit's state with the plugged
car's floor and departure, the outage reserve, and the building's expected import per step (the
refill headroom). The setpoints go out through :class:`~ems.daemon.links.Links` (the adapter clamps
again) and one telemetry row per unit goes to the store, then the restart state.

A car whose unit's SOC is not believed (None after the links' reading guard) is never discharged;
it is charged toward its departure target from the tracker's last good SOC carried forward (or,
never seen, from its minimum), so it is never stranded.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd

from adapters.convention import soc_kwh, soc_pct
from ems.daemon.host import Host
from ems.daemon.links import Links
from ems.daemon.overrides import Overrides
from ems.daemon.plans import PlanKeeper
from ems.daemon.readings import MeterQuality
from ems.daemon.tracker import Tracker
from ems.dispatch import (REFILL_HOURS, DispatchInput, DispatchResult, PluggedCar, Setpoint, UnitRules, UnitState,
                          WindowMeter, guard_target_kw, peak_aware_dispatch, reserve_to_hold_kwh)


class Dispatcher:
    """Dispatch ticks over the links, the tracker and the plan in force; caches the expected import per step."""

    def __init__(self, host: Host, links: Links, tracker: Tracker, plans: PlanKeeper, overrides: Overrides):
        self.host = host
        self.links = links
        self.tracker = tracker
        self.plans = plans
        self.overrides = overrides
        self._net_cache: tuple[tuple, np.ndarray] | None = None   # (step, origin) -> expected import per step

    async def tick(self, now: pd.Timestamp) -> list[Setpoint]:
        """One dispatch tick at ``now``. Device faults never raise. The caller holds the daemon's I/O lock."""
        host, tr, plans = self.host, self.tracker, self.plans
        reading = await self.links.read_all()
        tr.observe(now, reading, self.links.units, meter=self.links.meter_quality)
        self.overrides.expire(now)
        plans.forecasts.learning.observe(now, reading, self.links.units, self.links.meter_quality, tr.grid_up)
        cfg = host.cfg   # after the reads: a config reload may have run while they were awaited
        plan = plans.plan
        if plan is not None and plan.unusable is None:
            reason = plans.unusable(plan, now)
            if reason is not None:
                plan.unusable = reason
        following = plan is not None and plan.unusable is None and plan.mode == "normal"
        if plan is None:
            plans.set_fallback(now, "no plan yet")
        elif plan.unusable is not None:
            plans.set_fallback(now, plan.unusable)
        row = plan.row(now) if following and plan is not None else None
        target = self.guard_target_kw(now)
        states, rules, cars, reserve, boosting = self._unit_inputs(now, following)
        site_kw = (reading.import_kw - reading.export_kw) if reading is not None else \
            sum(s.charge_kw - s.discharge_kw for s in states)
        planned = None
        if row is not None:
            planned = {u.charger.id: (float(row[f"{u.charger.id}_charge_kw"]), float(row[f"{u.charger.id}_discharge_kw"]))
                       for u in self.links.units}
            planned.update({cid: (math.inf, 0.0) for cid in boosting})   # a boost: full power (clamped to the ratings)
        tick_h = host.dispatch_interval_s / 3600
        window = tr.window
        inp = DispatchInput(states, rules, site_kw, WindowMeter(window.current.import_kwh if window.current else 0.0,
                                                                window.elapsed_h(now)),
                            target, planned, grid_up=tr.grid_up,
                            vehicle_export_allowed=cfg.grid.vehicle_export_allowed,
                            import_limit_kw=cfg.grid.import_limit_kw, tick_h=tick_h)
        net = self._expected_net_kw(now) if cfg.tariff.basic.kind == "demand" else None
        result = peak_aware_dispatch(inp, cars, reserve, None if net is None else net.tolist(),
                                     cfg.planner.step_minutes / 60) if states else DispatchResult([])
        caps = {car.charger_id: car.capacity_kwh for car in cars}
        floor_pct = {cid: soc_pct(result.rules[cid].floor_kwh, cap) for cid, cap in caps.items()}
        setpoints = [replace(sp, reason="boost") if sp.charger_id in boosting and sp.reason in ("plan", "fallback") else sp
                     for sp in result.setpoints]
        if window.current is not None:
            window.current.note(target, plan.peak_kw if following and plan is not None else None,
                                result.guard_short, tr.grid_up, result.refill_over_kw > 1e-6)
        if reading is not None and self.links.meter_quality is MeterQuality.GOOD:   # never from a held value
            tr.check_miss(now, site_kw - sum(s.charge_kw - s.discharge_kw for s in states), row, tick_h)
        await self.links.write(setpoints, floor_pct)
        self._record(now, setpoints, site_kw)
        return setpoints

    def guard_target_kw(self, now: pd.Timestamp) -> float:
        """The window average the guard holds [kW] (:func:`ems.dispatch.guard_target_kw`, with
        ``daemon.peak_guard_margin_kw``), or an operator's peak target (as given, within the import limit)."""
        cfg, plan = self.host.cfg, self.plans.plan
        manual = self.overrides.peak_target_kw(now)
        if manual is not None:
            return min(manual, cfg.grid.import_limit_kw)
        month = self.tracker.month_of(now)
        month_peak = self.host.store.month_peaks().get(month, 0.0)
        plan_peak = plan.result.outcome.peak_in(month) if plan is not None and plan.mode == "normal" else None
        return guard_target_kw(plan_peak, month_peak, cfg.grid.import_limit_kw, cfg.daemon.peak_guard_margin_kw)

    def _reserve_kwh(self, now: pd.Timestamp, following_plan: bool) -> float:
        """Outage reserve to hold in the plugged cars now [kWh] (:func:`ems.dispatch.reserve_to_hold_kwh`)."""
        p, planned = self.plans.plan, None
        if p is not None and p.reserve_kwh is not None and now < p.end():
            planned = float(p.reserve_kwh[min(p.step_of(now), len(p.reserve_kwh) - 1)])
        cfg = self.host.cfg
        o = cfg.outage
        held = reserve_to_hold_kwh(o.mode == "hard", following_plan, planned, cfg.load.critical_kw, o.reserve_hours)
        raised = self.overrides.reserve(now)
        if raised is not None:   # an operator's reserve: held whatever the mode; the plan's figure once it was made with it
            known = p is not None and raised.id in p.overrides
            held = max(held, reserve_to_hold_kwh(True, following_plan, planned if known else None, cfg.load.critical_kw,
                                                 raised.spec.hours))   # type: ignore[union-attr]
        return held

    def _expected_net_kw(self, now: pd.Timestamp) -> np.ndarray | None:
        """The building's expected import (forecast load less forecast PV) per plan step from this
        step for a day [kW] (the current step's is replaced by the measurement in
        :func:`ems.dispatch.peak_aware_dispatch`); None without a forecast. Cached per step."""
        forecasts = self.plans.forecasts
        fc = forecasts.forecast
        if fc is None:
            return None
        start = forecasts.step_start(now)
        key = (start, forecasts.origin)
        if self._net_cache is None or self._net_cache[0] != key:
            net = (fc.load_kw - fc.pv_kw).loc[start:start + pd.Timedelta(hours=REFILL_HOURS)]
            self._net_cache = (key, net.to_numpy(dtype=float)[:-1] if len(net) > 1 else net.to_numpy(dtype=float))
        return self._net_cache[1]

    def _unit_inputs(self, now: pd.Timestamp, following_plan: bool) -> tuple[list[UnitState], dict[str, UnitRules],
                                                                             list[PluggedCar], float, set[str]]:
        """Dispatch inputs of every reachable unit: their states, each unit's floor (the driver's
        minimum), the plugged cars with their departures and the outage reserve to share among them
        [kWh] (:func:`ems.dispatch.peak_aware_dispatch` shares it with :func:`ems.dispatch.share_floors`,
        the rule the study shares), and the units boosting (a car charged now to an operator's target:
        needed at once, so at full power and never cut by the guard). The overrides in force apply
        here (:mod:`ems.daemon.overrides`): departures, no discharge, boosts."""
        states, rules, cars, boosting = [], {}, [], set()
        for u in self.links.units:
            s = u.state
            if s is None:
                continue
            c = u.charger
            v = self.tracker.vehicle_on(u, s)
            cap = (v.capacity_kwh if v is not None else s.capacity_kwh) or 0.0
            min_kwh = v.min_soc_kwh if v is not None else soc_kwh(s.soc_min_pct or 0.0, cap)
            vmax_c = v.max_charge_kw if v is not None and v.max_charge_kw is not None else math.inf
            vmax_d = v.max_discharge_kw if v is not None and v.max_discharge_kw is not None else math.inf
            if s.soc_pct is not None:
                soc, max_d = soc_kwh(s.soc_pct, cap), min(c.max_discharge_kw, s.max_discharge_kw, vmax_d)
            else:   # SOC not believed: no discharge; charge from the last good SOC carried forward
                soc, max_d = self.tracker.soc_kwh.get(v.id, min_kwh) if v is not None else min_kwh, 0.0
            if v is not None and self.overrides.no_discharge(v.id, now):
                max_d = 0.0
            ok = s.plugged and cap > 0 and (s.soc_pct is not None or v is not None)
            unit = UnitState(c.id, ok, soc, min(c.max_charge_kw, s.max_charge_kw, vmax_c), max_d,
                             c.charge_efficiency, c.discharge_efficiency,
                             s.charge_kw, s.discharge_kw)
            states.append(unit)
            rules[c.id] = UnitRules(min_kwh)
            if ok:
                target, hours = 0.0, math.inf
                dep = self.overrides.departure(v, now) if v is not None else None
                if dep is not None:   # one tick less: what this tick discharges cannot be charged back within it
                    target, hours = dep[0], max(dep[1] - self.host.dispatch_interval_s / 3600, 0.0)
                boost = self.overrides.boost_kwh(v, now) if v is not None else None
                if boost is not None and soc < boost - 1e-6:
                    target, hours = max(target, boost), 0.0
                    boosting.add(c.id)
                cars.append(PluggedCar(c.id, soc, min_kwh, cap, unit.discharge_efficiency, target, hours,
                                       unit.max_charge_kw, unit.charge_efficiency, unit.max_discharge_kw))
        return states, rules, cars, self._reserve_kwh(now, following_plan), boosting

    def _record(self, now: pd.Timestamp, setpoints: list[Setpoint], site_kw: float) -> None:
        """Telemetry: one row per unit (unreachable units too), then the restart state."""
        sp = {s.charger_id: s for s in setpoints}
        rows = []
        stats = self.host.stats
        stats.last_tick = now
        stats.unit_seen.update({u.charger.id: now for u in self.links.units if u.state is not None})
        tick_h = self.host.dispatch_interval_s / 3600
        for u in self.links.units:
            s, p = u.state, sp.get(u.charger.id)
            v = self.tracker.vehicle_on(u, s) if s is not None else None
            soc = None if s is None or v is None or s.soc_pct is None else soc_kwh(s.soc_pct, v.capacity_kwh)
            if s is not None:
                stats.charged_kwh += s.charge_kw * tick_h
                stats.discharged_kwh += s.discharge_kw * tick_h
            rows.append({"device": u.charger.id, "plugged": None if s is None else s.plugged, "soc_kwh": soc,
                         "charge_kw": None if s is None else s.charge_kw,
                         "discharge_kw": None if s is None else s.discharge_kw,
                         "setpoint_charge_kw": p.charge_kw if p else None,
                         "setpoint_discharge_kw": p.discharge_kw if p else None,
                         "site_import_kw": site_kw, "grid_up": self.tracker.grid_up,
                         "reason": (p.reason if p else "unreachable") if s is not None else "unreachable"})
        self.host.store.record_telemetry(now, rows)
        self.tracker.persist(now)
