"""The V2H unit over ECHONET Lite: class 0x027E "electric vehicle charger/discharger".

EPCs (ECHONET Device Objects Detailed Specifications, Appendix Release R; checked against pychonet
2.8.2's tables, see the README for where they differ):

=====  ==========================================================  =====================
EPC    property                                                    data
=====  ==========================================================  =====================
0x80   operation status                                            0x30 on, 0x31 off
0x88   fault status                                                0x41 fault, 0x42 none
0xC0   dischargeable capacity of vehicle mounted battery 1         unsigned 4 B, Wh
0xC5   rated charge capacity / 0xC6 rated discharge capacity       unsigned 4 B, W
0xC7   vehicle connection and chargeable/dischargeable status      0x30 not connected, 0x40 connected,
                                                                   0x41 chargeable, 0x42 dischargeable,
                                                                   0x43 both, 0xFF undefined
0xC8   minimum/maximum charging power / 0xC9 discharging power     2 x unsigned 4 B, W
0xD3   measured instantaneous charging/discharging power           signed 4 B, W, + = charging
0xD6   measured cumulative discharging energy / 0xD8 charging      unsigned 4 B, 0.001 kWh
0xDA   operation mode setting                                      0x42 charge, 0x43 discharge,
                                                                   0x44 standby (0x41 rapid charge,
                                                                   0x45 test, 0x47 idle, 0x40 other)
0xDB   system interconnected type                                  0x00 grid (reverse flow), 0x01
                                                                   independent, 0x02 grid (no reverse)
0xE2   remaining stored electricity 1 / 0xE4 ... 3                 unsigned 4 B Wh / 1 B %
0xEB   charging power setting / 0xEC discharging power setting     unsigned 4 B, W
=====  ==========================================================  =====================

Start-up (:meth:`EchonetChargerAdapter.start`) reads the property maps (0x9D/0x9E/0x9F) before
anything else: a unit that lacks what control needs (0x80/0xC7/0xD3/0xDA and a SOC in Get; 0xDA in
Set; 0xEB in Set when the unit is configured to charge, 0xEC when it is configured to discharge) is
a :class:`~adapters.errors.CapabilityError` naming each missing EPC, and the adapter drives nothing:
a unit without a power setting only charges or discharges at its own rate, and running it at full
power when the plan asked for a fraction would set the very demand peaks this product shaves.
(A charge-only unit is configured with ``max_discharge_kw: 0``, and then needs no 0xEC.)

A command is a mode and a power: charge -> 0xEB then 0xDA = 0x42 in ONE SetC (the power first, so
the unit never runs the new mode at an old power), discharge -> 0xEC then 0xDA = 0x43, 0 W ->
0xDA = 0x44 standby; the properties written are read back (Get) and compared. ECHONET Lite has no
watchdog: a unit keeps its last mode when its controller dies (charging until the car is full,
discharging down to the car's or the unit's floor). So 0 W is always standby (never a mode held at
0 W), :meth:`~EchonetChargerAdapter.stop` and :meth:`~EchonetChargerAdapter.standby` put the unit
in standby, and the daemon does so when a lost link comes back.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from adapters.charger import CallerLimits, ChargerState, SetpointResult, clamp
from adapters.convention import from_device_w
from adapters.echonet.client import EchonetLink, EchonetObject, PropertyMaps, missing_abilities
from adapters.echonet.frame import Frame, signed, u8, u32, unsigned
from adapters.errors import AdapterError, CapabilityError
from adapters.link import RetryPolicy
from adapters.plausibility import SOC_RANGE_PCT, ReadingFault, check_into, power_bound_kw
from adapters.protocol import NO_REFRESH_S, ChargerCapabilities

log = logging.getLogger(__name__)

CLASS_CODE = 0x027E
ON, OFF = 0x30, 0x31
FAULT = 0x41
NOT_CONNECTED, UNDEFINED = 0x30, 0xFF
INDEPENDENT = 0x01
ENERGY_KWH_PER_COUNT = 0.001   # 0xD6 / 0xD8


class Mode(IntEnum):
    """0xDA operation mode setting."""

    OTHER = 0x40
    RAPID_CHARGE = 0x41
    CHARGE = 0x42
    DISCHARGE = 0x43
    STANDBY = 0x44
    TEST = 0x45
    IDLE = 0x47


class Epc(IntEnum):
    """The 0x027E properties this adapter uses (see the module docstring)."""

    OPERATION_STATUS = 0x80
    FAULT_STATUS = 0x88
    MANUFACTURER = 0x8A
    USABLE_CAPACITY_WH = 0xC0
    RATED_CHARGE_W = 0xC5
    RATED_DISCHARGE_W = 0xC6
    VEHICLE_STATUS = 0xC7
    CHARGE_LIMITS_W = 0xC8
    DISCHARGE_LIMITS_W = 0xC9
    POWER_W = 0xD3
    DISCHARGED = 0xD6
    CHARGED = 0xD8
    MODE = 0xDA
    INTERCONNECTION = 0xDB
    REMAINING_WH = 0xE2
    REMAINING_PCT = 0xE4
    CHARGE_POWER_W = 0xEB
    DISCHARGE_POWER_W = 0xEC


NAMES = {e.value: e.name.lower().replace("_", " ") for e in Epc}
STATE_EPCS = (Epc.OPERATION_STATUS, Epc.FAULT_STATUS, Epc.USABLE_CAPACITY_WH, Epc.VEHICLE_STATUS, Epc.CHARGE_LIMITS_W,
              Epc.DISCHARGE_LIMITS_W, Epc.POWER_W, Epc.DISCHARGED, Epc.CHARGED, Epc.MODE, Epc.INTERCONNECTION,
              Epc.REMAINING_WH, Epc.REMAINING_PCT, Epc.CHARGE_POWER_W, Epc.DISCHARGE_POWER_W)
#: what the unit announces on change that this adapter logs
WATCHED = (Epc.OPERATION_STATUS, Epc.MODE, Epc.VEHICLE_STATUS)


@dataclass(frozen=True)
class EchonetChargerParams:
    """How to reach and drive one 0x027E unit.

    ``max_charge_kw``/``max_discharge_kw``: the configured ratings [kW] (0 discharge: a charge-only
    unit); ``deadband_kw``: the smallest change of power worth a write [kW]; ``min_write_interval_s``:
    the least time between two writes that are not to standby [s].
    """

    name: str
    link: EchonetLink
    max_charge_kw: float
    max_discharge_kw: float
    deadband_kw: float = 0.075
    min_write_interval_s: float = 1.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def _kw(w: float | None) -> float | None:
    return None if w is None else w / 1000.0


def _limits_w(edt: bytes | None) -> tuple[int, int] | None:
    """0xC8/0xC9: (minimum, maximum) [W], or None."""
    return None if edt is None or len(edt) != 8 else (unsigned(edt[:4]), unsigned(edt[4:]))


class EchonetChargerAdapter:
    """One 0x027E unit (see the module docstring); satisfies :class:`~adapters.protocol.ChargerDevice`."""

    def __init__(self, params: EchonetChargerParams, *, clock: Callable[[], float] = time.monotonic):
        self.params = params
        self.obj = EchonetObject(params.name, params.link, CLASS_CODE, NAMES, params.retry)
        self.maps: PropertyMaps | None = None
        self.identity: dict[str, Any] = {}
        #: the unit's cumulative AC energy counters (0xD8 charged, 0xD6 discharged) at the last read [kWh]
        self.energy_kwh: dict[str, float] = {}
        #: the last announced value of each watched EPC (INF from the unit)
        self.announced: dict[int, bytes] = {}
        self._min_w: dict[Mode, int] = {}
        self._clock = clock
        self._last_write = -math.inf
        self._started = False

    # ----------------------------------------------------------------- the device interface
    @property
    def started(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop` or :meth:`disconnect`."""
        return self._started

    @property
    def refresh_interval_s(self) -> float:
        """Infinite: an ECHONET Lite unit has no watchdog to feed [s]."""
        return NO_REFRESH_S

    @property
    def capabilities(self) -> ChargerCapabilities:
        """Charge/discharge as configured, power setpoints (required at start), no watchdog."""
        return ChargerCapabilities("echonet_lite", self.params.max_charge_kw > 0, self.params.max_discharge_kw > 0,
                                   power_setpoint=True, reversion_watchdog=False)

    async def __aenter__(self) -> EchonetChargerAdapter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> ChargerState:
        """Open, read the property maps (CapabilityError if the unit lacks what control needs),
        identity and state; nothing is written."""
        await self.obj.open()
        try:
            self.maps = await self.obj.property_maps()
            self._require(self.maps)
            ident = await self.obj.get(e for e in (Epc.MANUFACTURER, Epc.RATED_CHARGE_W, Epc.RATED_DISCHARGE_W)
                                       if e in self.maps.get)
            self.identity = {"manufacturer_code": ident[Epc.MANUFACTURER].hex() if Epc.MANUFACTURER in ident else None,
                             "rated_charge_w": unsigned(ident[Epc.RATED_CHARGE_W]) if Epc.RATED_CHARGE_W in ident else None,
                             "rated_discharge_w": unsigned(ident[Epc.RATED_DISCHARGE_W])
                             if Epc.RATED_DISCHARGE_W in ident else None}
            state = await self.read_state()
            self.obj.listen(self._announcement)
        except BaseException:
            await self.obj.close()
            raise
        self._started = True
        return state

    def _require(self, maps: PropertyMaps) -> None:
        """CapabilityError naming every EPC control needs and the unit's maps lack."""
        p = self.params
        setting = [Epc.MODE] + ([Epc.CHARGE_POWER_W] if p.max_charge_kw > 0 else []) + \
                  ([Epc.DISCHARGE_POWER_W] if p.max_discharge_kw > 0 else [])
        get = [Epc.OPERATION_STATUS, Epc.VEHICLE_STATUS, Epc.POWER_W, *setting]
        missing = missing_abilities(maps, get, setting, NAMES)
        if Epc.REMAINING_PCT not in maps.get and not {Epc.REMAINING_WH, Epc.USABLE_CAPACITY_WH} <= maps.get:
            missing.append("give its SOC: 0xE4 remaining stored electricity 3 (%), or 0xE2 with 0xC0, in Get")
        if missing:
            raise CapabilityError(p.name, missing, "Without them the unit cannot be held to a power setpoint (it would "
                                  "charge or discharge at its own rate, or not at all), so this adapter does not drive it: "
                                  "nothing was written; configure max_discharge_kw: 0 for a charge-only unit")

    def _announcement(self, frame: Frame, addr: tuple[str, int]) -> None:
        """An INF from the node: remember (and log) changes of operation status, mode and vehicle status."""
        if frame.seoj != self.obj.eoj:
            return
        for p in frame.props:
            if p.epc in WATCHED and self.announced.get(p.epc) != p.edt:
                self.announced[p.epc] = p.edt
                log.info("%s: announced 0x%02X %s = %s", self.params.name, p.epc, NAMES[p.epc], p.edt.hex())

    async def read_state(self) -> ChargerState:
        """The unit's state in as few Gets as ``max_properties`` allows; implausible power or SOC
        readings become :attr:`ChargerState.faults` (not numbers)."""
        assert self.maps is not None, "read_state before start()"
        v = await self.obj.get(e for e in STATE_EPCS if e in self.maps.get)
        name, bad = self.params.name, {}
        status, conn = v[Epc.OPERATION_STATUS][0], v[Epc.VEHICLE_STATUS][0]
        mode = v[Epc.MODE][0]
        plugged = conn not in (NOT_CONNECTED, UNDEFINED) and conn & 0xF0 == 0x40
        bound_w = power_bound_kw(max(self.params.max_charge_kw, self.params.max_discharge_kw)) * 1000.0
        power_w = signed(v[Epc.POWER_W])
        check_into(bad, name, "power_w", power_w, -bound_w, bound_w, "W")
        ch, dis = from_device_w(0.0 if "power_w" in bad else power_w, "charge_positive")
        soc = self._soc(v, plugged, bad)
        c_lim, d_lim = _limits_w(v.get(Epc.CHARGE_LIMITS_W)), _limits_w(v.get(Epc.DISCHARGE_LIMITS_W))
        self._min_w = {Mode.CHARGE: c_lim[0] if c_lim else 0, Mode.DISCHARGE: d_lim[0] if d_lim else 0}
        veh_c = 0.0 if conn in (0x40, 0x42) else _kw(c_lim[1]) if c_lim else None   # connected, not chargeable: 0
        veh_d = 0.0 if conn in (0x40, 0x41) else _kw(d_lim[1]) if d_lim else None
        self.energy_kwh = {k: unsigned(v[e]) * ENERGY_KWH_PER_COUNT for k, e in (("charged", Epc.CHARGED),
                                                                                 ("discharged", Epc.DISCHARGED)) if e in v}
        islanded = v.get(Epc.INTERCONNECTION, b"\x00")[0] == INDEPENDENT
        on = status == ON
        setting = (lambda e: unsigned(v[e]) / 1000.0 if e in v else 0.0)  # noqa: E731
        cap = v.get(Epc.USABLE_CAPACITY_WH)
        return ChargerState(
            device=name, soc_pct=soc, charge_kw=ch, discharge_kw=dis, plugged=plugged,
            grid_connected=not islanded, grid_forming=islanded,
            max_charge_kw=_kw(self.identity.get("rated_charge_w")) or math.inf,
            max_discharge_kw=_kw(self.identity.get("rated_discharge_w")) or math.inf,
            vehicle_max_charge_kw=veh_c, vehicle_max_discharge_kw=veh_d,
            capacity_kwh=unsigned(cap) / 1000.0 if cap and plugged and unsigned(cap) > 0 else None,
            soc_min_pct=None, soc_max_pct=None, vehicle_id=None,
            alarms=("FAULT",) if v.get(Epc.FAULT_STATUS, b"\x42")[0] == FAULT else (),
            inverter_state=(Mode(mode).name if mode in Mode._value2member_map_ else f"0x{mode:02X}") if on else "OFF",
            remote_enabled=on and mode in (Mode.CHARGE, Mode.DISCHARGE),
            setpoint_charge_kw=setting(Epc.CHARGE_POWER_W) if on and mode == Mode.CHARGE else 0.0,
            setpoint_discharge_kw=setting(Epc.DISCHARGE_POWER_W) if on and mode == Mode.DISCHARGE else 0.0,
            reversion_remaining_s=None, faults=tuple(bad.values()))

    def _soc(self, v: dict[int, bytes], plugged: bool, bad: dict[str, ReadingFault]) -> float | None:
        """SOC [%]: 0xE4 (whole %), refined by 0xE2 / 0xC0 (Wh) when that agrees with it within 1 %;
        None without a car; out of 0-100 %: a fault and None."""
        if not plugged:
            return None
        pct: float | None = float(v[Epc.REMAINING_PCT][0]) if Epc.REMAINING_PCT in v else None
        wh, cap = v.get(Epc.REMAINING_WH), v.get(Epc.USABLE_CAPACITY_WH)
        if wh is not None and cap is not None and unsigned(cap) > 0:
            fine = 100.0 * unsigned(wh) / unsigned(cap)
            if pct is None or abs(fine - pct) <= 1.0:
                pct = fine
        check_into(bad, self.params.name, "soc_pct", pct, *SOC_RANGE_PCT, "Pct")
        return None if "soc_pct" in bad else pct

    async def set_power(self, charge_kw: float = 0.0, discharge_kw: float = 0.0,
                        limits: CallerLimits = CallerLimits(), state: ChargerState | None = None) -> SetpointResult:
        """Command charge OR discharge [kW]: clamped (:func:`~adapters.charger.clamp`), turned into a mode and
        a power, deadbanded, written in one SetC and read back. ``state``: a fresh :meth:`read_state`."""
        if not self.started:
            raise AdapterError(self.params.name, "", None, "set_power before start(): read the unit first")
        state = state or await self.read_state()
        ch, dis, cuts = clamp(charge_kw, discharge_kw, self.params, state, limits)  # type: ignore[arg-type]
        mode, watts = (Mode.CHARGE, round(ch * 1000)) if ch > 0 else (Mode.DISCHARGE, round(dis * 1000)) if dis > 0 \
            else (Mode.STANDBY, 0)
        if mode != Mode.STANDBY and watts < max(self._min_w.get(mode, 0), 1):
            cuts += (f"{watts} W below the unit's minimum {mode.name.lower()} power {self._min_w.get(mode, 0)} W: standby",)
            mode, watts = Mode.STANDBY, 0
        held_mode, held_w = self._held(state)
        action = "written"
        if mode == held_mode and abs(watts - held_w) < self.params.deadband_kw * 1000:
            action = "deadband"
        elif mode != Mode.STANDBY and self._clock() - self._last_write < self.params.min_write_interval_s:
            action = "min-interval"
        if action == "written":
            await self._write(mode, watts, state)
        else:
            mode, watts = (held_mode or Mode.STANDBY), held_w
        return SetpointResult(charge_kw, discharge_kw, watts / 1000.0 if mode == Mode.CHARGE else 0.0,
                              watts / 1000.0 if mode == Mode.DISCHARGE else 0.0, action, cuts)

    @staticmethod
    def _held(state: ChargerState) -> tuple[Mode | None, int]:
        """The mode and power [W] the unit holds (None: off, or a mode this adapter never sets)."""
        held = Mode.__members__.get(state.inverter_state or "")
        if held == Mode.CHARGE:
            return held, round(state.setpoint_charge_kw * 1000)
        if held == Mode.DISCHARGE:
            return held, round(state.setpoint_discharge_kw * 1000)
        return (held if held == Mode.STANDBY else None), 0

    async def _write(self, mode: Mode, watts: int, state: ChargerState | None) -> None:
        """Power setting (if any), then the mode, in one SetC; switched on first if the unit is off."""
        assert self.maps is not None
        values: dict[int, bytes] = {}
        if state is not None and state.inverter_state == "OFF" and mode != Mode.STANDBY:
            if Epc.OPERATION_STATUS not in self.maps.set:
                raise AdapterError(self.params.name, "0x80 operation status", "off", "the unit is switched off and does "
                                   "not take 0x80 in SetC: switch it on at the unit")
            values[Epc.OPERATION_STATUS] = u8(ON)
        if mode == Mode.CHARGE:
            values[Epc.CHARGE_POWER_W] = u32(watts)
        elif mode == Mode.DISCHARGE:
            values[Epc.DISCHARGE_POWER_W] = u32(watts)
        values[Epc.MODE] = u8(mode)
        await self.obj.set(values, shown=f"{mode.name.lower()} {watts} W")
        self._last_write = self._clock()

    async def refresh(self) -> bool:
        """Nothing to refresh (no watchdog in ECHONET Lite); always False."""
        return False

    async def standby(self) -> None:
        """Operation mode standby (0xDA = 0x44), read back."""
        await self._write(Mode.STANDBY, 0, None)

    async def stop(self) -> None:
        """Clean exit: standby, then close (errors re-raised after closing)."""
        try:
            if self.started:
                await self.standby()
        finally:
            await self.disconnect()

    async def disconnect(self) -> None:
        """Close without writing: the unit keeps its last mode (it has no watchdog; see the module docstring)."""
        self._started = False
        self.obj.unlisten(self._announcement)
        await self.obj.close()


__all__ = ["CLASS_CODE", "EchonetChargerAdapter", "EchonetChargerParams", "Epc", "Mode"]
