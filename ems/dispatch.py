"""Dispatch: turn the current plan step and live measurements into safe charger setpoints.

Pure logic, no I/O and no clock: the daemon feeds it measurements every few seconds; the study
feeds it replayed data; tests feed it by hand. Order of authority, last word wins:

1. the plan (or, when the plan is stale or missing, the fallback rule);
2. the fixed-window demand guard: from the import energy already metered in the current 30-minute
   window and the time left, cut charging, then raise discharge, so the window's average stays at
   or under the target peak;
3. the clamps: ratings, plugged state, vehicle limits, SOC floors (outage reserve and the driver's
   minimum), never vehicle energy into the grid, nothing at all while the grid is down.

Sign convention: charge and discharge are separate non-negative kW figures (the adapter converts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ems.timegrid import WINDOW_H  # Japanese demand is metered on fixed 30-minute windows

#: discharge never takes a car below its floor within this many ticks, so one late tick (the unit
#: keeps the last setpoint until the next) still leaves it at or above the floor
FLOOR_TICKS = 2.0
#: departure floors count on refilling a car within the peak headroom this far ahead [h]; a car
#: leaving later is not limited (the plan handles it). The daemon and the study both use it.
REFILL_HOURS = 24.0
#: the level a surge window is held to is found to this precision [kW] (10 W: below any meter's
#: resolution of a 30-minute average, in 10-12 bisection steps)
BISECT_KW = 0.01


@dataclass(frozen=True)
class UnitState:
    """What one charger and the vehicle on it report now.

    ``soc_kwh``/``capacity_kwh`` are of the plugged vehicle (ignored when not plugged);
    ``charge_kw``/``discharge_kw`` the measured power now.
    """

    charger_id: str
    plugged: bool
    soc_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95
    charge_kw: float = 0.0
    discharge_kw: float = 0.0


@dataclass(frozen=True)
class UnitRules:
    """Per-unit energy floors and departure needs for the vehicle plugged in now.

    ``floor_kwh``: never discharge below (max of the vehicle's min SOC and its share of the
    outage reserve); ``target_kwh`` and ``hours_to_departure``: what the driver needs and when
    (``math.inf`` hours when no departure is known); ``refill_kwh``: battery energy the car can
    take back before it leaves without the site's import going over the peak target
    (:func:`refill_kwh`; ``math.inf``: at its full charging power, where no peak is at stake).
    """

    floor_kwh: float
    target_kwh: float = 0.0
    hours_to_departure: float = math.inf
    refill_kwh: float = math.inf


@dataclass(frozen=True)
class PluggedCar:
    """A car plugged into a unit, as the floor rule sees it.

    ``soc_kwh``/``min_kwh``/``capacity_kwh``: its energy now, the driver's minimum, its capacity
    [kWh]; ``discharge_efficiency``: the unit's (fraction); ``target_kwh``/``hours_to_departure``:
    its next departure (0 and ``math.inf`` when none is known).
    """

    charger_id: str
    soc_kwh: float
    min_kwh: float
    capacity_kwh: float
    discharge_efficiency: float = 0.95
    target_kwh: float = 0.0
    hours_to_departure: float = math.inf
    max_charge_kw: float = math.inf
    charge_efficiency: float = 0.95
    max_discharge_kw: float = math.inf


def _water_fill(room_kw: float, caps_kw: list[float]) -> list[float]:
    """Share ``room_kw`` among takers each capped at ``caps_kw[i]``, as evenly as the caps allow [kW]."""
    out = [0.0] * len(caps_kw)
    left = max(room_kw, 0.0)
    order = sorted(range(len(caps_kw)), key=lambda i: caps_kw[i])
    for n, i in enumerate(order):
        out[i] = min(caps_kw[i], left / (len(order) - n))
        left -= out[i]
    return out


def refill_kwh(cars: list[PluggedCar], headroom_kw: list[float], step_h: float) -> dict[str, float]:
    """Battery energy each car can take back before its departure within the site's allowed import [kWh].

    ``headroom_kw[j]``: how much more the site may import in step j from now (each ``step_h``
    hours) without its 30-minute average going over the month's peak target: the target less the
    building's expected import (load - PV), never negative. Each step's headroom is shared among
    the cars still there for it (the part of the step before each departure), each at most at its
    charging rating, as evenly as the ratings allow; a car's refill is the sum of its shares x its
    charging efficiency x the time. Beyond the headroom series: nothing (a departure further
    away than the forecast is not limited: ``math.inf``).
    """
    horizon_h = len(headroom_kw) * step_h
    got = {c.charger_id: 0.0 for c in cars}
    for j, room in enumerate(headroom_kw):
        t0 = j * step_h
        present = [(c, min(max(c.hours_to_departure - t0, 0.0), step_h) / step_h) for c in cars]
        present = [(c, f) for c, f in present if f > 0]
        if not present:
            continue
        shares = _water_fill(room, [c.max_charge_kw * f for c, f in present])
        for (c, _), kw in zip(present, shares):
            got[c.charger_id] += kw * c.charge_efficiency * step_h
    return {c.charger_id: (math.inf if c.hours_to_departure > horizon_h else got[c.charger_id]) for c in cars}


def share_floors(cars: list[PluggedCar], reserve_kwh: float, headroom_kw: list[float] | None = None,
                 step_h: float = 0.5) -> dict[str, UnitRules]:
    """The one rule that shares the outage reserve and sets the departure needs of plugged cars.

    Each car's floor is its driver's minimum plus a share of ``reserve_kwh`` (AC energy the
    critical circuits need [kWh]) in proportion to the energy it holds above its minimum:
    floor_i = min_i + R * (soc_i - min_i)^+ / sum_j (soc_j - min_j)^+ / eta_d,i, capped at the
    capacity. The shares add up to the reserve (sum eta_d,i * (floor_i - min_i) = R), and no car is
    asked for more than it holds while the cars together hold the reserve. The departure target
    and time travel with the floor (:func:`departure_floor_kwh` raises it where the car could not
    be recharged in time). With ``headroom_kw`` (the site's import headroom under the peak target
    per step of ``step_h`` hours from now, see :func:`refill_kwh`) a car is recharged in time only
    within that headroom: a car keeps what it could not get back without setting a new peak.
    The daemon and every study strategy call this.
    """
    above = sum(max(c.soc_kwh - c.min_kwh, 0.0) for c in cars)
    refill = refill_kwh(cars, headroom_kw, step_h) if headroom_kw is not None else {}
    out = {}
    for c in cars:
        floor = c.min_kwh
        if reserve_kwh > 0 and above > 0:
            floor += reserve_kwh * max(c.soc_kwh - c.min_kwh, 0.0) / above / c.discharge_efficiency
        out[c.charger_id] = UnitRules(min(floor, c.capacity_kwh), c.target_kwh, c.hours_to_departure,
                                      refill.get(c.charger_id, math.inf))
    return out


def reserve_to_hold_kwh(hard: bool, following_plan: bool, planned_kwh: float | None, critical_kw: float,
                        reserve_hours: float) -> float:
    """The outage reserve dispatch holds in the plugged cars now [kWh].

    A hard reserve, or any reserve while no plan is followed: the plan's figure for this step
    (net of forecast PV) when there is one, else the critical load x the reserve hours. A soft
    reserve under a followed plan: 0 (the plan already priced holding it against its value).
    """
    if reserve_hours <= 0 or critical_kw <= 0:
        return 0.0
    if not hard and following_plan:
        return 0.0
    return planned_kwh if planned_kwh is not None else critical_kw * reserve_hours


def guard_target_kw(plan_peak_kw: float | None, month_peak_kw: float, import_limit_kw: float, margin_kw: float) -> float:
    """The 30-minute average the demand guard holds [kW].

    With a plan: its peak this month, never below this month's metered peak (already paid for);
    without one: the month's peak so far, or the import limit before any; less the configured
    margin. Also without a demand charge: the plan's import level is what its energy prices paid
    for, so a surge the forecast missed is met from the cars down to their floors.
    """
    if plan_peak_kw is not None:
        level = max(plan_peak_kw, month_peak_kw)
    else:
        level = month_peak_kw if month_peak_kw > 0 else import_limit_kw
    return max(level - margin_kw, 0.0)


@dataclass(frozen=True)
class Setpoint:
    """The command for one charger [kW], with the reason (``plan``, ``fallback``, ``peak-guard``...)."""

    charger_id: str
    charge_kw: float
    discharge_kw: float
    reason: str


@dataclass(frozen=True)
class DispatchResult:
    """What one tick decided: a setpoint per unit, and how far the demand guard fell short [kW].

    ``guard_short_kw`` > 0 means the projected import stays above the window's allowed level even
    with all charging cut (down to what drivers need) and every car discharging to its floor: the
    window will exceed its target unless the building's load drops. ``refill_over_kw``: the part of
    that excess that is charging kept because a driver needs it before leaving (a peak set to
    refill a car).
    """

    setpoints: list[Setpoint]
    guard_short_kw: float = 0.0
    refill_over_kw: float = 0.0
    rules: dict[str, UnitRules] = field(default_factory=dict)

    @property
    def guard_short(self) -> bool:
        """Whether the guard could not hold the window's target (more than 1 mW short)."""
        return self.guard_short_kw > 1e-6


