"""The V2H/V2B scheduling model in pyomo: one builder per constraint family.

The independent reference statement of the model. Production plans are built by
:mod:`models.direct` (the same variables and rows as a HiGHS matrix, the default ``highs_direct``
interface of :class:`models.solve.Session`); this module is what the property tests compare it
with, and what the pyomo interfaces (``appsi_highs``, ``highs``) solve when selected. The numbers of
both (:func:`param_values`, :func:`soft_penalties`) and the structure key are defined here once.

Indices: steps t in T (0..T-1), boundaries k in K (0..T), pairs p in P (a vehicle on a charger it
may use), vehicles v in V, chargers c in C, demand windows w in W, horizon months m in M, billed
months b in B, block months n and blocks j (block tariffs). Units: kW, kWh, hours, currency.

Every number that changes from one plan to the next is a pyomo ``Param``. With ``mutable=True``
they are mutable, so a persistent solver can take new values without a rebuild
(:class:`models.solve.Session`); with ``mutable=False`` they are folded into the expressions as
constants, which builds faster for one-shot models. :func:`param_values` computes all of them in
one place for both cases.

Soft families (``soft``): requirements turned into rows with a non-negative shortfall variable,
priced far above any energy value (:func:`soft_penalties`), used when the hard model is infeasible.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyomo.environ as pe

from models.data import (
    PlanProblem, export_cap_kw, import_cap_kw, needs_grid_direction_binary, pair_charge_cap_kw,
    pair_discharge_cap_kw, pairs, stay_segments,
)
from models.requirements import Requirements, vehicle_discharge_efficiency

SOFT_FAMILIES = ("import", "min_soc", "target", "reserve", "final")


def kwh_value_scale(problem: PlanProblem) -> float:
    """The most one kWh can be worth in this problem [currency/kWh]: a yardstick for penalties.

    Largest import price or export credit, plus the demand charge a kWh can cause (1 kWh in a
    30-minute window is 2 kW of peak, billed in every month it binds), plus the largest wear cost
    and terminal value.
    """
    prices = [abs(problem.import_price).max(initial=0.0), problem.export_price.max(initial=0.0)]
    if problem.blocks is not None:
        prices.append(float(problem.blocks.rates.max(initial=0.0)))
    scale = (max(prices) + problem.terminal_value_per_kwh + max((v.wear_cost_per_kwh for v in problem.vehicles), default=0.0)
             + max((v.settlement_price_per_kwh or 0.0 for v in problem.vehicles), default=0.0))
    d = problem.demand
    if d is not None:
        scale += d.rate_per_kw_month * d.links.shape[0] / float(d.window_hours.min())
    return max(scale, 1.0)


def soft_penalties(problem: PlanProblem) -> dict[str, float]:
    """Penalty per kWh of shortfall (per kWh-hour for import and reserve) of each soft family.

    Ordered so the soft model gives up the least important requirement first: the final SOC
    option, then the reserve, then departure targets (never strand a driver), then the minimum
    SOC, and last the import limit (a breaker). Each is 3-10x the next and 10x above the most a
    kWh can be worth (:func:`kwh_value_scale`), so no saving can buy a shortfall.
    """
    s = 10.0 * kwh_value_scale(problem)
    return {"final": s, "reserve": max(3 * s, problem.reserve_penalty_per_kwh_h), "target": 10 * s,
            "min_soc": 30 * s, "import": 100 * s}


def structure_key(problem: PlanProblem, soft: frozenset[str] = frozenset()) -> tuple:
    """Everything that fixes the model's shape: equal keys mean :func:`update_params` can reuse a model."""
    d = problem.demand
    demand = None if d is None else (d.window_of_step.tobytes(), d.window_hours.tobytes(), d.month_of_window.tobytes(),
                                     d.links.tobytes(), d.in_horizon.tobytes(), d.hedge_windows.tobytes(), d.hedged)
    blocks = None if problem.blocks is None else (problem.blocks.month_of_step.tobytes(), problem.blocks.room_kwh.shape)
    soft_shape = None
    if soft:
        soft_shape = tuple(np.isnan(v.target_kwh).tobytes() for v in problem.vehicles)
    return (problem.n_steps, problem.dt_h, tuple(pairs(problem)), len(problem.vehicles), len(problem.chargers),
            problem.vehicle_export_allowed, needs_grid_direction_binary(problem), demand, blocks,
            problem.reserve_kwh is not None, problem.import_limit_kw.max(), export_cap_kw(problem).max(initial=0.0) > 0,
            problem.final_soc_at_least_initial, frozenset(soft), soft_shape,
            tuple((g.v, g.t0, g.t1, g.price) for g in stay_segments(problem)))


