"""Dispatch tick by tick: plan following, fallback, demand guard, clamps (hand-computed cases)."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ems.dispatch import (DispatchInput, Setpoint, UnitRules, UnitState, WindowMeter, allowed_import_kw,
                          departure_floor_kwh, dispatch, fallback_setpoint)


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
@example(socs=[16.0], site=0.001953125, target=5.0, plan=[(0.0, 8.0)] * 3, elapsed=0.0, grid_up=True)  # rounding after the export trim once gave -4.7e-05
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
