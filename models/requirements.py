"""What each requirement asks of the vehicles, checked analytically before any solve.

The model states the drivers' and the site's requirements as bounds on the state of charge
(``soc_lb``/``soc_ub`` per vehicle and boundary) and as the reserve right-hand side. This module
computes those bounds from the problem and, where a requirement cannot be met even in the best
case, says so in words (a :class:`Finding`) and relaxes it to what is reachable, so the plan
still comes out and reports the shortfall:

- *reach*: the most energy a car can hold at each boundary, charging at full power whenever it is
  plugged in (its best charger, charge efficiency applied), capped at its ceiling, minus trips;
- *minimum SOC*: soc >= min_kwh, except while a car that arrived (or starts) below its minimum is
  being brought back up: then soc >= reach (full power until the minimum is reached);
- *ceiling*: soc <= max_kwh, or the entry level of a car that arrived above it (it is not forced
  down, but not charged further);
- *departure targets*: soc >= target at the departure boundary, or >= reach if the target is out
  of reach (finding ``target``);
- *final SOC* (option): soc[T] >= soc[0], or >= reach (finding ``final``);
- *reserve*: energy above the minimum in the cars plugged in during a step, at the step's end,
  through the discharge efficiency, >= reserve;
  capped at what the plugged-in cars can hold at best (finding ``reserve``).

Two checks find conflicts that bounds cannot relax, and ask for the soft model instead: cars
sharing one charger that need more than it can deliver before their departures (``shared``), and
a load above the import limit plus all possible discharge (``import``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from models.data import PlanProblem, VehicleSpec, import_cap_kw, pair_discharge_cap_kw, pairs

#: energies closer than this [kWh] are equal when requirements are derived and checked for
#: reachability (far below any metering resolution)
EQUAL_KWH = 1e-6


@dataclass(frozen=True)
class Finding:
    """A requirement that cannot be met, in words.

    ``kind`` is the requirement family (target, min_soc, max_soc, final, reserve, trip, shared,
    import), ``subject`` the vehicle or charger id (or "site"), ``k`` the boundary or step,
    ``shortfall`` the amount missing [kWh, or kW for import], ``soften`` the family the soft model
    must relax (None when the bounds already relax it).
    """

    kind: str
    subject: str
    k: int
    shortfall: float
    text: str
    soften: str | None = None


@dataclass
class Requirements:
    """The requirements as numbers [kWh], ready for the model.

    - ``lb_min`` (V x T+1): minimum SOC, ramped where a car is below it (see module docstring);
    - ``target`` (V x T+1): departure target capped at reach, NaN where none;
    - ``final`` (V): required final SOC capped at reach, NaN when not required;
    - ``soc_ub`` (V x T+1): ceiling, equal to the known SOC where it is known; ``fixed`` (V x T+1):
      known SOC (start, arrivals), NaN elsewhere;
    - ``reach`` (V x T+1): most energy each car can hold; ``reserve_kwh`` (T): reserve, capped at
      what the plugged-in cars can hold in hard mode; ``reserve_want`` (T): the uncapped reserve;
    - ``findings``: requirements that cannot be met, in words.
    """

    lb_min: np.ndarray
    target: np.ndarray
    final: np.ndarray
    soc_ub: np.ndarray
    fixed: np.ndarray
    reach: np.ndarray
    reserve_kwh: np.ndarray
    reserve_want: np.ndarray
    findings: list[Finding] = field(default_factory=list)

    @property
    def soften(self) -> frozenset[str]:
        """Families the soft model must relax (empty: the hard model with these bounds)."""
        return frozenset(f.soften for f in self.findings if f.soften)

    def soc_lb(self, soft: frozenset[str] = frozenset()) -> np.ndarray:
        """Lower SOC bounds [kWh] (V x T+1) from the families that stay hard.

        Softened families become rows with a shortfall variable instead (:mod:`models.formulation`);
        their bound falls back to 0 (min SOC) or to nothing (target, final).
        """
        lb = np.zeros_like(self.lb_min) if "min_soc" in soft else self.lb_min.copy()
        if "target" not in soft:
            lb = np.fmax(lb, self.target)
        if "final" not in soft:
            lb[:, -1] = np.fmax(lb[:, -1], self.final)
        known = ~np.isnan(self.fixed)
        lb[known] = self.fixed[known]
        return np.minimum(lb, self.soc_ub)


def battery_charge_kw(problem: PlanProblem) -> np.ndarray:
    """Fastest battery-side charging of each vehicle per step, eta_c x rating while plugged [kW] (V x T)."""
    out = np.zeros((len(problem.vehicles), problem.n_steps))
    for p in pairs(problem):
        rate = p.eta_c * p.charge_kw
        out[p.v] = np.maximum(out[p.v], np.where(problem.vehicles[p.v].plugged, rate, 0.0))
    return out


def reach_and_ceiling(v: VehicleSpec, charge_kw: np.ndarray, dt_h: float) -> tuple[np.ndarray, np.ndarray]:
    """Most energy the car can hold at each boundary, and its ceiling [kWh] (both T+1).

    reach[k+1] = min(reach[k] + charge_kw[k]*dt, ceil[k]) - trip[k+1], reset to the known energy at
    an arrival with a known SOC; ceil[k] = max(max_kwh, entry level - trips since) after an entry
    above max_kwh, else max_kwh.
    """
    T = charge_kw.size
    arrived, trips, gain = v.arrival_set_kwh.tolist(), v.arrival_trip_kwh.tolist(), (charge_kw * dt_h).tolist()
    reach, ceil = [v.soc0_kwh] + [0.0] * T, [max(v.max_kwh, v.soc0_kwh)] + [0.0] * T   # floats: a loop over T
    for k in range(T):
        nxt = k + 1
        if nxt < T and not math.isnan(arrived[nxt]):
            reach[nxt] = arrived[nxt]
            ceil[nxt] = max(v.max_kwh, reach[nxt])
            continue
        trip = trips[nxt] if nxt < T else 0.0
        reach[nxt] = min(reach[k] + gain[k], ceil[k]) - trip
        ceil[nxt] = max(v.max_kwh, ceil[k] - trip)
    return np.array(reach, dtype=float), np.array(ceil, dtype=float)


def _entry(v: VehicleSpec, k: int) -> int:
    """First boundary of the stay that ends at departure boundary k (the plug-in time)."""
    a = k
    while a > 0 and v.plugged[a - 1]:
        a -= 1
    return a


def _pct(kwh: float, v: VehicleSpec) -> str:
    return f"{100 * kwh / v.capacity_kwh:.0f} %"


def _units(problem: PlanProblem, vi: int) -> str:
    """Words for the chargers a vehicle may use ("the 6 kW unit v2h1")."""
    v = problem.vehicles[vi]
    ps = [p for p in pairs(problem) if p.v == vi]
    if len(ps) == 1:
        return f"the {ps[0].charge_kw:g} kW unit {problem.chargers[ps[0].c].id}"
    best = max((p.charge_kw for p in ps), default=0.0)
    return f"its {len(ps)} units (up to {best:g} kW)" if ps else f"no unit (vehicle {v.id} may use none)"


def _target_text(problem: PlanProblem, vi: int, k: int, want: float, reach: np.ndarray, ceil: np.ndarray) -> str:
    """Why vehicle vi cannot hold ``want`` kWh at boundary k."""
    v = problem.vehicles[vi]
    if want > ceil[k] + EQUAL_KWH:
        return (f"car {v.id} cannot reach {_pct(want, v)} by {problem.label(k)}: that is above its maximum SOC of "
                f"{_pct(ceil[k], v)}; planning for {_pct(ceil[k], v)} (short {want - ceil[k]:.1f} kWh)")
    a = _entry(v, k)
    known = a == 0 or (a < v.arrival_set_kwh.size and not np.isnan(v.arrival_set_kwh[a]))
    start = f"with {_pct(reach[a], v)}" if known else f"with at most {_pct(reach[a], v)}"
    return (f"car {v.id} cannot reach {_pct(want, v)} by {problem.label(k)}: plugged in at {problem.label(a)} {start}, "
            f"needs {want - reach[a]:.1f} kWh, {_units(problem, vi)} delivers at most {reach[k] - reach[a]:.1f} kWh; "
            f"planning for {_pct(reach[k], v)} (short {want - reach[k]:.1f} kWh)")


def _vehicle_bounds(problem: PlanProblem, vi: int, reach: np.ndarray, ceil: np.ndarray,
                    findings: list[Finding]) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """One vehicle's (lb_min, target, final, fixed) [kWh], appending findings for relaxed requirements."""
    v = problem.vehicles[vi]
    T = problem.n_steps
    lb = np.minimum(v.min_kwh, reach)
    below = np.flatnonzero(reach[1:] < v.min_kwh - EQUAL_KWH) + 1
    if below.size:
        k = int(below[0])
        if reach[k] < -EQUAL_KWH:
            findings.append(Finding("trip", v.id, k, float(-reach[k]),
                                    f"car {v.id} cannot make the trip ending {problem.label(k)}: it needs "
                                    f"{-reach[k]:.1f} kWh more than the battery can hold before it"))
        else:
            back = np.flatnonzero(reach[k:] >= v.min_kwh - EQUAL_KWH)
            until = f"until {problem.label(k + int(back[0]))}" if back.size else "for the whole horizon"
            findings.append(Finding("min_soc", v.id, k, float(v.min_kwh - reach[k]),
                                    f"car {v.id} is below its minimum SOC of {_pct(v.min_kwh, v)} at {problem.label(k)} "
                                    f"({_pct(reach[k], v)} at best): charging it at full power {until}"))
    if v.soc0_kwh < v.min_kwh - EQUAL_KWH:
        findings.append(Finding("min_soc", v.id, 0, v.min_kwh - v.soc0_kwh,
                                f"car {v.id} starts at {_pct(v.soc0_kwh, v)}, below its minimum SOC of {_pct(v.min_kwh, v)}: "
                                "no discharge until it is back above it"))
    if v.soc0_kwh > v.max_kwh + EQUAL_KWH:
        findings.append(Finding("max_soc", v.id, 0, v.soc0_kwh - v.max_kwh,
                                f"car {v.id} starts at {_pct(v.soc0_kwh, v)}, above its maximum SOC of {_pct(v.max_kwh, v)}: "
                                "it is not charged further"))
    target = np.full(T + 1, np.nan)
    for k in np.flatnonzero(~np.isnan(v.target_kwh)):
        want = float(v.target_kwh[k])
        if want > reach[k] + EQUAL_KWH:
            findings.append(Finding("target", v.id, int(k), want - float(reach[k]),
                                    _target_text(problem, vi, int(k), want, reach, ceil)))
        target[k] = min(want, reach[k])
    final = np.nan
    if problem.final_soc_at_least_initial:
        if v.soc0_kwh > reach[T] + EQUAL_KWH:
            findings.append(Finding("final", v.id, T, v.soc0_kwh - float(reach[T]),
                                    f"car {v.id} cannot end the horizon with its initial {_pct(v.soc0_kwh, v)}: "
                                    f"it can hold at most {_pct(reach[T], v)} at {problem.label(T)}"))
        final = min(v.soc0_kwh, float(reach[T]))
    fixed = np.full(T + 1, np.nan)
    fixed[0] = v.soc0_kwh
    sets = np.flatnonzero(~np.isnan(v.arrival_set_kwh))
    sets = sets[sets > 0]
    fixed[sets] = v.arrival_set_kwh[sets]
    return lb, target, final, fixed


