"""Physics of the simulated site, without Modbus: hand-computed ramps, SOC, limits, reversion,
plug-in windows, outages and the meter balance, plus properties over random setpoint sequences."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.sim import Replay, SimStay, SiteModel
from tests.adapters.helpers import T0, leaf, site, unit

pytestmark = pytest.mark.timeout(60)


def model(*units, **kw) -> SiteModel:
    return SiteModel(site(*units, **kw), start=T0)


def command(m: SiteModel, kw: float, name: str = "v2h1") -> None:
    """What a controller's write does: setpoint (+ = discharge), remote on, watchdog restarted."""
    u = m.unit(name)
    u.setpoint_kw, u.remote_enabled = kw, True
    u.touch(m.w)


@pytest.mark.parametrize("speed", [1.0, 60.0])
def test_one_hour_of_charging_by_hand(speed):
    m = model(speed=speed)
    command(m, -6.0)
    m.advance(3600 / speed)
    # 1 s ramp (6 kW/s: mean 3 kW) then 3599 s at 6 kW: AC in = (3 + 6 x 3599) / 3600 kWh
    ac_in = (3 + 6 * 3599) / 3600
    assert m.energy_kwh["leaf"] == pytest.approx(31.0 + 0.95 * ac_in, abs=1e-9)
    assert m.import_kwh == pytest.approx(1.0 + ac_in, abs=1e-9)  # 1 kW load + charging
    assert m.meter_kw == pytest.approx(7.0)
    assert m.now == T0 + dt.timedelta(hours=1)


def test_ramp_rate_limits_the_output():
    m = model(unit(ramp_pct_per_s=20.0))  # 20 %/s of 6 kW = 1.2 kW/s
    command(m, 6.0)
    m.advance(2.0)
    assert m.unit("v2h1").output_kw == pytest.approx(2.4)
    m.advance(6.0)
    assert m.unit("v2h1").output_kw == pytest.approx(6.0)


def test_discharge_stops_at_the_soc_floor():
    m = model(unit(vehicles=(leaf(initial_soc_pct=21.0),)))
    command(m, 6.0)
    m.advance(3600.0)
    u = m.unit("v2h1")
    assert m.soc_pct(u) == pytest.approx(20.0, abs=1e-9)
    assert u.output_kw == 0.0
    # the 0.62 kWh above the floor left the battery and 95 % of it reached the AC side: 1 s of
    # ramp (mean 3 kW), then 6 kW until the floor; the meter exported all of it but the 1 kW load
    ac_out = 0.62 * 0.95
    t_h = 1 / 3600 + (ac_out - 3 / 3600) / 6
    assert m.export_kwh == pytest.approx(ac_out - 1.0 * t_h, abs=1e-9)
    assert m.import_kwh == pytest.approx(1.0 * (1 - t_h), abs=1e-9)


def test_charge_stops_at_the_soc_ceiling_and_vehicle_limit_applies():
    m = model(unit(vehicles=(leaf(initial_soc_pct=89.0, max_charge_kw=3.0),)))
    command(m, -6.0)
    m.advance(2.0)
    assert m.unit("v2h1").output_kw == pytest.approx(-3.0)  # the car takes 3 kW at most
    m.advance(3600.0)
    assert m.soc_pct(m.unit("v2h1")) == pytest.approx(90.0, abs=1e-9)
    assert m.unit("v2h1").output_kw == 0.0


def test_reversion_after_the_timeout_in_wall_seconds():
    m = model(speed=60.0)
    u = m.unit("v2h1")
    command(m, 3.0)
    u.rvrt_timeout_s, u.rvrt_setpoint_kw = 10.0, 0.0
    m.advance(9.9)
    assert (u.setpoint_kw, u.reverted) == (3.0, False)
    m.advance(10.1)
    assert (u.setpoint_kw, u.reverted, u.remote_enabled) == (0.0, True, True)
    m.advance(11.0)
    assert u.output_kw == 0.0
    u.touch(m.w)  # a new write re-arms the watchdog
    assert u.armed