def param_values(problem: PlanProblem, req: Requirements, soft: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Every parameter of the model as arrays shaped like its index (see :func:`build_model`)."""
    dt = problem.dt_h
    ps = pairs(problem)
    outage = problem.outage_mask
    plugged = np.array([v.plugged for v in problem.vehicles], dtype=float).reshape(len(problem.vehicles), -1)
    caps = np.array([v.capacity_kwh for v in problem.vehicles]).reshape(-1, 1)
    mins = np.array([v.min_kwh for v in problem.vehicles])
    eta_d = vehicle_discharge_efficiency(problem)
    reserve = req.reserve_want if "reserve" in soft else req.reserve_kwh
    trips = np.zeros((len(problem.vehicles), problem.n_steps + 1))
    jump = np.zeros_like(trips)
    for vi, v in enumerate(problem.vehicles):
        trips[vi, 1:-1] = v.arrival_trip_kwh[1:]
        sets = ~np.isnan(req.fixed[vi])
        sets[0] = False
        jump[vi, sets] = v.capacity_kwh
    vals: dict[str, Any] = {
        "net_load": problem.load_kw - problem.pv_kw,
        "pv": problem.pv_kw,
        "imp_ub": import_cap_kw(problem),
        "exp_ub": export_cap_kw(problem),
        "uns_ub": np.where(outage, problem.load_kw, 0.0),
        "c_imp": problem.import_price * dt,
        "c_exp": problem.export_price * dt,
        "c_uns": problem.value_of_lost_load_per_kwh * dt,
        "c_res": (soft_penalties(problem)["reserve"] if "reserve" in soft else problem.reserve_penalty_per_kwh_h) * dt,
        "ch_ub": np.array([pair_charge_cap_kw(problem, p) for p in ps]).reshape(len(ps), -1),
        "dis_ub": np.array([pair_discharge_cap_kw(problem, p) for p in ps]).reshape(len(ps), -1),
        "y_ub": np.array([problem.vehicles[p.v].plugged for p in ps], dtype=float).reshape(len(ps), -1),
        "c_wear": np.array([problem.vehicles[p.v].wear_cost_per_kwh * dt / p.eta_d for p in ps]),
        "soc_lb": req.soc_lb(soft),
        "soc_ub": req.soc_ub,
        "trip": trips,
        "jump_max": jump,
        "held_max": plugged * caps,
        "held_rhs": np.where(plugged > 0, -(eta_d * mins).reshape(-1, 1), (eta_d * caps[:, 0]).reshape(-1, 1)),
        "res_rhs": reserve,
        # a soft shortfall can reach the requirement plus what cars below their minimum count negative
        "res_ub": (reserve + (plugged * (eta_d * mins).reshape(-1, 1)).sum(axis=0)
                   if (problem.reserve_soft or "reserve" in soft) else np.zeros_like(reserve)),
        # the terminal value is the site's: a driver-owned car's energy is settled with its driver instead
        "c_term": np.array([0.0 if v.driver_owned else -problem.terminal_value_per_kwh for v in problem.vehicles]),
        "obj_const": problem.terminal_value_per_kwh * sum(v.soc0_kwh for v in problem.vehicles if not v.driver_owned),
    }
    segs = stay_segments(problem)
    if segs:
        vals["settle_rhs"] = np.array([g.price * g.before_kwh for g in segs])
    d = problem.demand
    if d is not None:
        vals["pre_avg"] = d.window_pre_kwh / d.window_hours
        vals["floor"] = d.month_floor_kw
        vals["held"] = d.held_kw
        vals["rate"] = d.rate_per_kw_month
        vals["obj_const"] -= d.rate_per_kw_month * float(d.held_kw[~d.in_horizon].sum())
        if d.hedged:
            vals["hedge_rate"] = d.hedge_rate_per_kw
            vals["obj_const"] -= d.hedge_rate_per_kw * float(d.month_floor_kw[0])
    if problem.blocks is not None:
        vals["room"] = np.where(np.isfinite(problem.blocks.room_kwh), problem.blocks.room_kwh, 0.0)
        vals["c_block"] = problem.blocks.rates
    if soft:
        pen = soft_penalties(problem)
        vals.update({f"pen_{f}": pen[f] for f in SOFT_FAMILIES})
        vals["soft_min"] = np.array([np.full(problem.n_steps + 1, v.min_kwh) for v in problem.vehicles]).reshape(plugged.shape[0], -1)
        vals["soft_target"] = np.array([np.fmin(v.target_kwh, req.soc_ub[i])
                                        for i, v in enumerate(problem.vehicles)]).reshape(plugged.shape[0], -1)
        vals["soft_final"] = np.array([v.soc0_kwh for v in problem.vehicles])
    return vals


def _dict(a: np.ndarray) -> dict:
    """A numpy array as a pyomo initializer {index tuple (or int): value}."""
    a = np.asarray(a, dtype=float)
    if a.ndim == 1:
        return dict(enumerate(a.tolist()))
    return {idx: float(x) for idx, x in np.ndenumerate(a)}


def _param(m: pe.ConcreteModel, name: str, index: tuple, value: Any, mutable: bool) -> None:
    """Declare ``m.<name>`` over ``index`` (empty = scalar) with the given values."""
    if index:
        m.add_component(name, pe.Param(*index, initialize=_dict(value), mutable=mutable, within=pe.Reals))
    else:
        m.add_component(name, pe.Param(initialize=float(value), mutable=mutable, within=pe.Reals))


_INDEX = {  # parameter -> names of its index sets
    "net_load": ("T",), "pv": ("T",), "imp_ub": ("T",), "exp_ub": ("T",), "uns_ub": ("T",), "c_imp": ("T",),
    "c_exp": ("T",), "c_uns": (), "c_res": (), "ch_ub": ("P", "T"), "dis_ub": ("P", "T"), "y_ub": ("P", "T"),
    "c_wear": ("P",), "soc_lb": ("V", "K"), "soc_ub": ("V", "K"), "trip": ("V", "K"), "jump_max": ("V", "K"),
    "held_max": ("V", "T"), "held_rhs": ("V", "T"), "res_rhs": ("T",), "res_ub": ("T",), "c_term": ("V",), "obj_const": (),
    "settle_rhs": ("S",),
    "pre_avg": ("W",), "floor": ("M",), "held": ("B",), "rate": (), "hedge_rate": (), "room": ("N", "J"), "c_block": ("J",),
    "pen_import": (), "pen_min_soc": (), "pen_target": (), "pen_reserve": (), "pen_final": (),
    "soft_min": ("V", "K"), "soft_target": ("V", "K"), "soft_final": ("V",),
}


def _sets(m: pe.ConcreteModel, problem: PlanProblem) -> None:
    """Index sets (see the module docstring)."""
    T = problem.n_steps
    m.T = pe.RangeSet(0, T - 1)
    m.K = pe.RangeSet(0, T)
    m.P = pe.RangeSet(0, len(pairs(problem)) - 1)
    m.V = pe.RangeSet(0, len(problem.vehicles) - 1)
    m.C = pe.RangeSet(0, len(problem.chargers) - 1)
    d = problem.demand
    if d is not None:
        m.W = pe.RangeSet(0, d.n_windows - 1)
        m.M = pe.RangeSet(0, d.n_months - 1)
        m.B = pe.RangeSet(0, d.held_kw.size - 1)
    segs = stay_segments(problem)
    if segs:
        m.S = pe.RangeSet(0, len(segs) - 1)
    if problem.blocks is not None:
        m.N = pe.RangeSet(0, problem.blocks.room_kwh.shape[0] - 1)
        m.J = pe.RangeSet(0, problem.blocks.rates.size - 1)


def add_grid(m: pe.ConcreteModel) -> None:
    """Grid and site flows per step [kW].

    0 <= import[t] <= imp_ub[t] (limit; 0 in an outage), 0 <= export[t] <= exp_ub[t],
    0 <= curtail[t] <= pv[t], 0 <= unserved[t] <= uns_ub[t] (the load, in outage steps only).
    """
    m.imp = pe.Var(m.T, bounds=lambda m, t: (0.0, m.imp_ub[t]))
    m.exp = pe.Var(m.T, bounds=lambda m, t: (0.0, m.exp_ub[t]))
    m.curt = pe.Var(m.T, bounds=lambda m, t: (0.0, m.pv[t]))
    m.uns = pe.Var(m.T, bounds=lambda m, t: (0.0, m.uns_ub[t]))


def add_chargers(m: pe.ConcreteModel, problem: PlanProblem) -> None:
    """Charge and discharge of each pair within ratings, only while plugged in, one direction at a time [kW].

    0 <= ch[p,t] <= ch_ub[p,t] (rating x plugged), 0 <= dis[p,t] <= dis_ub[p,t] (rating, islanded
    rating in an outage, x plugged); binaries yc[p,t], yd[p,t] <= plugged;
    ch[p,t] <= Pc_p * yc[p,t]  and  dis[p,t] <= Pd_p * yd[p,t].
    """
    ps = pairs(problem)
    m.ch = pe.Var(m.P, m.T, bounds=lambda m, p, t: (0.0, m.ch_ub[p, t]))
    m.dis = pe.Var(m.P, m.T, bounds=lambda m, p, t: (0.0, m.dis_ub[p, t]))
    m.yc = pe.Var(m.P, m.T, domain=pe.Binary, bounds=lambda m, p, t: (0, m.y_ub[p, t]))
    m.yd = pe.Var(m.P, m.T, domain=pe.Binary, bounds=lambda m, p, t: (0, m.y_ub[p, t]))
    m.charge_on = pe.Constraint(m.P, m.T, rule=lambda m, p, t: m.ch[p, t] <= ps[p].charge_kw * m.yc[p, t])
    m.discharge_on = pe.Constraint(m.P, m.T, rule=lambda m, p, t: m.dis[p, t] <= ps[p].discharge_kw * m.yd[p, t])


def add_charger_turns(m: pe.ConcreteModel, problem: PlanProblem) -> None:
    """At most one vehicle per charger per step, and never charge and discharge at once.

    sum over pairs p on charger c of (yc[p,t] + yd[p,t]) <= 1;  and for a vehicle allowed on
    several chargers: sum over its pairs of (yc[p,t] + yd[p,t]) <= 1 (one plug at a time).
    """
    ps = pairs(problem)
    on_c = {c: [i for i, p in enumerate(ps) if p.c == c] for c in range(len(problem.chargers))}
    on_v = {v: [i for i, p in enumerate(ps) if p.v == v] for v in range(len(problem.vehicles))}
    m.charger_turn = pe.Constraint(
        [c for c in on_c if on_c[c]], m.T, rule=lambda m, c, t: sum(m.yc[i, t] + m.yd[i, t] for i in on_c[c]) <= 1)
    multi = [v for v in on_v if len(on_v[v]) > 1]
    if multi:
        m.one_plug = pe.Constraint(multi, m.T, rule=lambda m, v, t: sum(m.yc[i, t] + m.yd[i, t] for i in on_v[v]) <= 1)


def add_power_balance(m: pe.ConcreteModel) -> None:
    """Power balance at the site's bus each step [kW].

    import[t] - export[t] + sum_p dis[p,t] - sum_p ch[p,t] - curtail[t] + unserved[t] = load[t] - pv[t]
    """
    m.balance = pe.Constraint(m.T, rule=lambda m, t: m.imp[t] - m.exp[t] + sum(m.dis[p, t] - m.ch[p, t] for p in m.P)
                              - m.curt[t] + m.uns[t] == m.net_load[t])


def add_pv_only_export(m: pe.ConcreteModel) -> None:
    """Export comes from PV only (sites without vehicle export) [kW].

    export[t] + curtail[t] <= pv[t]; together with export[t] <= max(0, pv[t] - load[t]) (a bound,
    :func:`models.data.export_cap_kw`) no discharged energy can leave the site.
    """
    m.pv_export = pe.Constraint(m.T, rule=lambda m, t: m.exp[t] + m.curt[t] <= m.pv[t])


def grid_direction_limits(problem: PlanProblem, soft: frozenset[str] = frozenset()) -> tuple[float, float]:
    """The most import and export can be in any step [kW]: the constants of the grid-direction rows.

    Export: its largest cap. Import: its largest limit; when import is soft (no limit outside
    outages) at least the load plus every pair charging at its full rating, the most the site can
    draw while not exporting (so the rows never cap a priced import above the limit).
    """
    li = float(import_cap_kw(problem).max())
    if "import" in soft:
        charge = sum((pair_charge_cap_kw(problem, p) for p in pairs(problem)), np.zeros(problem.n_steps))
        li = max(li, float((problem.load_kw + charge).max()))
    return li, float(export_cap_kw(problem).max(initial=0.0))


def add_grid_direction(m: pe.ConcreteModel, problem: PlanProblem, soft: frozenset[str] = frozenset()) -> None:
    """Import and export never in the same step (only built when export could pay more than import).

    import[t] <= L_imp * g[t],  export[t] <= L_exp * (1 - g[t]),  g binary; L the most import and
    export can be (:func:`grid_direction_limits`) [kW].
    """
    li, le = grid_direction_limits(problem, soft)
    m.g = pe.Var(m.T, domain=pe.Binary)
    m.import_side = pe.Constraint(m.T, rule=lambda m, t: m.imp[t] <= li * m.g[t])
    m.export_side = pe.Constraint(m.T, rule=lambda m, t: m.exp[t] <= le * (1 - m.g[t]))


def add_soc(m: pe.ConcreteModel, problem: PlanProblem) -> None:
    """State of charge of each vehicle at each boundary [kWh].

    soc[v,k+1] = soc[v,k] + sum over v's pairs p of (eta_c,p * ch[p,k] - dis[p,k] / eta_d,p) * dt
                 - trip[v,k+1] + jump[v,k+1]
    with soc_lb[v,k] <= soc[v,k] <= soc_ub[v,k] (min SOC, targets, fixed start and known arrivals:
    :mod:`models.requirements`) and -jump_max <= jump <= jump_max, nonzero only at an arrival with
    a known SOC (where soc is fixed by its bounds).
    """
    ps = pairs(problem)
    dt = problem.dt_h
    m.soc = pe.Var(m.V, m.K, bounds=lambda m, v, k: (m.soc_lb[v, k], m.soc_ub[v, k]))
    m.jump = pe.Var(m.V, m.K, bounds=lambda m, v, k: (-m.jump_max[v, k], m.jump_max[v, k]))
    of_v = {v: [i for i, p in enumerate(ps) if p.v == v] for v in range(len(problem.vehicles))}

    def rule(m, v, k):
        flows = sum((ps[i].eta_c * dt) * m.ch[i, k] - (dt / ps[i].eta_d) * m.dis[i, k] for i in of_v[v])
        return m.soc[v, k + 1] - m.soc[v, k] - flows - m.jump[v, k + 1] == -m.trip[v, k + 1]
    m.soc_step = pe.Constraint(m.V, m.T, rule=rule)


def add_reserve(m: pe.ConcreteModel, problem: PlanProblem) -> None:
    """Outage reserve held in the plugged-in cars [kWh].

    res_held[v,t] - eta_d,v * soc[v,t+1] <= held_rhs[v,t], i.e. res_held <= eta_d,v * (soc - min_v)
    at the end of each step the car is plugged in (held_rhs = -eta_d,v * min_v; otherwise
    held_rhs = eta_d,v * capacity, which never binds), and -held_max <= res_held <= held_max (the
    capacity while plugged in, 0 otherwise: only plugged-in cars count, a car below its minimum
    counts negative);
    sum_v res_held[v,t] + short[t] >= reserve[t]; 0 <= short[t] <= res_ub[t] (0 when the reserve is
    hard, the requirement itself when soft, priced in the objective). The plugged-in state enters
    through bounds only, so a persistent model needs no coefficient changes.
    """
    eta = vehicle_discharge_efficiency(problem)
    m.res_short = pe.Var(m.T, bounds=lambda m, t: (0.0, m.res_ub[t]))
    m.res_held = pe.Var(m.V, m.T, bounds=lambda m, v, t: (-m.held_max[v, t], m.held_max[v, t]))
    m.held_energy = pe.Constraint(m.V, m.T, rule=lambda m, v, t: m.res_held[v, t] - float(eta[v]) * m.soc[v, t + 1] <= m.held_rhs[v, t])
    m.reserve = pe.Constraint(m.T, rule=lambda m, t: sum(m.res_held[v, t] for v in m.V) + m.res_short[t] >= m.res_rhs[t])


def add_settlement(m: pe.ConcreteModel, problem: PlanProblem) -> None:
    """What the site pays the drivers of driver-owned cars, per stay inside the horizon [currency].

    settle[s] - price_s * sum_{p of v(s), t in s} (dis[p,t]/eta_d - eta_c*ch[p,t]) * dt >= price_s * before_s,
    settle[s] >= 0: a stay's net energy taken (with what was taken before the plan) is paid at the
    driver's price; energy a stay ends up with on balance earns nothing, so the plan never sells a
    driver a charge the driver did not ask for.
    """
    segs = stay_segments(problem)
    ps = pairs(problem)
    dt = problem.dt_h
    m.settle = pe.Var(m.S, bounds=(0.0, None))

    def rule(m, s):
        g = segs[s]
        taken = sum(g.price * dt * (m.dis[i, t] / ps[i].eta_d - ps[i].eta_c * m.ch[i, t])
                    for i, p in enumerate(ps) if p.v == g.v for t in range(g.t0, g.t1))
        return m.settle[s] - taken >= m.settle_rhs[s]
    m.settle_net = pe.Constraint(m.S, rule=rule)


def add_demand(m: pe.ConcreteModel, problem: PlanProblem) -> None:
    """Monthly peaks and the contract kW they set, with the ratchet [kW].

    peak[m] >= (pre[w] + sum_{t in w} import[t] * dt) / hours[w] for every window w of month m;
    peak[m] >= floor[m] (already metered); contract[b] >= held[b] (history, minimum contract);
    contract[b] >= peak[m] for every horizon month m in billed month b's ratchet window.
    """
    d = problem.demand
    dt = problem.dt_h
    steps = {w: np.flatnonzero(d.window_of_step == w).tolist() for w in range(d.n_windows)}
    m.peak = pe.Var(m.M, bounds=lambda m, i: (m.floor[i], None))
    m.contract = pe.Var(m.B, bounds=lambda m, b: (m.held[b], None))
    m.window = pe.Constraint(m.W, rule=lambda m, w: m.peak[int(d.month_of_window[w])]
                             - sum((dt / float(d.window_hours[w])) * m.imp[t] for t in steps[w]) >= m.pre_avg[w])
    links = [(b, i) for b, i in zip(*np.nonzero(d.links))]
    m.ratchet = pe.Constraint(links, rule=lambda m, b, i: m.contract[b] - m.peak[i] >= 0)
    if d.hedged:
        m.near = pe.Var([0], bounds=lambda m, i: (m.floor[0], None))
        m.hedge_window = pe.Constraint([int(w) for w in d.hedge_windows], rule=lambda m, w: m.near[0]
                                       - sum((dt / float(d.window_hours[w])) * m.imp[t] for t in steps[w]) >= m.pre_avg[w])


def add_blocks(m: pe.ConcreteModel, problem: PlanProblem) -> None:
    """Increasing block energy rates [kWh].

    sum_{t in month n} import[t] * dt = sum_j e[n,j],  0 <= e[n,j] <= room[n,j] (the last block
    unbounded); the non-decreasing rates make the cheaper blocks fill first.
    """
    b = problem.blocks
    dt = problem.dt_h
    last = b.rates.size - 1
    steps = {n: np.flatnonzero(b.month_of_step == n).tolist() for n in range(b.room_kwh.shape[0])}
    m.block = pe.Var(m.N, m.J, bounds=lambda m, n, j: (0.0, None if j == last else m.room[n, j]))
    m.block_fill = pe.Constraint(m.N, rule=lambda m, n: sum(dt * m.imp[t] for t in steps[n])
                                 == sum(m.block[n, j] for j in m.J))


def add_soft(m: pe.ConcreteModel, problem: PlanProblem, soft: frozenset[str]) -> None:
    """Shortfall variables for softened requirements [kWh; kW for import].

    import:  import[t] - over[t] <= imp_ub[t] (import's own bound lifted outside outages);
    min_soc: soc[v,k] + below[v,k] >= min_v;   target: soc[v,k] + short[v,k] >= target[v,k];
    final:   soc[v,T] + final_short[v] >= soc[v,0].  (reserve: its shortfall bound is lifted.)
    """
    T = problem.n_steps
    if "import" in soft:
        outage = problem.outage_mask
        m.over = pe.Var(m.T, bounds=lambda m, t: (0.0, 0.0 if outage[t] else None))
        for t in m.T:
            m.imp[t].setub(None)
        m.import_soft = pe.Constraint(m.T, rule=lambda m, t: m.imp[t] - m.over[t] <= m.imp_ub[t])
    if "min_soc" in soft:
        m.below = pe.Var(m.V, m.K, bounds=(0.0, None))
        m.min_soft = pe.Constraint(m.V, pe.RangeSet(1, T), rule=lambda m, v, k: m.soc[v, k] + m.below[v, k] >= m.soft_min[v, k])
    if "target" in soft:
        idx = [(v, int(k)) for v, veh in enumerate(problem.vehicles) for k in np.flatnonzero(~np.isnan(veh.target_kwh))]
        m.tgt_short = pe.Var(idx, bounds=(0.0, None))
        m.target_soft = pe.Constraint(idx, rule=lambda m, v, k: m.soc[v, k] + m.tgt_short[v, k] >= m.soft_target[v, k])
    if "final" in soft and problem.final_soc_at_least_initial:
        m.final_short = pe.Var(m.V, bounds=(0.0, None))
        m.final_soft = pe.Constraint(m.V, rule=lambda m, v: m.soc[v, T] + m.final_short[v] >= m.soft_final[v])


def add_objective(m: pe.ConcreteModel, problem: PlanProblem, soft: frozenset[str]) -> None:
    """Minimise the plan's cost [currency].

    sum_t (price_imp[t]*dt*import[t] - price_exp[t]*dt*export[t] + voll*dt*unserved[t]
           + reserve_penalty*dt*short[t]) + sum_{p,t} wear_v*dt/eta_d*dis[p,t]
    + sum_s settle[s]   (what the site pays drivers for their cars' energy, per stay: add_settlement)
    + rate * sum_b contract[b] (minus what later months hold anyway) + sum_{n,j} rate_j*e[n,j]
    + hedge_rate * (near - floor[0])   (the near-term peak, add_demand)
    - terminal_value * sum_{v site-owned} (soc[v,T] - soc[v,0]) + soft penalties.
    """
    T = problem.n_steps
    dt = problem.dt_h
    expr = (sum(m.c_imp[t] * m.imp[t] - m.c_exp[t] * m.exp[t] + m.c_uns * m.uns[t] for t in m.T)
            + sum(m.c_wear[p] * m.dis[p, t] for p in m.P for t in m.T)
            + sum(m.c_term[v] * m.soc[v, T] for v in m.V) + m.obj_const)
    if problem.reserve_kwh is not None:
        expr += sum(m.c_res * m.res_short[t] for t in m.T)
    if hasattr(m, "settle"):
        expr += sum(m.settle[s] for s in m.S)
    if problem.demand is not None:
        expr += sum(m.rate * m.contract[b] for b in m.B)
        if problem.demand.hedged:
            expr += m.hedge_rate * m.near[0]
    if problem.blocks is not None:
        expr += sum(m.c_block[j] * m.block[n, j] for n in m.N for j in m.J)
    if "import" in soft:
        expr += sum(m.pen_import * dt * m.over[t] for t in m.T)
    if "min_soc" in soft:
        expr += sum(m.pen_min_soc * dt * m.below[v, k] for v in m.V for k in range(1, T + 1))
    if "target" in soft:
        expr += sum(m.pen_target * m.tgt_short[i] for i in m.tgt_short)
    if "final" in soft and problem.final_soc_at_least_initial:
        expr += sum(m.pen_final * m.final_short[v] for v in m.V)
    m.cost = pe.Objective(expr=expr, sense=pe.minimize)


def build_model(problem: PlanProblem, req: Requirements, soft: frozenset[str] = frozenset(),
                mutable: bool = False) -> pe.ConcreteModel:
    """The whole model for ``problem`` with the bounds of ``req`` (see the module docstring)."""
    m = pe.ConcreteModel(name="v2h")
    _sets(m, problem)
    for name, value in param_values(problem, req, soft).items():
        _param(m, name, tuple(getattr(m, s) for s in _INDEX[name]), value, mutable)
    add_grid(m)
    add_chargers(m, problem)
    add_charger_turns(m, problem)
    add_power_balance(m)
    if not problem.vehicle_export_allowed:
        add_pv_only_export(m)
    if needs_grid_direction_binary(problem):
        add_grid_direction(m, problem, soft)
    add_soc(m, problem)
    if problem.reserve_kwh is not None:
        add_reserve(m, problem)
    if stay_segments(problem):
        add_settlement(m, problem)
    if problem.demand is not None:
        add_demand(m, problem)
    if problem.blocks is not None:
        add_blocks(m, problem)
    if soft:
        add_soft(m, problem, soft)
    add_objective(m, problem, soft)
    return m


def update_params(m: pe.ConcreteModel, problem: PlanProblem, req: Requirements, soft: frozenset[str] = frozenset()) -> None:
    """Write a new problem's values into a mutable model of the same :func:`structure_key`."""
    for name, value in param_values(problem, req, soft).items():
        comp = getattr(m, name)
        if _INDEX[name]:
            comp.store_values(_dict(value))
        else:
            comp.set_value(float(value))

