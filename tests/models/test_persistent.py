"""The persistent matrix model (``highs_direct``, ``SolveOptions.persistent``): a session keeps one
HiGHS model per pattern and updates its numbers in place for the next problem of that pattern. A
persistent session and fresh builds must give the same plans: over sequences of random problems
of one shape (new load, PV, prices, limits, SOC, targets, reserve, demand history, and the
coefficients that follow data: the grid-direction big-M, a cut demand window's hours), solved as
the planner does (hard, then all soft where the hard model is infeasible: two patterns
alternating), the same status and objective, schedules that break nothing, and an updated HiGHS
model equal, number for number, to a fresh build."""

from __future__ import annotations

import dataclasses

import highspy
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import sparse

import models.solve as session_module
from models import direct
from models.data import DemandSpec, PlanProblem
from models.formulation import SOFT_FAMILIES
from models.requirements import Requirements, requirements
from models.solve import MAX_MODELS, Session, Solution, SolveOptions
from problems import car, check, plan_problems, site, unit

GAP = 1e-10  # MILP relative gap: both sides prove their optimum
REL, ABS = 1e-9, 1e-6  # objective agreement [fraction, currency]; ABS is HiGHS's own mip_abs_gap
ALL_SOFT = frozenset(SOFT_FAMILIES)
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def perturbed(p: PlanProblem, rng: np.random.Generator) -> PlanProblem:
    """A problem of the same shape as ``p`` with new numbers: load, PV, prices, grid limits, reserve,
    terminal value, each car's start SOC, targets (where it has them) and arrival SOC, the demand
    history and rate, and (15-minute steps) the hours of a demand window cut by the horizon end."""
    T = p.n_steps

    def scaled(a: np.ndarray, lo: float = 0.5, hi: float = 1.5) -> np.ndarray:
        return a * rng.uniform(lo, hi, a.shape)

    cars = []
    for v in p.vehicles:
        cap = v.capacity_kwh
        cars.append(dataclasses.replace(
            v, soc0_kwh=float(rng.uniform(0.1, 0.95) * cap),
            target_kwh=np.where(np.isnan(v.target_kwh), np.nan, rng.uniform(0.2, 0.9, T + 1) * cap),
            arrival_set_kwh=np.where(np.isnan(v.arrival_set_kwh), np.nan, rng.uniform(0.1, 0.9, T) * cap)))
    demand = p.demand
    if demand is not None:
        hours = demand.window_hours.copy()
        if p.dt_h == 0.25 and np.sum(demand.window_of_step == hours.size - 1) == 1:
            hours[-1] = float(rng.choice([0.25, 0.5]))  # the last window cut after one step, or averaged as whole
        demand = dataclasses.replace(
            demand, rate_per_kw_month=float(rng.uniform(500, 2000)), window_hours=hours,
            window_pre_kwh=scaled(demand.window_pre_kwh), month_floor_kw=rng.uniform(0, 10, demand.n_months),
            held_kw=rng.choice([0.0, 5.0, 8.0], demand.held_kw.size))
    return dataclasses.replace(
        p, load_kw=scaled(p.load_kw), pv_kw=scaled(p.pv_kw), import_price=scaled(p.import_price),
        export_price=scaled(p.export_price), import_limit_kw=np.full(T, float(rng.choice([30.0, 30.0, 4.0, 12.0]))),
        export_limit_kw=np.full(T, float(rng.choice([0.0, 5.0, 8.0]))), vehicles=tuple(cars), demand=demand,
        reserve_kwh=None if p.reserve_kwh is None else rng.uniform(0, 5, T),
        terminal_value_per_kwh=float(rng.uniform(0, 35)))


def planned(session: Session, p: PlanProblem, compare: bool = False) -> tuple[Solution, Requirements]:
    """Plan ``p`` as :meth:`ems.planning.Planner.plan` does: hard (softened as the findings ask),
    then every family softened where that is infeasible. ``compare``: after each solve that
    updated a kept model in place, check that model against a fresh build (:func:`lp_of`)."""
    req = requirements(p)
    sol = None
    for soft in (req.soften, ALL_SOFT):
        before = session.updates
        sol = session.solve(p, req, soft)
        if compare and session.updates > before:
            kept, fresh = session._matrices[-1].matrix, direct.build(p, req, soft)
            for name, ours, theirs in zip(LP_PARTS, lp_of(kept.highs), lp_of(fresh.highs)):
                assert np.array_equal(ours, theirs), name
        if sol.status != "infeasible":
            break
    return sol, req