@dataclass(frozen=True)
class WindowMeter:
    """The current 30-minute demand window: energy imported so far [kWh] and time elapsed [h]."""

    import_kwh: float
    elapsed_h: float

    @property
    def remaining_h(self) -> float:
        """Time left in the window [h]."""
        return max(WINDOW_H - self.elapsed_h, 0.0)


@dataclass
class DispatchInput:
    """Everything one dispatch tick needs.

    ``site_import_kw`` is the meter's net power now (+ import, - export); ``planned`` maps charger
    id to (charge_kw, discharge_kw) of the current plan step, or is None when no fresh plan exists.
    ``peak_hold_kwh``: car energy the rest of the day's likely peaks need above the target
    (:func:`peak_hold_kwh`); the plan's discharge beyond what holds the target now never spends it.
    """

    units: list[UnitState]
    rules: dict[str, UnitRules]
    site_import_kw: float
    window: WindowMeter
    target_peak_kw: float
    planned: dict[str, tuple[float, float]] | None
    grid_up: bool = True
    vehicle_export_allowed: bool = False
    import_limit_kw: float = math.inf
    tick_h: float = 5 / 3600
    peak_hold_kwh: float = 0.0


def peak_hold_kwh(cars: list[PluggedCar], expected_net_kw: list[float], target_kw: float, step_h: float) -> float:
    """Battery energy the plugged cars must keep for the later peaks they are still there for [kWh].

    For each step j >= 1 of ``expected_net_kw`` (the building's expected import, load - PV, per
    step of ``step_h`` hours from now: a high quantile where the plan uses one), the import above
    ``target_kw`` that the cars present then could cover (at most their discharge ratings), through
    their discharge efficiency. Step 0 is the guard's, on the measured import.
    """
    need = 0.0
    for j, net in enumerate(expected_net_kw[1:], start=1):
        present = [c for c in cars if c.hours_to_departure > j * step_h]
        over = net - target_kw
        if over <= 0 or not present:
            continue
        cap = sum(c.max_discharge_kw for c in present)
        eta = sum(c.discharge_efficiency for c in present) / len(present)
        need += min(over, cap) * step_h / eta
    return need


