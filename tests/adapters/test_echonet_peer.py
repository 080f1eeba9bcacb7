"""pychonet (the ECHONET Lite library of Home Assistant's integration) talks to the simulated node as an
independent peer: it shares no code with our adapters or codec.

pychonet 2.8.2 always sends to UDP port 3610, so each test serves the node on port 3610 of its own
loopback address (127.x.y.z, random: other test runs on the machine may hold another).
"""

from __future__ import annotations

import asyncio
import random

import pytest

from adapters.sim import ManualClock
from adapters.sim.echonet import EchonetSimulator
from tests.adapters.helpers import site

pychonet = pytest.importorskip("pychonet")
from pychonet import ECHONETAPIClient  # noqa: E402
from pychonet.ElectricVehicleChargerDischarger import ElectricVehicleChargerDischarger  # noqa: E402
from pychonet.lib.udpserver import UDPServer  # noqa: E402
from pychonet.LowVoltageSmartElectricEnergyMeter import LowVoltageSmartElectricEnergyMeter  # noqa: E402

pytestmark = pytest.mark.timeout(60)


async def node_and_peer(clock: ManualClock, **kw) -> tuple[EchonetSimulator, ECHONETAPIClient, UDPServer, str]:
    """The simulated site on a random loopback address, port 3610, and a pychonet client on 127.0.0.1."""
    for _ in range(20):
        host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        sim = EchonetSimulator(site(), host=host, port=3610, clock=clock, **kw)
        try:
            await sim.start()
            break
        except OSError:   # that address is taken
            continue
    else:
        pytest.skip("no free loopback address for port 3610")
    server = UDPServer(local_ip="127.0.0.1")
    server.run("127.0.0.1", 0, loop=asyncio.get_running_loop())
    api = ECHONETAPIClient(server)
    api.configure(message_timeout=20, logger=lambda *a: None)   # 2 s
    return sim, api, server, host


def test_pychonet_discovers_the_node_and_reads_the_unit_and_the_meter():
    async def scenario():
        clock = ManualClock()
        sim, api, server, host = await node_and_peer(clock)
        try:
            sim.set_soc("leaf", 56.3)
            assert await api.discover(host)
            node = api.state[host]
            assert node["discovered"] and node["product_code"] == "V2H-EMS-SIM "
            assert set(node["instances"][0x02]) == {0x7E, 0x88, 0x8A}       # V2H unit, both smart meters
            assert await api.getAllPropertyMaps(host, 0x02, 0x7E, 0x01)
            unit = node["instances"][0x02][0x7E][0x01]
            assert {0x80, 0xC7, 0xD3, 0xDA, 0xE4, 0xEB, 0xEC} <= set(unit[0x9F]) and {0xDA, 0xEB, 0xEC} <= set(unit[0x9E])
            ev = ElectricVehicleChargerDischarger(host, api, 1)
            got = await ev.update([0x80, 0xE4, 0xD3, 0xC7])
            assert got == {0x80: "on", 0xE4: 56, 0xD3: 0, 0xC7: "Chargeable and Dischargeable"}
            assert await api.getAllPropertyMaps(host, 0x02, 0x88, 0x01)
            meter = LowVoltageSmartElectricEnergyMeter(host, api, 1)
            got = await meter.update([0xE7, 0xE1])
            assert got == {0xE7: 1000, 0xE1: 0.01}                           # 1 kW of load, counters in 0.01 kWh
        finally:
            server.close()
            await sim.stop()
    asyncio.run(scenario())


def test_pychonet_sets_charge_mode_and_power_and_reads_them_back():
    async def scenario():
        clock = ManualClock()
        sim, api, server, host = await node_and_peer(clock)
        try:
            assert await api.discover(host) and await api.getAllPropertyMaps(host, 0x02, 0x7E, 0x01)
            ev = ElectricVehicleChargerDischarger(host, api, 1)
            assert await ev.setMessage(0xEB, 3000, 4)          # charging power setting [W]
            assert await ev.setMessage(0xDA, 0x42, 1)          # operation mode: charging
            assert await ev.update([0xDA, 0xEB]) == {0xDA: "Charge", 0xEB: 3000}
            clock.advance(60)                                  # the unit ramps, then charges at 3 kW
            assert await ev.update(0xD3) == 3000               # + = charging
            assert sim.snapshot().unit("v2h1").charge_kw == pytest.approx(3.0)
            assert not await ev.setMessage(0xEB, 9000, 4)      # beyond the 6 kW rating: SetC_SNA
            assert await ev.update(0xEB) == 3000
        finally:
            server.close()
            await sim.stop()
    asyncio.run(scenario())
