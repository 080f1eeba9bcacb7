"""Dispatch tick by tick: plan following, fallback, demand guard, clamps (hand-computed cases)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ems.dispatch import (DispatchInput, PluggedCar, Setpoint, UnitRules, UnitState, WindowMeter, allowed_import_kw,
                          departure_floor_kwh, dispatch, fallback_setpoint, peak_aware_dispatch, refill_kwh,
                          share_floors)


def setpoints(i: DispatchInput) -> list[Setpoint]:
    """The setpoints of one dispatch tick."""
    return dispatch(i).setpoints


def unit(cid="u1", soc=40.0, plugged=True, ch=0.0, dis=0.0, rating=6.0):
    return UnitState(cid, plugged, soc, rating, rating, 0.95, 0.95, ch, dis)


def inp(units, site_kw, target=50.0, planned=None, rules=None, window=WindowMeter(0.0, 0.0), **kw):
    rules = rules or {u.charger_id: UnitRules(floor_kwh=10.0) for u in units}
    return DispatchInput(units, rules, site_kw, window, target, planned, **kw)


def test_allowed_import_from_window_energy():
    # 15 minutes gone at 60 kW average (15 kWh): to end at 50 kW average the rest may run at 40 kW
    assert allowed_import_kw(WindowMeter(15.0, 0.25), 50.0) == pytest.approx(40.0)
    assert allowed_import_kw(WindowMeter(0.0, 0.0), 50.0) == pytest.approx(50.0)
    assert allowed_import_kw(WindowMeter(30.0, 0.5), 50.0) == pytest.approx(50.0)


def test_plan_followed_when_under_target():
    sp = setpoints(inp([unit()], 30.0, planned={"u1": (3.0, 0.0)}))
    assert (sp[0].charge_kw, sp[0].discharge_kw, sp[0].reason) == (3.0, 0.0, "plan")


def test_guard_adds_discharge_to_hold_the_window():
    # base load 55 kW, target 50 kW: the unit must discharge 5 kW
    sp = setpoints(inp([unit()], 55.0, planned={"u1": (0.0, 0.0)}))
    assert sp[0].discharge_kw == pytest.approx(5.0)
    assert sp[0].reason == "peak-guard"


def test_guard_uses_window_energy_already_metered():
    # 20 of 30 minutes gone at 56 kW (18.667 kWh): the remaining 10 minutes may run at
    # (25 - 18.667) / (1/6) = 38 kW, base is 42 kW, so 4 kW of discharge is needed
    w = WindowMeter(56.0 * 20 / 60, 20 / 60)
    sp = setpoints(inp([unit()], 42.0, planned={"u1": (0.0, 0.0)}, window=w))
    assert sp[0].discharge_kw == pytest.approx(4.0, abs=1e-3)


def test_guard_cuts_charging_before_discharging():
    # planned charge 6 kW on a 48 kW base with target 50: cut 4 kW of charge, no discharge
    u = unit(ch=6.0)
    sp = setpoints(inp([u], 54.0, planned={"u1": (6.0, 0.0)}))
    assert (sp[0].charge_kw, sp[0].discharge_kw) == (pytest.approx(2.0), 0.0)


def test_guard_never_cuts_what_the_driver_needs():
    # 9.5 kWh short with 2 h left at 95 %: 5 kW is needed; only 1 kW of charge may be cut
    rules = {"u1": UnitRules(floor_kwh=10.0, target_kwh=49.5, hours_to_departure=2.0)}
    i = inp([unit(soc=40.0, ch=6.0)], 54.0, planned={"u1": (6.0, 0.0)}, rules=rules)
    res = dispatch(i)
    assert res.setpoints[0].charge_kw == pytest.approx(5.0)
    assert res.guard_short and res.guard_short_kw == pytest.approx(3.0)


def test_guard_respects_reserve_floor():
    rules = {"u1": UnitRules(floor_kwh=40.0)}
    i = inp([unit(soc=40.0)], 60.0, planned={"u1": (0.0, 0.0)}, rules=rules)
    res = dispatch(i)
    assert res.setpoints[0].discharge_kw == 0.0
    assert res.guard_short_kw == pytest.approx(10.0)


def test_guard_spreads_over_units_by_energy():
    units = [unit("a", soc=20.0), unit("b", soc=50.0)]
    sp = {s.charger_id: s for s in setpoints(inp(units, 58.0, planned={}))}
    assert sp["b"].discharge_kw == pytest.approx(6.0)   # the fuller car first, at its rating
    assert sp["a"].discharge_kw == pytest.approx(2.0)


def test_no_vehicle_energy_into_the_grid():
    # PV surplus makes the site export 2 kW; a planned 3 kW discharge would export car energy
    sp = setpoints(inp([unit()], -2.0, planned={"u1": (0.0, 3.0)}))
    assert sp[0].discharge_kw == 0.0
    # ... unless the site allows vehicle export
    sp = setpoints(inp([unit()], -2.0, planned={"u1": (0.0, 3.0)}, vehicle_export_allowed=True))
    assert sp[0].discharge_kw == 3.0


def test_partial_discharge_trimmed_to_zero_import():
    sp = setpoints(inp([unit()], 2.0, planned={"u1": (0.0, 5.0)}))
    assert sp[0].discharge_kw == pytest.approx(2.0)


def test_unplugged_and_grid_down_get_nothing():
    assert setpoints(inp([unit(plugged=False)], 80.0, planned={"u1": (5.0, 0.0)}))[0].charge_kw == 0.0
    sp = setpoints(inp([unit()], 80.0, planned={"u1": (0.0, 5.0)}, grid_up=False))
    assert (sp[0].charge_kw, sp[0].discharge_kw, sp[0].reason) == (0.0, 0.0, "grid-down")


def test_fallback_charges_just_in_time():
    u = unit(soc=20.0)
    r = UnitRules(floor_kwh=10.0, target_kwh=50.0, hours_to_departure=10.0)
    ch, dis = fallback_setpoint(u, r)
    assert ch == pytest.approx(30.0 / (0.95 * 10.0)) and dis == 0.0
    assert fallback_setpoint(u, UnitRules(10.0, 50.0, 1.0)) == (6.0, 0.0)
    assert fallback_setpoint(unit(soc=55.0), r) == (0.0, 0.0)
    sp = setpoints(inp([u], 10.0, planned=None, rules={"u1": r}))
    assert sp[0].reason == "fallback" and sp[0].charge_kw == pytest.approx(3.1579, abs=1e-3)


def test_departure_floor():
    u = unit(soc=45.0)
    assert departure_floor_kwh(u, UnitRules(10.0, 50.0, 1.0)) == pytest.approx(50.0 - 5.7)
    assert departure_floor_kwh(u, UnitRules(10.0, 50.0, math.inf)) == 10.0
    # planned discharge refused when it would endanger the departure target
    sp = setpoints(inp([unit(soc=44.0)], 30.0, planned={"u1": (0.0, 4.0)}, rules={"u1": UnitRules(10.0, 50.0, 1.0)}))
    assert sp[0].discharge_kw == 0.0


@settings(max_examples=60, deadline=None)
@given(
    socs=st.lists(st.floats(0, 60), min_size=1, max_size=3),
    site=st.floats(-20, 120),
    target=st.floats(5, 100),
    plan=st.lists(st.tuples(st.floats(0, 8), st.floats(0, 8)), min_size=3, max_size=3),
    elapsed=st.floats(0, 0.5),
    grid_up=st.booleans(),
)
# rounding after the export trim once gave -4.7e-05
@example(socs=[16.0], site=0.001953125, target=5.0, plan=[(0.0, 8.0)] * 3, elapsed=0.0, grid_up=True)
def test_setpoints_always_within_limits(socs, site, target, plan, elapsed, grid_up):
    units = [unit(f"u{i}", soc=s) for i, s in enumerate(socs)]
    rules = {u.charger_id: UnitRules(floor_kwh=15.0) for u in units}
    planned = {u.charger_id: plan[i] for i, u in enumerate(units)}
    i = inp(units, site, target=target, planned=planned, rules=rules,
            window=WindowMeter(site * elapsed, elapsed), grid_up=grid_up)
    sps = setpoints(i)
    for u, sp in zip(units, sps):
        assert 0 <= sp.charge_kw <= 6.0 and 0 <= sp.discharge_kw <= 6.0
        assert sp.charge_kw == 0 or sp.discharge_kw == 0
        if u.soc_kwh <= 15.0 or not grid_up:
            assert sp.discharge_kw == 0
        # even a tick that comes a whole tick late leaves the car at or above its floor
        assert u.soc_kwh - 2 * sp.discharge_kw * i.tick_h / u.discharge_efficiency >= min(u.soc_kwh, 15.0) - 1e-9
    # vehicle energy never exported: net import stays >= min(base, 0)
    net = site + sum(s.charge_kw - s.discharge_kw for s in sps)
    assert net >= min(site, 0.0) - 1e-6


def test_discharge_tapers_to_land_on_the_floor_with_long_ticks():
    """At 120 s ticks a car 0.2 kWh above its floor may discharge only what two ticks can take:
    0.2 kWh x 0.95 / (2 x 1/30 h) = 2.85 kW, not the 6 kW the plan asks for."""
    u = unit("a", soc=15.2)
    sp = setpoints(inp([u], 10.0, target=50.0, planned={"a": (0.0, 6.0)}, rules={"a": UnitRules(floor_kwh=15.0)},
                      window=WindowMeter(0.0, 0.0), tick_h=120 / 3600))
    assert sp[0].discharge_kw == pytest.approx(0.2 * 0.95 / (2 * 120 / 3600))


def _surge_afternoon(peak_aware: bool) -> tuple[list[float], float, bool]:
    """15:30-18:00 in 5-minute ticks: a 30 kW building as forecast, 37 kW in a surge 15:30-16:30
    the forecast missed, one 6 kW car at 40 kWh that must leave at 18:00 with 40 kWh, the month's
    peak target 32 kW (never below the month's metered peak). Every 30 minutes a plan refills the
    car under the target (faster only if the departure needs it); the guard covers the surge,
    expecting the forecast 30 kW after the current step. Returns (each window's average [kW], SOC
    at departure [kWh], a refill flagged)."""
    tick_h, window_ticks = 5 / 60, 6
    load = [37.0] * 12 + [30.0] * 18
    soc, windows, flagged, window_kwh = 40.0, [], False, 0.0
    for k, building in enumerate(load):
        hours_left = (len(load) - k) * tick_h
        target = max([32.0, *windows])
        car = PluggedCar("u1", soc, 10.0, 62.0, 0.95, 40.0, hours_left, 6.0, 0.95)
        if k % window_ticks == 0:   # a re-plan: the surge, measured, is assumed to go on for this step
            need, later = max(40.0 - soc, 0.0), (target - 30.0) * 0.95 * max(hours_left - 0.5, 0.0)
            plan = min(6.0, max((need - later) / (0.95 * 0.5), min(max(target - building, 0.0), need / (0.95 * 0.5)), 0.0))
        inp = DispatchInput([unit(soc=soc)], {"u1": UnitRules(10.0)}, building,
                            WindowMeter(window_kwh, (k % window_ticks) * tick_h), target, {"u1": (plan, 0.0)}, tick_h=tick_h)
        steps = int(math.ceil(hours_left / 0.5 - 1e-9))
        if peak_aware:
            res = peak_aware_dispatch(inp, [car], 0.0, [30.0] * steps, 0.5)
        else:
            res = dispatch(replace(inp, rules=share_floors([car], 0.0)))
        sp = res.setpoints[0]
        flagged |= res.refill_over_kw > 1e-6
        soc += (0.95 * sp.charge_kw - sp.discharge_kw / 0.95) * tick_h
        window_kwh += (building + sp.charge_kw - sp.discharge_kw) * tick_h
        if (k + 1) % window_ticks == 0:
            windows.append(window_kwh / 0.5)
            window_kwh = 0.0
    return windows, soc, flagged


def test_a_refill_never_sets_the_months_peak_where_the_surge_could_be_held_higher():
    """Floors at full charging power: the car holds the surge at 32 kW, then its refill sets a new,
    higher peak (flagged as set by refilling) although a schedule without that existed. Peak-aware
    floors: a surge window that cannot be held is held at the lowest level the car can still be
    refilled under, so no refill goes above the surge's windows; the driver leaves with the target
    either way. The best level with hindsight: surge energy above L = refill under L,
    (37 - L) x 1 h = (L - 30) x 1.5 h x 0.95: L = 32.89 kW; the rule, not knowing the surge lasts a
    second half hour, spends more in the first and ends within 1.1 kW of it."""
    old, old_soc, old_flag = _surge_afternoon(False)
    new, new_soc, new_flag = _surge_afternoon(True)
    assert old_soc >= 40.0 - 1e-3 and new_soc >= 40.0 - 1e-3
    assert old_flag and max(old[2:]) > max(old[:2]) + 0.5          # the refill set the month's peak
    assert not new_flag and max(new[2:]) <= max(new[:2]) + 1e-6     # the surge's windows set it
    best = (37 + 30 * 1.5 * 0.95) / (1 + 1.5 * 0.95)
    assert best <= max(new) <= best + 1.1


def test_refill_is_shared_within_the_headroom_and_unlimited_beyond_the_forecast():
    cars = [PluggedCar("a", 30.0, 10.0, 62.0, 0.95, 40.0, 1.0, 6.0, 1.0),
            PluggedCar("b", 30.0, 10.0, 62.0, 0.95, 40.0, 1.0, 2.0, 1.0),
            PluggedCar("c", 30.0, 10.0, 62.0, 0.95, 40.0, 30.0, 6.0, 1.0)]
    got = refill_kwh(cars, [5.0, 5.0], 0.5)
    # two half-hour steps of 5 kW headroom among three cars: b takes its 2 kW cap... c's departure
    # lies beyond the series: not limited
    assert got["c"] == math.inf
    assert got["b"] == pytest.approx(2 * 0.5 * min(2.0, 5.0 / 3))
    assert got["a"] + got["b"] <= 5.0 * 1.0 + 1e-9


def test_the_plan_never_spends_on_energy_value_what_the_days_later_peak_needs():
    """A plan discharging 6 kW at noon for its energy value (the site at 20 kW, well under the
    40 kW target) while the forecast sees the building at 46 kW for an hour later on: the 6 kW x 1 h
    above the target (through 95 % efficiency) stays in the car; only what is above that may go now.
    Without a forecast the plan is followed as it was."""
    car = PluggedCar("u1", 18.0, 10.0, 62.0, 0.95, 0.0, math.inf, 6.0, 0.95, 6.0)
    tick = inp([unit(soc=18.0)], 20.0, target=40.0, planned={"u1": (0.0, 6.0)}, tick_h=0.5)
    net = [20.0, 20.0, 20.0, 46.0, 46.0, 20.0]
    from ems.dispatch import peak_hold_kwh
    need = peak_hold_kwh([car], net, 40.0, 0.5)
    assert need == pytest.approx(6.0 / 0.95)
    res = peak_aware_dispatch(tick, [car], 0.0, net, 0.5)
    sp = res.setpoints[0]
    spare = 18.0 - 10.0 - need                          # battery energy above the floor the later peak leaves
    assert sp.reason == "peak-hold"
    assert sp.discharge_kw == pytest.approx(spare * 0.95 / 0.5)
    assert peak_aware_dispatch(tick, [car], 0.0, None, 0.5).setpoints[0].discharge_kw == pytest.approx(6.0)
    # the guard itself may still use that energy to hold the target now
    surge = inp([unit(soc=18.0)], 45.0, target=40.0, planned={"u1": (0.0, 0.0)}, tick_h=0.5)
    assert peak_aware_dispatch(surge, [car], 0.0, net, 0.5).setpoints[0].discharge_kw == pytest.approx(5.0)