def allowed_import_kw(window: WindowMeter, target_peak_kw: float) -> float:
    """Highest average import for the rest of the window that keeps its mean <= target [kW].

    E + P * r <= P_target * W  =>  P <= (P_target * W - E) / r. With no time left, the limit is
    the target itself (the next window starts fresh).
    """
    r = window.remaining_h
    if r <= 1e-9:
        return target_peak_kw
    return (target_peak_kw * WINDOW_H - window.import_kwh) / r


def departure_floor_kwh(unit: UnitState, rules: UnitRules) -> float:
    """Energy below which the car could no longer reach its departure target in time [kWh].

    floor = target - min(max_charge * eta_c * hours_to_departure, refill) (never below the reserve
    floor): what it could not get back before it leaves, at full power or, where a peak is at
    stake, within the site's import headroom (``rules.refill_kwh``).
    """
    if math.isinf(rules.hours_to_departure):
        return rules.floor_kwh
    reachable = min(unit.max_charge_kw * unit.charge_efficiency * rules.hours_to_departure, rules.refill_kwh)
    return max(rules.floor_kwh, rules.target_kwh - reachable)


def fallback_setpoint(unit: UnitState, rules: UnitRules) -> tuple[float, float]:
    """Safe rule when no plan is fresh: no discharge, charge toward the departure target.

    Charges just fast enough to reach the target by departure (full power when short of time),
    and nothing once the target is met.
    """
    if not unit.plugged:
        return 0.0, 0.0
    need = rules.target_kwh - unit.soc_kwh
    if need <= 0:
        return 0.0, 0.0
    if math.isinf(rules.hours_to_departure) or rules.hours_to_departure <= 0:
        return unit.max_charge_kw, 0.0
    rate = need / (unit.charge_efficiency * rules.hours_to_departure)
    return min(unit.max_charge_kw, rate), 0.0


