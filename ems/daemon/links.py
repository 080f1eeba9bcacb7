"""Device links: the chargers and the site meter as the daemon reaches them (:class:`Links`).

Connecting (paced: a failed start waits :data:`RECONNECT_S` real seconds), reading, writing
setpoints, the heartbeat that keeps each unit's reversion watchdog from firing, and the faults:
a unit or the meter that stops answering is one ``device-fault`` event per episode and one
``device-recovered`` when it answers again; it never raises into a job. A failed unit's connection
is dropped without a write (:meth:`ChargerDevice.disconnect <adapters.protocol.ChargerDevice.disconnect>`):
a unit with a watchdog (Modbus/SunSpec) goes to 0 W by itself, one without (ECHONET Lite) keeps its
last command; the next start reads it first (and arms the watchdog again), then puts it in standby.
The units and the meter are reached only through :class:`~adapters.protocol.ChargerDevice` and
:class:`~adapters.protocol.MeterDevice`, whatever their protocol.
Every reading goes through the :class:`~ems.daemon.readings.ReadingGuard` (:attr:`Links.readings`):
an implausible or unknown value is a ``reading-fault`` event and is never passed on as a number.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from adapters import AdapterError, CallerLimits, ChargerState, MeterReading
from adapters.protocol import ChargerDevice, MeterDevice
from ems.config import Charger
from ems.daemon.host import Host
from ems.daemon.readings import MeterQuality, ReadingGuard
from ems.dispatch import Setpoint

log = logging.getLogger(__name__)

#: After a failed device start the next attempt waits this many real seconds (no connect storm).
RECONNECT_S = 1.0


@dataclass
class UnitLink:
    """One charger as the daemon sees it: config, adapter, last state, fault and plug history."""

    charger: Charger
    adapter: ChargerDevice
    state: ChargerState | None = None
    fault: str | None = None
    next_connect_real: float = 0.0
    plugged: bool | None = None
    vehicle: str | None = None
    setpoint: Setpoint | None = None


class Links:
    """The units (one :class:`UnitLink` per configured charger, in config order) and the meter (or None).

    ``real_clock`` gives real (or, in tests, manual) seconds for the reconnect pacing. Owns each
    unit's last state, fault and setpoint, and the meter's last reading and fault.
    """

    def __init__(self, host: Host, chargers: list[ChargerDevice], meter: MeterDevice | None,
                 real_clock: Callable[[], float]):
        self.host = host
        self.units = [UnitLink(c, a) for c, a in zip(host.cfg.chargers, chargers, strict=True)]
        self.meter = meter
        self.real_clock = real_clock
        self.meter_fault: str | None = None
        self.last_reading: MeterReading | None = None
        self.readings = ReadingGuard(host)
        self._meter_started = False
        self._meter_next_connect = 0.0

    def rebind(self, chargers: list[Charger]) -> None:
        """A reloaded config: the same adapters (ids and adapters cannot change) under the new charger settings."""
        self.units = [UnitLink(c, u.adapter, u.state, u.fault, u.next_connect_real, u.plugged, u.vehicle, u.setpoint)
                      for c, u in zip(chargers, self.units)]

    # ----------------------------------------------------------------- connecting
    async def connect_all(self) -> None:
        """Start every adapter that is not started (and the meter); failures become faults."""
        for u in self.units:
            await self._connect(u)
        if self.meter is not None:
            try:
                await self._start_meter()
            except AdapterError as exc:
                self._meter_failed(exc)

    async def _connect(self, u: UnitLink) -> bool:
        """Start one unit's adapter (reads before writing, arms its watchdog); paced by RECONNECT_S.
        A unit coming back after a fault is put in standby first (a unit without a watchdog, e.g. over
        ECHONET Lite, still holds the command it had when the link was lost)."""
        if u.adapter.started:
            return True
        if self.real_clock() < u.next_connect_real:
            return False
        try:
            await u.adapter.start()
            if u.fault is not None:
                await u.adapter.standby()
        except AdapterError as exc:
            u.next_connect_real = self.real_clock() + RECONNECT_S
            self._unit_failed(u, exc)
            if u.adapter.started:   # started, but the standby failed: start afresh next time
                await u.adapter.disconnect()
            return False
        if u.fault is not None:
            self.host.event("device-recovered", f"{u.charger.id}: connected again after: {u.fault}", device=u.charger.id)
            u.fault = None
        return True

    async def close(self) -> None:
        """Exit: every started unit to 0 W with remote control released (others just closed), the meter closed."""
        for u in self.units:
            if u.adapter.started:
                try:
                    await u.adapter.stop()
                except AdapterError as exc:
                    log.warning("%s: clean stop failed: %s", u.charger.id, exc)
            else:
                await u.adapter.disconnect()
        if self.meter is not None:
            await self.meter.stop()
            self._meter_started = False

    # ----------------------------------------------------------------- faults
    def _unit_failed(self, u: UnitLink, exc: Exception) -> None:
        """Record a unit fault once per episode (a unit with a watchdog goes to 0 W by itself)."""
        u.state = None
        if u.fault is None:
            u.fault = str(exc)
            fallback = "the unit reverts to 0 W by its own watchdog" if u.adapter.capabilities.reversion_watchdog else \
                "the unit has no watchdog and keeps its last command until it answers again (then standby)"
            self.host.event("device-fault", f"{u.charger.id}: {exc}; retrying, {fallback}", "error", device=u.charger.id)

    def _meter_failed(self, exc: Exception) -> None:
        self.last_reading = None
        if self.meter_fault is None:
            self.meter_fault = str(exc)
            self.host.event("device-fault", f"meter: {exc}; the demand guard sees only the chargers until it is back",
                            "error", device="meter")

    def _clear_meter_fault(self) -> None:
        if self.meter_fault is not None:
            self.host.event("device-recovered", f"meter: reading again after: {self.meter_fault}", device="meter")
            self.meter_fault = None

    async def _drop(self, u: UnitLink) -> None:
        """Forget a failed connection: the next tick starts the adapter again (read first, watchdog re-armed)."""
        u.next_connect_real = self.real_clock() + RECONNECT_S
        await u.adapter.disconnect()

    # ----------------------------------------------------------------- reading
    @property
    def meter_quality(self) -> MeterQuality:
        """What the last meter reading is worth (GOOD, HELD, DROPPED, LOST or ABSENT)."""
        return self.readings.meter_quality

    async def read_all(self) -> MeterReading | None:
        """Read the meter, then every unit (each unit's ``state``: None if unreachable), each checked by
        :attr:`readings`; the meter's reading the daemon may use, or None."""
        reading = await self._read_meter()
        await self._each(self._read_unit(u) for u in self.units)
        now = self.host.clock.now()
        reading = self.readings.meter(now, reading, self.meter is not None)
        for u in self.units:
            u.state = self.readings.unit(now, u.charger.id, u.state)
        self.last_reading = reading
        return reading

    async def _read_unit(self, u: UnitLink) -> ChargerState | None:
        """The unit's state, or None (fault recorded, reconnect paced)."""
        if not await self._connect(u):
            return None
        try:
            u.state = await u.adapter.read_state()
        except AdapterError as exc:
            self._unit_failed(u, exc)
            await self._drop(u)
            return None
        if u.fault is not None:
            self.host.event("device-recovered", f"{u.charger.id}: answering again after: {u.fault}", device=u.charger.id)
            u.fault = None
        return u.state

    async def _start_meter(self) -> None:
        """Connect the meter if it is not connected (paced by RECONNECT_S after a failure)."""
        assert self.meter is not None
        if not self._meter_started and self.real_clock() >= self._meter_next_connect:
            self._meter_next_connect = self.real_clock() + RECONNECT_S
            await self.meter.start()
            self._meter_started = True

    async def _read_meter(self) -> MeterReading | None:
        """One meter reading, or None (fault recorded, the connection dropped for a fresh start)."""
        if self.meter is None:
            return None
        try:
            await self._start_meter()
            if not self._meter_started:
                return None
            reading = await self.meter.read()
        except AdapterError as exc:
            self._meter_failed(exc)
            self._meter_started = False
            await self.meter.stop()
            return None
        self._clear_meter_fault()
        return reading

    # ----------------------------------------------------------------- writing
    async def write(self, setpoints: list[Setpoint], floor_pct: dict[str, float]) -> None:
        """Send each setpoint (the adapter clamps again, with the SOC floor as its reserve)."""
        by_id = {u.charger.id: u for u in self.units}
        sends = []
        for sp in setpoints:
            u = by_id[sp.charger_id]
            u.setpoint = sp
            if u.state is not None and u.adapter.started:
                sends.append(self._send(u, sp, CallerLimits(soc_reserve_pct=floor_pct.get(sp.charger_id, 0.0))))
        await self._each(sends)

    async def _each(self, calls: Iterable) -> None:
        """Await device calls: together over TCP (one connection per unit, so the round trips
        overlap), one after another when any unit is on a serial bus (RS-485 is half duplex)."""
        calls = list(calls)
        if any(u.charger.adapter.kind == "modbus_rtu" for u in self.units):
            for c in calls:
                await c
        else:
            await asyncio.gather(*calls)

    async def _send(self, u: UnitLink, sp: Setpoint, limits: CallerLimits) -> None:
        """Write one unit's setpoint; a failure is recorded and the link dropped, never raised."""
        try:
            await u.adapter.set_power(sp.charge_kw, sp.discharge_kw, limits, u.state)
        except AdapterError as exc:
            self._unit_failed(u, exc)
            await self._drop(u)

    async def heartbeat(self) -> None:
        """Refresh each started unit's reversion watchdog (and its controller heartbeat) when due."""
        for u in self.units:
            if not u.adapter.started:
                continue
            try:
                await u.adapter.refresh()
            except AdapterError as exc:
                self._unit_failed(u, exc)
                await self._drop(u)