def matrix_of(lp) -> sparse.spmatrix:
    """The constraint matrix of a HiGHS LP (held by columns or, as built from rows, by rows)."""
    a = lp.a_matrix_
    kind = sparse.csr_matrix if a.format_ == highspy.MatrixFormat.kRowwise else sparse.csc_matrix
    return kind((np.asarray(a.value_), np.asarray(a.index_), np.asarray(a.start_)), shape=(lp.num_row_, lp.num_col_))


LP_PARTS = ("cost", "lower", "upper", "row lower", "row upper", "integrality", "offset", "matrix")


def lp_of(h) -> tuple[np.ndarray, ...]:
    """Everything HiGHS holds of a model: costs, bounds, row bounds, integrality, offset and the matrix."""
    lp = h.getLp()
    mat = matrix_of(lp).toarray()
    ints = np.asarray([int(x) for x in lp.integrality_]) if len(lp.integrality_) else np.zeros(lp.num_col_, int)
    return (np.asarray(lp.col_cost_), np.asarray(lp.col_lower_), np.asarray(lp.col_upper_), np.asarray(lp.row_lower_),
            np.asarray(lp.row_upper_), ints, np.array([lp.offset_]), mat)


def assert_same(p: PlanProblem, kept: tuple[Solution, Requirements], fresh: tuple[Solution, Requirements]) -> None:
    """Same status, soft set and objective; both schedules valid."""
    (sol, req), (ref, _) = kept, fresh
    assert sol.status == ref.status and sol.soft == ref.soft, (sol.messages, ref.messages)
    if ref.status in ("optimal", "feasible"):
        assert sol.objective == pytest.approx(ref.objective, rel=REL, abs=ABS)
        assert check(p, sol, req) == []
        assert check(p, ref, req) == []


@settings(FAST, max_examples=40)
@given(plan_problems(), st.integers(0, 2**32 - 1), st.booleans())
def test_a_persistent_session_plans_like_fresh_builds(p, seed, lp_first):
    """A random site and four perturbed copies, in turn through one persistent session and through
    fresh builds: the same plans; every model the session updated in place equals a fresh build."""
    rng = np.random.default_rng(seed)
    options = {"mip_rel_gap": GAP, "lp_first": lp_first}
    kept = Session(SolveOptions(**options))
    for q in [p] + [perturbed(p, rng) for _ in range(4)]:
        assert_same(q, planned(kept, q, compare=True), planned(Session(SolveOptions(persistent=False, **options)), q))
    assert kept.rebuilds <= 2 * MAX_MODELS


def office_like(T: int = 24, *, seed: int = 0, cars: int = 2, export: bool = False) -> PlanProblem:
    """A site with two units (a third car shares the first), prices that make the cars work, a demand charge."""
    rng = np.random.default_rng(seed)
    chargers = [unit("c0", kw=6.0, eta_c=0.95, eta_d=0.95), unit("c1", kw=6.0, eta_c=0.9, eta_d=0.9)]
    plugged = np.zeros(T, dtype=bool)
    plugged[2:T - 4] = True
    vehicles = [car(T, soc0=float(rng.uniform(8, 30)), capacity=40.0, min_kwh=8.0, max_kwh=36.0, plugged=plugged,
                    targets={T - 4: float(rng.uniform(20, 34))}, chargers=(f"c{i % 2}",), wear=2.0, vid=f"v{i}")
                for i in range(cars)]
    demand = DemandSpec(1000.0, np.arange(T), np.zeros(T), np.full(T, 0.5), np.zeros(T, dtype=int),
                        np.array([float(rng.uniform(0, 5))]), np.array([5.0]), np.ones((1, 1), dtype=bool),
                        np.array([True]), ("m0",))
    price = np.where((np.arange(T) % 24 >= 8) & (np.arange(T) % 24 < 20), 40.0, 20.0) * rng.uniform(0.9, 1.1, T)
    return site(0.5, rng.uniform(2, 12, T), pv=np.clip(rng.normal(3, 3, T), 0, None), price=price,
                export_price=np.full(T, 45.0 if export else 10.0), export_limit=8.0, import_limit=30.0,
                vehicles=vehicles, chargers=chargers, demand=demand, vehicle_export_allowed=export,
                terminal_value_per_kwh=25.0)