def _clamp(unit: UnitState, rules: UnitRules, ch: float, dis: float, tick_h: float) -> tuple[float, float]:
    """Ratings, plug state, never both directions, and the SOC floor: discharge at most what takes
    the car to its floor (reserve, driver's minimum, departure floor) in ``FLOOR_TICKS`` ticks [kW]."""
    if not unit.plugged:
        return 0.0, 0.0
    ch = min(max(ch, 0.0), unit.max_charge_kw)
    dis = min(max(dis, 0.0), unit.max_discharge_kw)
    if ch > 0 and dis > 0:  # never both: keep the net
        net = ch - dis
        ch, dis = max(net, 0.0), max(-net, 0.0)
    room = unit.soc_kwh - departure_floor_kwh(unit, rules)
    if dis > 0:  # land on the floor even if the next tick comes a whole tick late: taper near it
        dis = min(dis, max(room, 0.0) * unit.discharge_efficiency / (FLOOR_TICKS * tick_h))
    return ch, dis


def dispatch(inp: DispatchInput) -> DispatchResult:
    """One tick: plan (or fallback), then the demand guard, then the clamps.

    Returns one setpoint per unit and the guard's shortfall. While the grid is down every unit
    gets 0/0: the unit's own islanded mode carries the critical circuits, and the EMS never
    commands export.
    """
    if not inp.grid_up:
        return DispatchResult([Setpoint(u.charger_id, 0.0, 0.0, "grid-down") for u in inp.units], rules=dict(inp.rules))
    wanted: dict[str, tuple[float, float]] = {}
    reason = "plan" if inp.planned is not None else "fallback"
    for u in inp.units:
        rules = inp.rules[u.charger_id]
        if inp.planned is not None:
            wanted[u.charger_id] = inp.planned.get(u.charger_id, (0.0, 0.0))
        else:
            wanted[u.charger_id] = fallback_setpoint(u, rules)
        wanted[u.charger_id] = _clamp(u, rules, *wanted[u.charger_id], inp.tick_h)
    reasons = {u.charger_id: reason for u in inp.units}
    if inp.peak_hold_kwh > 0 and inp.planned is not None:
        _hold_for_later_peaks(inp, wanted, reasons)
    short, refill = _guard(inp, wanted, reasons)
    return DispatchResult([Setpoint(cid, _clean(c), _clean(d), reasons[cid]) for cid, (c, d) in wanted.items()],
                          _clean(short), _clean(refill), dict(inp.rules))