def _reserve(problem: PlanProblem, reach: np.ndarray, findings: list[Finding]) -> tuple[np.ndarray, np.ndarray]:
    """Reserve requirement per step [kWh]: (capped at what the plugged-in cars can hold at best, uncapped)."""
    want = problem.reserve.copy()
    outage = problem.outage_mask
    if outage.any():
        want[int(np.argmax(outage)):] = 0.0  # the reserve is for the outage: it may be used from its start
    eta_d = _vehicle_eta_d(problem)
    plugged = np.array([v.plugged for v in problem.vehicles]).reshape(len(problem.vehicles), problem.n_steps)
    mins = np.array([v.min_kwh for v in problem.vehicles]).reshape(-1, 1)
    best = (plugged * eta_d.reshape(-1, 1) * (reach[:, 1:] - mins)).sum(axis=0)
    want[~plugged.any(axis=0)] = 0.0  # held only while some car is plugged in
    short = want > best + EQUAL_KWH
    capped = want
    if short.any() and not problem.reserve_soft:
        t = int(np.argmax(short))
        back = np.flatnonzero(~short[t:])
        until = f"from {problem.label(t + int(back[0]) + 1)}" if back.size else "at no time in the horizon"
        findings.append(Finding("reserve", "site", t, float(want[t] - best[t]),
                                f"the outage reserve of {want[t]:.1f} kWh cannot be held at {problem.label(t + 1)}: the plugged-in "
                                f"cars hold at most {best[t]:.1f} kWh above their minimum then; it is built up at full power "
                                f"and held in full {until}"))
        capped = np.minimum(want, best)
    return capped, want


