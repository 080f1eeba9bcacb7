"""Modbus RTU without hardware: a socat pty pair, the simulator serving one end, the adapter and
mbpoll on the other. (The ptys of some sandboxes refuse even parity, so these use parity N.)"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from adapters import ChargerAdapter, ChargerParams, RtuLink
from adapters.sim import Simulator, SimulatorThread
from tests.adapters.helpers import FAST_RETRY, site

pytestmark = [pytest.mark.timeout(30),
              pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed (.ci/run installs it)")]


@pytest.fixture
def pty_pair(tmp_path: Path):
    """Two linked pseudo-terminals (``sim`` and ``ems`` ends), from socat; stopped afterwards."""
    sim_end, ems_end = tmp_path / "sim", tmp_path / "ems"
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={sim_end}", f"pty,raw,echo=0,link={ems_end}"],
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not (sim_end.exists() and ems_end.exists()):
            assert time.monotonic() < deadline, "socat did not create the pty pair"
            time.sleep(0.01)
        yield str(sim_end), str(ems_end)
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_adapter_over_rtu(pty_pair):
    sim_end, ems_end = pty_pair

    async def go():
        async with Simulator(site(), serial_port=sim_end, baudrate=19200, parity="N") as sim:
            sim.set_soc("leaf", 56.3)
            params = ChargerParams("v2h1", RtuLink(ems_end, 19200, "N", 1, timeout_s=0.5), 6.0, 6.0, retry=FAST_RETRY)
            async with ChargerAdapter(params) as ch:
                assert [h.id for h in ch.dev.models] == [1, 701, 702, 704, 713, 802]
                assert (await ch.read_state()).soc_pct == pytest.approx(56.3)
                r = await ch.set_power(charge_kw=2.0)
                assert (r.action, r.charge_kw) == ("written", 2.0)
                assert sim.snapshot().unit("v2h1").setpoint_kw == -2.0
            assert sim.snapshot().unit("v2h1").remote_enabled is False
    asyncio.run(go())


@pytest.mark.skipif(shutil.which("mbpoll") is None, reason="mbpoll is not installed")
def test_mbpoll_over_rtu(pty_pair):
    sim_end, ems_end = pty_pair
    with SimulatorThread(site(), serial_port=sim_end, baudrate=19200, parity="N"):
        r = subprocess.run(["mbpoll", "-m", "rtu", "-b", "19200", "-P", "none", "-a", "1", "-0", "-1", "-t", "4:hex",
                            "-r", "40000", "-c", "2", ems_end], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[40000]: \t0x5375" in r.stdout and "[40001]: \t0x6E53" in r.stdout
