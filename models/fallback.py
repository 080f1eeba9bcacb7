"""A safe rule-based schedule for when no solver answer can be used.

Rules, step by step: never discharge while the grid is up (so no car goes below its reserve or its
minimum because of this plan); charge each plugged-in car at full power, within the import limit,
until it holds the highest lower bound still ahead in its stay (its departure target, its minimum
SOC); while the grid is down, discharge the fullest cars (above their minimum, within the
islanded rating) to carry the critical load and leave the rest unserved. The grid then takes the
difference: import what is missing, export the PV surplus within its cap, curtail the rest.
"""

from __future__ import annotations

import numpy as np

from models.data import PlanProblem, export_cap_kw, import_cap_kw, pair_charge_cap_kw, pair_discharge_cap_kw, pairs
from models.requirements import Requirements
from models.solution import Values


def _stay_goal(problem: PlanProblem, lb: np.ndarray, vi: int, t: int) -> float:
    """Highest lower bound of vehicle vi from boundary t+1 to the end of its current stay [kWh]."""
    plugged = problem.vehicles[vi].plugged
    end = t
    while end < problem.n_steps and plugged[end]:
        end += 1
    return float(lb[vi, t + 1:end + 1].max(initial=-np.inf))


def rule_based(problem: PlanProblem, req: Requirements) -> Values:
    """The fallback schedule (see the module docstring); SOC follows the same recursion as the model."""
    T, dt = problem.n_steps, problem.dt_h
    ps = pairs(problem)
    V = len(problem.vehicles)
    lb = req.soc_lb()
    ch_cap = np.array([pair_charge_cap_kw(problem, p) for p in ps]).reshape(len(ps), T)
    dis_cap = np.array([pair_discharge_cap_kw(problem, p) for p in ps]).reshape(len(ps), T)
    imp_cap, exp_cap = import_cap_kw(problem), export_cap_kw(problem)
    outage = problem.outage_mask
    soc = np.zeros((V, T + 1))
    soc[:, 0] = [v.soc0_kwh for v in problem.vehicles]
    ch, dis = np.zeros((len(ps), T)), np.zeros((len(ps), T))
    imp, exp, curt, uns = (np.zeros(T) for _ in range(4))
    for t in range(T):
        net = problem.load_kw[t] - problem.pv_kw[t]
        busy_c, busy_v = set(), set()
        if outage[t]:
            deficit = max(0.0, net)
            for i in sorted(range(len(ps)), key=lambda i: -soc[ps[i].v, t]):
                p = ps[i]
                if deficit <= 0 or p.c in busy_c or p.v in busy_v or dis_cap[i, t] <= 0:
                    continue
                room = max(0.0, soc[p.v, t] - problem.vehicles[p.v].min_kwh) * p.eta_d / dt
                dis[i, t] = min(deficit, dis_cap[i, t], room)
                if dis[i, t] > 0:
                    deficit -= dis[i, t]
                    busy_c.add(p.c)
                    busy_v.add(p.v)
            uns[t] = deficit
        headroom = max(0.0, imp_cap[t] - net + dis[:, t].sum() + uns[t])  # charging the import limit (or PV surplus) allows
        order = sorted(range(len(ps)), key=lambda i: _stay_goal(problem, lb, ps[i].v, t) - soc[ps[i].v, t], reverse=True)
        for i in order:
            p = ps[i]
            if p.c in busy_c or p.v in busy_v or ch_cap[i, t] <= 0:
                continue
            need = _stay_goal(problem, lb, p.v, t) - soc[p.v, t]
            if need <= 0:
                continue
            ch[i, t] = min(ch_cap[i, t], need / (p.eta_c * dt), headroom)
            if ch[i, t] > 0:
                headroom -= ch[i, t]
                busy_c.add(p.c)
                busy_v.add(p.v)
        x = net + ch[:, t].sum() - dis[:, t].sum() - uns[t]
        if x >= 0:
            imp[t] = x
        else:
            exp[t] = min(-x, exp_cap[t])
            curt[t] = -x - exp[t]
        for vi, v in enumerate(problem.vehicles):
            delta = sum((p.eta_c * ch[i, t] - dis[i, t] / p.eta_d) * dt for i, p in enumerate(ps) if p.v == vi)
            known = req.fixed[vi, t + 1]
            trip = v.arrival_trip_kwh[t + 1] if t + 1 < T else 0.0
            soc[vi, t + 1] = known if not np.isnan(known) else soc[vi, t] + delta - trip
    return Values(imp=imp, exp=exp, curt=curt, uns=uns, ch=ch, dis=dis, soc=soc, res_short=np.zeros(T),
                  over=np.maximum(0.0, imp - imp_cap))
