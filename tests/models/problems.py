"""A compact way to state small planning problems by hand (imported by the tests beside it)."""

from __future__ import annotations

import numpy as np

from models.data import ChargerSpec, DemandSpec, PlanProblem, VehicleSpec, needs_grid_direction_binary
from models.requirements import requirements
from models.solve import Session, SolveOptions
from models.verify import violations


def car(T: int, *, soc0: float, capacity: float = 10.0, min_kwh: float = 0.0, max_kwh: float | None = None,
        plugged=None, targets: dict[int, float] | None = None, chargers=("c1",), wear: float = 0.0,
        sets: dict[int, float] | None = None, trips: dict[int, float] | None = None, vid: str = "car") -> VehicleSpec:
    """A vehicle on T steps: plugged mask (default always), targets {boundary: kWh}, arrivals {step: kWh}."""
    target = np.full(T + 1, np.nan)
    for k, v in (targets or {}).items():
        target[k] = v
    arr_set = np.full(T, np.nan)
    for k, v in (sets or {}).items():
        arr_set[k] = v
    arr_trip = np.zeros(T)
    for k, v in (trips or {}).items():
        arr_trip[k] = v
    plugged = np.ones(T, dtype=bool) if plugged is None else np.asarray(plugged, dtype=bool)
    return VehicleSpec(vid, capacity, min_kwh, capacity if max_kwh is None else max_kwh, soc0, plugged, target,
                       arr_set, arr_trip, tuple(chargers), wear_cost_per_kwh=wear)


def unit(cid: str = "c1", kw: float = 6.0, eta_c: float = 1.0, eta_d: float = 1.0, islanded: float = 0.0) -> ChargerSpec:
    """A charger with the same rating both ways."""
    return ChargerSpec(cid, kw, kw, eta_c, eta_d, islanded)


def one_month_demand(T: int, rate: float, *, ratchet_months: int = 0, held: list[float] | None = None,
                     floor: float = 0.0, steps_per_window: int = 1) -> DemandSpec:
    """Demand charge with every step in one month; held levels for the month and the ratchet months after it."""
    K = ratchet_months + 1
    W = int(np.ceil(T / steps_per_window))
    return DemandSpec(rate, np.arange(T) // steps_per_window, np.zeros(W), np.full(W, 0.5), np.zeros(W, dtype=int),
                      np.array([floor]), np.array(held if held is not None else [0.0] * K, dtype=float),
                      np.ones((K, 1), dtype=bool), np.arange(K) == 0, tuple(f"m{k}" for k in range(K)))


def site(dt: float, load, *, pv=None, price=None, export_price=None, vehicles=(), chargers=(unit(),),
         import_limit: float = 100.0, export_limit: float = 0.0, **kw) -> PlanProblem:
    """A site problem from short lists (every array one entry per step)."""
    load = np.asarray(load, dtype=float)
    T = load.size
    def arr(x, default):
        return np.full(T, default, dtype=float) if x is None else np.broadcast_to(np.asarray(x, dtype=float), (T,)).copy()
    return PlanProblem(dt_h=dt, pv_kw=arr(pv, 0.0), load_kw=load, import_price=arr(price, 0.0),
                       export_price=arr(export_price, 0.0), import_limit_kw=np.full(T, import_limit),
                       export_limit_kw=np.full(T, export_limit), chargers=tuple(chargers), vehicles=tuple(vehicles),
                       labels=tuple(f"{h:02d}:00" for h in range(T + 1)), **kw)


def plan(problem: PlanProblem, **opts):
    """Solve with a fresh session and the requirement bounds; return (solution, requirements)."""
    req = requirements(problem)
    return Session(SolveOptions(**opts)).solve(problem, req, req.soften), req


def check(problem: PlanProblem, sol, req) -> list[str]:
    """Everything the solution breaks (empty = valid)."""
    hard = problem.reserve_kwh is not None and not problem.reserve_soft and "reserve" not in sol.soft
    return violations(problem, sol.values.cleaned(), req.soc_lb(sol.soft), req.soc_ub, req.fixed, req.reserve_kwh, hard,
                      import_soft="import" in sol.soft, grid_direction=needs_grid_direction_binary(problem))