def peak_aware_dispatch(inp: DispatchInput, cars: list[PluggedCar], reserve_kwh: float,
                        expected_net_kw: list[float] | None, step_h: float) -> DispatchResult:
    """One tick with departure floors that count on refilling a car only under the level the
    month's peak reaches anyway: the rule the daemon and the study's mpc share.

    For a level L >= the guard's target, each car keeps what it could not get back before it leaves
    with the site importing at most L (:func:`share_floors` with headroom L - the building's import:
    measured now for the current step, ``expected_net_kw[j]`` (forecast load - PV, per step of
    ``step_h`` hours from now) after). If the guard holds the target with the floors at L = target,
    that is the tick. Otherwise this window goes over the target whatever the cars do; the lowest
    L at which the window's projected average (target + shortfall x time left / 30 min) is at most
    L is found by bisection (a higher L lets the cars give more now, so the projected average falls
    as L rises): the cars cover the surge down to the level at which they can still be refilled
    without a higher peak, never further. ``expected_net_kw`` None (no forecast, no demand charge):
    floors at full charging power, as :func:`dispatch`.
    """
    base_now = _base_import_kw(inp)

    hold = 0.0 if expected_net_kw is None else peak_hold_kwh(cars, expected_net_kw, inp.target_peak_kw, step_h)

    def at(level: float) -> DispatchResult:
        headroom = None
        if expected_net_kw is not None:
            headroom = [max(level - base_now, 0.0)] + [max(level - x, 0.0) for x in expected_net_kw[1:]]
        return dispatch(replace(inp, rules={**inp.rules, **share_floors(cars, reserve_kwh, headroom, step_h)},
                                peak_hold_kwh=hold))

    res = at(inp.target_peak_kw)
    if expected_net_kw is None or not res.guard_short or not math.isfinite(inp.target_peak_kw):
        return res

    def projected(r: DispatchResult) -> float:   # the window's average if this tick's import goes on [kW]
        return inp.target_peak_kw + r.guard_short_kw * inp.window.remaining_h / WINDOW_H

    lo, hi = inp.target_peak_kw, projected(res)
    best = at(hi)
    while hi - lo > BISECT_KW:
        mid = (lo + hi) / 2
        r = at(mid)
        if projected(r) <= mid + 1e-9:
            hi, best = mid, r
        else:
            lo = mid
    return best


def _clean(kw: float) -> float:
    """Drop float dust below 1 mW [kW]; no other rounding, which could undo the trims above
    (the adapter rounds to the device's register resolution)."""
    return 0.0 if abs(kw) < 1e-6 else kw


def _base_import_kw(inp: DispatchInput) -> float:
    """Site import without the chargers' present contribution [kW]."""
    return inp.site_import_kw - sum(u.charge_kw - u.discharge_kw for u in inp.units)


