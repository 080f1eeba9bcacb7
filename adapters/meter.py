"""The site meter adapter: import/export power at the grid connection point.

SunSpec meters (model 203, or 201 at the same offsets) are discovered like chargers; flat vendor
maps are read at fixed addresses. The meter's sign convention comes from its map and is turned
into the product's pair (import_kw, export_kw) by :mod:`adapters.convention`.

A power reading that is unknown (the "not implemented" sentinel, e.g. SunSpec 0x8000), not finite,
outside the map's range or beyond :data:`~adapters.plausibility.METER_MAX_KW` is never passed on as
a number: the reading carries a :class:`~adapters.plausibility.ReadingFault` for ``power_w`` and
0 kW both ways as a placeholder (:attr:`MeterReading.power_known` is False); the caller holds a
last good value or treats the meter as lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.convention import from_device_w
from adapters.device import ModbusDevice
from adapters.link import RetryPolicy, RtuLink, TcpLink
from adapters.plausibility import METER_MAX_KW, ReadingFault, check_into, has_fault
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
    """Grid power [kW] (both >= 0, at most one non-zero), energy counters [kWh], grid state, and the
    readings not believed (``faults``; with one for ``power_w`` the two powers are 0.0 placeholders)."""

    device: str
    import_kw: float
    export_kw: float
    import_kwh: float | None
    export_kwh: float | None
    voltage_v: float | None
    grid_available: bool | None
    faults: tuple[ReadingFault, ...] = ()

    @property
    def power_known(self) -> bool:
        """True if the power was read and believed (no fault on ``power_w``)."""
        return not has_fault(self.faults, "power_w")


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
        """One reading. The grid counts as unavailable on a POWER_FAILURE event or grid_present = 0.
        An unknown or implausible power is a fault (see the module docstring), never 0 kW silently."""
        v, bad = await self.dev.read_checked(n for n in READ_POINTS if self.dev.available(n))
        limit_w = METER_MAX_KW * 1000.0
        check_into(bad, self.params.name, "power_w", v["power_w"], -limit_w, limit_w, "W")
        imp, exp = from_device_w(0.0 if "power_w" in bad else v["power_w"], self.dev.map.sign)
        grid: bool | None = None
        if v.get("grid_present") is not None:
            grid = enum_name(self.dev.map.points["grid_present"], v["grid_present"]) == "UP"
        elif "events" in self.dev.map.points and self.dev.available("events"):
            grid = "POWER_FAILURE" not in bit_names(self.dev.map.points["events"], v.get("events"))
        kwh = lambda wh: None if wh is None else wh / 1000.0  # noqa: E731
        return MeterReading(self.params.name, imp, exp, kwh(v.get("import_energy_wh")), kwh(v.get("export_energy_wh")),
                            v.get("voltage_v"), grid, tuple(bad.values()))
