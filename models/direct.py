"""The production formulation: the V2H/V2B model written directly as a HiGHS matrix (highspy, numpy).

One builder per constraint family, in the order and with the names of :mod:`models.formulation`
(the independent pyomo statement of the same model, kept as the reference for the tests and as
the pyomo interfaces of :class:`models.solve.Session`): the same variables, the same equations,
written as sparse rows; hard and soft models alike (``soft``: the families of
:data:`models.formulation.SOFT_FAMILIES` turned into rows with priced shortfall variables). Only
the numbers (bounds, prices, penalties) come from the shared
:func:`models.formulation.param_values`.

Each builder adds *named blocks*: ``MatrixModel.cols[name]`` holds the column indices of variable
``name`` and ``MatrixModel.rows[name]`` the row indices of constraint family ``name``, both shaped
like the index of the pyomo component of that name (``imp`` (T), ``ch`` (P x T), ``soc`` (V x T+1),
``soc_step`` (V x T), ...). Where that index is not a full product of sets, ``MatrixModel.index``
gives its leading members (the chargers of ``charger_turn``, the (billed month, horizon month)
pairs of ``ratchet``, the (vehicle, boundary) pairs of ``target_soft`` and ``tgt_short``, ...).

:func:`collect` runs the builders into flat arrays (:class:`Arrays`), :func:`build` hands them to a
new HiGHS instance, and :meth:`MatrixModel.update` writes the arrays of the next problem of the same
pattern into a built model in place (what invalidates a model, the warm start and the big-M sizes:
``models/README.md``).

Indices and units as in :mod:`models.formulation`: steps t (0..T-1), boundaries k (0..T), pairs p,
vehicles v; kW, kWh, hours, currency.

Used three ways: the ``highs_direct`` interface of :class:`models.solve.Session` (the default)
solves every plan with it, hard or soft, keeping the built models between re-plans; property tests
check that it and the pyomo model give the same optimum; ``bench/plan.py`` compares the two.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import highspy
import numpy as np
from scipy import sparse

from models.data import PlanProblem, needs_grid_direction_binary, pairs, stay_segments
from models.formulation import grid_direction_limits, param_values
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


def _flat(x: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` (a number or an array) broadcast to ``shape`` and flattened, as floats."""
    a = np.asarray(x, dtype=float)
    if a.shape == shape:
        return a.reshape(-1)
    if a.ndim == 0:
        return np.full(math.prod(shape), float(a))
    return np.broadcast_to(a, shape).reshape(-1)