def rolling_site(start: int, T: int = 48) -> PlanProblem:
    """A receding horizon: steps ``start`` .. ``start + T - 1`` of a week at 30 minutes (load, PV,
    time-of-use prices, a demand charge), a day car on one unit (08:00-18:00, leaving with 30 kWh)
    and a night car on the other (20:00-07:00, leaving with 34 kWh), each arriving with 15 kWh."""
    rng = np.random.default_rng(7)
    week = np.arange(7 * 48)
    slot = week % 48
    load = 3 + 2 * np.sin(2 * np.pi * slot / 48) + rng.uniform(0, 2, week.size)
    pv = np.clip(8 * np.sin(np.pi * (slot - 12) / 24), 0, None) * rng.uniform(0.5, 1, week.size)
    price = np.where((slot >= 16) & (slot < 44), 38.0, 22.0)
    t = np.arange(start, start + T)
    cars = []
    for i, (arrive, leave, want) in enumerate(((16, 36, 30.0), (40, 14, 34.0))):
        plugged = (t % 48 >= arrive) & (t % 48 < leave) if arrive < leave else (t % 48 >= arrive) | (t % 48 < leave)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], plugged.astype(int), [0]])))
        sets = {int(k): 15.0 for k in edges[::2] if 0 < k < T}
        targets = {int(k): want for k in edges[1::2] if 0 < k < T}  # departures inside the horizon
        cars.append(car(T, soc0=20.0, capacity=40.0, min_kwh=8.0, max_kwh=38.0, plugged=plugged, targets=targets,
                        sets=sets, chargers=(f"c{i}",), wear=2.0, vid=f"car{i}"))
    demand = DemandSpec(1000.0, np.arange(T), np.zeros(T), np.full(T, 0.5), np.zeros(T, dtype=int), np.array([4.0]),
                        np.array([5.0]), np.ones((1, 1), dtype=bool), np.array([True]), ("m0",))
    return site(0.5, load[t], pv=pv[t], price=price[t], export_price=np.full(T, 10.0), export_limit=8.0,
                import_limit=30.0, vehicles=cars, chargers=[unit("c0", eta_c=0.95, eta_d=0.95), unit("c1", eta_c=0.9, eta_d=0.9)],
                demand=demand, terminal_value_per_kwh=25.0)


def test_a_receding_horizon_updates_one_model_and_starts_each_lp_from_the_last_basis():
    """Sixteen re-plans, each a step later: one build, fifteen updates, the fresh builds' plans, and
    fewer simplex iterations than from scratch (the LP starts from the last problem's basis)."""
    kept, iters, fresh_iters = Session(), [], []
    for start in range(16):
        p = rolling_site(start)
        sol = planned(kept, p)
        assert sol[0].method == "lp"
        iters.append(kept._matrices[-1].matrix.highs.getInfo().simplex_iteration_count)
        assert_same(p, sol, planned(Session(SolveOptions(persistent=False)), p))
        mm = direct.build(p, sol[1], sol[0].soft)
        direct.run(mm.highs, True, 1e-4, 10.0)
        fresh_iters.append(mm.highs.getInfo().simplex_iteration_count)
    assert (kept.rebuilds, kept.updates) == (1, 15)
    assert sum(iters[1:]) < 0.5 * sum(fresh_iters[1:])


