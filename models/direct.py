"""The same model written directly as a HiGHS matrix (highspy, no pyomo).

A second, independent statement of the hard constraint families of :mod:`models.formulation`
(same variables, same equations, written as sparse rows). Only the numbers (bounds, prices) come
from the shared :func:`models.formulation.param_values`. Used three ways: the ``highs_direct``
interface of :class:`models.solve.Session` solves hard plans with it (a numpy build is several
times cheaper than updating a persistent pyomo model); tests check that it and the pyomo model give
the same optimum; ``bench/plan.py`` compares the two.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np
from scipy import sparse

from models.data import PlanProblem, export_cap_kw, import_cap_kw, needs_grid_direction_binary, pairs
from models.formulation import param_values
from models.requirements import Requirements, vehicle_discharge_efficiency
from models.solution import Values

INF = highspy.kHighsInf


def quiet_highs() -> highspy.Highs:
    """A HiGHS instance with its output off before it can print anything.

    ``highspy.Highs()`` enables its Python callbacks in the constructor, and that first call prints
    the version banner to stdout before ``output_flag`` can be cleared (one banner per plan would
    corrupt ``--json`` output and the daemon's log). The compiled base class has every method used
    here and prints nothing; the public class is the fallback if a release renames it.
    """
    base = getattr(getattr(highspy, "_core", None), "_Highs", None)
    h = base() if base is not None else highspy.Highs()
    h.setOptionValue("output_flag", False)
    return h


class _Matrix:
    """Columns (bounds, cost, integrality) and rows (bounds, triplets) collected as numpy arrays."""

    def __init__(self) -> None:
        self.lb: list[np.ndarray] = []
        self.ub: list[np.ndarray] = []
        self.cost: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []
        self.n = 0
        self.rlo: list[np.ndarray] = []
        self.rhi: list[np.ndarray] = []
        self.m = 0
        self.trip: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def cols(self, shape: tuple[int, ...], lb, ub, cost=0.0, integer: bool = False) -> np.ndarray:
        """New columns shaped ``shape``; returns their indices in that shape."""
        size = int(np.prod(shape))
        idx = np.arange(self.n, self.n + size).reshape(shape)
        self.n += size
        self.lb.append(np.broadcast_to(np.asarray(lb, float), shape).ravel())
        self.ub.append(np.broadcast_to(np.asarray(ub, float), shape).ravel())
        self.cost.append(np.broadcast_to(np.asarray(cost, float), shape).ravel())
        self.integer.append(np.full(size, integer))
        return idx

    def rows(self, size: int, lo, hi) -> np.ndarray:
        """New rows with bounds lo <= a x <= hi; returns their indices."""
        idx = np.arange(self.m, self.m + size)
        self.m += size
        self.rlo.append(np.broadcast_to(np.asarray(lo, float), (size,)).copy())
        self.rhi.append(np.broadcast_to(np.asarray(hi, float), (size,)).copy())
        return idx

    def add(self, rows: np.ndarray, cols: np.ndarray, coef) -> None:
        """Coefficients ``coef`` of columns ``cols`` in rows ``rows`` (arrays broadcast together)."""
        r, c, v = np.broadcast_arrays(np.asarray(rows), np.asarray(cols), np.asarray(coef, float))
        self.trip.append((r.ravel(), c.ravel(), v.ravel()))

    def highs(self, offset: float) -> highspy.Highs:
        """The collected model in a new HiGHS instance."""
        h = quiet_highs()
        lb, ub = np.concatenate(self.lb), np.concatenate(self.ub)
        h.addCols(self.n, np.concatenate(self.cost), lb, ub, 0, np.array([], np.int32), np.array([], np.int32), np.array([]))
        r = np.concatenate([t[0] for t in self.trip])
        c = np.concatenate([t[1] for t in self.trip])
        v = np.concatenate([t[2] for t in self.trip])
        a = sparse.csr_matrix((v, (r, c)), shape=(self.m, self.n))
        h.addRows(self.m, np.concatenate(self.rlo), np.concatenate(self.rhi), a.nnz,
                  a.indptr.astype(np.int32), a.indices.astype(np.int32), a.data)
        ints = np.flatnonzero(np.concatenate(self.integer)).astype(np.int32)
        if ints.size:
            h.changeColsIntegrality(ints.size, ints, np.full(ints.size, highspy.HighsVarType.kInteger))
        h.changeObjectiveOffset(offset)
        return h


@dataclass
class MatrixModel:
    """A built model: the HiGHS instance and the columns of each variable of
    :mod:`models.formulation` (indices shaped like the variable's index: imp (T), ch (P x T), soc
    (V x T+1), ...; res_short and g only where the model has them)."""

    highs: highspy.Highs
    cols: dict[str, np.ndarray]

    def values(self, x: np.ndarray) -> Values:
        """The decisions in the column values ``x`` (a solution's ``col_value``) as arrays."""
        c = self.cols
        short = x[c["res_short"]] if "res_short" in c else np.zeros(c["imp"].size)
        return Values(imp=x[c["imp"]], exp=x[c["exp"]], curt=x[c["curt"]], uns=x[c["uns"]], ch=x[c["ch"]],
                      dis=x[c["dis"]], soc=x[c["soc"]], res_short=short)

    def with_values(self, x: np.ndarray, named: dict[str, np.ndarray]) -> np.ndarray:
        """A copy of the column values ``x`` with the variables in ``named`` (name -> array shaped
        like the variable) replaced; names the model lacks are ignored."""
        out = np.array(x, dtype=float)
        for name, val in named.items():
            if name in self.cols:
                out[self.cols[name]] = val
        return out


def build(problem: PlanProblem, req: Requirements) -> MatrixModel:
    """The hard model of ``problem`` (with the bounds of ``req``) in a new HiGHS instance."""
    vals = param_values(problem, req)
    T, dt = problem.n_steps, problem.dt_h
    ps = pairs(problem)
    P, V = len(ps), len(problem.vehicles)
    x = _Matrix()
    imp = x.cols((T,), 0, import_cap_kw(problem), vals["c_imp"])
    exp = x.cols((T,), 0, export_cap_kw(problem), -vals["c_exp"])
    curt = x.cols((T,), 0, problem.pv_kw)
    uns = x.cols((T,), 0, vals["uns_ub"], vals["c_uns"])
    ch = x.cols((P, T), 0, vals["ch_ub"])
    dis = x.cols((P, T), 0, vals["dis_ub"], vals["c_wear"].reshape(-1, 1))
    yc = x.cols((P, T), 0, vals["y_ub"], integer=True)
    yd = x.cols((P, T), 0, vals["y_ub"], integer=True)
    soc_cost = np.zeros((V, T + 1))
    soc_cost[:, T] = vals["c_term"]
    soc = x.cols((V, T + 1), vals["soc_lb"], vals["soc_ub"], soc_cost)
    jump = x.cols((V, T + 1), -vals["jump_max"], vals["jump_max"])
    cols = {"imp": imp, "exp": exp, "curt": curt, "uns": uns, "ch": ch, "dis": dis, "yc": yc, "yd": yd, "soc": soc}
    steps = np.arange(T)
    # power balance: imp - exp + sum dis - sum ch - curt + uns = load - pv
    bal = x.rows(T, vals["net_load"], vals["net_load"])
    for col, sign in ((imp, 1), (exp, -1), (curt, -1), (uns, 1)):
        x.add(bal, col, sign)
    for i in range(P):
        x.add(bal, dis[i], 1.0)
        x.add(bal, ch[i], -1.0)
    if not problem.vehicle_export_allowed:  # exp + curt <= pv
        r = x.rows(T, -INF, problem.pv_kw)
        x.add(r, exp, 1.0)
        x.add(r, curt, 1.0)
    for i, p in enumerate(ps):  # ch <= Pc yc, dis <= Pd yd
        r = x.rows(T, -INF, 0.0)
        x.add(r, ch[i], 1.0)
        x.add(r, yc[i], -p.charge_kw)
        r = x.rows(T, -INF, 0.0)
        x.add(r, dis[i], 1.0)
        x.add(r, yd[i], -p.discharge_kw)
    groups = [[i for i, p in enumerate(ps) if p.c == c] for c in range(len(problem.chargers))]
    groups += [g for g in ([i for i, p in enumerate(ps) if p.v == v] for v in range(V)) if len(g) > 1]
    for g in groups:  # one car per charger, one charger per car, one direction
        if g:
            r = x.rows(T, -INF, 1.0)
            for i in g:
                x.add(r, yc[i], 1.0)
                x.add(r, yd[i], 1.0)
    if needs_grid_direction_binary(problem):
        li, le = float(import_cap_kw(problem).max()), float(export_cap_kw(problem).max(initial=0.0))
        g = cols["g"] = x.cols((T,), 0, 1, integer=True)
        r = x.rows(T, -INF, 0.0)
        x.add(r, imp, 1.0)
        x.add(r, g, -li)
        r = x.rows(T, -INF, le)
        x.add(r, exp, 1.0)
        x.add(r, g, le)
    for v in range(V):  # soc[k+1] - soc[k] - flows - jump[k+1] = -trip[k+1]
        r = x.rows(T, -vals["trip"][v, 1:], -vals["trip"][v, 1:])
        x.add(r, soc[v, 1:], 1.0)
        x.add(r, soc[v, :-1], -1.0)
        x.add(r, jump[v, 1:], -1.0)
        for i, p in enumerate(ps):
            if p.v == v:
                x.add(r, ch[i], -p.eta_c * dt)
                x.add(r, dis[i], dt / p.eta_d)
    if problem.reserve_kwh is not None:
        eta = vehicle_discharge_efficiency(problem)
        short = cols["res_short"] = x.cols((T,), 0, vals["res_ub"], vals["c_res"])
        held = x.cols((V, T), -vals["held_max"], vals["held_max"])
        total = x.rows(T, vals["res_rhs"], INF)
        x.add(total, short, 1.0)
        for v in range(V):
            r = x.rows(T, -INF, vals["held_rhs"][v])
            x.add(r, held[v], 1.0)
            x.add(r, soc[v, 1:], -eta[v])
            x.add(total, held[v], 1.0)
    d = problem.demand
    if d is not None:
        peak = x.cols((d.n_months,), vals["floor"], INF)
        contract = x.cols((d.held_kw.size,), vals["held"], INF, vals["rate"])
        r = x.rows(d.n_windows, vals["pre_avg"], INF)
        x.add(r, peak[d.month_of_window], 1.0)
        x.add(r[d.window_of_step], imp[steps], -dt / d.window_hours[d.window_of_step])
        b, mth = np.nonzero(d.links)
        r = x.rows(b.size, 0.0, INF)
        x.add(r, contract[b], 1.0)
        x.add(r, peak[mth], -1.0)
    bl = problem.blocks
    if bl is not None:
        room = np.where(np.isfinite(bl.room_kwh), bl.room_kwh, INF)
        room[:, -1] = INF
        blk = x.cols(bl.room_kwh.shape, 0, room, bl.rates.reshape(1, -1))
        r = x.rows(bl.room_kwh.shape[0], 0.0, 0.0)
        x.add(r[bl.month_of_step], imp[steps], dt)
        for j in range(bl.rates.size):
            x.add(r, blk[:, j], -1.0)
    return MatrixModel(x.highs(float(vals["obj_const"])), cols)


def run(h: highspy.Highs, relax: bool, mip_rel_gap: float, time_limit_s: float) -> None:
    """Solve the model in ``h`` (its LP relaxation if ``relax``) with presolve, within the limits."""
    h.setOptionValue("solve_relaxation", relax)
    h.setOptionValue("presolve", "on")
    h.setOptionValue("mip_rel_gap", mip_rel_gap)
    h.setOptionValue("time_limit", time_limit_s)
    h.run()


@dataclass
class DirectResult:
    """Objective [currency], HiGHS model status, build and solve seconds."""

    objective: float
    status: str
    build_seconds: float
    solve_seconds: float


def solve(problem: PlanProblem, req: Requirements, relax: bool = False, mip_rel_gap: float = 1e-6,
          time_limit_s: float = 60.0) -> DirectResult:
    """Build and solve the matrix model (its LP relaxation if ``relax``)."""
    t0 = time.perf_counter()
    h = build(problem, req).highs
    t1 = time.perf_counter()
    run(h, relax, mip_rel_gap, time_limit_s)
    t2 = time.perf_counter()
    status = h.modelStatusToString(h.getModelStatus())
    return DirectResult(float(h.getInfo().objective_function_value), status, t1 - t0, t2 - t1)