def _guard(inp: DispatchInput, wanted: dict[str, tuple[float, float]], reasons: dict[str, str]) -> tuple[float, float]:
    """Demand guard: bring projected import down to the window's allowed level; returns what is
    still over it and how much of that is charging drivers need [kW] (0, 0 when held).

    Projected import = base + sum(charge) - sum(discharge). First cut charging (units furthest from
    departure first), then add discharge on units with the most energy above their floors. Vehicle
    energy never pushes the site into export unless the site allows it. Also holds the import limit.
    """
    base = _base_import_kw(inp)
    limit = min(allowed_import_kw(inp.window, inp.target_peak_kw), inp.import_limit_kw)
    projected = base + sum(c - d for c, d in wanted.values())
    excess = projected - limit
    if excess <= 1e-9:
        _no_vehicle_export(inp, wanted, base)
        return 0.0, 0.0
    units = {u.charger_id: u for u in inp.units}
    by_slack = sorted(units, key=lambda cid: -inp.rules[cid].hours_to_departure)
    needed = 0.0
    for cid in by_slack:  # 1) cut charging, but never below what the driver still needs
        c, d = wanted[cid]
        need = fallback_setpoint(units[cid], inp.rules[cid])[0]
        needed += min(c, need)
        cut = min(max(c - need, 0.0), excess)
        if cut > 0:
            wanted[cid] = (c - cut, d)
            reasons[cid] = "peak-guard"
            excess -= cut
    by_energy = sorted(units, key=lambda cid: -(units[cid].soc_kwh - departure_floor_kwh(units[cid], inp.rules[cid])))
    for cid in by_energy:  # 2) discharge more, within rating and floors
        if excess <= 1e-9:
            break
        c, d = wanted[cid]
        if c > 0:
            continue
        extra = min(units[cid].max_discharge_kw - d, excess)
        if extra <= 0:
            continue
        c2, d2 = _clamp(units[cid], inp.rules[cid], 0.0, d + extra, inp.tick_h)
        if d2 > d:
            wanted[cid] = (c2, d2)
            reasons[cid] = "peak-guard"
            excess -= d2 - d
    _no_vehicle_export(inp, wanted, base)
    short = max(excess, 0.0)
    return short, min(short, needed) if short > 1e-6 else 0.0


def _hold_for_later_peaks(inp: DispatchInput, wanted: dict[str, tuple[float, float]], reasons: dict[str, str]) -> None:
    """Trim the plan's discharge beyond what holds the target now, so the battery energy above the
    floors after the tick leaves ``inp.peak_hold_kwh`` for the later peaks (largest discharges
    first; battery energy = AC kW x tick / discharge efficiency)."""
    plugged = [u for u in inp.units if u.plugged]
    if not plugged:
        return
    allowed = min(allowed_import_kw(inp.window, inp.target_peak_kw), inp.import_limit_kw)
    total_dis = sum(d for _, d in wanted.values())
    needed_now = max(_base_import_kw(inp) + sum(c for c, _ in wanted.values()) - allowed, 0.0)
    spare_kwh = sum(max(u.soc_kwh - departure_floor_kwh(u, inp.rules[u.charger_id]), 0.0) for u in plugged) - inp.peak_hold_kwh
    eta = sum(u.discharge_efficiency for u in plugged) / len(plugged)
    over = total_dis - needed_now - max(spare_kwh, 0.0) * eta / inp.tick_h   # [kW] at the unit's AC side
    for cid in _trim_discharge(wanted, over, largest_first=True):
        reasons[cid] = "peak-hold"


def _trim_discharge(wanted: dict[str, tuple[float, float]], over_kw: float, largest_first: bool) -> list[str]:
    """Take ``over_kw`` of discharge off ``wanted``, unit by unit (largest or smallest discharge
    first), each down to 0 at most; returns the units whose discharge was cut."""
    cut = []
    for cid in sorted(wanted, key=lambda k: wanted[k][1], reverse=largest_first):
        if over_kw <= 1e-9:
            break
        c, d = wanted[cid]
        trim = min(d, over_kw)
        if trim > 0:
            wanted[cid] = (c, d - trim)
            cut.append(cid)
            over_kw -= trim
    return cut


def _no_vehicle_export(inp: DispatchInput, wanted: dict[str, tuple[float, float]], base: float) -> None:
    """Trim discharge so vehicle energy does not flow into the grid: import stays >= 0.

    Import without PV export counted: base + ch - dis >= min(base, 0) (only PV surplus may export).
    """
    if inp.vehicle_export_allowed:
        return
    total_dis = sum(d for _, d in wanted.values())
    total_ch = sum(c for c, _ in wanted.values())
    floor_import = min(base, 0.0)
    over = floor_import - (base + total_ch - total_dis)
    _trim_discharge(wanted, over, largest_first=False)
