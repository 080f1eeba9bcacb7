"""Benchmark of the device path on loopback: one control cycle, and reconnection after a restart.

Prints JSON (no pass/fail). The simulator runs in its own thread and event loop (as a separate
device would answer), the adapter in the benchmark's loop, over a real TCP socket on 127.0.0.1.

- control cycle: ``read_state()`` (every state point, grouped into as few reads as the map allows)
  + ``set_power()`` (clamp, one FC16 write, read back); the command alternates between two values
  so that every cycle writes (no deadband skips). Targets: median <= 20 ms.
- reconnect: the server is stopped, stays down ``DOWN_S``, and starts again on the same port while
  the adapter keeps polling all along (``POLL_GAP_S`` between polls; each failed poll has already
  tried 3 times with 0.05 s / 0.1 s backoff); the figure is the time from the server listening
  again to the adapter's first good read. Target <= 2 s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import statistics
import time
from collections.abc import Awaitable, Callable

import pymodbus

from adapters import AdapterError, ChargerAdapter, ChargerParams, RetryPolicy, TcpLink
from adapters.sim import SimSiteParams, SimulatorThread, SimUnitParams, SimVehicle

CYCLES = 500
WARMUP = 20
RESTARTS = 5
DOWN_S = 0.5
POLL_GAP_S = 0.05


def site(profile: str) -> SimSiteParams:
    """One 6 kW unit with a 62 kWh car plugged in."""
    car = SimVehicle("leaf", 62.0, 20.0, 90.0, initial_soc_pct=50.0)
    return SimSiteParams((SimUnitParams("v2h1", 1, 6.0, 6.0, profile=profile, vehicles=(car,)),), load_kw=1.0)


def params(port: int, profile: str) -> ChargerParams:
    """Adapter settings as the daemon uses them (1 s timeout, 3 attempts)."""
    return ChargerParams("v2h1", TcpLink("127.0.0.1", port, 1, timeout_s=1.0), 6.0, 6.0, profile=profile,
                         min_write_interval_s=0.0, retry=RetryPolicy(attempts=3, backoff_s=0.05, backoff_max_s=1.0))


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation."""
    s = sorted(values)
    i = q * (len(s) - 1)
    lo = int(i)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (i - lo)


async def cycles(port: int, profile: str) -> dict:
    """Median/p99 of read state + write setpoint + read back [ms], and requests per cycle."""
    async with ChargerAdapter(params(port, profile)) as ch:
        times = []
        for i in range(WARMUP + CYCLES):
            if i == WARMUP:
                sent = ch.dev.io.requests
            t = time.perf_counter()
            state = await ch.read_state()
            result = await ch.set_power(discharge_kw=2.0 if i % 2 else 2.5, state=state)
            dt = time.perf_counter() - t
            assert result.action == "written"
            if i >= WARMUP:
                times.append(dt * 1000)
        per_cycle = (ch.dev.io.requests - sent) / CYCLES
    return {"median_ms": round(statistics.median(times), 3), "p99_ms": round(percentile(times, 0.99), 3),
            "mean_ms": round(statistics.fmean(times), 3), "max_ms": round(max(times), 3),
            "modbus_requests_per_cycle": per_cycle}


async def recovery_times(read: Callable[[], Awaitable[object]], down: Callable[[], Awaitable[None]],
                         up: Callable[[], Awaitable[None]], outages: int = RESTARTS) -> list[float]:
    """Seconds from the device answering again (after ``up()``) to the first good ``read()``, for
    each of ``outages`` outages of ``DOWN_S`` seconds; a poller keeps reading every ``POLL_GAP_S``
    all along (failures included), as a daemon's dispatch loop would."""
    good: list[float] = []
    out = []
    running = True

    async def poll() -> None:
        while running:
            try:
                await read()
                good.append(time.perf_counter())
            except AdapterError:
                pass
            await asyncio.sleep(POLL_GAP_S)
    task = asyncio.create_task(poll())
    for _ in range(outages):
        await asyncio.sleep(0.3)
        await down()
        await asyncio.sleep(DOWN_S)
        await up()
        back = time.perf_counter()
        while not good or good[-1] < back:
            await asyncio.sleep(0.005)
        out.append(next(t for t in good if t >= back) - back)
    running = False
    await task
    return out


async def reconnects(st: SimulatorThread, profile: str) -> dict:
    """Seconds from the server listening again to the adapter's first good read, per restart."""
    async with ChargerAdapter(params(st.port, profile)) as ch:
        out = await recovery_times(ch.read_state, lambda: asyncio.to_thread(st.call, st.sim.stop),
                                   lambda: asyncio.to_thread(st.call, st.sim.start))
        reconnected = ch.dev.io.reconnects
    return {"median_s": round(statistics.median(out), 4), "max_s": round(max(out), 4), "restarts": RESTARTS,
            "server_down_s": DOWN_S, "poll_gap_s": POLL_GAP_S, "adapter_reconnects": reconnected}


def main() -> None:
    """Run both measurements for the SunSpec map and the flat vendor map; print JSON."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # the refused connects while down are intended
    report: dict = {"benchmark": "modbus-loopback", "python": platform.python_version(),
                    "pymodbus": pymodbus.__version__, "cycles": CYCLES,
                    "targets": {"cycle_median_ms": 20, "reconnect_s": 2}, "profiles": {}}
    for profile in ("sunspec", "flat-v2h"):
        with SimulatorThread(site(profile)) as st:
            cyc = asyncio.run(cycles(st.port, profile))
            rec = asyncio.run(reconnects(st, profile))
        report["profiles"][profile] = {"control_cycle": cyc, "reconnect_after_restart": rec}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
