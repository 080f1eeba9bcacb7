"""The planning problem as plain data: numpy arrays and frozen dataclasses, no YAML, no clocks.

Conventions (models/README.md): power [kW] as the average over a step of ``dt_h`` hours, energy [kWh],
money in the tariff's currency. ``T`` steps are indexed t = 0..T-1; state of charge lives on the
T+1 step *boundaries* k = 0..T (boundary k is the instant at the start of step k, boundary T the
horizon end). Charge and discharge are separate non-negative quantities measured on the AC side of
the charger; a charger's efficiencies convert them to battery energy.

:func:`check_problem` validates shapes and ranges once, so the builders can trust their input.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ChargerSpec:
    """One bidirectional unit (V2H/V2B).

    ``max_charge_kw``/``max_discharge_kw`` are AC ratings [kW]; efficiencies are fractions in (0, 1];
    ``islanded_kw`` caps discharge while the grid is down (islanded mode) [kW].
    """

    id: str
    max_charge_kw: float
    max_discharge_kw: float
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95
    islanded_kw: float = 0.0


@dataclass(frozen=True)
class VehicleSpec:
    """One vehicle and its stays expanded on the planning grid.

    - ``soc0_kwh``: energy in the battery at boundary 0 [kWh] (a measurement: it supersedes any
      arrival at boundary 0);
    - ``min_kwh``/``max_kwh``: the driver's safety margin and the charge ceiling [kWh];
    - ``plugged[t]``: present and plugged in for the whole of step t;
    - ``target_kwh[k]``: energy required at boundary k (a departure), NaN where none [kWh];
    - ``arrival_set_kwh[t]``: the car arrives at boundary t holding this much, NaN where unknown;
    - ``arrival_trip_kwh[t]``: energy used on the trip that ends at boundary t [kWh];
    - ``chargers``: ids of the chargers it may use (already resolved: never "any");
    - ``max_charge_kw``/``max_discharge_kw``: the car's own AC limits [kW] (inf = the charger's);
    - ``wear_cost_per_kwh``: battery wear per kWh taken out of the battery [currency/kWh];
    - ``settlement_price_per_kwh``: a driver-owned car's energy is settled with its driver at this
      price [currency/kWh]: the site pays it per kWh of net battery energy taken while the car is
      plugged in and earns it per kWh added (None: the site's own car, valued at the problem's
      terminal value instead);
    - ``settled_kwh``: battery energy already taken from a driver-owned car in the stay under way at
      boundary 0, before the plan (its arrival energy - ``soc0_kwh``; negative when added) [kWh].
    """

    id: str
    capacity_kwh: float
    min_kwh: float
    max_kwh: float
    soc0_kwh: float
    plugged: np.ndarray
    target_kwh: np.ndarray
    arrival_set_kwh: np.ndarray
    arrival_trip_kwh: np.ndarray
    chargers: tuple[str, ...]
    max_charge_kw: float = math.inf
    max_discharge_kw: float = math.inf
    wear_cost_per_kwh: float = 0.0
    settlement_price_per_kwh: float | None = None
    settled_kwh: float = 0.0

    @property
    def driver_owned(self) -> bool:
        """Whether the car's energy is its driver's (settled), not the site's."""
        return self.settlement_price_per_kwh is not None


@dataclass(frozen=True)
class DemandSpec:
    """Demand charge on fixed 30-minute windows, per billing month, with a ratchet.

    Horizon months m = 0..M-1 each get a peak variable; billed months k = 0..K-1 are the horizon
    months first (``in_horizon``) and then the later months whose contract a horizon peak can still
    raise (up to ``ratchet_months`` after the last horizon month).

    - ``rate_per_kw_month``: effective demand rate after the power-factor adjustment;
    - ``window_of_step[t]``: the window (0..W-1) step t belongs to;
    - ``window_pre_kwh[w]``: import metered in window w before the plan start [kWh];
    - ``window_hours[w]``: the duration the window's average is taken over [h] (0.5; a window cut
      by the horizon end is averaged over the part inside the horizon, as if the import went on);
    - ``month_of_window[w]``: horizon month of the window (the month its start falls in);
    - ``month_floor_kw[m]``: peak already metered in horizon month m [kW];
    - ``held_kw[k]``: contract kW billed month k holds whatever the plan does (history peaks in
      its ratchet window, the minimum contract) [kW];
    - ``links[k, m]``: horizon month m lies in billed month k's ratchet window;
    - ``labels[k]``: "YYYY-MM" of billed month k;
    - ``hedge_windows``: the windows of the near term (the first hours of the horizon, in its first
      month) whose highest average is priced again at ``hedge_rate_per_kw`` [currency/kW] above
      ``month_floor_kw[0]``: a peak now is certain, one the forecast sees later may not come, so a
      later forecast peak does not make a peak now free (``planner.peak_hedge_pct``; empty: off).
    """

    rate_per_kw_month: float
    window_of_step: np.ndarray
    window_pre_kwh: np.ndarray
    window_hours: np.ndarray
    month_of_window: np.ndarray
    month_floor_kw: np.ndarray
    held_kw: np.ndarray
    links: np.ndarray
    in_horizon: np.ndarray
    labels: tuple[str, ...]
    hedge_windows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    hedge_rate_per_kw: float = 0.0

    @property
    def hedged(self) -> bool:
        """Whether the near-term peak is priced (a rate and at least one window)."""
        return self.hedge_rate_per_kw > 0 and self.hedge_windows.size > 0

    @property
    def n_windows(self) -> int:
        """W, the number of demand windows the horizon touches."""
        return int(self.window_pre_kwh.size)

    @property
    def n_months(self) -> int:
        """M, the number of billing months in the horizon."""
        return int(self.month_floor_kw.size)


