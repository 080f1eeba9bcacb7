"""Solving the model: LP relaxation first, MILP only when the relaxation is not already integral.

:class:`Session` solves the LP relaxation; if its flows break no integrality rule
(:func:`conflicts`) it is the MILP optimum (method ``lp``); else a repaired point
(:func:`net_simultaneous`) no more expensive than the LP is (``lp+repair``); else HiGHS solves the
MILP of the same model from that point (``milp``). Why this is exact and fast: ``models/README.md``
("Solving").

Two formulations of the same model reach the solver, sharing this logic (``SolveOptions.interface``):

- ``highs_direct`` (the default, the production path): the model, hard or soft, as a HiGHS matrix
  built with numpy (:mod:`models.direct`); a persistent session keeps the models of its last
  ``MAX_MODELS`` patterns and updates one in place when the next problem has its pattern, the LP
  then hot-started from the last basis (``models/README.md``, "The persistent model"); no pyomo
  model is built or solved;
- through pyomo (``appsi_highs``, ``highs``), the independent reference formulation
  (:mod:`models.formulation`): one persistent model per :func:`models.formulation.structure_key`
  with the solver attached to it, so a re-plan with the same shape only writes new parameter
  values (soft models are built fresh). Property tests check that both give the same optimum.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import highspy
import numpy as np
import pyomo.environ as pe

from models import direct
from models.data import PlanProblem, export_cap_kw, needs_grid_direction_binary, pairs
from models.formulation import build_model, soft_penalties, structure_key, update_params
from models.requirements import Requirements
from models.solution import Costs, Values, costs
from models.verify import ACTIVE_KW

log = logging.getLogger(__name__)

PYOMO_INTERFACES = ("appsi_highs", "highs")
DIRECT = "highs_direct"  # the model as a HiGHS matrix, without pyomo (models/direct.py)
INTERFACES = PYOMO_INTERFACES + (DIRECT,)
# Models kept per session: 15-minute plans alternate between two window alignments (:00 and :15
# starts), and a month end in the horizon adds shapes; 4 covers both without holding much memory.
MAX_MODELS = 4


@dataclass(frozen=True)
class SolveOptions:
    """Solver settings: time limit [s] per solve, MILP relative gap (fraction), solver interface.

    ``interface``: ``"highs_direct"`` (default: every model, hard or soft, as a HiGHS matrix without
    pyomo, with a MIP start), ``"appsi_highs"`` (the pyomo reference through pyomo.contrib.appsi, MIP
    start too) or ``"highs"`` (pyomo.contrib.solver). ``lp_first=False`` always solves the MILP (for
    comparisons). ``persistent=False`` builds a new model for every solve (any interface) instead of
    updating a kept one in place.
    """

    time_limit_s: float = 10.0
    mip_rel_gap: float = 1e-4
    interface: str = DIRECT
    lp_first: bool = True
    persistent: bool = True

    def __post_init__(self) -> None:
        if self.interface not in INTERFACES:
            raise ValueError(f"unknown solver interface {self.interface!r}; use one of {INTERFACES}")


@dataclass
class Solution:
    """What a solve produced.

    ``status``: optimal, feasible (time limit hit with a solution), infeasible or failed;
    ``method``: lp (relaxation already integral), lp+repair, milp; ``objective`` the solver's.
    """

    status: str
    method: str = ""
    values: Values | None = None
    objective: float | None = None
    bound: float | None = None
    build_seconds: float = 0.0
    solve_seconds: float = 0.0
    soft: frozenset[str] = frozenset()
    messages: list[str] = field(default_factory=list)


@dataclass
class _Run:
    status: str
    objective: float | None
    bound: float | None


class _Backend:
    """One HiGHS solver attached to one pyomo model, through the chosen pyomo interface."""

    def __init__(self, interface: str):
        if interface not in PYOMO_INTERFACES:
            raise ValueError(f"unknown pyomo solver interface {interface!r}; use one of {PYOMO_INTERFACES}")
        self.interface = interface
        if interface == "appsi_highs":
            from pyomo.contrib.appsi.solvers import Highs
            s = Highs()
            s.config.load_solution = False
            u = s.update_config
            u.check_for_new_or_removed_constraints = u.check_for_new_or_removed_vars = False
            u.check_for_new_or_removed_params = u.check_for_new_objective = False
            u.update_constraints = u.update_vars = u.update_named_expressions = u.update_objective = False
            u.update_params = True
        else:
            from pyomo.contrib.solver.solvers.highs import Highs
            s = Highs()
            a = s.config.auto_updates
            a.check_for_new_or_removed_constraints = a.check_for_new_or_removed_vars = False
            a.check_for_new_or_removed_params = a.check_for_new_objective = False
            a.update_constraints = a.update_vars = a.update_named_expressions = a.update_objective = False
            a.update_parameters = True
        self.solver = s

    def run(self, model: pe.ConcreteModel, relax: bool, options: SolveOptions, warm: bool = False) -> _Run:
        """Solve (the relaxation if ``relax``); load the values into the model if there is a solution."""
        hopts = {"solve_relaxation": relax, "presolve": "on"}
        if self.interface == "appsi_highs":
            from pyomo.contrib.appsi.base import TerminationCondition as TC
            s = self.solver
            s.config.time_limit = options.time_limit_s
            s.config.mip_gap = options.mip_rel_gap
            s.config.warmstart = warm
            s.highs_options = hopts
            res = s.solve(model)
            tc = res.termination_condition
            has = res.best_feasible_objective is not None
            if tc == TC.optimal:
                status = "optimal"
            elif tc in (TC.infeasible, TC.infeasibleOrUnbounded):
                status = "infeasible"
            else:
                status = "feasible" if has else "failed"
            if has:
                res.solution_loader.load_vars()
            return _Run(status, res.best_feasible_objective, res.best_objective_bound)
        from pyomo.contrib.solver.common.results import SolutionStatus, TerminationCondition as TC
        res = self.solver.solve(model, load_solutions=False, raise_exception_on_nonoptimal_result=False,
                                time_limit=options.time_limit_s, rel_gap=options.mip_rel_gap, solver_options=hopts)
        tc, ss = res.termination_condition, res.solution_status
        has = ss in (SolutionStatus.optimal, SolutionStatus.feasible)
        if tc == TC.convergenceCriteriaSatisfied and has:
            status = "optimal"
        elif tc in (TC.provenInfeasible, TC.locallyInfeasible, TC.infeasibleOrUnbounded):
            status = "infeasible"
        else:
            status = "feasible" if has else "failed"
        if has:
            res.solution_loader.load_vars()
        return _Run(status, res.incumbent_objective, res.objective_bound)


class _PyomoModel:
    """A pyomo model holding one problem's values, with the solver attached to it."""

    def __init__(self, m: pe.ConcreteModel, backend: _Backend, problem: PlanProblem):
        self.m, self.backend, self.problem = m, backend, problem

    def run(self, relax: bool, options: SolveOptions, warm: Values | None = None) -> _Run:
        """Solve (the relaxation if ``relax``), from the MIP start ``warm`` if given."""
        if warm is not None:
            _set_warm_start(self.m, self.problem, warm)
        return self.backend.run(self.m, relax, options, warm=warm is not None and self.backend.interface == "appsi_highs")

    def values(self) -> Values:
        """The last solution's decisions."""
        return read_values(self.m, self.problem)


