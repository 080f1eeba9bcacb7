"""Invariants of every plan on random valid sites, and agreement between the pyomo model and the
direct HiGHS matrix model (alone, and as the ``highs_direct`` interface of the solver session)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from models import direct
from models.data import DemandSpec, PlanProblem
from problems import car, check, plan, site, unit

DIRECT = "highs_direct"

TOL = 1e-5


@st.composite
def problems(draw) -> PlanProblem:
    """A random site: 4-12 steps of 15 or 30 minutes, 1-2 chargers, 1-3 cars with plug windows,
    targets, arrivals, prices, PV, load, optionally a demand charge, a reserve and an outage."""
    dt = draw(st.sampled_from([0.25, 0.5]))
    T = draw(st.integers(4, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_c = draw(st.integers(1, 2))
    chargers = [unit(f"c{i}", kw=float(rng.choice([3.0, 6.0])), eta_c=float(rng.uniform(0.85, 1.0)),
                     eta_d=float(rng.uniform(0.85, 1.0)), islanded=float(rng.choice([0.0, 3.0]))) for i in range(n_c)]
    cars = []
    for v in range(draw(st.integers(1, 3))):
        cap = float(rng.choice([20.0, 40.0, 62.0]))
        a, b = sorted(rng.integers(0, T + 1, size=2))
        plugged = np.zeros(T, dtype=bool)
        plugged[a:b] = True
        targets = {int(b): float(rng.uniform(0.2, 0.9) * cap)} if 0 < b <= T and b > a and rng.random() < 0.7 else {}
        sets = {int(a): float(rng.uniform(0.1, 0.9) * cap)} if 0 < a < T and rng.random() < 0.5 else {}
        allowed = tuple(c.id for c in chargers if rng.random() < 0.7) or (chargers[0].id,)
        cars.append(car(T, soc0=float(rng.uniform(0.1, 0.95) * cap), capacity=cap, min_kwh=0.2 * cap, max_kwh=0.9 * cap,
                        plugged=plugged, targets=targets, sets=sets, chargers=allowed, wear=float(rng.choice([0.0, 8.7])),
                        vid=f"v{v}"))
    demand = None
    if draw(st.booleans()):
        per = int(round(0.5 / dt))
        W = int(np.ceil(T / per))
        demand = DemandSpec(float(rng.uniform(500, 2000)), np.arange(T) // per, np.zeros(W), np.full(W, 0.5),
                            np.zeros(W, dtype=int), np.array([float(rng.uniform(0, 10))]), np.array([5.0, 8.0, 0.0]),
                            np.ones((3, 1), dtype=bool), np.array([True, False, False]), ("m0", "m1", "m2"))
    outage = None
    if draw(st.booleans()) and T > 4:
        outage = np.zeros(T, dtype=bool)
        outage[T - 3:] = True
    return site(dt, rng.uniform(0.2, 8.0, T), pv=np.clip(rng.normal(2, 3, T), 0, None), price=rng.uniform(15, 45, T),
                export_price=rng.uniform(0, 20, T), export_limit=float(rng.choice([0.0, 5.0])), import_limit=30.0,
                vehicles=cars, chargers=chargers, demand=demand,
                reserve_kwh=rng.uniform(0, 5, T) if rng.random() < 0.5 else None, reserve_soft=bool(rng.random() < 0.5),
                reserve_penalty_per_kwh_h=200.0, outage=outage, value_of_lost_load_per_kwh=1000.0,
                terminal_value_per_kwh=float(rng.uniform(0, 35)),
                final_soc_at_least_initial=bool(rng.random() < 0.3))


def below_min_through_an_outage() -> PlanProblem:
    """Found by hypothesis: a car below its minimum plugged in during an outage cannot get back
    above it on PV alone, so the hard plan is infeasible and the all-soft plan (soft reserve) answers."""
    c = car(5, soc0=7.7153, capacity=40.0, min_kwh=8.0, max_kwh=36.0, plugged=np.arange(5) == 4, targets={5: 20.18},
            sets={}, chargers=("c0",), wear=8.7, vid="v0")
    return site(0.25, np.array([1.45, 0.28, 4.55, 1.5, 2.67]), pv=np.array([0, 0, 0.31, 4.71, 1.27]),
                price=np.array([30.0, 40.3, 28.0, 19.1, 21.6]), export_price=np.array([5.6, 10.3, 0.2, 1.7, 15.9]),
                export_limit=5.0, import_limit=30.0, vehicles=[c], chargers=[unit("c0", kw=3.0, eta_c=0.8713, eta_d=0.915, islanded=3.0)],
                demand=None, reserve_kwh=np.array([3.6, 1.7, 0.5, 2.4, 0.1]), reserve_soft=False, reserve_penalty_per_kwh_h=200.0,
                outage=np.arange(5) >= 2, value_of_lost_load_per_kwh=1000.0, terminal_value_per_kwh=34.2,
                final_soc_at_least_initial=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
@example(p=below_min_through_an_outage())
def test_every_plan_is_valid_and_reports_what_it_cannot_meet(p):
    """Balance every step, flows within bounds, SOC within bounds and following the flows, never
    charging and discharging at once, one car per charger, no vehicle export; every departure
    target met or named in a finding (and then met up to what is reachable)."""
    sol, req = plan(p)
    assert sol.status == "optimal" or sol.status == "infeasible"
    if sol.status == "infeasible":  # joint conflicts beyond the analytic checks: the soft model answers
        sol, req = plan_all_soft(p)
    v = sol.values.cleaned()
    assert check(p, sol, req) == []
    assert np.all(v.exp + v.curt <= p.pv_kw + TOL)
    for i, veh in enumerate(p.vehicles):
        for k in np.flatnonzero(~np.isnan(veh.target_kwh)):
            met = v.soc[i, k] >= veh.target_kwh[k] - 1e-4
            named = any(f.subject == veh.id and f.kind in ("target", "final") for f in req.findings) or "target" in sol.soft
            assert met or named


def plan_all_soft(p):
    from models.formulation import SOFT_FAMILIES
    from models.requirements import requirements
    from models.solve import Session
    req = requirements(p)
    return Session().solve(p, req, frozenset(SOFT_FAMILIES)), req


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_pyomo_plan_equals_the_direct_highs_matrix_optimum(p):
    """The LP-first pyomo answer and a MILP built directly as a HiGHS matrix agree (gap 1e-6)."""
    sol, req = plan(p, mip_rel_gap=1e-7)
    if sol.status != "optimal" or sol.soft:
        return
    ref = direct.solve(p, req, mip_rel_gap=1e-7)
    assert ref.status == "Optimal"
    assert sol.objective == pytest.approx(ref.objective, rel=1e-5, abs=1e-4)


def assert_backends_agree(p: PlanProblem, **opts):
    """Plan ``p`` through pyomo (appsi_highs) and through highs_direct: same status, same objective
    (within the gap), a schedule that breaks nothing; returns the highs_direct solution."""
    ref, req = plan(p, mip_rel_gap=1e-7, interface="appsi_highs", **opts)
    sol, _ = plan(p, mip_rel_gap=1e-7, interface=DIRECT, **opts)
    assert sol.status == ref.status and sol.soft == ref.soft
    if ref.status == "optimal":
        assert sol.objective == pytest.approx(ref.objective, rel=1e-5, abs=1e-4)
        assert check(p, sol, req) == []
    return sol


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.booleans())
@example(p=below_min_through_an_outage(), lp_first=True)
def test_highs_direct_interface_equals_the_pyomo_interface(p, lp_first):
    """Random sites, LP first or the MILP straight away: the highs_direct session answers as the
    pyomo one (soft plans go through pyomo in both)."""
    assert_backends_agree(p, lp_first=lp_first)


def test_highs_direct_solves_the_milp_from_the_relaxation_when_cars_share_a_charger():
    """Two cars on one 6 kW unit, both needing 3 kWh by 02:00, price 1 then 3 (1-hour steps): the
    relaxation charges both at 3 kW at once at 00:00 (half a charger each), which the MILP forbids;
    the MILP, warm-started from the relaxation, charges one at 00:00 and the other at 01:00: 3 + 9 = 12."""
    a = car(2, soc0=0.0, targets={2: 3.0}, vid="a")
    b = car(2, soc0=0.0, targets={2: 3.0}, vid="b")
    p = site(1.0, [0, 0], price=[1, 3], vehicles=[a, b])
    sol = assert_backends_agree(p)
    assert sol.method == "milp" and sol.objective == pytest.approx(12.0, abs=1e-6)


def test_highs_direct_nets_simultaneous_flows_like_the_pyomo_interface():
    """A negative import price pays to cycle the battery in the relaxation (see the hand case in
    test_hand_cases): both interfaces end at the MILP optimum -(1 + 5/0.9)."""
    p = site(1.0, [1.0], price=[-1.0], vehicles=[car(1, soc0=5.0)], chargers=[unit(kw=6, eta_c=0.9, eta_d=0.9)])
    sol = assert_backends_agree(p)
    assert sol.method in ("milp", "lp+repair")
    assert sol.objective == pytest.approx(-(1 + 5 / 0.9), abs=1e-6)


def test_unknown_interface_is_refused_when_the_options_are_made():
    from models.solve import SolveOptions
    with pytest.raises(ValueError, match="highs_direct"):
        SolveOptions(interface="cplex")