@dataclass(frozen=True)
class BlockSpec:
    """Increasing block energy rates on each month's import.

    ``month_of_step[t]`` (0..Mb-1), ``rates[b]`` non-decreasing [currency/kWh], ``room_kwh[m, b]``
    the kWh still left in block b of month m (inf for the last block).
    """

    month_of_step: np.ndarray
    rates: np.ndarray
    room_kwh: np.ndarray


@dataclass(frozen=True)
class PlanProblem:
    """Everything the model needs for one horizon.

    Grid: ``import_limit_kw``/``export_limit_kw`` per step (the builders force both to zero in
    outage steps). Prices: ``import_price[t]`` per kWh imported (energy + adders; adders only when
    ``blocks`` carries the energy rates), ``export_price[t]`` per kWh exported. Outage:
    ``outage[t]`` marks steps with the grid down (``load_kw`` there is the critical load).
    Reserve: ``reserve_kwh[t]`` must be held above the minimum SOC of the cars plugged in during
    step t, at its end (0 = none); ``reserve_soft`` makes it a penalty of ``reserve_penalty_per_kwh_h``
    per kWh short per hour. ``labels[k]`` are readable local times of the boundaries, for messages.
    """

    dt_h: float
    pv_kw: np.ndarray
    load_kw: np.ndarray
    import_price: np.ndarray
    export_price: np.ndarray
    import_limit_kw: np.ndarray
    export_limit_kw: np.ndarray
    chargers: tuple[ChargerSpec, ...]
    vehicles: tuple[VehicleSpec, ...]
    vehicle_export_allowed: bool = False
    demand: DemandSpec | None = None
    blocks: BlockSpec | None = None
    reserve_kwh: np.ndarray | None = None
    reserve_soft: bool = False
    reserve_penalty_per_kwh_h: float = 0.0
    outage: np.ndarray | None = None
    value_of_lost_load_per_kwh: float = 0.0
    terminal_value_per_kwh: float = 0.0
    final_soc_at_least_initial: bool = False
    labels: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_steps(self) -> int:
        """T, the number of steps."""
        return int(self.load_kw.size)

    @property
    def outage_mask(self) -> np.ndarray:
        """Steps with the grid down (all False when no outage)."""
        return np.zeros(self.n_steps, dtype=bool) if self.outage is None else self.outage.astype(bool)

    @property
    def reserve(self) -> np.ndarray:
        """Reserve requirement at each step's start boundary [kWh] (zeros when none)."""
        return np.zeros(self.n_steps) if self.reserve_kwh is None else self.reserve_kwh

    def label(self, k: int) -> str:
        """Readable time of boundary k (``"k=12"`` when no labels were given)."""
        return self.labels[k] if 0 <= k < len(self.labels) else f"k={k}"

    def charger_index(self) -> dict[str, int]:
        """Charger id -> position."""
        return {c.id: i for i, c in enumerate(self.chargers)}

    @functools.cached_property
    def _pairs(self) -> tuple[Pair, ...]:
        """:func:`pairs`, found once (a model's builders and checks ask some twenty times)."""
        return tuple(_find_pairs(self))

    @functools.cached_property
    def _stay_segments(self) -> tuple[StaySegment, ...]:
        """:func:`stay_segments`, found once."""
        return tuple(_find_stay_segments(self))


@dataclass(frozen=True)
class Pair:
    """A (vehicle, charger) combination the vehicle may use, with its AC limits and efficiencies."""

    v: int
    c: int
    charge_kw: float
    discharge_kw: float
    eta_c: float
    eta_d: float


def pairs(problem: PlanProblem) -> list[Pair]:
    """Every allowed (vehicle, charger) pair; ratings are the smaller of car and charger [kW]."""
    return list(problem._pairs)