class _Matrix:
    """A model under construction: named blocks of columns (bounds, integrality, cost) and of rows
    (bounds, coefficient triplets), collected as numpy arrays and handed to HiGHS at the end."""

    def __init__(self) -> None:
        self.n = 0  # columns so far
        self.m = 0  # rows so far
        self._lb: list[np.ndarray] = []
        self._ub: list[np.ndarray] = []
        self._integer: list[np.ndarray] = []
        self._rlo: list[np.ndarray] = []
        self._rhi: list[np.ndarray] = []
        self._trip: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._costs: list[tuple[np.ndarray, np.ndarray]] = []
        self._upper: list[tuple[np.ndarray, np.ndarray]] = []
        self.cols: dict[str, np.ndarray] = {}
        self.rows: dict[str, np.ndarray] = {}
        self.index: dict[str, tuple[np.ndarray, ...]] = {}
        self.soft: frozenset[str] = frozenset()
        self.arrays: Arrays | None = None  # set by finish() in collect()

    def var(self, name: str, shape: tuple[int, ...], lb: Any, ub: Any, integer: bool = False) -> np.ndarray:
        """New columns ``name`` shaped ``shape`` with lb <= x <= ub (broadcast); returns their indices."""
        size = math.prod(shape)
        idx = np.arange(self.n, self.n + size).reshape(shape)
        self.n += size
        self._lb.append(_flat(lb, shape))
        self._ub.append(_flat(ub, shape))
        self._integer.append(np.full(size, integer))
        self.cols[name] = idx
        return idx

    def con(self, name: str, shape: tuple[int, ...], lo: Any, hi: Any) -> np.ndarray:
        """New rows ``name`` shaped ``shape`` with lo <= a x <= hi (broadcast); returns their indices."""
        size = math.prod(shape)
        idx = np.arange(self.m, self.m + size).reshape(shape)
        self.m += size
        self._rlo.append(_flat(lo, shape))
        self._rhi.append(_flat(hi, shape))
        self.rows[name] = idx
        return idx

    def add(self, rows: np.ndarray, cols: np.ndarray, coef: Any) -> None:
        """Coefficients ``coef`` of columns ``cols`` in rows ``rows`` (``rows`` and ``cols`` broadcast
        together, ``coef`` to their shape)."""
        r, c = np.asarray(rows), np.asarray(cols)
        if r.shape != c.shape:
            r, c = np.broadcast_arrays(r, c)
        self._trip.append((r.reshape(-1), c.reshape(-1), _flat(coef, r.shape)))

    def cost(self, cols: np.ndarray, price: Any) -> None:
        """Objective coefficients ``price`` of columns ``cols`` (broadcast; columns not priced cost 0)."""
        self._costs.append((np.asarray(cols).reshape(-1), _flat(price, np.shape(cols))))

    def set_ub(self, cols: np.ndarray, ub: Any) -> None:
        """Replace the upper bound of existing columns ``cols`` (broadcast)."""
        self._upper.append((np.asarray(cols).reshape(-1), _flat(ub, np.shape(cols))))

    def finish(self, offset: float) -> Arrays:
        """The collected model as flat arrays, objective constant ``offset`` [currency]."""
        cost, ub = np.zeros(self.n), np.concatenate(self._ub)
        for cols, price in self._costs:
            cost[cols] = price
        for cols, val in self._upper:
            ub[cols] = val
        r, c, v = (np.concatenate([t[i] for t in self._trip]) for i in range(3))
        return Arrays(cost, np.concatenate(self._lb), ub, np.concatenate(self._integer), np.concatenate(self._rlo),
                      np.concatenate(self._rhi), r, c, v, float(offset))


@dataclass
class Arrays:
    """Every number of a model, flat: column costs, bounds and integrality, row bounds, the
    coefficients as triplets (row ``r``, column ``c``, value ``v``, in the builders' order) and
    the objective constant. ``integer``, ``r`` and ``c`` (with the sizes) are the model's
    *pattern*: two models with the same pattern differ only in numbers HiGHS can change in place."""

    cost: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    integer: np.ndarray
    rlo: np.ndarray
    rhi: np.ndarray
    r: np.ndarray
    c: np.ndarray
    v: np.ndarray
    offset: float

    def same_pattern(self, other: Arrays) -> bool:
        """Whether ``other`` has the same columns, rows, integrality and coefficient positions."""
        return (self.cost.size == other.cost.size and self.rlo.size == other.rlo.size and self.r.size == other.r.size
                and np.array_equal(self.r, other.r) and np.array_equal(self.c, other.c)
                and np.array_equal(self.integer, other.integer))

    def highs(self) -> tuple[highspy.Highs, bool]:
        """A new HiGHS instance holding the model, and whether two triplets share a position
        (HiGHS holds their sum; no builder writes one twice, but an update must then rebuild)."""
        h = quiet_highs()
        n, m = self.cost.size, self.rlo.size
        h.addCols(n, self.cost, self.lb, self.ub, 0, np.array([], np.int32), np.array([], np.int32), np.array([]))
        a = sparse.csr_matrix((self.v, (self.r, self.c)), shape=(m, n))
        h.addRows(m, self.rlo, self.rhi, a.nnz, a.indptr.astype(np.int32), a.indices.astype(np.int32), a.data)
        ints = np.flatnonzero(self.integer).astype(np.int32)
        if ints.size:
            h.changeColsIntegrality(ints.size, ints, np.full(ints.size, highspy.HighsVarType.kInteger))
        h.changeObjectiveOffset(self.offset)
        return h, bool(a.nnz < self.v.size)


