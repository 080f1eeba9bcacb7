"""One model, two statements: the HiGHS matrix (:mod:`models.direct`, the production formulation)
against the pyomo reference (:mod:`models.formulation`), each through its own session interface,
on random sites (block rates, two billing months with ratchet links, 15- and 30-minute steps,
reserve hard and soft, outages) solved hard and with each soft family; and the matrix's named
column and row blocks against the pyomo components they mirror."""

from __future__ import annotations

import numpy as np
import pyomo.environ as pe
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import models.solve as session_module
from models import direct
from models.data import PlanProblem, needs_grid_direction_binary
from models.formulation import SOFT_FAMILIES, build_model, soft_penalties
from models.requirements import Requirements, requirements
from models.solve import Session, Solution, SolveOptions
from problems import below_min_through_an_outage, car, check, plan_problems, site, unit

ALL_SOFT = frozenset(SOFT_FAMILIES)
# softened on top of what the findings ask: none, each family alone, all of them
EXTRA_SOFT = [frozenset()] + [frozenset({f}) for f in SOFT_FAMILIES] + [ALL_SOFT]
GAP = 1e-7  # MILP relative gap of both sides
REL, ABS = 1e-6, 1e-6  # objective agreement [fraction, currency]
BUILDER = {"appsi_highs": "pyomo", "highs": "pyomo", "highs_direct": "matrix"}
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def plan_with(interface: str, p: PlanProblem, req: Requirements, soft: frozenset[str], **opts) -> Solution:
    """Solve ``p`` in a new session on ``interface`` (gap :data:`GAP`), checking that the session
    builds its own formulation once and never the other one."""
    calls = {"matrix": 0, "pyomo": 0}

    def counted(key, fn):
        def wrapper(*args, **kwargs):
            calls[key] += 1
            return fn(*args, **kwargs)
        return wrapper

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(direct, "build", counted("matrix", direct.build))
        mp.setattr(session_module, "build_model", counted("pyomo", session_module.build_model))
        sol = Session(SolveOptions(interface=interface, mip_rel_gap=GAP, **opts)).solve(p, req, soft)
    assert calls == {"matrix": 0, "pyomo": 0, BUILDER[interface]: 1}
    return sol


def assert_same_plan(p: PlanProblem, req: Requirements, soft: frozenset[str], reference: str = "appsi_highs",
                     **opts) -> Solution:
    """Plan ``p`` through the pyomo ``reference`` and through ``highs_direct``: same status; when
    optimal the same objective and two schedules that break nothing of the requirements solved
    (:func:`models.verify.violations`), ``over`` read back exactly when import is soft. Returns
    the highs_direct solution."""
    ref = plan_with(reference, p, req, soft, **opts)
    sol = plan_with("highs_direct", p, req, soft, **opts)
    assert ref.status in ("optimal", "infeasible"), ref.messages
    assert sol.status == ref.status, (sol.messages, ref.messages)
    if ref.status == "optimal":
        assert sol.objective == pytest.approx(ref.objective, rel=REL, abs=ABS)
        assert check(p, ref, req) == []
        assert check(p, sol, req) == []
        assert (sol.values.over is not None) == (ref.values.over is not None) == ("import" in soft)
    return sol


@settings(FAST, max_examples=40)
@given(plan_problems(), st.sampled_from(EXTRA_SOFT), st.booleans())
@example(p=below_min_through_an_outage(), extra=frozenset(), lp_first=True)
def test_the_matrix_and_the_pyomo_reference_give_the_same_plan(p, extra, lp_first):
    """Random sites, LP first or the MILP straight away, softened as the findings ask plus
    ``extra``; where that is infeasible, with every family softened (as the planner does)."""
    req = requirements(p)
    sol = assert_same_plan(p, req, req.soften | extra, lp_first=lp_first)
    if sol.status == "infeasible":
        assert_same_plan(p, req, ALL_SOFT, lp_first=lp_first)


@settings(FAST, max_examples=25)
@given(plan_problems(), st.sampled_from(EXTRA_SOFT))
def test_the_pyomo_lp_first_plan_equals_the_matrix_milp_optimum(p, extra):
    """The LP-first answer of the pyomo reference and the matrix MILP solved in one go
    (:func:`models.direct.solve`) agree."""
    req = requirements(p)
    soft = req.soften | extra
    sol = plan_with("appsi_highs", p, req, soft)
    milp = direct.solve(p, req, mip_rel_gap=GAP, soft=soft)
    assert (milp.status == "Optimal") == (sol.status == "optimal")
    if sol.status == "optimal":
        assert sol.objective == pytest.approx(milp.objective, rel=REL, abs=ABS)


