"""Independent peers talk to the simulator: Debian's ``mbpoll`` (a C Modbus master) and
``pysunspec2``'s own socket client and scan. Neither shares code with our adapters."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from adapters.sim import SimStay, SimulatorThread
from tests.adapters.helpers import T0, leaf, site, unit

pytestmark = pytest.mark.timeout(30)
MBPOLL = shutil.which("mbpoll")
needs_mbpoll = pytest.mark.skipif(MBPOLL is None, reason="Debian's mbpoll is not installed (.ci/run installs it)")


def mbpoll(port: int, *args: str) -> subprocess.CompletedProcess:
    """One mbpoll run against unit 1 (0-based addresses, one poll)."""
    cmd = [MBPOLL, "-m", "tcp", "-p", str(port), "-a", "1", "-0", "-1", "-t", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10)


def registers(out: str) -> dict[int, str]:
    """``[40000]: 0x5375`` lines of mbpoll's output as {address: text}."""
    return {int(a): v.strip() for a, v in re.findall(r"^\[(\d+)\]:\s+(\S+)", out, re.M)}


@needs_mbpoll
def test_mbpoll_reads_suns_and_soc_and_writes_a_setpoint():
    with SimulatorThread(site()) as st:
        st.sim.set_soc("leaf", 56.3)
        r = mbpoll(st.port, "4:hex", "-r", "40000", "-c", "4", "127.0.0.1")
        assert r.returncode == 0, r.stderr
        assert registers(r.stdout) == {40000: "0x5375", 40001: "0x6E53", 40002: "0x0001", 40003: "0x0042"}
        r = mbpoll(st.port, "4", "-r", "40348", "-c", "1", "127.0.0.1")  # 713.SoC, Pct_SF = -1
        assert registers(r.stdout) == {40348: "563"}
        # WSet (int32, big-endian words) = -2500 W: charge 2.5 kW; then WSetEna = 1
        r = mbpoll(st.port, "4:int", "-B", "-r", "40301", "127.0.0.1", "--", "-2500")
        assert r.returncode == 0, r.stdout + r.stderr
        r = mbpoll(st.port, "4", "-r", "40299", "127.0.0.1", "1")
        assert r.returncode == 0, r.stdout + r.stderr
        snap = st.sim.snapshot().unit("v2h1")
        assert (snap.setpoint_kw, snap.remote_enabled) == (-2.5, True)
        time.sleep(0.6)  # ramp: 6 kW/s
        assert st.sim.snapshot().unit("v2h1").charge_kw == pytest.approx(2.5)
        r = mbpoll(st.port, "4:int", "-B", "-r", "40301", "-c", "1", "127.0.0.1")
        assert registers(r.stdout) == {40301: "-2500"}


@needs_mbpoll
def test_mbpoll_gets_exception_03_for_an_out_of_range_setpoint():
    with SimulatorThread(site()) as st:
        r = mbpoll(st.port, "4:int", "-B", "-r", "40301", "127.0.0.1", "--", "-9000")
        assert r.returncode != 0
        assert "Illegal data value" in r.stdout + r.stderr
        assert st.sim.snapshot().unit("v2h1").setpoint_kw == 0.0


def test_pysunspec2_scan_finds_the_models_and_values():
    from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP
    from sunspec2.modbus.modbus import ModbusClientException

    car = leaf(max_charge_kw=4.0, max_discharge_kw=3.0)
    gone = SimStay("leaf", T0.replace(year=2020), T0.replace(year=2021))
    with SimulatorThread(site(unit(vehicles=(car,)), unit("v2h2", 2, vehicles=(leaf(id="bz"),), stays=lambda a, b: [gone]))) as st:
        st.sim.set_soc("leaf", 56.3)
        d = SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=st.port, timeout=2)
        try:
            d.scan()
            # the standard models only, no vendor model (64xxx)
            assert sorted(k for k in d.models if isinstance(k, int)) == [1, 701, 702, 704, 713, 802]
            assert d.common[0].Mn.cvalue == "v2h-ems"
            assert d.DERStorageCapacity[0].SoC.cvalue == pytest.approx(56.3)
            assert d.DERStorageCapacity[0].WHRtg.cvalue == 62000
            assert d.DERCapacity[0].WMaxRtg.cvalue == 6000
            assert d.DERMeasureAC[0].ConnSt.value == 1
            assert d.DERStorageCapacity[0].SoH.value is None  # 0xFFFF: not implemented
            bat = d.battery[0]                                 # 802: the plugged car's battery
            assert (bat.State.value, bat.WHRtg.cvalue, bat.WChaRteMax.cvalue, bat.WDisChaRteMax.cvalue) == (3, 62000, 4000, 3000)
            assert (bat.SoC.cvalue, bat.SocRsvMax.cvalue, bat.SoCRsvMin.cvalue) == (pytest.approx(56.3), 90, 20)
        finally:
            d.close()
        d = SunSpecModbusClientDeviceTCP(slave_id=2, ipaddr="127.0.0.1", ipport=st.port, timeout=2)
        try:
            d.scan()
            bat = d.battery[0]                                 # no car: DISCONNECTED, its values not implemented
            assert (bat.State.value, bat.SoC.value, bat.WHRtg.value) == (1, None, None)
            assert d.DERStorageCapacity[0].SoC.value is None
            with pytest.raises(ModbusClientException, match="Modbus exception 2"):  # no vendor block at 64000
                d.read(64000, 1)
        finally:
            d.close()