@dataclass
class MatrixModel:
    """A built model: the HiGHS instance and its named blocks (see the module docstring).

    ``cols``: variable name -> column indices; ``rows``: constraint family -> row indices, each
    shaped like the index of the pyomo component of that name in :mod:`models.formulation`;
    ``index``: the leading index members of blocks that do not span a full product of sets;
    ``soft``: the softened families the model was built with.
    """

    highs: highspy.Highs
    cols: dict[str, np.ndarray]
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    index: dict[str, tuple[np.ndarray, ...]] = field(default_factory=dict)
    soft: frozenset[str] = frozenset()
    arrays: Arrays | None = None  # the numbers HiGHS holds now
    summed: bool = False  # some coefficient is the sum of two triplets (then updates must leave them alone)

    def update(self, new: _Matrix) -> bool:
        """Make this model the collected model ``new`` (:func:`collect`) in place, if it has the same
        pattern (:meth:`Arrays.same_pattern`): change the costs, column bounds, row bounds,
        coefficients and objective constant that differ (HiGHS keeps its basis, so the next LP
        starts from the last optimal one). Returns False, changing nothing, if the pattern differs;
        raises RuntimeError if HiGHS refuses a change (the model is then unusable)."""
        old, a = self.arrays, new.arrays
        if old is None or a is None or not old.same_pattern(a):
            return False
        coef = np.flatnonzero(a.v != old.v)
        if coef.size and self.summed:
            return False
        h = self.highs
        calls = []
        cols = np.flatnonzero(a.cost != old.cost).astype(np.int32)
        if cols.size:
            calls.append(h.changeColsCost(cols.size, cols, a.cost[cols]))
        cols = np.flatnonzero((a.lb != old.lb) | (a.ub != old.ub)).astype(np.int32)
        if cols.size:
            calls.append(h.changeColsBounds(cols.size, cols, a.lb[cols], a.ub[cols]))
        rows = np.flatnonzero((a.rlo != old.rlo) | (a.rhi != old.rhi)).astype(np.int32)
        if rows.size:
            calls.append(h.changeRowsBounds(rows.size, rows, a.rlo[rows], a.rhi[rows]))
        for i in coef:
            calls.append(h.changeCoeff(int(a.r[i]), int(a.c[i]), float(a.v[i])))
        if a.offset != old.offset:
            calls.append(h.changeObjectiveOffset(a.offset))
        if any(c == highspy.HighsStatus.kError for c in calls):
            raise RuntimeError("HiGHS refused an in-place change of the model")
        self.arrays = a
        self.cols, self.rows, self.index, self.soft = new.cols, new.rows, new.index, new.soft
        return True

    def values(self, x: np.ndarray) -> Values:
        """The decisions in the column values ``x`` (a solution's ``col_value``) as arrays."""
        c = self.cols
        short = x[c["res_short"]] if "res_short" in c else np.zeros(c["imp"].size)
        return Values(imp=x[c["imp"]], exp=x[c["exp"]], curt=x[c["curt"]], uns=x[c["uns"]], ch=x[c["ch"]],
                      dis=x[c["dis"]], soc=x[c["soc"]], res_short=short, over=x[c["over"]] if "over" in c else None)

    def with_values(self, x: np.ndarray, named: dict[str, np.ndarray]) -> np.ndarray:
        """A copy of the column values ``x`` with the variables in ``named`` (name -> array shaped
        like the variable) replaced; names the model lacks are ignored."""
        out = np.array(x, dtype=float)
        for name, val in named.items():
            if name in self.cols:
                out[self.cols[name]] = val
        return out