def _find_pairs(problem: PlanProblem) -> list[Pair]:
    """:func:`pairs`, looked up."""
    where = problem.charger_index()
    out = []
    for vi, v in enumerate(problem.vehicles):
        for cid in v.chargers:
            ci = where[cid]
            c = problem.chargers[ci]
            out.append(Pair(vi, ci, min(c.max_charge_kw, v.max_charge_kw), min(c.max_discharge_kw, v.max_discharge_kw),
                            c.charge_efficiency, c.discharge_efficiency))
    return out


@dataclass(frozen=True)
class StaySegment:
    """The steps ``t0..t1-1`` of one stay of driver-owned vehicle ``v`` inside the horizon, settled at
    ``price`` [currency/kWh]; ``before_kwh``: battery energy taken in that stay before the plan."""

    v: int
    t0: int
    t1: int
    price: float
    before_kwh: float


def stay_segments(problem: PlanProblem) -> list[StaySegment]:
    """Every run of plugged steps of every driver-owned vehicle (a stay, or the part of one inside
    the horizon); the first carries the vehicle's ``settled_kwh`` when the car is plugged in at the start."""
    return list(problem._stay_segments)


def _find_stay_segments(problem: PlanProblem) -> list[StaySegment]:
    """:func:`stay_segments`, looked up."""
    out = []
    for vi, v in enumerate(problem.vehicles):
        if not v.driver_owned:
            continue
        on = np.concatenate([[False], np.asarray(v.plugged, dtype=bool), [False]])
        edges = np.flatnonzero(np.diff(on.astype(int)))
        for t0, t1 in zip(edges[0::2], edges[1::2]):
            out.append(StaySegment(vi, int(t0), int(t1), float(v.settlement_price_per_kwh),
                                   float(v.settled_kwh) if t0 == 0 else 0.0))
    return out


def pair_discharge_cap_kw(problem: PlanProblem, pair: Pair) -> np.ndarray:
    """Upper bound of a pair's discharge per step [kW]: rating while plugged, islanded rating in outages."""
    v = problem.vehicles[pair.v]
    cap = np.where(problem.outage_mask, min(pair.discharge_kw, problem.chargers[pair.c].islanded_kw), pair.discharge_kw)
    return np.where(v.plugged, cap, 0.0)


def pair_charge_cap_kw(problem: PlanProblem, pair: Pair) -> np.ndarray:
    """Upper bound of a pair's charge per step [kW]: its rating while the car is plugged in."""
    return np.where(problem.vehicles[pair.v].plugged, pair.charge_kw, 0.0)


def export_cap_kw(problem: PlanProblem) -> np.ndarray:
    """Upper bound of export per step [kW].

    Without vehicle export the meter may export at most the PV surplus over the building load,
    ``max(0, pv - load)``: whatever the cars do, the export is no larger than PV alone would make it
    (the "no push-up" rule of Japanese V2H units). Zero while the grid is down.
    """
    cap = np.asarray(problem.export_limit_kw, dtype=float).copy()
    if not problem.vehicle_export_allowed:
        cap = np.minimum(cap, np.maximum(0.0, problem.pv_kw - problem.load_kw))
    cap[problem.outage_mask] = 0.0
    return cap


def import_cap_kw(problem: PlanProblem) -> np.ndarray:
    """Upper bound of import per step [kW]: the limit, zero while the grid is down."""
    cap = np.asarray(problem.import_limit_kw, dtype=float).copy()
    cap[problem.outage_mask] = 0.0
    return cap


def needs_grid_direction_binary(problem: PlanProblem) -> bool:
    """Whether importing and exporting in the same step could pay (export credit >= import price).

    Only then can an LP relaxation import and export at once, so only then the model carries a
    binary choosing the direction of the grid flow in each step.
    """
    cap = export_cap_kw(problem)
    possible = cap > 0
    return bool(np.any(problem.export_price[possible] >= problem.import_price[possible]))


class ProblemDataError(ValueError):
    """The arrays of a :class:`PlanProblem` are inconsistent (a programming error upstream)."""


