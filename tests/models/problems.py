"""A compact way to state small planning problems by hand, and random ones for hypothesis
(imported by the tests beside it)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from models.data import BlockSpec, ChargerSpec, DemandSpec, PlanProblem, VehicleSpec, needs_grid_direction_binary
from models.requirements import requirements
from models.solve import Session, SolveOptions
from models.verify import violations


def car(T: int, *, soc0: float, capacity: float = 10.0, min_kwh: float = 0.0, max_kwh: float | None = None,
        plugged=None, targets: dict[int, float] | None = None, chargers=("c1",), wear: float = 0.0,
        sets: dict[int, float] | None = None, trips: dict[int, float] | None = None, vid: str = "car",
        settle: float | None = None) -> VehicleSpec:
    """A vehicle on T steps: plugged mask (default always), targets {boundary: kWh}, arrivals {step: kWh};
    ``settle``: a driver-owned car's settlement price [currency/kWh] (None: the site's own)."""
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
                       arr_set, arr_trip, tuple(chargers), wear_cost_per_kwh=wear, settlement_price_per_kwh=settle)


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


def month_of_step(T: int, split: int) -> np.ndarray:
    """Billing month (0 or 1) of each of T steps, the second starting at step ``split`` (T: one month)."""
    return (np.arange(T) >= split).astype(int)


def random_demand(rng: np.random.Generator, dt: float, months: np.ndarray, lead: int) -> DemandSpec:
    """Demand charge on 30-minute windows (``months`` must start on a window boundary); the first
    window began ``lead`` steps before the plan (with metered import), the last may be cut by the
    horizon end. Billed months: the M horizon months (each linked to itself and the earlier ones),
    then 0-2 later months whose ratchet window holds some of them."""
    per = int(round(0.5 / dt))
    window, w, filled = np.zeros(months.size, dtype=int), 0, lead
    for t in range(months.size):
        if t and (months[t] != months[t - 1] or filled == per):
            w, filled = w + 1, 0
        window[t], filled = w, filled + 1
    W = w + 1
    hours = np.full(W, 0.5)
    hours[-1] = min(0.5, (np.sum(window == W - 1) + (lead if W == 1 else 0)) * dt)
    pre = np.zeros(W)
    pre[0] = lead * dt * float(rng.uniform(0, 10))
    M = int(months.max()) + 1
    later = int(rng.integers(0, 3))
    K = M + later
    links = np.zeros((K, M), dtype=bool)
    for b in range(M):
        links[b, : b + 1] = True
    links[M:] = rng.random((later, M)) < 0.7
    month_of_window = np.array([months[np.argmax(window == i)] for i in range(W)])
    rate = float(rng.uniform(500, 2000))
    # half the problems price a near-term peak over the first 1..W windows of the first month
    hedge = np.flatnonzero((month_of_window == 0) & (np.arange(W) < int(rng.integers(1, W + 1))))
    hedge_rate = float(rng.uniform(0.05, 1.0)) * rate if rng.random() < 0.5 else 0.0
    return DemandSpec(rate, window, pre, hours, month_of_window, rng.uniform(0, 10, M),
                      rng.choice([0.0, 5.0, 8.0], K), links, np.arange(K) < M, tuple(f"m{k}" for k in range(K)),
                      hedge if hedge_rate else hedge[:0], hedge_rate)


def random_blocks(rng: np.random.Generator, months: np.ndarray) -> BlockSpec:
    """Two or three increasing block rates with some room left in each month (the last block unbounded)."""
    J = int(rng.integers(2, 4))
    room = rng.uniform(0.0, 6.0, (int(months.max()) + 1, J))
    room[:, -1] = np.inf
    return BlockSpec(months, np.sort(rng.uniform(5, 40, J)), room)


@st.composite
def plan_problems(draw) -> PlanProblem:
    """A random site: 4-12 steps of 15 or 30 minutes, 1-2 chargers, 1-3 cars with plug windows,
    targets, arrivals, prices, PV, load; optionally a demand charge over one or two billing months
    (ratchet links to later months), block rates, a hard or soft reserve, an outage, an import limit
    below the load, vehicle export."""
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
                        vid=f"v{v}", settle=[None, 0.0, 40.0][int(rng.integers(0, 3))]))
    per = int(round(0.5 / dt))
    lead = int(rng.integers(0, per))  # steps of the first demand window before the plan start
    starts = np.arange(per - lead, T, per)  # window starts inside the horizon: where a month may start
    months = month_of_step(T, T if draw(st.booleans()) or not starts.size else int(rng.choice(starts)))
    demand = random_demand(rng, dt, months, lead) if draw(st.booleans()) else None
    blocks = random_blocks(rng, months) if draw(st.booleans()) else None
    outage = None
    if draw(st.booleans()) and T > 4:
        outage = np.zeros(T, dtype=bool)
        outage[T - 3:] = True
    return site(dt, rng.uniform(0.2, 8.0, T), pv=np.clip(rng.normal(2, 3, T), 0, None), price=rng.uniform(15, 45, T),
                export_price=rng.uniform(0, 20, T), export_limit=float(rng.choice([0.0, 5.0])),
                import_limit=float(rng.choice([30.0, 30.0, 4.0])), vehicles=cars, chargers=chargers, demand=demand,
                blocks=blocks, reserve_kwh=rng.uniform(0, 5, T) if rng.random() < 0.5 else None,
                reserve_soft=bool(rng.random() < 0.5), reserve_penalty_per_kwh_h=200.0, outage=outage,
                value_of_lost_load_per_kwh=1000.0, terminal_value_per_kwh=float(rng.uniform(0, 35)),
                final_soc_at_least_initial=bool(rng.random() < 0.3), vehicle_export_allowed=bool(rng.random() < 0.25))


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