_FOUND = (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kInfeasible,
          highspy.HighsModelStatus.kUnboundedOrInfeasible)


class _DirectModel:
    """The model of one problem (softened families ``soft``) as a HiGHS matrix (:mod:`models.direct`),
    solved without pyomo; kept by a persistent :class:`Session` and updated in place for the next
    problem of the same pattern (:meth:`reuse`)."""

    def __init__(self, matrix: direct.MatrixModel, problem: PlanProblem):
        self.matrix, self.problem = matrix, problem
        self.x: np.ndarray | None = None  # column values of the last solution (of this problem)
        self.updated = False  # whether HiGHS holds a basis from an earlier problem

    def reuse(self, collected: direct._Matrix, problem: PlanProblem) -> bool:
        """Take the numbers of ``collected`` (the model of ``problem``) in place; False if its pattern differs."""
        if not self.matrix.update(collected):
            return False
        self.problem, self.x, self.updated = problem, None, True
        return True

    def run(self, relax: bool, options: SolveOptions, warm: Values | None = None) -> _Run:
        """Solve (the relaxation if ``relax``), from the MIP start ``warm`` if given (the other
        columns from the last solution). An LP of an updated model starts from the basis HiGHS
        kept (no presolve); if that does not end optimal, the LP is solved again from scratch, so
        a status other than optimal is always the one a fresh build gives."""
        h = self.matrix.highs
        if warm is not None and self.x is not None:
            start = highspy.HighsSolution()
            start.col_value = self.matrix.with_values(self.x, mip_start(self.problem, warm))
            start.value_valid = True
            h.setSolution(start)
        direct.run(h, relax, options.mip_rel_gap, options.time_limit_s)
        run = self._status(h, relax)
        if relax and self.updated and run.status != "optimal" and h.getModelStatus() != highspy.HighsModelStatus.kTimeLimit:
            log.debug("hot-started LP ended %s: solving it again from scratch", run.status)
            h.clearSolver()
            direct.run(h, relax, options.mip_rel_gap, options.time_limit_s)
            run = self._status(h, relax)
        self.updated = False
        return run

    def _status(self, h: highspy.Highs, relax: bool) -> _Run:
        """The outcome of the last run; keeps the column values when there is a solution."""
        ms, info = h.getModelStatus(), h.getInfo()
        has = info.primal_solution_status == highspy.SolutionStatus.kSolutionStatusFeasible
        if ms == _FOUND[0] and has:
            status = "optimal"
        elif ms in _FOUND[1:]:
            status = "infeasible"
        else:
            status = "feasible" if has else "failed"
        if not has:
            return _Run(status, None, None)
        self.x = np.asarray(h.getSolution().col_value)
        obj = float(info.objective_function_value)
        return _Run(status, obj, obj if relax else float(info.mip_dual_bound))

    def values(self) -> Values:
        """The last solution's decisions."""
        return self.matrix.values(self.x)