def add_grid(m: _Matrix, vals: dict[str, Any]) -> None:
    """Grid and site flows per step [kW].

    0 <= imp[t] <= imp_ub[t] (limit; 0 in an outage), 0 <= exp[t] <= exp_ub[t],
    0 <= curt[t] <= pv[t], 0 <= uns[t] <= uns_ub[t] (the load, in outage steps only).
    """
    T = vals["net_load"].size
    m.var("imp", (T,), 0.0, vals["imp_ub"])
    m.var("exp", (T,), 0.0, vals["exp_ub"])
    m.var("curt", (T,), 0.0, vals["pv"])
    m.var("uns", (T,), 0.0, vals["uns_ub"])


def add_chargers(m: _Matrix, problem: PlanProblem, vals: dict[str, Any]) -> None:
    """Charge and discharge of each pair within ratings, only while plugged in [kW]; rows
    ``charge_on``, ``discharge_on`` (P x T).

    0 <= ch[p,t] <= ch_ub[p,t], 0 <= dis[p,t] <= dis_ub[p,t]; binaries yc, yd <= y_ub (plugged);
    ch[p,t] - Pc_p * yc[p,t] <= 0  and  dis[p,t] - Pd_p * yd[p,t] <= 0.
    """
    ps = pairs(problem)
    shape = (len(ps), problem.n_steps)
    ch = m.var("ch", shape, 0.0, vals["ch_ub"])
    dis = m.var("dis", shape, 0.0, vals["dis_ub"])
    yc = m.var("yc", shape, 0.0, vals["y_ub"], integer=True)
    yd = m.var("yd", shape, 0.0, vals["y_ub"], integer=True)
    for name, flow, on, rating in (("charge_on", ch, yc, [p.charge_kw for p in ps]),
                                   ("discharge_on", dis, yd, [p.discharge_kw for p in ps])):
        r = m.con(name, shape, -INF, 0.0)
        m.add(r, flow, 1.0)
        m.add(r, on, -np.reshape(rating, (-1, 1)))


def _one_at_a_time(m: _Matrix, name: str, owner: np.ndarray, groups: np.ndarray, n_steps: int) -> None:
    """Rows ``name`` (groups x T): sum over pairs i with owner[i] == g of (yc[i,t] + yd[i,t]) <= 1."""
    r = m.con(name, (groups.size, n_steps), -INF, 1.0)
    m.index[name] = (groups,)
    mine = np.isin(owner, groups)
    at = np.searchsorted(groups, owner[mine])
    for y in ("yc", "yd"):
        m.add(r[at], m.cols[y][mine], 1.0)


def add_charger_turns(m: _Matrix, problem: PlanProblem) -> None:
    """At most one vehicle per charger per step, never charging and discharging at once.

    ``charger_turn`` (chargers with a pair x T): sum over pairs p on charger c of (yc + yd) <= 1;
    ``one_plug`` (vehicles allowed on several chargers x T, only when there are such):
    sum over the vehicle's pairs of (yc + yd) <= 1.
    """
    ps = pairs(problem)
    on_c = np.array([p.c for p in ps], dtype=int)
    on_v = np.array([p.v for p in ps], dtype=int)
    _one_at_a_time(m, "charger_turn", on_c, np.unique(on_c), problem.n_steps)
    multi = np.flatnonzero(np.bincount(on_v, minlength=len(problem.vehicles)) > 1)
    if multi.size:
        _one_at_a_time(m, "one_plug", on_v, multi, problem.n_steps)


def add_power_balance(m: _Matrix, vals: dict[str, Any]) -> None:
    """Power balance at the site's bus each step [kW]; rows ``balance`` (T).

    imp[t] - exp[t] + sum_p dis[p,t] - sum_p ch[p,t] - curt[t] + uns[t] = load[t] - pv[t]
    """
    bal = m.con("balance", vals["net_load"].shape, vals["net_load"], vals["net_load"])
    for name, sign in (("imp", 1.0), ("exp", -1.0), ("dis", 1.0), ("ch", -1.0), ("curt", -1.0), ("uns", 1.0)):
        m.add(bal, m.cols[name], sign)


