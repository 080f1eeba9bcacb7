"""Checks a schedule against the problem before anyone acts on it.

Whatever produced the schedule (LP, MILP, repair, fallback rule), :func:`violations` recomputes
every physical and contractual rule from the arrays and lists what is broken. An empty list is
what lets a plan out of the planner.
"""

from __future__ import annotations

import math

import numpy as np

from models.data import PlanProblem, export_cap_kw, import_cap_kw, pair_charge_cap_kw, pair_discharge_cap_kw, pairs
from models.solution import Values, reserve_held_kwh

TOL_KW = 1e-5     # power: 0.01 W, far below any meter's resolution, far above HiGHS's 1e-7 feasibility tolerance
#: how far a checked schedule's energies (SOC recomputed from the flows, SOC limits, the held outage
#: reserve) may stray before verification flags it [kWh]: recomputing SOC over up to a month of
#: steps accumulates round-off
VERIFY_KWH = 1e-4
ACTIVE_KW = 1e-6  # a flow below this counts as off when checking "one direction at a time"


def soc_trajectory(problem: PlanProblem, ch: np.ndarray, dis: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """SOC implied by the flows [kWh] (V x T+1): the recursion of :func:`models.formulation.add_soc`.

    ``fixed`` (V x T+1) holds the known SOC at the start and at arrivals with a known SOC, NaN elsewhere.
    """
    ps = pairs(problem)
    V, T = len(problem.vehicles), problem.n_steps
    delta = np.zeros((V, T))
    for i, p in enumerate(ps):
        delta[p.v] += (p.eta_c * ch[i] - dis[i] / p.eta_d) * problem.dt_h
    soc = np.zeros((V, T + 1))
    for vi, v in enumerate(problem.vehicles):   # floats: a loop over T
        known, step, trips = fixed[vi].tolist(), delta[vi].tolist(), v.arrival_trip_kwh.tolist()
        row = [v.soc0_kwh]
        for k in range(T):
            trip = trips[k + 1] if k + 1 < T else 0.0
            row.append(known[k + 1] if not math.isnan(known[k + 1]) else row[k] + step[k] - trip)
        soc[vi] = row
    return soc


def _one_direction(problem: PlanProblem, v: Values) -> list[str]:
    """No pair charges and discharges at once; one car per charger; one charger per car."""
    out = []
    ps = pairs(problem)
    on_c = v.ch > ACTIVE_KW
    on_d = v.dis > ACTIVE_KW
    both = np.argwhere(on_c & on_d)
    for i, t in both[:3]:
        p = ps[i]
        out.append(f"step {problem.label(int(t))}: {problem.vehicles[p.v].id} on {problem.chargers[p.c].id} "
                   f"charges {v.ch[i, t]:.4f} kW and discharges {v.dis[i, t]:.4f} kW at once")
    active = (on_c | on_d).astype(int)
    for ci, c in enumerate(problem.chargers):
        rows = [i for i, p in enumerate(ps) if p.c == ci]
        if rows and np.any(active[rows].sum(axis=0) > 1):
            t = int(np.argmax(active[rows].sum(axis=0) > 1))
            out.append(f"step {problem.label(t)}: more than one car on charger {c.id}")
    for vi, veh in enumerate(problem.vehicles):
        rows = [i for i, p in enumerate(ps) if p.v == vi]
        if len(rows) > 1 and np.any(active[rows].sum(axis=0) > 1):
            t = int(np.argmax(active[rows].sum(axis=0) > 1))
            out.append(f"step {problem.label(t)}: car {veh.id} on more than one charger")
    return out


def _bounds(problem: PlanProblem, v: Values, import_soft: bool) -> list[str]:
    """Every flow within its bounds."""
    out = []
    ps = pairs(problem)
    ch_cap = np.array([pair_charge_cap_kw(problem, p) for p in ps]).reshape(len(ps), -1)
    dis_cap = np.array([pair_discharge_cap_kw(problem, p) for p in ps]).reshape(len(ps), -1)
    imp_cap = import_cap_kw(problem)
    if import_soft:
        imp_cap = np.where(problem.outage_mask, 0.0, np.inf)
    checks = {
        "import": (v.imp, imp_cap), "export": (v.exp, export_cap_kw(problem)), "curtailment": (v.curt, problem.pv_kw),
        "unserved load": (v.uns, np.where(problem.outage_mask, problem.load_kw, 0.0)),
        "charge": (v.ch, ch_cap), "discharge": (v.dis, dis_cap),
    }
    for name, (x, cap) in checks.items():
        if x.size and (np.any(x < -TOL_KW) or np.any(x > cap + TOL_KW)):
            idx = np.unravel_index(int(np.argmax(np.maximum(-x, x - cap))), x.shape)
            t = int(idx[-1])
            limit = float(np.broadcast_to(cap, x.shape)[idx])
            out.append(f"step {problem.label(t)}: {name} {float(x[idx]):.4f} kW outside 0..{limit:.4f} kW")
    if not problem.vehicle_export_allowed:
        bad = np.flatnonzero(v.exp + v.curt > problem.pv_kw + TOL_KW)
        if bad.size:
            out.append(f"step {problem.label(int(bad[0]))}: export plus curtailment exceed PV (vehicle energy exported)")
    return out


def violations(problem: PlanProblem, values: Values, soc_lb: np.ndarray, soc_ub: np.ndarray,
               fixed: np.ndarray, reserve_kwh: np.ndarray, reserve_hard: bool,
               import_soft: bool = False, grid_direction: bool = False) -> list[str]:
    """Everything ``values`` breaks, in words (empty = a valid plan).

    Checks: power balance each step; bounds of every flow; export only from PV (unless allowed);
    one direction per pair, one car per charger, one charger per car; import and export not at
    once when ``grid_direction``; SOC equal to the recursion of the flows, within ``soc_lb``..``soc_ub``
    (which carry min SOC, targets, ceilings); the reserve when ``reserve_hard``.
    """
    out: list[str] = []
    total = values.dis.sum(axis=0) - values.ch.sum(axis=0) if values.ch.size else np.zeros(problem.n_steps)
    gap = values.imp - values.exp + total + problem.pv_kw - values.curt + values.uns - problem.load_kw
    bad = np.flatnonzero(np.abs(gap) > TOL_KW)
    if bad.size:
        t = int(bad[0])
        out.append(f"step {problem.label(t)}: power balance off by {gap[t]:.6f} kW ({bad.size} step(s))")
    out += _bounds(problem, values, import_soft)
    out += _one_direction(problem, values)
    if grid_direction:
        both = np.flatnonzero((values.imp > ACTIVE_KW) & (values.exp > ACTIVE_KW))
        if both.size:
            out.append(f"step {problem.label(int(both[0]))}: imports and exports at once")
    soc = soc_trajectory(problem, values.ch, values.dis, fixed)
    drift = np.abs(soc - values.soc)
    if drift.size and drift.max() > VERIFY_KWH:
        vi, k = np.unravel_index(int(np.argmax(drift)), drift.shape)
        out.append(f"{problem.vehicles[vi].id} at {problem.label(int(k))}: SOC {values.soc[vi, k]:.4f} kWh does not follow "
                   f"from the flows ({soc[vi, k]:.4f} kWh)")
    for vi, veh in enumerate(problem.vehicles):
        low = np.flatnonzero(soc[vi] < soc_lb[vi] - VERIFY_KWH)
        if low.size:
            k = int(low[0])
            out.append(f"{veh.id} at {problem.label(k)}: SOC {soc[vi, k]:.3f} kWh below its required {soc_lb[vi, k]:.3f} kWh")
        high = np.flatnonzero(soc[vi] > soc_ub[vi] + VERIFY_KWH)
        if high.size:
            k = int(high[0])
            out.append(f"{veh.id} at {problem.label(k)}: SOC {soc[vi, k]:.3f} kWh above its ceiling {soc_ub[vi, k]:.3f} kWh")
    if reserve_hard and problem.vehicles:
        held = reserve_held_kwh(problem, soc)
        short = np.flatnonzero(held < reserve_kwh - VERIFY_KWH)
        if short.size:
            t = int(short[0])
            out.append(f"step {problem.label(t)}: reserve {held[t]:.3f} kWh below the required {reserve_kwh[t]:.3f} kWh")
    return out
