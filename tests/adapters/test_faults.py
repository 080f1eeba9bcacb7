"""Faults over real sockets: refused connections, timeouts, server restarts, dropped connections,
Modbus exceptions 02/03/04, a wrong unit id, frozen values, and the unit's own reversion to 0 W
when the controller falls silent."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from adapters import AdapterError, ChargerAdapter, RetryPolicy
from adapters.sim import Simulator
from tests.adapters.helpers import charger, site

pytestmark = pytest.mark.timeout(30)


def run(coro):
    return asyncio.run(coro)


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_is_one_adapter_error():
    port = free_port()
    ch = ChargerAdapter(charger(port, retry=RetryPolicy(attempts=3, backoff_s=0.01)))
    t = time.monotonic()
    with pytest.raises(AdapterError, match=rf"v2h1: cannot connect to 127.0.0.1:{port} unit 1") as err:
        run(ch.start())
    assert err.value.device == "v2h1" and err.value.exception_code is None
    assert time.monotonic() - t < 2.0


def test_timeout_then_recovery():
    async def go():
        async with Simulator(site()) as sim, ChargerAdapter(charger(sim.port, timeout_s=0.1)) as ch:
            sim.set_fault("v2h1", delay_s=0.3)
            with pytest.raises(AdapterError, match=r"no valid answer from 127.0.0.1:\d+ unit 1") as err:
                await ch.read_state()
            assert err.value.register == "inverter_state,grid_connection,alarms...@40074+113"  # 701: one read
            sim.clear_faults()
            await asyncio.sleep(0.35)  # let the late answers drain
            assert (await ch.read_state()).plugged
            assert ch.dev.io.reconnects >= 1
    run(go())


def test_server_restart_mid_session_reconnects():
    async def go():
        async with Simulator(site()) as sim, ChargerAdapter(charger(sim.port)) as ch:
            await ch.set_power(discharge_kw=2.0)
            await sim.restart(down_s=0.05)
            state = await ch.read_state()  # first try hits the closed socket, the retry reconnects
            assert state.setpoint_discharge_kw == 2.0
            assert ch.dev.io.reconnects == 1
            assert sim.drop_connections() == 1
            assert (await ch.set_power(discharge_kw=3.0)).action == "written"
            assert ch.dev.io.reconnects == 2
    run(go())


def test_out_of_range_value_is_exception_03_naming_register_and_value():
    async def go():
        async with Simulator(site()) as sim, ChargerAdapter(charger(sim.port)) as ch:
            with pytest.raises(AdapterError) as err:
                await ch.dev.write({"setpoint_w": 9000})  # beyond the unit's 6 kW rating
            assert err.value.exception_code == 3
            assert str(err.value) == ("v2h1: setpoint_w@40301 = {'setpoint_w': 9000}: device answered Modbus "
                                      f"exception 03 (illegal data value) on 127.0.0.1:{sim.port} unit 1")
            with pytest.raises(AdapterError, match="exception 03"):
                await ch.dev.write({"reversion_timeout_s": 100000})  # map range [0, 86400]
            with pytest.raises(AdapterError, match="exception 02"):
                await ch.dev.io.write(40301, [0], "half of WSet")  # never half an int32
            with pytest.raises(AdapterError, match="read-only"):
                await ch.dev.write({"soc_pct": 50})
            assert sim.snapshot().unit("v2h1").setpoint_kw == 0.0
    run(go())


def test_wrong_unit_id_is_reported():
    async def go():
        async with Simulator(site()) as sim:
            with pytest.raises(AdapterError) as err:
                await ChargerAdapter(charger(sim.port, unit_id=7)).start()
            assert str(err.value) == ("v2h1: SunS@40000/0/50000: no SunSpec marker 'SunS' found (40000: exception 11; "
                                      "0: exception 11; 50000: exception 11); every read failed with a device/gateway "
                                      "error: is the unit id right?")
    run(go())


def test_rejected_writes_and_frozen_values():
    async def go():
        async with Simulator(site(speed=3600.0)) as sim, ChargerAdapter(charger(sim.port)) as ch:
            sim.set_fault("v2h1", reject_writes=True)
            with pytest.raises(AdapterError) as err:
                await ch.set_power(charge_kw=6.0)
            assert err.value.exception_code == 4
            sim.set_fault("v2h1", reject_writes=False)
            await ch.set_power(charge_kw=6.0)
            await asyncio.sleep(0.05)
            sim.set_fault("v2h1", freeze=True)
            a = (await ch.read_state()).soc_pct
            await asyncio.sleep(0.1)  # 6 minutes of charging at 6 kW: +0.9 % of 62 kWh
            assert (await ch.read_state()).soc_pct == a  # the unit reports stale values
            sim.set_fault("v2h1", freeze=False)
            assert (await ch.read_state()).soc_pct > a + 0.5
    run(go())


def test_unit_reverts_to_zero_when_the_controller_falls_silent():
    async def go():
        async with Simulator(site()) as sim:
            ch = ChargerAdapter(charger(sim.port, reversion_timeout_s=1.0))
            await ch.start()
            await ch.set_power(discharge_kw=3.0)
            assert sim.snapshot().unit("v2h1").setpoint_kw == 3.0
            await asyncio.sleep(0.6)
            assert not sim.snapshot().unit("v2h1").reverted
            await asyncio.sleep(0.6)  # 1.2 s without a write: the unit went back to 0 W by itself
            snap = sim.snapshot().unit("v2h1")
            assert (snap.reverted, snap.setpoint_kw) == (True, 0.0)
            await asyncio.sleep(0.6)
            assert sim.snapshot().unit("v2h1").output_kw == 0.0
            # the adapter sees the unit at 0 W again (not its own last write): the command is re-sent
            assert (await ch.set_power(discharge_kw=3.0)).action == "written"
            # with the keep-alive running, the unit holds its setpoint past the timeout
            task = asyncio.create_task(ch.keep_alive())
            await asyncio.sleep(1.5)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            snap = sim.snapshot().unit("v2h1")
            assert (snap.reverted, snap.setpoint_kw) == (False, 3.0)
            await ch.stop()
    run(go())