def _vehicle_eta_d(problem: PlanProblem) -> np.ndarray:
    """Each vehicle's worst discharge efficiency over the chargers it may use (1 if none)."""
    eta = np.ones(len(problem.vehicles))
    seen = np.zeros(len(problem.vehicles), dtype=bool)
    for p in pairs(problem):
        eta[p.v] = p.eta_d if not seen[p.v] else min(eta[p.v], p.eta_d)
        seen[p.v] = True
    return eta


def vehicle_discharge_efficiency(problem: PlanProblem) -> np.ndarray:
    """Discharge efficiency counted for each vehicle's reserve (its worst charger's)."""
    return _vehicle_eta_d(problem)


def _shared_chargers(problem: PlanProblem, lb: np.ndarray, reach: np.ndarray) -> list[Finding]:
    """Cars tied to one charger whose needs before their departures exceed what it delivers.

    Each stay with a target is a job: release = plug-in boundary, deadline = departure, energy =
    lb[departure] - reach[plug-in]. For every interval [release_i, deadline_j] the jobs inside it
    must fit the charger's battery-side energy over the steps any of the cars is plugged in
    (a necessary condition, the classic deadline-scheduling test).
    """
    out = []
    ps = pairs(problem)
    for ci, c in enumerate(problem.chargers):
        tied = [vi for vi, v in enumerate(problem.vehicles) if list(v.chargers) == [c.id]]
        if len(tied) < 2:
            continue
        jobs = []
        for vi in tied:
            v = problem.vehicles[vi]
            for k in np.flatnonzero(~np.isnan(v.target_kwh)):
                a = _entry(v, int(k))
                need = lb[vi, k] - reach[vi, a]
                if need > EQUAL_KWH:
                    jobs.append((a, int(k), float(need), v.id))
        pair_rate = {p.v: p.eta_c * p.charge_kw for p in ps if p.c == ci}
        any_plugged = np.any([problem.vehicles[vi].plugged for vi in tied], axis=0)
        rate = max(pair_rate.values())
        for r, _, _, _ in jobs:
            for _, d, _, _ in jobs:
                inside = [j for j in jobs if j[0] >= r and j[1] <= d]
                if len(inside) < 2 or d <= r:
                    continue
                need = sum(j[2] for j in inside)
                cap = rate * problem.dt_h * float(any_plugged[r:d].sum())
                if need > cap + EQUAL_KWH:
                    names = " and ".join(sorted({j[3] for j in inside}))
                    out.append(Finding("shared", c.id, d, need - cap,
                                       f"cars {names} share unit {c.id}: between {problem.label(r)} and {problem.label(d)} "
                                       f"they need {need:.1f} kWh together, the {c.max_charge_kw:g} kW unit delivers at "
                                       f"most {cap:.1f} kWh; the plan shares the shortfall of {need - cap:.1f} kWh",
                                       soften="target"))
                    return out
    return out