def check_problem(p: PlanProblem) -> None:
    """Raise ProblemDataError naming the first inconsistent array (shape, NaN, sign, range)."""
    T = p.n_steps
    if T < 1 or not p.dt_h > 0:
        raise ProblemDataError(f"need at least one step of positive length; got T={T}, dt_h={p.dt_h}")
    for name in ("pv_kw", "load_kw", "import_price", "export_price", "import_limit_kw", "export_limit_kw"):
        a = np.asarray(getattr(p, name), dtype=float)
        if a.shape != (T,):
            raise ProblemDataError(f"{name} has shape {a.shape}; expected ({T},)")
        if not np.all(np.isfinite(a)):
            raise ProblemDataError(f"{name} holds NaN or infinite values at steps {np.flatnonzero(~np.isfinite(a))[:5].tolist()}")
    for name in ("pv_kw", "load_kw", "import_limit_kw", "export_limit_kw"):
        if np.any(getattr(p, name) < 0):
            raise ProblemDataError(f"{name} must not be negative")
    ids = [c.id for c in p.chargers]
    if len(set(ids)) != len(ids):
        raise ProblemDataError(f"charger ids are not unique: {ids}")
    for c in p.chargers:
        if not (0 < c.charge_efficiency <= 1 and 0 < c.discharge_efficiency <= 1):
            raise ProblemDataError(f"charger {c.id}: efficiencies must be in (0, 1]")
        if c.max_charge_kw < 0 or c.max_discharge_kw < 0 or c.islanded_kw < 0:
            raise ProblemDataError(f"charger {c.id}: ratings must not be negative")
    for v in p.vehicles:
        _check_vehicle(v, T, set(ids))
    if p.demand is not None:
        _check_demand(p.demand, T)
    if p.blocks is not None:
        b = p.blocks
        if b.month_of_step.shape != (T,) or b.room_kwh.shape[1] != b.rates.size:
            raise ProblemDataError("blocks: month_of_step must have T entries and room_kwh one column per rate")
        if np.any(np.diff(b.rates) < 0):
            raise ProblemDataError(f"blocks: rates must not decrease (got {b.rates.tolist()}); the planner prices "
                                   "increasing blocks exactly, decreasing ones are not convex")
    if p.reserve_kwh is not None and (p.reserve_kwh.shape != (T,) or np.any(p.reserve_kwh < 0)):
        raise ProblemDataError("reserve_kwh must have T non-negative entries")
    if p.outage is not None and p.outage.shape != (T,):
        raise ProblemDataError("outage must have T entries")
    if p.labels and len(p.labels) != T + 1:
        raise ProblemDataError(f"labels must name the T+1 = {T + 1} boundaries; got {len(p.labels)}")


def _check_vehicle(v: VehicleSpec, T: int, charger_ids: set[str]) -> None:
    """One vehicle's arrays and limits."""
    shapes = {"plugged": (v.plugged, (T,)), "target_kwh": (v.target_kwh, (T + 1,)),
              "arrival_set_kwh": (v.arrival_set_kwh, (T,)), "arrival_trip_kwh": (v.arrival_trip_kwh, (T,))}
    for name, (a, shape) in shapes.items():
        if np.shape(a) != shape:
            raise ProblemDataError(f"vehicle {v.id}: {name} has shape {np.shape(a)}; expected {shape}")
    if not 0 <= v.min_kwh < v.max_kwh <= v.capacity_kwh + 1e-9:
        raise ProblemDataError(f"vehicle {v.id}: need 0 <= min_kwh < max_kwh <= capacity_kwh")
    if not 0 <= v.soc0_kwh <= v.capacity_kwh + 1e-9:
        raise ProblemDataError(f"vehicle {v.id}: soc0_kwh {v.soc0_kwh} outside 0..{v.capacity_kwh} kWh")
    unknown = [c for c in v.chargers if c not in charger_ids]
    if unknown:
        raise ProblemDataError(f"vehicle {v.id}: unknown chargers {unknown}")
    if np.any(v.arrival_trip_kwh < 0) or np.any(v.wear_cost_per_kwh < 0):
        raise ProblemDataError(f"vehicle {v.id}: trip energy and wear cost must not be negative")
    price = v.settlement_price_per_kwh
    if price is not None and not (math.isfinite(price) and price >= 0):
        raise ProblemDataError(f"vehicle {v.id}: settlement_price_per_kwh must be a finite price >= 0; got {price}")
    if not (math.isfinite(v.settled_kwh) and abs(v.settled_kwh) <= v.capacity_kwh + 1e-9):
        raise ProblemDataError(f"vehicle {v.id}: settled_kwh {v.settled_kwh} must be finite and within the capacity")


def _check_demand(d: DemandSpec, T: int) -> None:
    """Demand-charge arrays consistent with T steps, W windows, M horizon and K billed months."""
    W, M, K = d.n_windows, d.n_months, d.held_kw.size
    ok = (d.window_of_step.shape == (T,) and d.window_hours.shape == (W,) and d.month_of_window.shape == (W,)
          and d.links.shape == (K, M) and d.in_horizon.shape == (K,) and len(d.labels) == K and K >= M >= 1)
    if not ok:
        raise ProblemDataError("demand: inconsistent shapes of windows, months and links")
    if d.window_of_step.min() < 0 or d.window_of_step.max() >= W or np.any(np.diff(d.window_of_step) < 0):
        raise ProblemDataError("demand: window_of_step must be non-decreasing indices into the windows")
    if np.any(d.window_hours <= 0):
        raise ProblemDataError("demand: window_hours must be positive")