def test_the_grid_direction_big_m_follows_the_import_limit_in_place():
    """With vehicle export paying more than import the model carries the grid-direction binary,
    whose rows hold the largest import and export as coefficients: a new import limit changes
    them in place (no rebuild), and the model equals a fresh build."""
    kept = Session()
    for limit in (30.0, 18.0, 45.0):
        p = dataclasses.replace(office_like(export=True), import_limit_kw=np.full(24, limit))
        sol, req = planned(kept, p)
        assert_same(p, (sol, req), planned(Session(SolveOptions(persistent=False)), p))
        model = kept._matrices[-1].matrix
        assert "import_side" in model.rows
        row, col = int(model.rows["import_side"][0]), int(model.cols["g"][0])
        assert matrix_of(model.highs.getLp())[row, col] == pytest.approx(-limit)
    assert (kept.rebuilds, kept.updates) == (1, 2)


def test_a_new_structure_builds_a_new_model():
    """Another horizon length, another car or the grid-direction binary appearing: a rebuild each
    time, with the fresh build's plan; the old structure is updated in place when it comes back."""
    kept = Session()
    problems = [office_like(24), office_like(20), office_like(24, cars=3), office_like(24, export=True),
                office_like(24, seed=5)]
    for p in problems:
        assert_same(p, planned(kept, p), planned(Session(SolveOptions(persistent=False)), p))
    assert (kept.rebuilds, kept.updates) == (4, 1)


def test_two_structures_alternating_keep_two_models_and_more_than_max_models_evict_the_oldest():
    """Two horizons in turn (as 15-minute plans alternate between window alignments): two builds,
    then updates only. MAX_MODELS + 1 structures in turn: every solve rebuilds (least recently used
    goes first), the plans still those of fresh builds."""
    kept = Session()
    for i in range(6):
        p = office_like(24 if i % 2 else 20, seed=i)
        assert_same(p, planned(kept, p), planned(Session(SolveOptions(persistent=False)), p))
    assert (kept.rebuilds, kept.updates) == (2, 4)
    kept = Session()
    lengths = [20 + i for i in range(MAX_MODELS + 1)]
    for i in range(2 * len(lengths)):
        p = office_like(lengths[i % len(lengths)], seed=i)
        assert_same(p, planned(kept, p), planned(Session(SolveOptions(persistent=False)), p))
    assert (kept.rebuilds, kept.updates) == (2 * len(lengths), 0)
    assert len(kept._matrices) == MAX_MODELS


def test_the_milp_of_an_updated_model_starts_from_this_problems_relaxation(monkeypatch):
    """Cars sharing a charger make the relaxation split it, so every re-plan goes on to the MILP
    on the updated model (integrality kept through the LP stage): its MIP start is this problem's
    relaxed point (not the last problem's), and the optimum that of a fresh build."""
    starts, lps = [], []
    original = direct.run

    def watched(h, relax, gap, limit):
        if not relax:
            s = h.getSolution()
            starts.append(np.asarray(s.col_value).copy() if s.value_valid else None)
        original(h, relax, gap, limit)
        if relax:
            lps.append(np.asarray(h.getSolution().col_value).copy())

    monkeypatch.setattr(session_module.direct, "run", watched)
    kept = Session(SolveOptions(mip_rel_gap=GAP))
    for i, first in enumerate((3.0, 2.5, 3.5, 3.0)):
        a = car(2, soc0=0.0, targets={2: first}, vid="a")
        b = car(2, soc0=0.0, targets={2: 6.0 - first}, vid="b")
        p = site(1.0, [0, 0], price=[1, 3 + i], vehicles=[a, b])
        sol = planned(kept, p)
        ref = planned(Session(SolveOptions(persistent=False, mip_rel_gap=GAP)), p)
        assert sol[0].method == "milp" and kept._matrices[-1].matrix.arrays.integer.any()
        assert_same(p, sol, ref)
        model = kept._matrices[-1].matrix
        start, lp = starts[-2], lps[-2]  # this solve's MIP start and LP (the fresh session ran after it)
        assert start is not None
        for name in ("ch", "dis", "imp", "soc"):
            assert np.array_equal(start[model.cols[name]], lp[model.cols[name]]), name
        assert set(np.unique(start[model.cols["yc"]])) <= {0.0, 1.0}
    assert (kept.rebuilds, kept.updates) == (1, 3)
