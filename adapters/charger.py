"""The V2H/V2B charger adapter: read the unit's state, command charge/discharge safely.

Inside the product a command is two non-negative numbers, ``charge_kw`` and ``discharge_kw``;
the device's signed watts are produced only by :mod:`adapters.convention`. Safe-control rules
(as the field does it) are built in:

1. :meth:`ChargerAdapter.start` reads the unit before writing anything, then configures the
   unit's own fallback: the reversion timer (SunSpec 704 ``WSetRvrtTms``) with a 0 W reversion
   setpoint, so the unit returns to 0 W by itself if this controller falls silent.
2. The setpoint is rewritten at least every ``reversion_timeout_s / 3`` (:meth:`refresh`, and
   :meth:`set_power` when a refresh is due), well inside the timeout. The controller heartbeat
   (SunSpec 802 ``CtrlHb``) is bumped by :meth:`refresh` on its own timer, every
   :attr:`ChargerAdapter.heartbeat_interval_s`, however often setpoints are written: a unit whose
   watchdog watches ``CtrlHb`` sees it advance while the controller is healthy.
3. Every command is clamped to the lowest applicable limit: configured ratings, the ratings and
   rate limits the unit reports, the plugged vehicle's limits, the caller's limits, the SOC
   reserve and ceiling; nothing is charged or discharged unless the unit reports a vehicle
   PLUGGED (unplugged, or a plug state that is neither, e.g. SunSpec 802 ``State`` INITIALIZING,
   FAULT, an unknown code or "not implemented": :attr:`ChargerState.plug_unknown`); no discharge is
   commanded while the grid is down or the unit is grid-forming (islanded it supplies the house
   by itself), nor while the SOC is unknown or implausible (charging stays allowed within the
   power limits: the vehicle's own BMS stops it when full, and the car is never stranded).
7. Readings are checked (:mod:`adapters.plausibility`): a power beyond the configured rating with
   a margin, a SOC outside 0-100 % (or outside the map's range), a value that is not finite or a
   "not implemented" sentinel where a value is needed is a :class:`ReadingFault` in
   :attr:`ChargerState.faults`, and the bad number is not passed on (SOC None, power 0.0 as a
   placeholder).
4. Deadband (default 75 W) and a minimum interval between writes; a change to 0 W is always
   written at once.
5. The setpoint and its enable flag are written in one FC16 request and read back.
6. :meth:`ChargerAdapter.stop` writes 0 W and disables remote control.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.convention import from_device_w, to_device_w
from adapters.device import ModbusDevice
from adapters.errors import AdapterError
from adapters.link import RetryPolicy, RtuLink, TcpLink
from adapters.plausibility import SOC_RANGE_PCT, FaultKind, ReadingFault, check_into, has_fault, power_bound_kw
from adapters.protocol import ChargerCapabilities
from adapters.registers import RegisterMap, bit_names, enum_code, enum_name

log = logging.getLogger(__name__)

STATE_POINTS = (
    "soc_pct", "power_w", "plug_state", "grid_connection", "der_mode", "alarms", "inverter_state",
    "setpoint_enable", "setpoint_w", "reversion_remaining_s", "max_charge_w", "max_discharge_w",
    "vehicle_max_charge_w", "vehicle_max_discharge_w", "vehicle_capacity_wh", "vehicle_id",
    "soc_min_pct", "soc_max_pct", "capacity_wh",
)
IDENTITY_POINTS = ("manufacturer", "model_name", "serial_number", "rated_power_w", "rated_charge_w", "rated_discharge_w")
CONTROL_POINTS = ("setpoint_w", "setpoint_enable")


@dataclass(frozen=True)
class ChargerParams:
    """How to reach and drive one charger.

    ``max_charge_kw``/``max_discharge_kw`` are the configured ratings [kW];
    ``reversion_timeout_s`` the device watchdog [s] (the setpoint is refreshed every third of it);
    ``deadband_kw`` the smallest change worth a write [kW]; ``min_write_interval_s`` the least time
    between two writes that are not to 0 W [s].
    """

    name: str
    link: TcpLink | RtuLink
    max_charge_kw: float
    max_discharge_kw: float
    profile: str | RegisterMap = "sunspec"
    reversion_timeout_s: float = 60.0
    deadband_kw: float = 0.075
    min_write_interval_s: float = 1.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True)
class CallerLimits:
    """The caller's limits for one command: power caps [kW] and SOC bounds [%].

    No discharge at or below ``soc_reserve_pct``; no charge at or above ``soc_ceiling_pct``.
    """

    max_charge_kw: float = math.inf
    max_discharge_kw: float = math.inf
    soc_reserve_pct: float = 0.0
    soc_ceiling_pct: float = 100.0


@dataclass(frozen=True)
class ChargerState:
    """What the unit reports. Powers are non-negative [kW]; None = the unit does not say (or said
    something implausible: ``faults`` names each such reading; a power with a fault reads 0.0).

    ``plugged`` is True only if the unit reports a vehicle PLUGGED; ``plug_unknown`` says why the plug
    state is neither PLUGGED nor UNPLUGGED (the state's name, e.g. ``INITIALIZING``, ``not implemented``
    or ``code 7``), None when it is one of them. Either way nothing is commanded while not plugged."""

    device: str
    soc_pct: float | None
    charge_kw: float
    discharge_kw: float
    plugged: bool
    grid_connected: bool
    grid_forming: bool
    max_charge_kw: float
    max_discharge_kw: float
    vehicle_max_charge_kw: float | None
    vehicle_max_discharge_kw: float | None
    capacity_kwh: float | None
    soc_min_pct: float | None
    soc_max_pct: float | None
    vehicle_id: str | None
    alarms: tuple[str, ...]
    inverter_state: str | None
    remote_enabled: bool
    setpoint_charge_kw: float
    setpoint_discharge_kw: float
    reversion_remaining_s: float | None
    faults: tuple[ReadingFault, ...] = ()
    plug_unknown: str | None = None

    @property
    def soc_known(self) -> bool:
        """True if the SOC was read and is believable: a finite number in 0-100 % without a fault."""
        soc = self.soc_pct
        return (soc is not None and math.isfinite(soc) and SOC_RANGE_PCT[0] <= soc <= SOC_RANGE_PCT[1]
                and not has_fault(self.faults, "soc_pct"))


@dataclass(frozen=True)
class SetpointResult:
    """Outcome of :meth:`ChargerAdapter.set_power`.

    ``charge_kw``/``discharge_kw`` is what the unit holds now; ``action`` is ``written``,
    ``refreshed``, ``deadband`` or ``min-interval``; ``clamped_by`` names every limit that cut
    the request.
    """

    requested_charge_kw: float
    requested_discharge_kw: float
    charge_kw: float
    discharge_kw: float
    action: str
    clamped_by: tuple[str, ...]


def _kw(w: float | None) -> float | None:
    return None if w is None else w / 1000.0


def clamp(charge_kw: float, discharge_kw: float, params: ChargerParams, state: ChargerState,
          limits: CallerLimits) -> tuple[float, float, tuple[str, ...]]:
    """The command cut to the lowest applicable limit, and the names of the limits that cut it.

    charge  <= min(configured rating, unit limits, vehicle limit, caller limit), 0 if unplugged or
    SOC >= min(caller ceiling, unit SOC max); discharge likewise, 0 if SOC <= max(caller reserve,
    unit SOC min) or the grid is down / the unit is grid-forming. With the SOC unknown or implausible
    (:attr:`ChargerState.soc_known` False) nothing is discharged, whatever the reserve, and charging
    is allowed within the power limits (the ceiling cannot be checked; the vehicle stops when full).
    """
    if charge_kw < 0 or discharge_kw < 0 or (charge_kw > 0 and discharge_kw > 0):
        raise ValueError(f"charge_kw and discharge_kw are >= 0 and not both > 0; got {charge_kw}, {discharge_kw}")
    cuts: list[str] = []

    def cap(value: float, bounds: list[tuple[str, float | None]]) -> float:
        for label, bound in bounds:
            if bound is not None and value > bound + 1e-9:
                cuts.append(f"{label} {bound:g} kW")
                value = bound
        return max(value, 0.0)

    if not state.plugged and (charge_kw or discharge_kw):
        if state.plug_unknown:
            return 0.0, 0.0, (f"plug state {state.plug_unknown}: nothing commanded until the unit reports a vehicle plugged in",)
        return 0.0, 0.0, ("no vehicle plugged in",)
    soc, soc_known = state.soc_pct, state.soc_known
    if charge_kw:
        charge_kw = cap(charge_kw, [("configured charge rating", params.max_charge_kw),
                                    ("unit charge limit", state.max_charge_kw),
                                    ("vehicle charge limit", state.vehicle_max_charge_kw),
                                    ("caller charge limit", limits.max_charge_kw)])
        ceiling = min(limits.soc_ceiling_pct, state.soc_max_pct if state.soc_max_pct is not None else 100.0)
        if soc_known and soc >= ceiling:
            cuts.append(f"SOC {soc} % at or above ceiling {ceiling:g} %")
            charge_kw = 0.0
    if discharge_kw:
        discharge_kw = cap(discharge_kw, [("configured discharge rating", params.max_discharge_kw),
                                          ("unit discharge limit", state.max_discharge_kw),
                                          ("vehicle discharge limit", state.vehicle_max_discharge_kw),
                                          ("caller discharge limit", limits.max_discharge_kw)])
        floor = max(limits.soc_reserve_pct, state.soc_min_pct if state.soc_min_pct is not None else 0.0)
        if not soc_known:
            cuts.append("SOC unknown or implausible: no discharge")
            discharge_kw = 0.0
        elif soc <= floor:
            cuts.append(f"SOC {soc} % at or below reserve {floor:g} %")
            discharge_kw = 0.0
        if not state.grid_connected or state.grid_forming:
            cuts.append("grid down / unit islanded: no export commanded")
            discharge_kw = 0.0
    return charge_kw, discharge_kw, tuple(cuts)


class ChargerAdapter:
    """One V2H/V2B unit. Use as ``async with ChargerAdapter(params) as unit: ...``."""

    def __init__(self, params: ChargerParams, *, clock: Callable[[], float] = time.monotonic):
        self.params = params
        self.dev = ModbusDevice(params.name, params.link, params.profile, params.retry)
        self.sign = self.dev.map.sign
        self.identity: dict[str, Any] = {}
        self._clock = clock
        self._last_w: float | None = None      # last setpoint written [device W]
        self._last_write = -math.inf           # clock time of the last control write [s]
        self._enabled = False
        self._heartbeat = 0
        self._last_beat = -math.inf            # clock time of the last controller-heartbeat write [s]
        self._started = False

    @property
    def started(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop` or :meth:`disconnect`: the unit has
        been read and its reversion watchdog armed, so :meth:`set_power` and :meth:`refresh` may write."""
        return self._started

    @property
    def refresh_interval_s(self) -> float:
        """Time between setpoint refreshes: a third of the reversion timeout [s]."""
        return self.params.reversion_timeout_s / 3.0

    @property
    def heartbeat_interval_s(self) -> float:
        """Time between controller-heartbeat (``CtrlHb``) writes [s]: a third of the reversion timeout,
        counted from the last heartbeat write, not from the last setpoint write."""
        return self.params.reversion_timeout_s / 3.0

    @property
    def capabilities(self) -> ChargerCapabilities:
        """Power setpoints both ways as configured; a reversion watchdog if the unit has one (before the
        first start: if its register map has one)."""
        watchdog = self.dev.available("reversion_timeout_s") if self.dev.located else "reversion_timeout_s" in self.dev.map.points
        return ChargerCapabilities("modbus", self.params.max_charge_kw > 0, self.params.max_discharge_kw > 0,
                                   power_setpoint=True, reversion_watchdog=watchdog)

    async def __aenter__(self) -> ChargerAdapter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> ChargerState:
        """Connect, read identity and state (before any write), configure the reversion timer."""
        await self.dev.open()
        try:
            self.dev.require(CONTROL_POINTS + ("soc_pct", "power_w", "plug_state", "grid_connection"))
            self.identity = await self.dev.read(n for n in IDENTITY_POINTS if self.dev.available(n))
            if self.dev.available("controller_heartbeat"):   # go on counting from the unit's value, so it advances
                self._heartbeat = int((await self.dev.read(["controller_heartbeat"]))["controller_heartbeat"] or 0)
            state = await self.read_state()
            self._enabled = state.remote_enabled
            self._last_w = to_device_w(state.setpoint_charge_kw, state.setpoint_discharge_kw, self.sign)
            await self._configure_reversion()
        except BaseException:
            await self.dev.close()
            raise
        self._last_beat = self._clock()   # the watchdog was just armed: the first heartbeat is due a period on
        self._started = True
        return state

    async def _configure_reversion(self) -> None:
        """Set the device's own fallback: 0 W after ``reversion_timeout_s`` without a write."""
        if not self.dev.available("reversion_timeout_s"):
            log.warning("%s: the unit has no reversion timer; only this controller's exit path makes it safe",
                        self.params.name)
            return
        values: dict[str, Any] = {"reversion_timeout_s": int(round(self.params.reversion_timeout_s))}
        if self.dev.available("reversion_setpoint_w"):
            values["reversion_setpoint_w"] = 0
        if self.dev.available("reversion_enable"):
            values["reversion_enable"] = enum_code(self.dev.map.points["reversion_enable"], "ENABLED")
        await self.dev.write(values)
        self._last_write = self._clock()

    async def read_state(self) -> ChargerState:
        """Read the unit's state in as few requests as the map allows; implausible readings become
        :attr:`ChargerState.faults` (module docstring, rule 7)."""
        v, bad = await self.dev.read_checked(n for n in STATE_POINTS if self.dev.available(n))
        m = self.dev.map.points
        name = lambda point: enum_name(m[point], v.get(point)) if point in m else None  # noqa: E731
        dev = self.params.name
        bound_w = power_bound_kw(max(self.params.max_charge_kw, self.params.max_discharge_kw)) * 1000.0
        check_into(bad, dev, "power_w", v["power_w"], -bound_w, bound_w, "W")
        plug = name("plug_state")
        plugged = plug == "PLUGGED"
        plug_unknown = None if plug in ("PLUGGED", "UNPLUGGED") else plug
        if plug is None:   # the sentinel, or a code the map does not name: a reading fault, not "unplugged"
            raw = v.get("plug_state")
            plug_unknown = "not implemented" if raw is None else f"code {raw}"
            bad.setdefault("plug_state", ReadingFault(dev, "plug_state", FaultKind.UNKNOWN, None if raw is None else float(raw)))
        for point in ("soc_pct", "soc_min_pct", "soc_max_pct"):
            if v.get(point) is not None or (point == "soc_pct" and plugged):   # no car: no SOC, not a fault
                check_into(bad, dev, point, v.get(point), *SOC_RANGE_PCT, "Pct")
            if point in bad:
                v[point] = None
        ch, dis = from_device_w(0.0 if "power_w" in bad else v["power_w"], self.sign)
        sch, sdis = from_device_w(v.get("setpoint_w") or 0.0, self.sign)
        der_bits = bit_names(m["der_mode"], v.get("der_mode")) if "der_mode" in m else ()
        rated_c, rated_d = self.identity.get("rated_charge_w"), self.identity.get("rated_discharge_w")
        unit_c = min(x for x in (_kw(rated_c), _kw(v.get("max_charge_w")), math.inf) if x is not None)
        unit_d = min(x for x in (_kw(rated_d), _kw(v.get("max_discharge_w")), math.inf) if x is not None)
        return ChargerState(
            device=self.params.name, soc_pct=v["soc_pct"], charge_kw=ch, discharge_kw=dis,
            plugged=plugged, grid_connected=name("grid_connection") == "CONNECTED",
            grid_forming="GRID_FORMING" in der_bits,
            max_charge_kw=unit_c, max_discharge_kw=unit_d,
            vehicle_max_charge_kw=_kw(v.get("vehicle_max_charge_w")),
            vehicle_max_discharge_kw=_kw(v.get("vehicle_max_discharge_w")),
            capacity_kwh=_kw(v.get("vehicle_capacity_wh") or v.get("capacity_wh")),
            soc_min_pct=v.get("soc_min_pct"), soc_max_pct=v.get("soc_max_pct"),
            vehicle_id=(v.get("vehicle_id") or None), alarms=bit_names(m["alarms"], v.get("alarms")) if "alarms" in m else (),
            inverter_state=name("inverter_state"),
            remote_enabled=name("setpoint_enable") == "ENABLED", setpoint_charge_kw=sch, setpoint_discharge_kw=sdis,
            reversion_remaining_s=v.get("reversion_remaining_s"), faults=tuple(bad.values()), plug_unknown=plug_unknown,
        )

    def _refresh_due(self) -> bool:
        return self._clock() - self._last_write >= self.refresh_interval_s

    async def set_power(self, charge_kw: float = 0.0, discharge_kw: float = 0.0,
                        limits: CallerLimits = CallerLimits(), state: ChargerState | None = None) -> SetpointResult:
        """Command the unit to charge OR discharge [kW], clamped, deadbanded, written and read back.

        ``state`` may be a fresh :meth:`read_state` result (else the state is read first).
        """
        if not self.started:
            raise AdapterError(self.params.name, "", None, "set_power before start(): read the unit first")
        state = state or await self.read_state()
        ch, dis, cuts = clamp(charge_kw, discharge_kw, self.params, state, limits)
        new_w = to_device_w(ch, dis, self.sign)
        # compare with what the unit holds now (it may have reverted, or been changed by someone else)
        last_w = to_device_w(state.setpoint_charge_kw, state.setpoint_discharge_kw, self.sign) \
            if state.remote_enabled else None
        action = "written"
        if last_w is not None and not (new_w == 0 and last_w != 0):
            if abs(new_w - last_w) < self.params.deadband_kw * 1000:
                action = "deadband"
            elif self._clock() - self._last_write < self.params.min_write_interval_s:
                action = "min-interval"
            if action != "written" and self._refresh_due():
                action = "refreshed"  # the reversion timer needs a write now anyway
        if action in ("deadband", "min-interval"):
            hc, hd = from_device_w(last_w or 0.0, self.sign)
            return SetpointResult(charge_kw, discharge_kw, hc, hd, action, cuts)
        await self._write_setpoint(new_w)
        hc, hd = from_device_w(new_w, self.sign)
        return SetpointResult(charge_kw, discharge_kw, hc, hd, action, cuts)

    async def _write_setpoint(self, device_w: float, enable: bool = True) -> None:
        """Setpoint, enable flag (and SunSpec mode) in one FC16 write, read back and compared."""
        pts = self.dev.map.points
        values: dict[str, Any] = {"setpoint_w": device_w,
                                  "setpoint_enable": enum_code(pts["setpoint_enable"], "ENABLED" if enable else "DISABLED")}
        if self.dev.available("setpoint_mode"):
            values["setpoint_mode"] = enum_code(pts["setpoint_mode"], "WATTS")
        await self.dev.write(values)
        self._last_w, self._enabled, self._last_write = device_w, enable, self._clock()

    def _beat_due(self) -> bool:
        return self.dev.available("controller_heartbeat") and self._clock() - self._last_beat >= self.heartbeat_interval_s

    async def refresh(self) -> bool:
        """Rewrite the current setpoint if a refresh is due, and bump the controller heartbeat if it is due.

        The two have their own timers: setpoint writes by :meth:`set_power` put the setpoint refresh
        off, never the heartbeat. Call it at least every ``min(refresh_interval_s, heartbeat_interval_s)``;
        returns True if it wrote.
        """
        if not self.started:
            return False
        wrote = False
        if self._refresh_due():
            if self._enabled and self._last_w is not None:
                await self._write_setpoint(self._last_w)
            else:
                await self._configure_reversion()
            wrote = True
        if self._beat_due():
            self._heartbeat = (self._heartbeat + 1) & 0xFFFF
            await self.dev.write({"controller_heartbeat": self._heartbeat})
            self._last_beat = self._clock()
            wrote = True
        return wrote

    async def keep_alive(self) -> None:
        """Run :meth:`refresh` forever at the refresh interval (cancel the task to stop it).

        A failed refresh is logged and tried again at the next interval; if refreshes keep
        failing, the unit's own reversion timer takes it to 0 W.
        """
        while True:
            now = self._clock()
            wait = min(self.refresh_interval_s - (now - self._last_write), self.heartbeat_interval_s - (now - self._last_beat))
            await asyncio.sleep(max(wait, 0.0) + 1e-3)
            try:
                await self.refresh()
            except AdapterError as exc:
                retry_s = self.refresh_interval_s / 2  # still inside the timeout after one more failure
                log.warning("%s: refresh failed (%s); retrying in %.1f s", self.params.name, exc, retry_s)
                await asyncio.sleep(retry_s)

    async def enable_control(self) -> None:
        """Enable remote control holding 0 W."""
        await self._write_setpoint(0.0, enable=True)

    async def disable_control(self) -> None:
        """Write 0 W and hand control back to the unit."""
        await self._write_setpoint(0.0, enable=False)

    async def standby(self) -> None:
        """Hold 0 W now, remote control kept (:meth:`enable_control`): the device interface's standby."""
        await self.enable_control()

    async def stop(self) -> None:
        """Clean exit: 0 W, remote control disabled, connection closed (errors re-raised after closing)."""
        try:
            if self.started:
                await self.disable_control()
        finally:
            self._started = False
            await self.dev.close()

    async def disconnect(self) -> None:
        """Close the connection without writing anything (after a failed read or write, or at exit when
        the unit was never started). The unit keeps its last setpoint until its own reversion watchdog
        takes it to 0 W; the next :meth:`start` reads the unit first and arms the watchdog again."""
        self._started = False
        await self.dev.close()