def add_pv_only_export(m: _Matrix, vals: dict[str, Any]) -> None:
    """Export comes from PV only (sites without vehicle export) [kW]; rows ``pv_export`` (T).

    exp[t] + curt[t] <= pv[t] (with exp[t] <= max(0, pv[t] - load[t]) as its bound).
    """
    r = m.con("pv_export", vals["pv"].shape, -INF, vals["pv"])
    m.add(r, m.cols["exp"], 1.0)
    m.add(r, m.cols["curt"], 1.0)


def add_grid_direction(m: _Matrix, problem: PlanProblem, soft: frozenset[str]) -> None:
    """Import and export never in the same step [kW]; rows ``import_side``, ``export_side`` (T).

    imp[t] - L_imp * g[t] <= 0,  exp[t] + L_exp * g[t] <= L_exp,  g binary; L the most import and
    export can be (:func:`models.formulation.grid_direction_limits`).
    """
    li, le = grid_direction_limits(problem, soft)
    T = problem.n_steps
    g = m.var("g", (T,), 0.0, 1.0, integer=True)
    r = m.con("import_side", (T,), -INF, 0.0)
    m.add(r, m.cols["imp"], 1.0)
    m.add(r, g, -li)
    r = m.con("export_side", (T,), -INF, le)
    m.add(r, m.cols["exp"], 1.0)
    m.add(r, g, le)


def add_soc(m: _Matrix, problem: PlanProblem, vals: dict[str, Any]) -> None:
    """State of charge of each vehicle at each boundary [kWh]; rows ``soc_step`` (V x T).

    soc[v,k+1] - soc[v,k] - sum over v's pairs p of (eta_c,p * ch[p,k] - dis[p,k] / eta_d,p) * dt
    - jump[v,k+1] = -trip[v,k+1];  soc_lb <= soc <= soc_ub,  -jump_max <= jump <= jump_max.
    """
    ps = pairs(problem)
    V, T, dt = len(problem.vehicles), problem.n_steps, problem.dt_h
    soc = m.var("soc", (V, T + 1), vals["soc_lb"], vals["soc_ub"])
    jump = m.var("jump", (V, T + 1), -vals["jump_max"], vals["jump_max"])
    rhs = -vals["trip"][:, 1:]
    r = m.con("soc_step", (V, T), rhs, rhs)
    m.add(r, soc[:, 1:], 1.0)
    m.add(r, soc[:, :-1], -1.0)
    m.add(r, jump[:, 1:], -1.0)
    of_v = np.array([p.v for p in ps], dtype=int)
    m.add(r[of_v], m.cols["ch"], np.array([-p.eta_c * dt for p in ps]).reshape(-1, 1))
    m.add(r[of_v], m.cols["dis"], np.array([dt / p.eta_d for p in ps]).reshape(-1, 1))


def add_reserve(m: _Matrix, problem: PlanProblem, vals: dict[str, Any]) -> None:
    """Outage reserve held in the plugged-in cars [kWh]; rows ``held_energy`` (V x T), ``reserve`` (T).

    res_held[v,t] - eta_d,v * soc[v,t+1] <= held_rhs[v,t],  -held_max <= res_held <= held_max;
    sum_v res_held[v,t] + res_short[t] >= res_rhs[t],  0 <= res_short[t] <= res_ub[t].
    """
    V, T = len(problem.vehicles), problem.n_steps
    short = m.var("res_short", (T,), 0.0, vals["res_ub"])
    held = m.var("res_held", (V, T), -vals["held_max"], vals["held_max"])
    r = m.con("held_energy", (V, T), -INF, vals["held_rhs"])
    m.add(r, held, 1.0)
    m.add(r, m.cols["soc"][:, 1:], -vehicle_discharge_efficiency(problem).reshape(-1, 1))
    r = m.con("reserve", (T,), vals["res_rhs"], INF)
    m.add(r, held, 1.0)
    m.add(r, short, 1.0)


