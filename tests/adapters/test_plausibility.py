"""Garbage from devices over real sockets: SunSpec "not implemented" sentinels decode as unknown,
never 0; a meter power that is a sentinel, NaN, +inf or beyond physics, and a unit SOC of 500 %, are
typed faults and never numbers; an unknown SOC never allows a discharge whatever the reserve; the
controller heartbeat (SunSpec 802 CtrlHb) advances on its own timer while setpoints are written at
every tick."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import pytest

from adapters import CallerLimits, ChargerAdapter, MeterAdapter, clamp
from adapters.plausibility import FaultKind, ReadingFault
from adapters.registers import SUNSPEC_NA, Point, decode, encode_raw, load_profile
from adapters.sim import ManualClock, Simulator
from tests.adapters.helpers import charger, meter, site

pytestmark = pytest.mark.timeout(30)


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("ptype, raw", [("u16", [0xFFFF]), ("s16", [0x8000]), ("acc32", [0, 0]),
                                        ("u32", [0xFFFF, 0xFFFF]), ("s32", [0x8000, 0])])
def test_sunspec_sentinels_decode_as_unknown_never_zero(ptype, raw):
    p = Point("x", ptype, len(raw), not_implemented=SUNSPEC_NA[ptype])
    assert decode(p, raw) is None
    assert decode(p, [0] * (len(raw) - 1) + [5]) == 5          # a real value still reads


def test_float32_nan_and_bad_scale_factors_are_unknown():
    f = Point("w", "float32", 2)
    assert decode(f, encode_raw(f, math.nan)) is None
    assert decode(f, encode_raw(f, math.inf)) == math.inf       # not a sentinel: the plausibility check's
    scaled = Point("w", "s16", 1, sf="w_sf", not_implemented=SUNSPEC_NA["s16"])
    sf_point = Point("w_sf", "s16", 1, not_implemented=SUNSPEC_NA["s16"])
    assert decode(sf_point, [0x8000]) is None                   # the scale factor itself is "not implemented"
    assert decode(scaled, [123], None) is None and decode(scaled, [123], 11) is None   # unknown, or outside -10..10
    assert decode(scaled, [123], 1) == 1230.0
    counters = load_profile("sunspec-meter").points
    assert counters["import_energy_wh"].type == "acc32" and counters["import_energy_wh"].not_implemented == 0


def _power_fault(reading) -> ReadingFault:
    (fault,) = [f for f in reading.faults if f.point == "power_w"]
    return fault


def test_meter_sentinel_nan_inf_and_garbage_are_faults_never_numbers():
    async def go():
        async with Simulator(site(load_kw=2.0)) as sim, MeterAdapter(meter(sim.port)) as m:
            good = await m.read()
            assert good.power_known and good.import_kw == pytest.approx(2.0) and good.faults == ()
            sim.set_fault("meter", raw={"power_w": (0x8000,)})          # SunSpec: W not implemented
            r = await m.read()
            assert not r.power_known and _power_fault(r).kind is FaultKind.UNKNOWN and _power_fault(r).value is None
            sim.set_fault("meter", raw={}, values={"power_w": 327670.0})  # 0x7FFF x 10 W: within physics,
            r = await m.read()                                            # the site's limit is the daemon's check
            assert r.power_known and r.import_kw == pytest.approx(327.67)
        async with Simulator(site(load_kw=2.0, meter_profile="flat-meter")) as sim, \
                MeterAdapter(meter(sim.port, profile="flat-meter")) as m:
            for value, kind in ((math.inf, FaultKind.NOT_FINITE), (-math.inf, FaultKind.NOT_FINITE),
                                (math.nan, FaultKind.UNKNOWN), (5e10, FaultKind.PHYSICAL)):
                sim.set_fault("meter", values={"power_w": value})
                r = await m.read()
                assert (r.power_known, _power_fault(r).kind) == (False, kind), value
                assert math.isfinite(r.import_kw) and math.isfinite(r.export_kw)
            sim.clear_faults()
            r = await m.read()
            assert r.power_known and r.import_kw == pytest.approx(2.0)
            with pytest.raises(ValueError, match="has no point"):
                sim.set_fault("meter", values={"nonsense": 1.0})
    run(go())


def test_soc_of_500_pct_is_a_fault_and_no_discharge_whatever_the_reserve():
    async def go():
        async with Simulator(site()) as sim, ChargerAdapter(charger(sim.port)) as ch:
            sim.set_fault("v2h1", values={"soc_pct": 500.0})
            s = await ch.read_state()
            (fault,) = s.faults
            assert (s.soc_pct, s.soc_known, fault.point, fault.kind, fault.value) == \
                (None, False, "soc_pct", FaultKind.MAP_RANGE, 500.0)
            r = await ch.set_power(discharge_kw=3.0, limits=CallerLimits(soc_reserve_pct=0.0), state=s)
            assert (r.discharge_kw, r.clamped_by) == (0.0, ("SOC unknown or implausible: no discharge",))
            r = await ch.set_power(charge_kw=3.0, state=s)       # charging toward the target goes on
            assert (r.action, r.charge_kw) == ("written", 3.0)
            assert sim.snapshot().unit("v2h1").setpoint_kw == -3.0
            sim.set_fault("v2h1", values={"power_w": 60000.0})  # 60 kW from a 6 kW unit
            s = await ch.read_state()
            (fault,) = s.faults
            assert (fault.point, fault.kind, s.charge_kw, s.discharge_kw) == ("power_w", FaultKind.PHYSICAL, 0.0, 0.0)
            assert s.soc_known and s.soc_pct == pytest.approx(50.0, abs=0.2)
    run(go())


def test_clamp_never_discharges_on_an_implausible_soc_even_if_the_caller_built_the_state():
    async def go():
        async with Simulator(site()) as sim, ChargerAdapter(charger(sim.port)) as ch:
            return await ch.read_state()
    s = run(go())
    params = charger(1)
    for soc in (500.0, -3.0, math.nan, math.inf, None):
        bad = dataclasses.replace(s, soc_pct=soc)
        assert clamp(0.0, 6.0, params, bad, CallerLimits(soc_reserve_pct=0.0))[:2] == (0.0, 0.0), soc
        assert clamp(6.0, 0.0, params, bad, CallerLimits())[:2] == (6.0, 0.0), soc
    assert clamp(0.0, 6.0, params, dataclasses.replace(s, soc_pct=50.0), CallerLimits(soc_reserve_pct=20.0))[:2] == (0.0, 6.0)


@pytest.mark.parametrize("raw, unknown, fault", [(2, "INITIALIZING", None), (0xFFFF, "not implemented", (FaultKind.UNKNOWN, None)),
                                                  (7, "code 7", (FaultKind.UNKNOWN, 7.0))])
def test_a_plug_state_neither_plugged_nor_unplugged_commands_nothing(raw, unknown, fault):
    """SunSpec 802 State INITIALIZING (a car being connected), "not implemented" or a code 802 does not
    define: the vehicle is not known to be usable, so neither charge nor discharge is commanded; the
    sentinel and the undefined code are reading faults as well."""
    async def go():
        async with Simulator(site()) as sim, ChargerAdapter(charger(sim.port)) as ch:
            sim.set_fault("v2h1", raw={"plug_state": (raw,)})
            s = await ch.read_state()
            assert (s.plugged, s.plug_unknown, s.soc_known) == (False, unknown, True)
            assert [(f.kind, f.value) for f in s.faults if f.point == "plug_state"] == ([fault] if fault else [])
            for kw in ({"charge_kw": 3.0}, {"discharge_kw": 3.0}):
                r = await ch.set_power(**kw, state=s)
                assert (r.charge_kw, r.discharge_kw, r.clamped_by) == (
                    0.0, 0.0, (f"plug state {unknown}: nothing commanded until the unit reports a vehicle plugged in",))
            assert sim.snapshot().unit("v2h1").setpoint_kw == 0.0
            sim.set_fault("v2h1", raw={})
            s = await ch.read_state()                  # CONNECTED again
            assert (s.plugged, s.plug_unknown, s.faults) == (True, None, ())
    run(go())


def test_ctrlhb_advances_on_its_own_timer_while_setpoints_are_written_every_tick():
    clock = ManualClock()   # the adapter's clock; the simulator keeps real time

    async def go():
        async with Simulator(site()) as sim, \
                ChargerAdapter(charger(sim.port, reversion_timeout_s=30.0), clock=clock) as ch:
            start, beats = sim.model.unit("v2h1").controller_hb, []
            for tick in range(41):                     # a setpoint write every second for 40 s
                assert (await ch.set_power(discharge_kw=1.0 + tick % 2)).action == "written"
                await ch.refresh()                     # the daemon's heartbeat job
                beats.append(sim.model.unit("v2h1").controller_hb)
                clock.advance(1.0)
            # every heartbeat_interval_s (10 s), counted from start: at 10, 20, 30 and 40 s
            assert beats[-1] - start == 4 and ch.heartbeat_interval_s == 10.0
            assert [t for t in range(1, 41) if beats[t] != beats[t - 1]] == [10, 20, 30, 40]
            address = ch.dev.located["controller_heartbeat"].address
            assert len([w for w in sim.writes if w[2] == address]) == 4
    run(go())
