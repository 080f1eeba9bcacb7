"""The charger and meter adapters against the simulator over real loopback sockets: discovery,
state, writes and read-back, sign conventions, clamps, deadband, refresh, clean exit."""

from __future__ import annotations

import asyncio
import math

import pytest

from adapters import CallerLimits, ChargerAdapter, MeterAdapter
from adapters.sim import SimStay, Simulator
from tests.adapters.helpers import T0, charger, leaf, meter, site, unit

pytestmark = pytest.mark.timeout(30)


def run(coro):
    return asyncio.run(coro)


async def settle(ch: ChargerAdapter, kw: float, attr: str = "discharge_kw", timeout_s: float = 3.0):
    """Read the unit until its measured power reaches ``kw`` (the ramp takes real time)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        state = await ch.read_state()
        if math.isclose(getattr(state, attr), kw, abs_tol=1e-6) or asyncio.get_running_loop().time() > deadline:
            return state
        await asyncio.sleep(0.02)


def test_discovery_walks_the_sunspec_chain():
    async def go():
        async with Simulator(site()) as sim, ChargerAdapter(charger(sim.port)) as ch:
            assert [(h.id, h.address, h.length) for h in ch.dev.models] == [
                (1, 40002, 66), (701, 40070, 153), (702, 40225, 50), (704, 40277, 65), (713, 40344, 7), (802, 40353, 62)]
            assert ch.dev.located["setpoint_w"].address == 40301
            assert ch.identity["manufacturer"] == "v2h-ems" and ch.identity["rated_power_w"] == 6000.0
    run(go())


def test_state_read_by_hand():
    async def go():
        async with Simulator(site()) as sim:
            sim.set_soc("leaf", 56.3)
            async with ChargerAdapter(charger(sim.port)) as ch:
                s = await ch.read_state()
                assert s.soc_pct == pytest.approx(56.3)  # 563 x 10^-1
                # 802 State = CONNECTED; SunSpec has no point for the vehicle's id
                assert (s.plugged, s.plug_unknown, s.grid_connected, s.grid_forming, s.vehicle_id) == (True, None, True, False, None)
                assert (s.capacity_kwh, s.soc_min_pct, s.soc_max_pct) == (62.0, 20.0, 90.0)
                assert (s.max_charge_kw, s.max_discharge_kw) == (6.0, 6.0)
                assert (s.vehicle_max_charge_kw, s.vehicle_max_discharge_kw) == (None, None)  # 802 0xFFFF: not given
                assert (s.remote_enabled, s.setpoint_charge_kw, s.setpoint_discharge_kw) == (False, 0.0, 0.0)
                assert s.inverter_state == "STANDBY" and s.alarms == ()
                assert s.reversion_remaining_s == 0  # not armed while remote control is off
    run(go())


def test_sunspec_discharge_is_positive_watts_written_in_one_request():
    async def go():
        async with Simulator(site()) as sim, ChargerAdapter(charger(sim.port)) as ch:
            r = await ch.set_power(discharge_kw=2.5)
            assert (r.action, r.charge_kw, r.discharge_kw, r.clamped_by) == ("written", 0.0, 2.5, ())
            # WSetEna, WSetMod, WSet (int32) at 40299..40302 in one FC16 request
            assert sim.writes[-1] == ("v2h1", 16, 40299, 4)
            assert await ch.dev.io.read(40299, 4, "test") == [1, 1, 0, 2500]
            assert sim.snapshot().unit("v2h1").setpoint_kw == 2.5
            s = await settle(ch, 2.5)
            assert (s.discharge_kw, s.charge_kw) == (2.5, 0.0)
            assert await ch.dev.io.read(40080, 1, "W") == [250]  # 701.W = +250 x 10^1 W
            r = await ch.set_power(charge_kw=3.0)
            assert await ch.dev.io.read(40301, 2, "WSet") == [0xFFFF, 0xF448]  # -3000 W
            assert sim.snapshot().unit("v2h1").setpoint_kw == -3.0
            assert (await settle(ch, 3.0, "charge_kw")).charge_kw == 3.0
    run(go())


def test_flat_map_charge_positive_little_endian():
    async def go():
        async with Simulator(site(unit(profile="flat-v2h"))) as sim, \
                ChargerAdapter(charger(sim.port, profile="flat-v2h")) as ch:
            sim.set_soc("leaf", 56.3)
            await ch.set_power(discharge_kw=2.5)
            # setpoint_w (s32, low word first) = -2500 (charge-positive map), setpoint_enable = 1
            assert sim.writes[-1] == ("v2h1", 16, 200, 3)
            assert await ch.dev.io.read(200, 3, "setpoint") == [0xF63C, 0xFFFF, 1]
            assert sim.snapshot().unit("v2h1").setpoint_kw == 2.5  # the unit discharges
            s = await settle(ch, 2.5)
            assert s.discharge_kw == 2.5 and s.soc_pct == pytest.approx(56.3, abs=0.01)
    run(go())


def test_clamps_name_the_limit_that_bound():
    async def go():
        car = leaf(max_discharge_kw=3.0, max_charge_kw=4.0)
        async with Simulator(site(unit(vehicles=(car,)))) as sim, \
                ChargerAdapter(charger(sim.port, max_discharge_kw=5.0)) as ch:
            r = await ch.set_power(discharge_kw=6.0)
            assert (r.discharge_kw, r.clamped_by) == (3.0, ("configured discharge rating 5 kW", "vehicle discharge limit 3 kW"))
            r = await ch.set_power(charge_kw=6.0, limits=CallerLimits(max_charge_kw=2.0))
            assert (r.charge_kw, r.clamped_by) == (2.0, ("vehicle charge limit 4 kW", "caller charge limit 2 kW"))
            sim.set_soc("leaf", 30.0)
            r = await ch.set_power(discharge_kw=1.0, limits=CallerLimits(soc_reserve_pct=35.0))
            assert (r.discharge_kw, r.clamped_by) == (0.0, ("SOC 30.0 % at or below reserve 35 %",))
            sim.set_soc("leaf", 90.0)
            r = await ch.set_power(charge_kw=1.0)
            assert (r.charge_kw, r.clamped_by) == (0.0, ("SOC 90.0 % at or above ceiling 90 %",))
            assert sim.snapshot().unit("v2h1").setpoint_kw == 0.0
    run(go())


def test_no_vehicle_no_power_and_no_export_when_islanded():
    async def go():
        gone = SimStay("leaf", T0.replace(year=2020), T0.replace(year=2021))
        async with Simulator(site(unit(stays=lambda a, b: [gone]))) as sim, ChargerAdapter(charger(sim.port)) as ch:
            r = await ch.set_power(charge_kw=2.0)
            assert (r.charge_kw, r.clamped_by) == (0.0, ("no vehicle plugged in",))
            s = await ch.read_state()
            assert (s.plugged, s.plug_unknown, s.soc_pct, s.capacity_kwh, s.faults) == (False, None, None, None, ())
            assert await ch.dev.io.read(40375, 1, "802.State") == [1]  # DISCONNECTED
        async with Simulator(site()) as sim, ChargerAdapter(charger(sim.port)) as ch:
            sim.set_grid(False)
            s = await ch.read_state()
            assert (s.grid_connected, s.grid_forming, s.alarms) == (False, True, ("GRID_DISCONNECT",))
            r = await ch.set_power(discharge_kw=2.0, state=s)
            assert (r.discharge_kw, r.clamped_by) == (0.0, ("grid down / unit islanded: no export commanded",))
            s = await settle(ch, 1.4)  # the unit carries the 1.4 kW critical load by itself
            assert s.discharge_kw == 1.4
            async with MeterAdapter(meter(sim.port)) as m:
                reading = await m.read()
                assert (reading.import_kw, reading.export_kw, reading.grid_available) == (0.0, 0.0, False)
    run(go())


def test_deadband_min_interval_and_zero_always_written():
    async def go():
        async with Simulator(site()) as sim, ChargerAdapter(charger(sim.port, min_write_interval_s=30.0)) as ch:
            assert (await ch.set_power(discharge_kw=2.0)).action == "written"
            n = len(sim.writes)
            r = await ch.set_power(discharge_kw=2.05)
            assert (r.action, r.discharge_kw) == ("deadband", 2.0)
            r = await ch.set_power(discharge_kw=3.0)
            assert (r.action, r.discharge_kw) == ("min-interval", 2.0)
            assert len(sim.writes) == n  # nothing was sent
            r = await ch.set_power(0.0, 0.0)
            assert (r.action, r.discharge_kw) == ("written", 0.0)
            assert sim.snapshot().unit("v2h1").setpoint_kw == 0.0
    run(go())


def test_refresh_every_third_of_the_reversion_timeout():
    now = [100.0]
    async def go():
        async with Simulator(site()) as sim:
            ch = ChargerAdapter(charger(sim.port, reversion_timeout_s=30.0), clock=lambda: now[0])
            async with ch:
                assert sim.snapshot().unit("v2h1").reversion_timeout_s == 30.0
                await ch.set_power(discharge_kw=2.0)
                now[0] += 9.9
                assert await ch.refresh() is False  # not yet: every 10 s
                now[0] += 0.2
                hb = await ch.dev.read(["controller_heartbeat"])
                assert await ch.refresh() is True
                assert (await ch.dev.read(["controller_heartbeat"]))["controller_heartbeat"] == hb["controller_heartbeat"] + 1
                now[0] += 10.0
                r = await ch.set_power(discharge_kw=2.02)  # inside the deadband, but a refresh is due
                assert (r.action, r.discharge_kw) == ("refreshed", 2.02)
    run(go())


def test_start_reads_first_and_stop_leaves_the_unit_safe():
    async def go():
        async with Simulator(site()) as sim:
            u = sim.model.unit("v2h1")
            u.setpoint_kw, u.remote_enabled = 1.5, True  # another controller left it discharging
            ch = ChargerAdapter(charger(sim.port))
            state = await ch.start()
            assert (state.remote_enabled, state.setpoint_discharge_kw) == (True, 1.5)
            assert sim.snapshot().unit("v2h1").setpoint_kw == 1.5  # start wrote only the reversion timer
            assert [w[2] for w in sim.writes] == [40303, 40307]  # WSetRvrt (int32), then WSetEnaRvrt + WSetRvrtTms
            await ch.set_power(discharge_kw=1.0)
            await ch.stop()
            snap = sim.snapshot().unit("v2h1")
            assert (snap.setpoint_kw, snap.remote_enabled) == (0.0, False)
            assert not ch.dev.io.connected
    run(go())


def test_meter_sunspec_and_flat_agree_with_the_site():
    async def go():
        for profile in ("sunspec-meter", "flat-meter"):
            async with Simulator(site(load_kw=2.0, meter_profile=profile)) as sim:
                async with ChargerAdapter(charger(sim.port)) as ch, MeterAdapter(meter(sim.port, profile=profile)) as m:
                    await ch.set_power(discharge_kw=3.0)
                    await settle(ch, 3.0)
                    r = await m.read()
                    assert (r.import_kw, r.export_kw, r.grid_available) == (0.0, pytest.approx(1.0), True)
                    assert r.voltage_v == pytest.approx(202.0)
    run(go())