def test_plug_in_windows_and_trip_energy(t0):
    stay = SimStay("leaf", t0 + dt.timedelta(hours=1), t0 + dt.timedelta(hours=3), trip_kwh=5.0)
    m = model(unit(stays=lambda a, b: [stay]))
    u = m.unit("v2h1")
    assert u.stay is None and m.soc_pct(u) is None
    command(m, 3.0)
    m.advance(3599.0)
    assert m.unit("v2h1").output_kw == 0.0  # nothing to discharge with no car
    m.advance(3600.0)
    assert u.stay == stay and m.energy_kwh["leaf"] == pytest.approx(26.0)  # 31 kWh - 5 kWh trip
    m.advance(3 * 3600.0)
    assert u.stay is None and u.output_kw == 0.0


def test_arrival_energy_is_set_once(t0):
    stay = SimStay("leaf", t0 + dt.timedelta(minutes=30), t0 + dt.timedelta(hours=8), arrival_kwh=43.4)
    m = model(unit(stays=lambda a, b: [stay]))
    m.advance(1800.0)
    assert m.energy_kwh["leaf"] == pytest.approx(43.4)


def test_outage_units_carry_the_critical_load_up_to_their_rating():
    m = model(unit("a", 1, islanded_rating_kw=1.0), unit("b", 2, islanded_rating_kw=1.0,
                                                            vehicles=(leaf(id="bz"),)), critical_load_kw=1.4)
    command(m, -6.0, "a")
    m.advance(5.0)
    m.grid_up = False
    m.advance(10.0)
    assert [u.output_kw for u in m.units] == [pytest.approx(1.0), pytest.approx(0.4)]
    assert m.meter_kw == 0.0 and m.unserved_kw == pytest.approx(0.0)
    m2 = model(unit(islanded_rating_kw=1.0), critical_load_kw=1.4)
    m2.grid_up = False
    m2.advance(1.0)
    assert m2.unserved_kw == pytest.approx(0.4)


def test_meter_is_load_minus_pv_plus_charge_minus_discharge():
    m = model(load_kw=2.0, pv_kw=3.0)
    command(m, 1.0)
    m.advance(5.0)
    assert m.meter_kw == pytest.approx(2.0 - 3.0 - 1.0)


def test_replay_lookup_and_loops(t0):
    r = Replay(t0, 1800.0, np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 1.0]))
    assert r.at(t0 + dt.timedelta(minutes=45)) == (2.0, 0.0)
    assert r.at(t0 + dt.timedelta(minutes=90)) == (1.0, 0.0)  # span 1.5 h: loops
    n = 364 * 48 + 10
    year = Replay(t0, 1800.0, np.arange(n, dtype=float), np.zeros(n))
    assert year.at(t0 + dt.timedelta(days=364, minutes=30))[0] == 1.0  # 52 weeks later: same weekday and clock
    m = model(replay=r)
    m.advance(2700.0)
    assert m.meter_kw == pytest.approx(2.0)


@settings(max_examples=25, deadline=None)
@given(st.floats(20.0, 90.0), st.lists(st.tuples(st.floats(-6.0, 6.0), st.floats(1.0, 3600.0)), min_size=1, max_size=8))
def test_soc_bounds_and_energy_balance(initial, program):
    m = model(unit(vehicles=(leaf(initial_soc_pct=initial),)), load_kw=0.0, pv_kw=0.0, speed=10.0)
    e0 = m.energy_kwh["leaf"]
    for kw, seconds in program:
        command(m, kw)
        m.advance(m.w + seconds / 10.0)
        assert 20.0 - 1e-9 <= m.soc_pct(m.unit("v2h1")) <= 90.0 + 1e-9
        assert abs(m.unit("v2h1").output_kw) <= 6.0 + 1e-9
    # with no load or PV the meter sees only the unit: battery gain = 0.95 x in - out / 0.95
    assert m.energy_kwh["leaf"] - e0 == pytest.approx(0.95 * m.import_kwh - m.export_kwh / 0.95, abs=1e-6)
