"""The device interface the daemon uses for every charger and meter, whatever the protocol.

:class:`ChargerDevice` and :class:`MeterDevice` are :class:`typing.Protocol` classes: the Modbus
adapters (:class:`~adapters.charger.ChargerAdapter`, :class:`~adapters.meter.MeterAdapter`), the
ECHONET Lite adapters (:mod:`adapters.echonet`) and the in-memory fakes (:mod:`adapters.fake`)
satisfy them without inheriting from them. Powers are the product's non-negative pairs [kW]; the
protocol's own sign conventions and units stay inside each adapter.

A charger's life: :meth:`~ChargerDevice.start` (connect, discover what the unit can do, read it
before writing anything), then per tick :meth:`~ChargerDevice.read_state` and
:meth:`~ChargerDevice.set_power` (clamped, written, read back), :meth:`~ChargerDevice.refresh` at
least every :attr:`~ChargerDevice.refresh_interval_s` (the heartbeat that keeps a unit's own
watchdog from firing; a no-op for units without one), :meth:`~ChargerDevice.standby` when a lost
link comes back, and :meth:`~ChargerDevice.stop` (0 W / standby, then close) or
:meth:`~ChargerDevice.disconnect` (close without a write, after a failure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # the adapters import this module (ChargerCapabilities): no import of theirs at run time
    from adapters.charger import CallerLimits, ChargerState, SetpointResult
    from adapters.meter import MeterReading


@dataclass(frozen=True)
class ChargerCapabilities:
    """What a unit can be told to do, as found at start-up.

    ``protocol``: ``modbus`` or ``echonet_lite``; ``charge``/``discharge``: the unit takes those
    commands; ``power_setpoint``: it takes a power [W] (not only a mode at its own power);
    ``reversion_watchdog``: it falls back to 0 W by itself when the controller falls silent (SunSpec
    704 reversion); False means it keeps its last command until told otherwise (ECHONET Lite).
    """

    protocol: str
    charge: bool = True
    discharge: bool = True
    power_setpoint: bool = True
    reversion_watchdog: bool = False


#: the refresh interval of a unit without a watchdog: nothing to refresh [s]
NO_REFRESH_S = math.inf


@runtime_checkable
class ChargerDevice(Protocol):
    """One V2H/V2B unit as the daemon drives it (see the module docstring)."""

    @property
    def started(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop` / :meth:`disconnect`."""
        ...

    @property
    def refresh_interval_s(self) -> float:
        """Longest time between two :meth:`refresh` calls [real s] (inf: the unit needs none)."""
        ...

    @property
    def capabilities(self) -> ChargerCapabilities:
        """What the unit can do (complete after :meth:`start`)."""
        ...

    async def start(self) -> ChargerState:
        """Connect, discover the unit's abilities (a missing one needed: :class:`~adapters.errors.CapabilityError`),
        read its state before any write; the state read."""
        ...

    async def read_state(self) -> ChargerState:
        """The unit's state now."""
        ...

    async def set_power(self, charge_kw: float = ..., discharge_kw: float = ..., limits: CallerLimits = ...,
                        state: ChargerState | None = ...) -> SetpointResult:
        """Command charge OR discharge [kW], clamped to every limit, written and read back."""
        ...

    async def refresh(self) -> bool:
        """Keep the unit's watchdog from firing if a refresh is due; True if it wrote."""
        ...

    async def standby(self) -> None:
        """Hold 0 W now (Modbus: a 0 W setpoint; ECHONET Lite: operation mode standby)."""
        ...

    async def stop(self) -> None:
        """Clean exit: 0 W / standby, then close (errors raised after closing)."""
        ...

    async def disconnect(self) -> None:
        """Close without writing (after a failed read or write)."""
        ...


@runtime_checkable
class MeterDevice(Protocol):
    """The site's grid meter as the daemon reads it."""

    async def start(self) -> None:
        """Connect and find the meter's values."""
        ...

    async def read(self) -> MeterReading:
        """One reading: import/export [kW], energy counters [kWh], grid state."""
        ...

    async def stop(self) -> None:
        """Close."""
        ...


__all__ = ["ChargerCapabilities", "ChargerDevice", "MeterDevice", "NO_REFRESH_S"]