def add_settlement(m: _Matrix, problem: PlanProblem, vals: dict[str, Any]) -> None:
    """What the site pays the drivers of driver-owned cars, per stay inside the horizon [currency];
    rows ``settle_net`` (stay segments S, :func:`models.data.stay_segments`).

    settle[s] - price_s * sum_{p of v(s), t in s} (dis[p,t]/eta_d - eta_c*ch[p,t]) * dt >= price_s * before_s,
    settle[s] >= 0 (see :func:`models.formulation.add_settlement`). Each row names every step of the
    horizon, with explicit zeros outside its stay, so a re-plan whose stays moved by a step keeps
    the model's pattern and is updated in place (a few coefficients) instead of rebuilt.
    """
    segs = stay_segments(problem)
    ps = pairs(problem)
    dt = problem.dt_h
    steps = np.arange(problem.n_steps)
    settle = m.var("settle", (len(segs),), 0.0, INF)
    r = m.con("settle_net", (len(segs),), vals["settle_rhs"], INF)
    m.add(r, settle, 1.0)
    for s, g in enumerate(segs):
        inside = (steps >= g.t0) & (steps < g.t1)
        for i, p in enumerate(ps):
            if p.v == g.v:
                m.add(r[s], m.cols["dis"][i], np.where(inside, -g.price * dt / p.eta_d, 0.0))
                m.add(r[s], m.cols["ch"][i], np.where(inside, g.price * dt * p.eta_c, 0.0))


def add_demand(m: _Matrix, problem: PlanProblem, vals: dict[str, Any]) -> None:
    """Monthly peaks and the contract kW they set, with the ratchet [kW]; rows ``window`` (W),
    ``ratchet`` (links; ``index["ratchet"]`` = (billed month b, horizon month m)).

    peak[m(w)] - sum_{t in w} imp[t] * dt / hours[w] >= pre[w] / hours[w];  peak[m] >= floor[m];
    contract[b] >= held[b];  contract[b] - peak[m] >= 0 for each linked (b, m).
    """
    d = problem.demand
    imp = m.cols["imp"]
    peak = m.var("peak", (d.n_months,), vals["floor"], INF)
    contract = m.var("contract", (d.held_kw.size,), vals["held"], INF)
    r = m.con("window", (d.n_windows,), vals["pre_avg"], INF)
    m.add(r, peak[d.month_of_window], 1.0)
    m.add(r[d.window_of_step], imp, -problem.dt_h / d.window_hours[d.window_of_step])
    b, mth = np.nonzero(d.links)
    r = m.con("ratchet", (b.size,), 0.0, INF)
    m.index["ratchet"] = (b, mth)
    m.add(r, contract[b], 1.0)
    m.add(r, peak[mth], -1.0)
    if d.hedged:
        add_hedge(m, problem, vals)


def add_hedge(m: _Matrix, problem: PlanProblem, vals: dict[str, Any]) -> None:
    """The near-term peak [kW]; rows ``hedge_window`` (the hedge windows H).

    near - sum_{t in w} imp[t] * dt / hours[w] >= pre[w] / hours[w] for w in H;  near >= floor[0].
    """
    d = problem.demand
    near = m.var("near", (1,), vals["floor"][0], INF)
    r = m.con("hedge_window", (d.hedge_windows.size,), vals["pre_avg"][d.hedge_windows], INF)
    m.add(r, np.repeat(near, d.hedge_windows.size), 1.0)
    row_of_window = np.full(d.n_windows, -1)
    row_of_window[d.hedge_windows] = np.arange(d.hedge_windows.size)
    steps = np.flatnonzero(row_of_window[d.window_of_step] >= 0)
    w = d.window_of_step[steps]
    m.add(r[row_of_window[w]], m.cols["imp"][steps], -problem.dt_h / d.window_hours[w])