def _array(var: pe.Var, shape: tuple[int, ...]) -> np.ndarray:
    """Values of an indexed variable as an array (None read as 0)."""
    out = np.zeros(shape)
    for idx, v in var.items():
        val = v.value
        if val is not None:
            out[idx] = val
    return out


def read_values(m: pe.ConcreteModel, problem: PlanProblem) -> Values:
    """The solved model's decisions as arrays, read back once."""
    T, P, V = problem.n_steps, len(pairs(problem)), len(problem.vehicles)
    over = _array(m.over, (T,)) if hasattr(m, "over") else None
    return Values(imp=_array(m.imp, (T,)), exp=_array(m.exp, (T,)), curt=_array(m.curt, (T,)), uns=_array(m.uns, (T,)),
                  ch=_array(m.ch, (P, T)), dis=_array(m.dis, (P, T)), soc=_array(m.soc, (V, T + 1)),
                  res_short=_array(m.res_short, (T,)) if hasattr(m, "res_short") else np.zeros(T), over=over)


def conflicts(problem: PlanProblem, v: Values) -> dict[str, int]:
    """How many steps break each integrality rule in relaxed flows (all zero = integral)."""
    ps = pairs(problem)
    on = (v.ch > ACTIVE_KW).astype(int) + (v.dis > ACTIVE_KW).astype(int)
    out = {"pair": int(np.sum(on > 1)), "charger": 0, "vehicle": 0, "grid": 0}
    busy = on > 0
    for ci in range(len(problem.chargers)):
        rows = [i for i, p in enumerate(ps) if p.c == ci]
        if len(rows) > 1:
            out["charger"] += int(np.sum(busy[rows].sum(axis=0) > 1))
    for vi in range(len(problem.vehicles)):
        rows = [i for i, p in enumerate(ps) if p.v == vi]
        if len(rows) > 1:
            out["vehicle"] += int(np.sum(busy[rows].sum(axis=0) > 1))
    if needs_grid_direction_binary(problem):
        out["grid"] = int(np.sum((v.imp > ACTIVE_KW) & (v.exp > ACTIVE_KW)))
    return out


def net_simultaneous(problem: PlanProblem, v: Values) -> Values | None:
    """Replace charge-and-discharge-at-once by the net flow; None if the bus surplus cannot be placed.

    Per pair and step: battery rate e = eta_c*ch - dis/eta_d is kept; ch' = e/eta_c (e >= 0) or
    dis' = -e*eta_d (e < 0). The site then consumes s = (ch - dis) - (ch' - dis') >= 0 kW less,
    taken off unserved load, then import, then added to export (within its cap and
    export + curtailment <= PV), then to curtailment.
    """
    ps = pairs(problem)
    ch, dis = v.ch.copy(), v.dis.copy()
    surplus = np.zeros(problem.n_steps)
    for i, t in np.argwhere((ch > ACTIVE_KW) & (dis > ACTIVE_KW)):
        p = ps[i]
        e = p.eta_c * ch[i, t] - dis[i, t] / p.eta_d
        new_c, new_d = (e / p.eta_c, 0.0) if e >= 0 else (0.0, -e * p.eta_d)
        surplus[t] += (ch[i, t] - dis[i, t]) - (new_c - new_d)
        ch[i, t], dis[i, t] = new_c, new_d
    uns, imp, exp, curt = v.uns.copy(), v.imp.copy(), v.exp.copy(), v.curt.copy()
    for arr in (uns, imp):
        take = np.minimum(surplus, arr)
        arr -= take
        surplus -= take
    pv_room = problem.pv_kw - exp - curt if not problem.vehicle_export_allowed else np.full(problem.n_steps, np.inf)
    take = np.clip(np.minimum(surplus, np.minimum(export_cap_kw(problem) - exp, pv_room)), 0.0, None)
    exp += take
    surplus -= take
    take = np.clip(np.minimum(surplus, problem.pv_kw - curt - (0 if problem.vehicle_export_allowed else exp)), 0.0, None)
    curt += take
    surplus -= take
    if np.any(surplus > 1e-9):
        return None
    return Values(imp=imp, exp=exp, curt=curt, uns=uns, ch=ch, dis=dis, soc=v.soc.copy(), res_short=v.res_short.copy(),
                  over=None if v.over is None else np.maximum(0.0, v.over - (v.imp - imp)))


