"""Benchmark of the ECHONET Lite device path on loopback: one control cycle, as ``bench/modbus.py``.

Prints JSON (no pass/fail). The simulated node (:class:`adapters.sim.echonet.EchonetSimulator`, the
same physics as the Modbus simulator) runs in its own thread and event loop, as a separate device
would answer; the adapter runs in the benchmark's loop, over real UDP datagrams on 127.0.0.1.

- control cycle: ``read_state()`` (one Get of every state EPC) + ``set_power()`` (clamp, one SetC of
  the power setting and the mode, then a Get to read them back); the command alternates between two
  values so that every cycle writes (no deadband skips). Target: median <= 20 ms, as for Modbus.
- recovery: the node stops answering for ``DOWN_S`` and comes back; the figure is the time from the
  node answering again to the adapter's first good read, while a poller keeps reading every
  ``POLL_GAP_S`` (each failed read has already tried 3 times with 0.05 s / 0.1 s backoff). ECHONET
  Lite has no connection, so there is nothing to re-establish: the figure is the retry schedule's.

Usage: .venv/bin/python bench/echonet.py
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modbus import DOWN_S, POLL_GAP_S, RESTARTS, WARMUP, percentile, recovery_times  # noqa: E402

from adapters import RetryPolicy  # noqa: E402
from adapters.echonet import EchonetChargerAdapter, EchonetChargerParams, EchonetLink  # noqa: E402
from adapters.sim import SimSiteParams, SimulatorThread, SimUnitParams, SimVehicle  # noqa: E402
from adapters.sim.echonet import EchonetSimulator  # noqa: E402

CYCLES = 500


def site() -> SimSiteParams:
    """One 6 kW unit with a 62 kWh car plugged in."""
    car = SimVehicle("leaf", 62.0, 20.0, 90.0, initial_soc_pct=50.0)
    return SimSiteParams((SimUnitParams("v2h1", 1, 6.0, 6.0, vehicles=(car,)),), load_kw=1.0)


def params(port: int) -> EchonetChargerParams:
    """Adapter settings as the daemon uses them (1 s timeout, 3 attempts), answers on any free local port."""
    link = EchonetLink("127.0.0.1", 1, port, timeout_s=1.0, local_host="127.0.0.1", local_port=0)
    return EchonetChargerParams("v2h1", link, 6.0, 6.0, min_write_interval_s=0.0,
                                retry=RetryPolicy(attempts=3, backoff_s=0.05, backoff_max_s=1.0))


async def cycles(port: int) -> dict:
    """Median/p99 of read state + write setpoint + read back [ms], and datagrams sent per cycle."""
    async with EchonetChargerAdapter(params(port)) as ev:
        times = []
        for i in range(WARMUP + CYCLES):
            if i == WARMUP:
                sent = ev.obj.requests
            t = time.perf_counter()
            state = await ev.read_state()
            result = await ev.set_power(discharge_kw=2.0 if i % 2 else 2.5, state=state)
            dt = time.perf_counter() - t
            assert result.action == "written", result
            if i >= WARMUP:
                times.append(dt * 1000)
        per_cycle = (ev.obj.requests - sent) / CYCLES
    return {"median_ms": round(statistics.median(times), 3), "p99_ms": round(percentile(times, 0.99), 3),
            "mean_ms": round(statistics.fmean(times), 3), "max_ms": round(max(times), 3),
            "requests_per_cycle": per_cycle}


async def recoveries(st: SimulatorThread) -> dict:
    """Seconds from the node answering again to the adapter's first good read, per outage."""
    async def silent() -> None:
        st.sim.set_fault("v2h1", delay_s=5.0)   # answers past every timeout: a silent node

    async def back() -> None:
        st.sim.set_fault("v2h1", delay_s=0.0)
    async with EchonetChargerAdapter(params(st.port)) as ev:
        out = await recovery_times(ev.read_state, silent, back)
    return {"median_s": round(statistics.median(out), 4), "max_s": round(max(out), 4), "outages": RESTARTS,
            "node_silent_s": DOWN_S, "poll_gap_s": POLL_GAP_S}


def main() -> None:
    """Both measurements against the simulated node; print JSON."""
    logging.getLogger("adapters").setLevel(logging.CRITICAL)   # the timeouts while silent are intended
    report: dict = {"benchmark": "echonet-lite-loopback", "python": platform.python_version(), "cycles": CYCLES,
                    "targets": {"cycle_median_ms": 20, "recovery_s": 2}}
    with SimulatorThread(site(), simulator=EchonetSimulator, port=0) as st:
        report["control_cycle"] = asyncio.run(cycles(st.port))
        report["recovery_after_silence"] = asyncio.run(recoveries(st))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
