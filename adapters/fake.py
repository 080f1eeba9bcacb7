"""In-memory devices for fast daemon tests: no sockets, no simulator thread, instant answers.

:class:`FakeCharger` and :class:`FakeMeter` satisfy :class:`~adapters.protocol.ChargerDevice` and
:class:`~adapters.protocol.MeterDevice`. A command is clamped by the same
:func:`~adapters.charger.clamp` as the real adapters and held exactly (no ramp); the vehicle's SOC
moves only when the test calls :meth:`FakeCharger.advance`. Setting ``fail`` to an
:class:`~adapters.errors.AdapterError` makes every call raise it (a unit that stopped answering).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from adapters.charger import CallerLimits, ChargerState, SetpointResult, clamp
from adapters.convention import soc_kwh, soc_pct
from adapters.errors import AdapterError
from adapters.meter import MeterReading
from adapters.protocol import NO_REFRESH_S, ChargerCapabilities


@dataclass(frozen=True)
class FakeRatings:
    """A fake unit's name and configured ratings [kW] (what :func:`~adapters.charger.clamp` reads)."""

    name: str
    max_charge_kw: float = 6.0
    max_discharge_kw: float = 6.0


class FakeCharger:
    """One in-memory unit with a vehicle of ``capacity_kwh`` at ``soc_pct`` (see the module docstring).

    ``watchdog``: whether it claims a reversion watchdog (refresh every ``refresh_interval_s``).
    ``calls`` lists the operations in order (``start``, ``set 1.5/0``, ``standby``, ``stop`` ...).
    """

    def __init__(self, name: str = "v2h1", max_charge_kw: float = 6.0, max_discharge_kw: float = 6.0, *,
                 soc_pct: float = 50.0, capacity_kwh: float = 62.0, plugged: bool = True, grid_connected: bool = True,
                 efficiency: float = 0.95, watchdog: bool = True):
        self.params = FakeRatings(name, max_charge_kw, max_discharge_kw)
        self.energy_kwh = soc_kwh(soc_pct, capacity_kwh)
        self.capacity_kwh = capacity_kwh
        self.plugged = plugged
        self.grid_connected = grid_connected
        self.efficiency = efficiency
        self.watchdog = watchdog
        self.held = (0.0, 0.0)        # (charge_kw, discharge_kw) the unit holds
        self.fail: AdapterError | None = None
        self.calls: list[str] = []
        self._started = False

    def _call(self, what: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.calls.append(what)

    @property
    def started(self) -> bool:
        """True between :meth:`start` and :meth:`stop` / :meth:`disconnect`."""
        return self._started

    @property
    def refresh_interval_s(self) -> float:
        """20 s with a watchdog, else infinite [s]."""
        return 20.0 if self.watchdog else NO_REFRESH_S

    @property
    def capabilities(self) -> ChargerCapabilities:
        """A unit that takes power setpoints both ways (as configured)."""
        return ChargerCapabilities("fake", self.params.max_charge_kw > 0, self.params.max_discharge_kw > 0,
                                   reversion_watchdog=self.watchdog)

    def advance(self, hours: float) -> None:
        """Let ``hours`` pass at the held power: the vehicle's energy moves (within 0..capacity)."""
        if self.plugged:
            ch, dis = self.held
            e = self.energy_kwh + (ch * self.efficiency - dis / self.efficiency) * hours
            self.energy_kwh = min(max(e, 0.0), self.capacity_kwh)

    async def start(self) -> ChargerState:
        """Read the unit (no write)."""
        self._call("start")
        self._started = True
        return await self.read_state()

    async def read_state(self) -> ChargerState:
        """The held power and the vehicle's SOC."""
        self._call("read")
        ch, dis = self.held if self.plugged else (0.0, 0.0)
        soc = soc_pct(self.energy_kwh, self.capacity_kwh) if self.plugged else None
        return ChargerState(self.params.name, soc, ch, dis, self.plugged, self.grid_connected, False,
                            self.params.max_charge_kw, self.params.max_discharge_kw, None, None,
                            self.capacity_kwh if self.plugged else None, None, None, None, (), None,
                            True, ch, dis, None)

    async def set_power(self, charge_kw: float = 0.0, discharge_kw: float = 0.0, limits: CallerLimits = CallerLimits(),
                        state: ChargerState | None = None) -> SetpointResult:
        """Clamp and hold the command."""
        if not self._started:
            raise AdapterError(self.params.name, "", None, "set_power before start()")
        state = state or await self.read_state()
        ch, dis, cuts = clamp(charge_kw, discharge_kw, self.params, state, limits)  # type: ignore[arg-type]
        self._call(f"set {ch:g}/{dis:g}")
        self.held = (ch, dis)
        return SetpointResult(charge_kw, discharge_kw, ch, dis, "written", cuts)

    async def refresh(self) -> bool:
        """Counts a refresh when the fake claims a watchdog."""
        if self._started and self.watchdog:
            self._call("refresh")
            return True
        return False

    async def standby(self) -> None:
        """Hold 0 W."""
        self._call("standby")
        self.held = (0.0, 0.0)

    async def stop(self) -> None:
        """0 W, then stopped."""
        try:
            if self._started:
                await self.standby()
                self._call("stop")
        finally:
            self._started = False

    async def disconnect(self) -> None:
        """Stopped without a write (the held power stays, as a real unit's would)."""
        self.calls.append("disconnect")
        self._started = False


class FakeMeter:
    """An in-memory site meter: ``reading`` is what :meth:`read` returns (counters as the test sets them)."""

    def __init__(self, import_kw: float = 0.0, export_kw: float = 0.0, name: str = "meter"):
        self.reading = MeterReading(name, import_kw, export_kw, None, None, None, None)
        self.fail: AdapterError | None = None
        self.reads = 0

    def set(self, **changes: float | bool | None) -> None:
        """Change fields of the next readings (``import_kw=9.0``, ``grid_available=False`` ...)."""
        self.reading = replace(self.reading, **changes)  # type: ignore[arg-type]

    async def start(self) -> None:
        """Nothing to open (raises ``fail`` if set)."""
        if self.fail is not None:
            raise self.fail

    async def read(self) -> MeterReading:
        """The current reading (raises ``fail`` if set)."""
        if self.fail is not None:
            raise self.fail
        self.reads += 1
        return self.reading

    async def stop(self) -> None:
        """Nothing to close."""


__all__ = ["FakeCharger", "FakeMeter", "FakeRatings"]