def soft_shortfalls(problem: PlanProblem, req: Requirements, v: Values, soft: frozenset[str]) -> dict[str, float]:
    """Shortfall of each softened family, weighted as in the objective [kWh, or kW x h for import]."""
    out: dict[str, float] = {}
    dt = problem.dt_h
    if "import" in soft and v.over is not None:
        out["import"] = float(v.over.sum() * dt)
    if "min_soc" in soft:
        mins = np.array([veh.min_kwh for veh in problem.vehicles]).reshape(-1, 1)
        out["min_soc"] = float(np.maximum(0.0, mins - v.soc[:, 1:]).sum() * dt)
    if "target" in soft:
        want = np.array([np.fmin(veh.target_kwh, req.soc_ub[i]) for i, veh in enumerate(problem.vehicles)]).reshape(v.soc.shape)
        out["target"] = float(np.nansum(np.maximum(0.0, want - v.soc)))
    if "final" in soft and problem.final_soc_at_least_initial:
        out["final"] = float(sum(max(0.0, veh.soc0_kwh - v.soc[i, -1]) for i, veh in enumerate(problem.vehicles)))
    return out


def plan_costs(problem: PlanProblem, req: Requirements, v: Values, soft: frozenset[str]) -> Costs:
    """:func:`models.solution.costs` with the soft model's penalties when ``soft``."""
    if not soft:
        return costs(problem, v)
    return costs(problem, v, soft_penalties(problem), soft_shortfalls(problem, req, v, soft))


def mip_start(problem: PlanProblem, v: Values) -> dict[str, np.ndarray]:
    """A (repaired) relaxed point as a MIP start: variable name -> values, binaries from which flows are on."""
    charging = v.ch > ACTIVE_KW
    out = {"ch": v.ch, "dis": v.dis, "yc": charging.astype(float), "yd": ((v.dis > ACTIVE_KW) & ~charging).astype(float),
           "imp": v.imp, "exp": v.exp, "curt": v.curt, "uns": v.uns}
    if needs_grid_direction_binary(problem):
        out["g"] = (v.imp > ACTIVE_KW).astype(float)
    return out


def _set_warm_start(m: pe.ConcreteModel, problem: PlanProblem, v: Values) -> None:
    """Write :func:`mip_start` into the pyomo model's variables."""
    for name, arr in mip_start(problem, v).items():
        for idx, var in getattr(m, name).items():
            var.set_value(float(arr[idx]), skip_validation=True)