def _import_limit(problem: PlanProblem) -> list[Finding]:
    """Steps whose load exceeds the import limit plus PV plus every possible discharge."""
    outage = problem.outage_mask
    dis = np.zeros(problem.n_steps)
    for p in pairs(problem):
        dis += pair_discharge_cap_kw(problem, p)
    over = problem.load_kw - problem.pv_kw - dis - import_cap_kw(problem)
    over[outage] = 0.0  # in an outage the shortfall is unserved load, priced by the value of lost load
    bad = np.flatnonzero(over > 1e-6)
    if not bad.size:
        return []
    t = int(bad[0])
    return [Finding("import", "site", t, float(over[t]),
                    f"the load of {problem.load_kw[t]:.1f} kW at {problem.label(t)} exceeds the "
                    f"{problem.import_limit_kw[t]:g} kW import limit even with {problem.pv_kw[t]:.1f} kW of PV and "
                    f"{dis[t]:.1f} kW from the cars (short {over[t]:.1f} kW, {bad.size} step(s)); "
                    "planning to import over the limit", soften="import")]


def requirements(problem: PlanProblem) -> Requirements:
    """SOC bounds, effective reserve and findings for ``problem`` (see the module docstring)."""
    V, T = len(problem.vehicles), problem.n_steps
    charge = battery_charge_kw(problem)
    shape = (V, T + 1)
    reach, ub, lb_min, target, fixed = (np.zeros(shape) for _ in range(5))
    final = np.full(V, np.nan)
    findings: list[Finding] = []
    for vi, v in enumerate(problem.vehicles):
        reach[vi], ub[vi] = reach_and_ceiling(v, charge[vi], problem.dt_h)
        lb_min[vi], target[vi], final[vi], fixed[vi] = _vehicle_bounds(problem, vi, reach[vi], ub[vi], findings)
        known = ~np.isnan(fixed[vi])
        ub[vi, known] = fixed[vi, known]
    reserve, want = _reserve(problem, reach, findings)
    req = Requirements(lb_min, target, final, ub, fixed, reach, reserve, want, findings)
    findings += _shared_chargers(problem, req.soc_lb(), reach)
    findings += _import_limit(problem)
    return req


def reserve_requirement_kwh(critical_kw: float, pv_kw: np.ndarray, dt_h: float, hours: float) -> np.ndarray:
    """Energy to hold back at the start of each step to carry the critical load for ``hours`` [kWh].

    R[t] = sum over the next ``hours`` from t of max(0, critical_kw - pv_kw) * dt (net of forecast PV;
    a fractional last step counts in part; PV after the horizon end is taken as zero, the
    conservative assumption).
    """
    T = pv_kw.size
    steps = hours / dt_h
    whole = int(np.floor(steps + 1e-9))
    frac = steps - whole
    deficit = np.concatenate([np.maximum(0.0, critical_kw - pv_kw), np.full(whole + 2, critical_kw)]) * dt_h
    csum = np.concatenate([[0.0], np.cumsum(deficit)])
    t = np.arange(T)
    return csum[t + whole] - csum[t] + frac * deficit[t + whole]
