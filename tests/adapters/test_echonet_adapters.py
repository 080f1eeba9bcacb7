"""The ECHONET Lite adapters against the simulated node over real loopback UDP (port 0 on both sides),
the device interface they share with the Modbus adapters, and the in-memory fakes.

The node follows a manual clock: physics move only when a test advances it."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from adapters import AdapterError, CallerLimits, ChargerAdapter, MeterAdapter
from adapters.echonet import (HIGH_VOLTAGE, EchonetChargerAdapter, EchonetChargerParams, EchonetLink, EchonetMeterAdapter,
                              EchonetMeterParams, Mode)
from adapters.echonet.frame import EOJ, ESV, Frame, Property
from adapters.errors import CapabilityError
from adapters.fake import FakeCharger, FakeMeter
from adapters.protocol import ChargerDevice, MeterDevice
from adapters.sim import ManualClock
from adapters.sim.echonet import EchonetSimulator
from tests.adapters.helpers import FAST_RETRY, charger, leaf, meter, site, unit

pytestmark = pytest.mark.timeout(60)


def link(port: int, timeout_s: float = 0.3) -> EchonetLink:
    """The simulated node on 127.0.0.1:port, answers received on a free local port."""
    return EchonetLink("127.0.0.1", 1, port, timeout_s=timeout_s, local_host="127.0.0.1", local_port=0)


def unit_params(port: int, **kw) -> EchonetChargerParams:
    """A 6 kW / 6 kW unit, instance 1, no write pacing."""
    return EchonetChargerParams("v2h1", link(port, kw.pop("timeout_s", 0.3)), **({"max_charge_kw": 6.0, "max_discharge_kw": 6.0,
                                "min_write_interval_s": 0.0, "retry": FAST_RETRY} | kw))


def run_with_node(scenario, *units, **node_kw) -> None:
    """Run ``scenario(sim, clock)`` with the node served on 127.0.0.1 (a free UDP port)."""
    async def main():
        clock = ManualClock()
        async with EchonetSimulator(site(*units), port=0, clock=clock, **node_kw) as sim:
            await scenario(sim, clock)
    asyncio.run(main())


def test_a_charge_and_a_discharge_setpoint_reach_the_car():
    async def scenario(sim, clock):
        async with EchonetChargerAdapter(unit_params(sim.port)) as ev:
            state = await ev.read_state()
            assert (state.plugged, state.soc_pct, state.inverter_state, state.capacity_kwh) == (True, 50.0, "STANDBY", 62.0)
            r = await ev.set_power(charge_kw=3.0)
            assert (r.action, r.charge_kw) == ("written", 3.0)
            assert list(sim.writes)[-2:] == [("v2h1", ESV.SETC, 0xEB, 4), ("v2h1", ESV.SETC, 0xDA, 1)]  # power, then mode
            clock.advance(3600)                                  # an hour at 3 kW, 95 % efficient
            state = await ev.read_state()
            assert state.charge_kw == pytest.approx(3.0) and state.setpoint_charge_kw == 3.0
            assert state.soc_pct == pytest.approx(50 + 100 * 3 * 0.95 / 62, abs=0.01)   # Wh-resolution SOC
            assert ev.energy_kwh["charged"] == pytest.approx(3.0, abs=0.01)
            r = await ev.set_power(discharge_kw=2.0, limits=CallerLimits(soc_reserve_pct=30), state=state)
            assert (r.action, r.discharge_kw) == ("written", 2.0)
            before = sim.snapshot().unit("v2h1").soc_pct
            clock.advance(1800)
            assert sim.snapshot().unit("v2h1").soc_pct == pytest.approx(before - 100 * 1.0 / 0.95 / 62, abs=0.01)
            assert (await ev.set_power(discharge_kw=2.05)).action == "deadband"
            r = await ev.set_power()                             # 0 W is standby, written at once
            assert r.action == "written" and sim.settings["v2h1"].mode == Mode.STANDBY
            assert (await ev.set_power(discharge_kw=2.0)).action == "written"
        assert sim.settings["v2h1"].mode == Mode.STANDBY          # the clean exit left it in standby
        assert ev.announced[0xDA] == bytes([Mode.STANDBY])       # and the node announced the change
    run_with_node(scenario)


def test_clamps_and_the_unit_off():
    async def scenario(sim, clock):
        async with EchonetChargerAdapter(unit_params(sim.port, max_charge_kw=4.0)) as ev:
            r = await ev.set_power(charge_kw=5.5)
            assert r.charge_kw == 4.0 and "configured charge rating 4 kW" in r.clamped_by
            sim.settings["v2h1"].on = False                      # someone switched it off at the unit
            assert (await ev.read_state()).inverter_state == "OFF"
            await ev.set_power(charge_kw=2.0)                    # switched on with the command
            assert sim.settings["v2h1"].on and sim.settings["v2h1"].mode == Mode.CHARGE
    run_with_node(scenario)


def test_a_unit_without_a_charging_power_setting_is_refused_at_start():
    async def scenario(sim, clock):
        ev = EchonetChargerAdapter(unit_params(sim.port))
        with pytest.raises(CapabilityError) as err:
            await ev.start()
        assert err.value.missing == ("take 0xEB charge power w in SetC (not in its Set property map 0x9E)",)
        assert "does not drive it: nothing was written" in str(err.value)
        assert not ev.started and not [w for w in sim.writes if w[0] == "v2h1"]
        # a charge-only unit needs no 0xEC; one without 0xDA in Set cannot be driven at all
        only = EchonetChargerAdapter(unit_params(sim.port, max_discharge_kw=0.0))
        with pytest.raises(CapabilityError, match="0xEB"):
            await only.start()
    run_with_node(scenario, read_only={"v2h1": [0xEB]})


def test_faults_silent_node_refused_set_malformed_frames_unknown_epc():
    async def scenario(sim, clock):
        async with EchonetChargerAdapter(unit_params(sim.port)) as ev:
            sim.set_fault("v2h1", reject_writes=True)
            with pytest.raises(AdapterError, match=r"refused the setting \(SetC_SNA\)") as err:
                await ev.set_power(charge_kw=2.0)
            assert not err.value.retryable and sim.settings["v2h1"].mode == Mode.STANDBY
            sim.set_fault("v2h1", reject_writes=False, delay_s=1.0)       # answers after the 0.3 s timeout
            with pytest.raises(AdapterError, match=r"no answer from 0x027E01 .* \(2 attempts\)") as err:
                await ev.read_state()
            assert err.value.retryable
            sim.clear_faults()
            await asyncio.sleep(1.1)                              # the late answers arrive and are dropped
            assert (await ev.read_state()).plugged
            with pytest.raises(AdapterError, match=r"0x99: .*did not give it \(GET_SNA\)"):
                await ev.obj.get([0x80, 0x99])
            sim.set_fault("v2h1", values={"soc_pct": 250.0, "power_w": 99_000.0})
            state = await ev.read_state()
            assert state.soc_pct is None and state.charge_kw == 0.0 and {f.point for f in state.faults} == {"soc_pct", "power_w"}
            r = await ev.set_power(discharge_kw=3.0, state=state)          # SOC unknown: no discharge
            assert r.discharge_kw == 0.0 and "SOC unknown or implausible: no discharge" in r.clamped_by
        # junk at the node and at the client: counted, ignored, no crash
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=("127.0.0.1", sim.port))
        for junk in (b"\x10\x81\x00", b"hello", Frame(7, EOJ(5, 0xFF, 1), EOJ(2, 0x7E, 9), ESV.GET, (Property(0x80),)).encode()):
            transport.sendto(junk)
        await asyncio.sleep(0.1)
        transport.close()
        assert (sim.malformed, sim.ignored) == (2, 1)                       # instance 9 does not exist: ignored
        async with EchonetChargerAdapter(unit_params(sim.port)) as ev:
            ev.obj.endpoint.datagram_received(b"\x10\x81garbage", ("127.0.0.1", sim.port))
            assert ev.obj.endpoint.malformed == 1 and (await ev.read_state()).plugged
    run_with_node(scenario)


def test_the_low_and_high_voltage_meters():
    async def scenario(sim, clock):
        async with EchonetMeterAdapter(EchonetMeterParams("meter", link(sim.port), retry=FAST_RETRY)) as m:
            r = await m.read()
            assert (r.import_kw, r.export_kw, r.import_kwh, r.faults) == (1.0, 0.0, 1000.0, ())
            clock.advance(1800)                                  # 12:00 -> 12:30 at 1 kW
            r = await m.read()
            assert r.import_kwh == pytest.approx(1000.5)
            fixed = await m.read_fixed_time()                    # the meter's 12:30 reading (Tokyo clock)
            assert (fixed.time.hour, fixed.time.minute, fixed.import_kwh) == (12, 30, pytest.approx(1000.5))
            sim.set_fault("meter", values={"power_w": float("inf")})    # the overflow sentinel: unknown, not a number
            r = await m.read()
            assert not r.power_known and r.import_kw == 0.0
        hv_clock = [0.0]
        hv = EchonetMeterAdapter(EchonetMeterParams("meter", link(sim.port), HIGH_VOLTAGE, rate_window_s=60,
                                                    retry=FAST_RETRY), clock=lambda: hv_clock[0])
        async with hv:
            sim.clear_faults()
            assert not (await hv.read()).power_known              # no instantaneous power: the counter's rate, later
            clock.advance(360)
            hv_clock[0] = 360.0
            r = await hv.read()
            assert r.power_known and r.import_kw == pytest.approx(1.0, abs=0.01) and r.export_kwh is None
    run_with_node(scenario)


def test_every_adapter_and_the_fakes_satisfy_the_device_interface():
    for dev in (ChargerAdapter(charger(1)), EchonetChargerAdapter(unit_params(1)), FakeCharger()):
        assert isinstance(dev, ChargerDevice)
    for dev in (MeterAdapter(meter(1)), EchonetMeterAdapter(EchonetMeterParams("m", link(1))), FakeMeter()):
        assert isinstance(dev, MeterDevice)
    assert not EchonetChargerAdapter(unit_params(1)).capabilities.reversion_watchdog
    assert ChargerAdapter(charger(1)).capabilities.reversion_watchdog   # SunSpec 704 has WSetRvrtTms


def test_the_fake_charger_clamps_holds_and_fails():
    async def scenario():
        fake = FakeCharger(max_discharge_kw=3.0, soc_pct=50.0)
        await fake.start()
        r = await fake.set_power(discharge_kw=5.0)
        assert r.discharge_kw == 3.0 and (await fake.read_state()).discharge_kw == 3.0
        fake.advance(1.0)
        assert (await fake.read_state()).soc_pct == pytest.approx(50 - 100 * 3 / 0.95 / 62)
        fake.fail = AdapterError("v2h1", "", None, "silent")
        with pytest.raises(AdapterError):
            await fake.read_state()
        fake.fail = None
        await fake.stop()
        assert fake.calls[-2:] == ["standby", "stop"] and fake.held == (0.0, 0.0)
    asyncio.run(scenario())


def test_two_units_share_one_local_socket():
    async def scenario(sim, clock):
        a = EchonetChargerAdapter(unit_params(sim.port))
        b = EchonetChargerAdapter(dataclasses.replace(unit_params(sim.port), name="v2h2",
                                                      link=dataclasses.replace(link(sim.port), instance=2)))
        async with a, b:
            assert a.obj.endpoint is b.obj.endpoint and a.obj.endpoint.users == 2
            await asyncio.gather(a.set_power(charge_kw=1.0), b.set_power(discharge_kw=2.0))   # concurrent, matched by TID
            assert sim.settings["v2h1"].mode == Mode.CHARGE and sim.settings["v2h2"].mode == Mode.DISCHARGE
        assert a.obj.endpoint is None and b.obj.endpoint is None
    run_with_node(scenario, unit(), unit("v2h2", 2, vehicles=(leaf(id="leaf2"),)))
