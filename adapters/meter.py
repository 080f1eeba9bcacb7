"""The site meter adapter: import/export power at the grid connection point.

SunSpec meters (model 203, or 201 at the same offsets) are discovered like chargers; flat vendor
maps are read at fixed addresses. The meter's sign convention comes from its map and is turned
into the product's pair (import_kw, export_kw) by :mod:`adapters.convention`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.convention import from_device_w
from adapters.device import ModbusDevice
from adapters.link import RetryPolicy, RtuLink, TcpLink
from adapters.registers import RegisterMap, bit_names, enum_name

READ_POINTS = ("power_w", "import_energy_wh", "export_energy_wh", "voltage_v", "events", "grid_present")


@dataclass(frozen=True)
class MeterParams:
    """How to reach the site meter."""

    name: str
    link: TcpLink | RtuLink
    profile: str | RegisterMap = "sunspec-meter"
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True)
class MeterReading:
    """Grid power [kW] (both >= 0, at most one non-zero), energy counters [kWh], grid state."""

    device: str
    import_kw: float
    export_kw: float
    import_kwh: float | None
    export_kwh: float | None
    voltage_v: float | None
    grid_available: bool | None


class MeterAdapter:
    """One site meter. Use as ``async with MeterAdapter(params) as meter: await meter.read()``."""

    def __init__(self, params: MeterParams):
        self.params = params
        self.dev = ModbusDevice(params.name, params.link, params.profile, params.retry)

    async def __aenter__(self) -> MeterAdapter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect and locate the meter's points."""
        await self.dev.open()
        try:
            self.dev.require(("power_w",))
        except BaseException:
            await self.dev.close()
            raise

    async def stop(self) -> None:
        """Close the connection."""
        await self.dev.close()

    async def read(self) -> MeterReading:
        """One reading. The grid counts as unavailable on a POWER_FAILURE event or grid_present = 0."""
        v = await self.dev.read(n for n in READ_POINTS if self.dev.available(n))
        imp, exp = from_device_w(v["power_w"] or 0.0, self.dev.map.sign)
        grid: bool | None = None
        if v.get("grid_present") is not None:
            grid = enum_name(self.dev.map.points["grid_present"], v["grid_present"]) == "UP"
        elif "events" in self.dev.map.points and self.dev.available("events"):
            grid = "POWER_FAILURE" not in bit_names(self.dev.map.points["events"], v.get("events"))
        kwh = lambda wh: None if wh is None else wh / 1000.0  # noqa: E731
        return MeterReading(self.params.name, imp, exp, kwh(v.get("import_energy_wh")), kwh(v.get("export_energy_wh")),
                            v.get("voltage_v"), grid)