def add_blocks(m: _Matrix, problem: PlanProblem, vals: dict[str, Any]) -> None:
    """Increasing block energy rates [kWh]; rows ``block_fill`` (block months N).

    sum_{t in month n} imp[t] * dt - sum_j block[n,j] = 0,  0 <= block[n,j] <= room[n,j] (the last
    block unbounded); the non-decreasing rates make the cheaper blocks fill first.
    """
    bl = problem.blocks
    room = np.array(vals["room"], dtype=float)
    room[:, -1] = INF
    blk = m.var("block", room.shape, 0.0, room)
    r = m.con("block_fill", (room.shape[0],), 0.0, 0.0)
    m.add(r[bl.month_of_step], m.cols["imp"], problem.dt_h)
    m.add(r.reshape(-1, 1), blk, -1.0)


def add_soft_import(m: _Matrix, problem: PlanProblem, vals: dict[str, Any]) -> None:
    """Import above its limit, priced [kW]; rows ``import_soft`` (T).

    imp[t] - over[t] <= imp_ub[t];  imp's own upper bound lifted outside outages;
    0 <= over[t] (0 in an outage).
    """
    outage = problem.outage_mask
    over = m.var("over", outage.shape, 0.0, np.where(outage, 0.0, INF))
    imp = m.cols["imp"]
    m.set_ub(imp[~outage], INF)
    r = m.con("import_soft", outage.shape, -INF, vals["imp_ub"])
    m.add(r, imp, 1.0)
    m.add(r, over, -1.0)


def add_soft_min_soc(m: _Matrix, vals: dict[str, Any]) -> None:
    """SOC below the minimum, priced [kWh]; rows ``min_soft`` (V x boundaries 1..T).

    soc[v,k] + below[v,k] >= min_v for k >= 1;  below >= 0 (V x T+1 as in pyomo; boundary 0,
    in no row, fixed at 0).
    """
    soc = m.cols["soc"]
    ub = np.full(soc.shape, INF)
    ub[:, 0] = 0.0
    below = m.var("below", soc.shape, 0.0, ub)
    r = m.con("min_soft", (soc.shape[0], soc.shape[1] - 1), vals["soft_min"][:, 1:], INF)
    m.add(r, soc[:, 1:], 1.0)
    m.add(r, below[:, 1:], 1.0)


def add_soft_target(m: _Matrix, problem: PlanProblem, vals: dict[str, Any]) -> None:
    """Departure targets missed, priced [kWh]; rows ``target_soft`` and columns ``tgt_short`` over the
    (vehicle, boundary) pairs with a target (``index``, in vehicle then boundary order).

    soc[v,k] + tgt_short[v,k] >= min(target[v,k], ceiling[v,k]),  tgt_short >= 0.
    """
    v, k = np.nonzero([~np.isnan(veh.target_kwh) for veh in problem.vehicles])
    short = m.var("tgt_short", (v.size,), 0.0, INF)
    r = m.con("target_soft", (v.size,), vals["soft_target"][v, k], INF)
    m.index["tgt_short"] = m.index["target_soft"] = (v, k)
    m.add(r, m.cols["soc"][v, k], 1.0)
    m.add(r, short, 1.0)


def add_soft_final(m: _Matrix, vals: dict[str, Any]) -> None:
    """Final SOC below the initial, priced [kWh]; rows ``final_soft`` (V).

    soc[v,T] + final_short[v] >= soc[v,0],  final_short >= 0.
    """
    soc = m.cols["soc"]
    short = m.var("final_short", (soc.shape[0],), 0.0, INF)
    r = m.con("final_soft", (soc.shape[0],), vals["soft_final"], INF)
    m.add(r, soc[:, -1], 1.0)
    m.add(r, short, 1.0)


def add_soft(m: _Matrix, problem: PlanProblem, vals: dict[str, Any], soft: frozenset[str]) -> None:
    """Shortfall variables for the softened families (the reserve's soft case is only its lifted
    shortfall bound and price, already in ``vals``; final only with the final-SOC option)."""
    if "import" in soft:
        add_soft_import(m, problem, vals)
    if "min_soc" in soft:
        add_soft_min_soc(m, vals)
    if "target" in soft:
        add_soft_target(m, problem, vals)
    if "final" in soft and problem.final_soc_at_least_initial:
        add_soft_final(m, vals)


