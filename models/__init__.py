"""The V2H/V2B scheduling library: plain arrays in (:mod:`models.data`), the model built as a HiGHS
matrix (:mod:`models.direct`; the same model in pyomo, :mod:`models.formulation`, is the independent
reference) and solved by HiGHS (:mod:`models.solve`), checked (:mod:`models.verify`).

Nothing here knows about YAML, Modbus, clocks or the ``ems`` application.
"""

from models.data import (
    BlockSpec, ChargerSpec, DemandSpec, PlanProblem, VehicleSpec, check_problem, needs_grid_direction_binary, pairs,
)
from models.fallback import rule_based
from models.formulation import SOFT_FAMILIES
from models.requirements import Finding, Requirements, requirements, reserve_requirement_kwh
from models.solution import Costs, Values, costs
from models.solve import Session, Solution, SolveOptions, plan_costs
from models.verify import violations

__all__ = [
    "SOFT_FAMILIES", "BlockSpec", "ChargerSpec", "Costs", "DemandSpec", "Finding", "PlanProblem", "Requirements",
    "Session", "Solution", "SolveOptions", "Values", "VehicleSpec", "check_problem", "costs", "needs_grid_direction_binary",
    "pairs", "plan_costs", "requirements", "reserve_requirement_kwh", "rule_based", "violations",
]
