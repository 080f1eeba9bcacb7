"""A schedule as arrays (what the solver or the fallback rule decided) and its evaluation.

:class:`Values` holds the decisions; :func:`costs` prices them from the problem's own data (not
from the solver's objective), so the solver's figure can be checked against an independent sum,
and :func:`demand_levels` recomputes peaks and contract kW from the import alone, the way the
utility's meter would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.data import PlanProblem, StaySegment, pairs, stay_segments
from models.requirements import vehicle_discharge_efficiency


@dataclass
class Values:
    """Decisions of a plan [kW per step; SOC in kWh per boundary].

    ``ch``/``dis`` are per pair (P x T), ``soc`` per vehicle (V x T+1); ``res_short`` is the reserve
    shortfall [kWh] per step; ``over`` import above the limit [kW] (soft model only).
    """

    imp: np.ndarray
    exp: np.ndarray
    curt: np.ndarray
    uns: np.ndarray
    ch: np.ndarray
    dis: np.ndarray
    soc: np.ndarray
    res_short: np.ndarray
    over: np.ndarray | None = None

    def cleaned(self, tol: float = 1e-9) -> Values:
        """Solver round-off removed: values within ``tol`` of zero become exactly zero."""
        def c(a: np.ndarray | None) -> np.ndarray | None:
            if a is None:
                return None
            a = np.where(np.abs(a) < tol, 0.0, a)
            return a
        flows = {k: np.maximum(c(getattr(self, k)), 0.0) for k in ("imp", "exp", "curt", "uns", "ch", "dis", "res_short")}
        return Values(soc=self.soc.copy(), over=None if self.over is None else np.maximum(c(self.over), 0.0), **flows)


@dataclass
class Costs:
    """The plan's cost in parts [currency]; ``objective`` is what the model minimises.

    objective = energy + demand + ratchet + hedge + wear + settlement + penalty - export_credit - terminal_value.
    ``demand`` is the basic charge of the horizon's own billing months (as their bills will show
    it); ``ratchet`` what a new peak adds to the later months it holds the contract for;
    ``settlement`` what the site pays the drivers of driver-owned cars for the energy it takes from
    them (:func:`settlement_cost`); ``terminal_value`` the value of the energy added to the
    site's own cars; ``hedge`` the price of the near-term peak above this month's metered peak
    (:func:`hedge_cost`: a planning price, on no bill).
    """

    energy: float
    export_credit: float
    demand: float
    ratchet: float
    wear: float
    penalty: float
    terminal_value: float
    peak_kw: float
    unserved_kwh: float
    month_peaks_kw: dict[str, float] = field(default_factory=dict)
    settlement: float = 0.0
    hedge: float = 0.0

    @property
    def objective(self) -> float:
        """The figure the model minimises."""
        return (self.energy + self.demand + self.ratchet + self.hedge + self.wear + self.settlement + self.penalty
                - self.export_credit - self.terminal_value)


def segment_kwh_out(problem: PlanProblem, values: Values, seg: StaySegment) -> float:
    """Net battery energy taken from the car over one stay segment [kWh] (negative when added)."""
    out = 0.0
    for i, p in enumerate(pairs(problem)):
        if p.v == seg.v:
            out += float((values.dis[i, seg.t0:seg.t1] / p.eta_d - p.eta_c * values.ch[i, seg.t0:seg.t1]).sum()) * problem.dt_h
    return out


def settlement_cost(problem: PlanProblem, values: Values) -> float:
    """What the site pays the drivers of driver-owned cars for the energy it takes [currency]: per
    stay, price x (energy taken before the plan + net battery energy taken in the horizon), where
    positive. Energy a stay ends up with on balance earns the site nothing here: the plan never
    sells a driver a charge the driver did not ask for (a departure target above the arrival
    energy is the driver's own need)."""
    return float(sum(max(0.0, s.price * (s.before_kwh + segment_kwh_out(problem, values, s))) for s in stay_segments(problem)))


def window_kw(problem: PlanProblem, imp: np.ndarray) -> np.ndarray:
    """Average import of each demand window, metered part before the plan included [kW]."""
    d = problem.demand
    kwh = np.bincount(d.window_of_step, weights=imp * problem.dt_h, minlength=d.n_windows) + d.window_pre_kwh
    return kwh / d.window_hours


def demand_levels(problem: PlanProblem, imp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Peak of each horizon month and contract kW of each billed month implied by ``imp`` [kW]."""
    d = problem.demand
    w = window_kw(problem, imp)
    peak = d.month_floor_kw.copy()
    np.maximum.at(peak, d.month_of_window, w)
    linked = np.where(d.links, peak.reshape(1, -1), 0.0).max(axis=1)
    return peak, np.maximum(d.held_kw, linked)


def block_cost(problem: PlanProblem, imp: np.ndarray) -> float:
    """Energy charge of the import under increasing blocks, filling each month's remaining room [currency]."""
    b = problem.blocks
    kwh = np.bincount(b.month_of_step, weights=imp * problem.dt_h, minlength=b.room_kwh.shape[0])
    total = 0.0
    for n, e in enumerate(kwh):
        left = float(e)
        for j, rate in enumerate(b.rates):
            take = left if j == b.rates.size - 1 else min(left, float(b.room_kwh[n, j]))
            total += take * float(rate)
            left -= take
    return total


def near_peak_kw(problem: PlanProblem, imp: np.ndarray) -> float | None:
    """The near-term peak: the highest average of the hedge windows, at least this month's
    metered peak [kW] (None when the plan has no hedge)."""
    d = problem.demand
    if d is None or not d.hedged:
        return None
    return max(float(d.month_floor_kw[0]), float(window_kw(problem, imp)[d.hedge_windows].max()))


def hedge_cost(problem: PlanProblem, imp: np.ndarray) -> float:
    """The near-term peak above this month's metered peak x the hedge rate [currency]."""
    near = near_peak_kw(problem, imp)
    return 0.0 if near is None else problem.demand.hedge_rate_per_kw * (near - float(problem.demand.month_floor_kw[0]))


def costs(problem: PlanProblem, values: Values, penalties: dict[str, float] | None = None,
          soft_shortfalls: dict[str, float] | None = None) -> Costs:
    """Price a plan from the problem's data (independently of the solver's objective).

    ``soft_shortfalls`` (family -> kWh or kW-h short) with ``penalties`` (family -> price) add the
    soft model's penalties.
    """
    dt = problem.dt_h
    energy = float(np.dot(problem.import_price, values.imp) * dt)
    if problem.blocks is not None:
        energy += block_cost(problem, values.imp)
    credit = float(np.dot(problem.export_price, values.exp) * dt)
    wear = 0.0
    for i, p in enumerate(pairs(problem)):
        wear += problem.vehicles[p.v].wear_cost_per_kwh * float(values.dis[i].sum()) * dt / p.eta_d
    res_price = problem.reserve_penalty_per_kwh_h
    if penalties and "reserve" in penalties:
        res_price = penalties["reserve"]
    penalty = float(values.uns.sum() * dt * problem.value_of_lost_load_per_kwh + values.res_short.sum() * dt * res_price)
    for fam, amount in (soft_shortfalls or {}).items():
        if fam != "reserve":
            penalty += (penalties or {})[fam] * amount
    terminal = problem.terminal_value_per_kwh * float(sum(values.soc[v, -1] - veh.soc0_kwh
                                                           for v, veh in enumerate(problem.vehicles)
                                                           if not veh.driver_owned))
    demand = ratchet = 0.0
    months: dict[str, float] = {}
    peak_kw = 0.0
    if problem.demand is not None:
        d = problem.demand
        peaks, contract = demand_levels(problem, values.imp)
        demand = d.rate_per_kw_month * float(contract[d.in_horizon].sum())
        ratchet = d.rate_per_kw_month * float((contract - d.held_kw)[~d.in_horizon].sum())
        months = {d.labels[i]: float(peaks[i]) for i in range(d.n_months)}
        peak_kw = float(window_kw(problem, values.imp).max(initial=0.0))
    else:
        peak_kw = float(values.imp.max(initial=0.0))
    return Costs(energy, credit, demand, ratchet, wear, penalty, terminal, peak_kw,
                 float(values.uns.sum() * dt), months, settlement_cost(problem, values), hedge_cost(problem, values.imp))


def reserve_held_kwh(problem: PlanProblem, soc: np.ndarray) -> np.ndarray:
    """Energy above the minimum in the cars plugged in during each step, at its end, through discharge efficiency [kWh]."""
    eta = vehicle_discharge_efficiency(problem)
    held = np.zeros(problem.n_steps)
    for vi, v in enumerate(problem.vehicles):
        held += np.where(v.plugged, eta[vi] * (soc[vi, 1:] - v.min_kwh), 0.0)
    return held