def _shape(comp: pe.Component) -> tuple[int, ...]:
    """Shape of a pyomo component's index: one axis per factor of a product of sets."""
    return tuple(len(s) for s in comp.index_set().subsets())


@settings(FAST, max_examples=30)
@given(plan_problems(), st.sampled_from(EXTRA_SOFT))
def test_every_matrix_block_mirrors_the_pyomo_component_of_its_name(p, extra):
    """Each column block is the pyomo variable of the same name and each row block the constraint,
    shaped like its index (leading members in ``index`` where it is not a product of sets); together
    the blocks cover every column and every row exactly once."""
    req = requirements(p)
    soft = req.soften | extra
    mm = direct.build(p, req, soft)
    ref = build_model(p, req, soft)
    for blocks, kind in ((mm.cols, pe.Var), (mm.rows, pe.Constraint)):
        comps = {c.local_name: c for c in ref.component_objects(kind)}
        assert sorted(blocks) == sorted(comps)
        for name, idx in blocks.items():
            assert idx.shape == _shape(comps[name]), name
            if name in mm.index:
                lead = list(zip(*mm.index[name]))
                assert list(dict.fromkeys(key[:len(mm.index[name])] for key in comps[name].keys())) == lead, name
    lp = mm.highs.getLp()
    for blocks, n in ((mm.cols, lp.num_col_), (mm.rows, lp.num_row_)):
        every = np.sort(np.concatenate([idx.ravel() for idx in blocks.values()]))
        assert np.array_equal(every, np.arange(n))


@pytest.mark.parametrize("export", [False, True])
def test_import_above_the_limit_is_read_back_from_the_matrix(export):
    """A 10 kW load for one hour under a 4 kW limit, no car to help: 6 kW over the limit, priced at
    the import penalty; the matrix model fills ``over``. With vehicle export paying more than
    import the model carries the grid-direction binary, whose import row must not cap the import
    at the limit (it once did, in both formulations, leaving even the all-soft model infeasible)."""
    p = site(1.0, [10.0], price=[20.0], export_price=[25.0], export_limit=5.0, import_limit=4.0,
             vehicles=[car(1, soc0=5.0, plugged=[0])], vehicle_export_allowed=export)
    req = requirements(p)
    assert req.soften == {"import"} and needs_grid_direction_binary(p) == export
    sol = assert_same_plan(p, req, req.soften)
    assert sol.values.over == pytest.approx([6.0], abs=1e-6)
    assert sol.objective == pytest.approx(200.0 + soft_penalties(p)["import"] * 6.0, rel=1e-9)


@pytest.mark.parametrize("reference", ["appsi_highs", "highs"])
def test_the_milp_from_the_relaxation_when_cars_share_a_charger(reference):
    """Two cars on one 6 kW unit, both needing 3 kWh by 02:00, price 1 then 3 (1-hour steps): the
    relaxation charges both at 3 kW at once at 00:00 (half a charger each), which the MILP forbids;
    the MILP, warm-started from the relaxation, charges one at 00:00 and the other at 01:00: 3 + 9 = 12."""
    a = car(2, soc0=0.0, targets={2: 3.0}, vid="a")
    b = car(2, soc0=0.0, targets={2: 3.0}, vid="b")
    p = site(1.0, [0, 0], price=[1, 3], vehicles=[a, b])
    sol = assert_same_plan(p, requirements(p), frozenset(), reference=reference)
    assert sol.method == "milp" and sol.objective == pytest.approx(12.0, abs=1e-6)


@pytest.mark.parametrize("reference", ["appsi_highs", "highs"])
def test_simultaneous_flows_are_netted_on_both_formulations(reference):
    """A negative import price pays to cycle the battery in the relaxation (see the hand case in
    test_hand_cases): both formulations end at the MILP optimum -(1 + 5/0.9)."""
    p = site(1.0, [1.0], price=[-1.0], vehicles=[car(1, soc0=5.0)], chargers=[unit(kw=6, eta_c=0.9, eta_d=0.9)])
    sol = assert_same_plan(p, requirements(p), frozenset(), reference=reference)
    assert sol.method in ("milp", "lp+repair")
    assert sol.objective == pytest.approx(-(1 + 5 / 0.9), abs=1e-6)


def test_unknown_interface_is_refused_when_the_options_are_made():
    with pytest.raises(ValueError, match="highs_direct"):
        SolveOptions(interface="cplex")
