"""Builders for the device-layer tests: a small simulated site and adapter parameters for it.

Every test that needs a device starts a real Modbus TCP simulator on 127.0.0.1 (port 0 = a free
port) and talks to it over a real socket; nothing of pymodbus is mocked.
"""

from __future__ import annotations

import datetime as dt

from adapters import ChargerParams, MeterParams, RetryPolicy, TcpLink
from adapters.sim import SimSiteParams, SimUnitParams, SimVehicle

T0 = dt.datetime(2025, 1, 6, 3, 0, tzinfo=dt.timezone.utc)  # Monday 12:00 in Tokyo
FAST_RETRY = RetryPolicy(attempts=2, backoff_s=0.01, backoff_max_s=0.05)


def leaf(**kw) -> SimVehicle:
    """A 62 kWh Leaf e+ with a 20-90 % window, starting at 50 % unless told."""
    return SimVehicle(**({"id": "leaf", "capacity_kwh": 62.0, "min_soc_pct": 20.0, "max_soc_pct": 90.0,
                          "initial_soc_pct": 50.0} | kw))


def unit(name: str = "v2h1", unit_id: int = 1, **kw) -> SimUnitParams:
    """A 6 kW / 6 kW unit (95 % both ways, 6 kW islanded) with a Leaf always plugged in."""
    base = dict(max_charge_kw=6.0, max_discharge_kw=6.0, charge_efficiency=0.95, discharge_efficiency=0.95,
                islanded_rating_kw=6.0, ramp_pct_per_s=100.0, vehicles=(leaf(),))
    return SimUnitParams(name, unit_id, **(base | kw))


def site(*units: SimUnitParams, **kw) -> SimSiteParams:
    """A site with these units (default: one), 1 kW of load, no PV, simulated time from T0."""
    return SimSiteParams(units or (unit(),), **({"load_kw": 1.0, "start": T0, "critical_load_kw": 1.4} | kw))


def charger(port: int, unit_id: int = 1, name: str = "v2h1", **kw) -> ChargerParams:
    """Adapter parameters for a simulated 6 kW unit on 127.0.0.1:port."""
    base = dict(max_charge_kw=6.0, max_discharge_kw=6.0, reversion_timeout_s=30.0, min_write_interval_s=0.0,
                retry=FAST_RETRY)
    timeout = kw.pop("timeout_s", 0.5)
    return ChargerParams(name, TcpLink("127.0.0.1", port, unit_id, timeout_s=timeout), **(base | kw))


def meter(port: int, unit_id: int = 240, profile: str = "sunspec-meter") -> MeterParams:
    """Adapter parameters for the simulated site meter."""
    return MeterParams("meter", TcpLink("127.0.0.1", port, unit_id, timeout_s=0.5), profile, retry=FAST_RETRY)