class Session:
    """A reusable solver session: one model per pattern or structure (the last ``MAX_MODELS``),
    updated in place for the next problem of the same shape (``persistent``, the default), else
    built anew for every solve. ``highs_direct``: matrix models (:mod:`models.direct`), matched by
    their pattern (:meth:`models.direct.Arrays.same_pattern`), soft ones too; pyomo interfaces: a
    pyomo model and solver per :func:`models.formulation.structure_key`, parameters updated in
    place, soft models built fresh. ``rebuilds`` counts the models built, ``updates`` the models
    updated in place."""

    def __init__(self, options: SolveOptions | None = None):
        self.options = options or SolveOptions()
        self._models: dict[tuple, tuple[pe.ConcreteModel, _Backend]] = {}
        self._matrices: list[_DirectModel] = []  # most recently used last
        self.rebuilds = 0
        self.updates = 0

    def _direct_model(self, problem: PlanProblem, req: Requirements, soft: frozenset[str]) -> _DirectModel:
        """The matrix model of ``problem``: a kept one with the same pattern, updated in place, or a new one."""
        if not self.options.persistent:
            self.rebuilds += 1
            return _DirectModel(direct.build(problem, req, soft), problem)
        new = direct.collect(problem, req, soft)
        for i, model in enumerate(self._matrices):
            try:
                reused = model.reuse(new, problem)
            except RuntimeError:
                log.warning("in-place update of a kept model failed: building it anew", exc_info=True)
                del self._matrices[i]
                break
            if reused:
                self._matrices.append(self._matrices.pop(i))
                self.updates += 1
                return model
        model = _DirectModel(direct.build(problem, req, soft, collected=new), problem)
        self.rebuilds += 1
        self._matrices.append(model)
        del self._matrices[:-MAX_MODELS]
        return model

    def _model_for(self, problem: PlanProblem, req: Requirements, soft: frozenset[str]) -> _PyomoModel | _DirectModel:
        """The model of ``problem``: a matrix model (``highs_direct``), a fresh pyomo model (soft, or
        not persistent), or the persistent one updated (rebuilt when the structure changed)."""
        interface = self.options.interface
        if interface == DIRECT:
            return self._direct_model(problem, req, soft)
        if soft or not self.options.persistent:
            self.rebuilds += 1
            return _PyomoModel(build_model(problem, req, soft, mutable=False), _Backend(interface), problem)
        key = structure_key(problem)
        if key in self._models:
            m, backend = self._models.pop(key)
            update_params(m, problem, req)
            self.updates += 1
        else:
            m, backend = build_model(problem, req, mutable=True), _Backend(interface)
            self.rebuilds += 1
        self._models[key] = (m, backend)  # most recently used last
        while len(self._models) > MAX_MODELS:
            self._models.pop(next(iter(self._models)))
        return _PyomoModel(m, backend, problem)

    def solve(self, problem: PlanProblem, req: Requirements, soft: frozenset[str] = frozenset()) -> Solution:
        """Solve ``problem`` with the bounds of ``req``; the MILP optimum or a clear status (never raises)."""
        t0 = time.perf_counter()
        try:
            model = self._model_for(problem, req, soft)
        except Exception as exc:  # a failed build must not take the planner down: the caller falls back
            log.exception("model build failed")
            self._models.clear()
            self._matrices.clear()
            return Solution("failed", messages=[f"model build failed: {exc}"], build_seconds=time.perf_counter() - t0)
        t1 = time.perf_counter()
        try:
            sol = self._solve(model, problem, req, soft)
        except Exception as exc:  # solver crash: reported, the caller falls back
            log.exception("solver failed")
            self._models.clear()
            self._matrices.clear()
            sol = Solution("failed", messages=[f"solver failed: {exc}"])
        sol.build_seconds, sol.solve_seconds, sol.soft = t1 - t0, time.perf_counter() - t1, soft
        return sol

    def _solve(self, model: _PyomoModel | _DirectModel, problem: PlanProblem, req: Requirements,
               soft: frozenset[str]) -> Solution:
        """LP first, then repair, then MILP (see the module docstring)."""
        opts = self.options
        warm: Values | None = None
        if opts.lp_first:
            run = model.run(relax=True, options=opts)
            if run.status in ("infeasible", "failed"):
                return Solution(run.status, "lp", messages=[f"LP relaxation: {run.status}"])
            lp = model.values()
            if run.status == "optimal":
                found = conflicts(problem, lp)
                if not any(found.values()):
                    return Solution("optimal", "lp", lp, run.objective, run.objective)
                only_pairs = found["pair"] and not (found["charger"] or found["vehicle"] or found["grid"])
                fixed = net_simultaneous(problem, lp) if only_pairs else None
                if fixed is not None:
                    lp_cost = plan_costs(problem, req, lp, soft).objective
                    fixed_cost = plan_costs(problem, req, fixed, soft).objective
                    if fixed_cost <= lp_cost + 1e-9 * max(1.0, abs(lp_cost)):
                        return Solution("optimal", "lp+repair", fixed, fixed_cost, run.objective)
                warm = fixed if fixed is not None else lp
                log.debug("LP relaxation not integral (%s): solving the MILP", found)
        run = model.run(relax=False, options=opts, warm=warm)
        if run.status in ("infeasible", "failed"):
            return Solution(run.status, "milp", messages=[f"MILP: {run.status}"])
        msg = [] if run.status == "optimal" else [
            f"MILP stopped at the {opts.time_limit_s:g} s time limit with a solution within "
            f"{_gap(run.objective, run.bound):.2%} of the best bound"]
        return Solution(run.status, "milp", model.values(), run.objective, run.bound, messages=msg)


def _gap(obj: float | None, bound: float | None) -> float:
    """Relative gap between an objective and a bound (inf when either is missing)."""
    if obj is None or bound is None:
        return float("inf")
    return abs(obj - bound) / max(1e-9, abs(obj))