def add_objective(m: _Matrix, problem: PlanProblem, vals: dict[str, Any]) -> float:
    """Price the columns; returns the objective's constant [currency].

    sum_t (c_imp[t]*imp[t] - c_exp[t]*exp[t] + c_uns*uns[t] + c_res*res_short[t])
    + sum_{p,t} c_wear[p]*dis[p,t] + sum_s settle[s] + sum_v c_term[v]*soc[v,T] + rate * sum_b contract[b]
    + sum_{n,j} c_block[j]*block[n,j] + hedge_rate * near + pen_import*dt * sum_t over[t]
    + pen_min_soc*dt * sum_{v,k>=1} below[v,k] + pen_target * sum tgt_short + pen_final * sum final_short
    + obj_const (c_* already hold dt: currency per kW-step, per kWh or per kW-month).
    """
    c, dt = m.cols, problem.dt_h
    prices = {"imp": vals["c_imp"], "exp": -vals["c_exp"], "uns": vals["c_uns"],
              "dis": vals["c_wear"].reshape(-1, 1), "settle": 1.0,
              "res_short": vals["c_res"], "contract": vals.get("rate"), "block": vals.get("c_block"),
              "over": vals.get("pen_import", 0.0) * dt, "tgt_short": vals.get("pen_target"),
              "final_short": vals.get("pen_final"), "near": vals.get("hedge_rate")}
    for name, price in prices.items():
        if name in c:
            m.cost(c[name], price)
    m.cost(c["soc"][:, -1], vals["c_term"])
    if "below" in c:
        m.cost(c["below"][:, 1:], vals["pen_min_soc"] * dt)
    return float(vals["obj_const"])


def collect(problem: PlanProblem, req: Requirements, soft: frozenset[str] = frozenset()) -> _Matrix:
    """The model of ``problem`` with the bounds of ``req`` and the softened families ``soft``,
    collected as named blocks and flat arrays (``arrays``) but not yet handed to HiGHS (the
    families of :func:`models.formulation.build_model`, in its order)."""
    vals = param_values(problem, req, soft)
    m = _Matrix()
    m.soft = frozenset(soft)
    add_grid(m, vals)
    add_chargers(m, problem, vals)
    add_charger_turns(m, problem)
    add_power_balance(m, vals)
    if not problem.vehicle_export_allowed:
        add_pv_only_export(m, vals)
    if needs_grid_direction_binary(problem):
        add_grid_direction(m, problem, soft)
    add_soc(m, problem, vals)
    if problem.reserve_kwh is not None:
        add_reserve(m, problem, vals)
    if "settle_rhs" in vals:
        add_settlement(m, problem, vals)
    if problem.demand is not None:
        add_demand(m, problem, vals)
    if problem.blocks is not None:
        add_blocks(m, problem, vals)
    if soft:
        add_soft(m, problem, vals, soft)
    m.arrays = m.finish(add_objective(m, problem, vals))
    return m


def build(problem: PlanProblem, req: Requirements, soft: frozenset[str] = frozenset(),
          collected: _Matrix | None = None) -> MatrixModel:
    """The model of ``problem`` (:func:`collect`, or the already ``collected`` one) in a new HiGHS
    instance."""
    m = collected if collected is not None else collect(problem, req, soft)
    h, summed = m.arrays.highs()
    return MatrixModel(h, m.cols, m.rows, m.index, m.soft, m.arrays, summed)


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
          time_limit_s: float = 60.0, soft: frozenset[str] = frozenset()) -> DirectResult:
    """Build and solve the matrix model (its LP relaxation if ``relax``), softened families ``soft``."""
    t0 = time.perf_counter()
    h = build(problem, req, soft).highs
    t1 = time.perf_counter()
    run(h, relax, mip_rel_gap, time_limit_s)
    t2 = time.perf_counter()
    status = h.modelStatusToString(h.getModelStatus())
    return DirectResult(float(h.getInfo().objective_function_value), status, t1 - t0, t2 - t1)
