"""Invariants of every plan on random valid sites (the agreement of the two formulations is in
test_formulations.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, example, given, settings

from models.formulation import SOFT_FAMILIES
from models.requirements import requirements
from models.solve import Session
from problems import below_min_through_an_outage, check, plan, plan_problems

TOL = 1e-5


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan_problems())
@example(p=below_min_through_an_outage())
def test_every_plan_is_valid_and_reports_what_it_cannot_meet(p):
    """Balance every step, flows within bounds, SOC within bounds and following the flows, never
    charging and discharging at once, one car per charger, no vehicle export unless allowed; every departure
    target met or named in a finding (and then met up to what is reachable)."""
    sol, req = plan(p)
    assert sol.status == "optimal" or sol.status == "infeasible"
    if sol.status == "infeasible":  # joint conflicts beyond the analytic checks: the soft model answers
        sol, req = plan_all_soft(p)
    v = sol.values.cleaned()
    assert check(p, sol, req) == []
    assert p.vehicle_export_allowed or np.all(v.exp + v.curt <= p.pv_kw + TOL)
    for i, veh in enumerate(p.vehicles):
        for k in np.flatnonzero(~np.isnan(veh.target_kwh)):
            met = v.soc[i, k] >= veh.target_kwh[k] - 1e-4
            named = any(f.subject == veh.id and f.kind in ("target", "final") for f in req.findings) or "target" in sol.soft
            assert met or named


def plan_all_soft(p):
    """Plan ``p`` with every requirement family softened (the planner's last resort)."""
    req = requirements(p)
    return Session().solve(p, req, frozenset(SOFT_FAMILIES)), req
