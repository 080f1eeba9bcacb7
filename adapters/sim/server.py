"""The simulated site as a real Modbus TCP server (pymodbus 3.16 ``SimDevice`` with an action).

Each V2H unit is one unit id presenting its register map (SunSpec: "SunS" at 40000, then the
standard models 1, 701, 702, 704, 713, 802 and the end marker; the plug state is 802 ``State``,
CONNECTED with a vehicle and DISCONNECTED without); the site meter is another unit id.
Register images are built from the same YAML maps the adapters read, and every value is encoded
by :mod:`adapters.registers`.

pymodbus calls :meth:`Simulator._action` before it answers any request: the physics is advanced
to now, a write is checked (exception 02 for read-only or partly written points, 03 for a value
out of range, e.g. a setpoint beyond the unit's rating) and applied, then the registers are
re-rendered from the model. (Subclassing ``ModbusSequentialDataBlock.setValues`` does not work in
pymodbus 3.16: it is never called.)

Faults for tests and demos: :meth:`Simulator.set_fault` (reject writes with exception 04, freeze
the registers, delay answers past a client's timeout, present garbage: a point's value replaced by
any number in its unit, e.g. a meter reading 327.67 kW, +inf or a SOC of 500 %, or its registers
by raw words, e.g. the sentinel 0x8000), :meth:`Simulator.drop_connections`,
:meth:`Simulator.restart`, :meth:`Simulator.set_grid` (outage), :meth:`Simulator.set_alarm`.

The meter's energy counters start at :data:`METER_COUNTER_START_KWH`, as a meter in service does
(a SunSpec accumulator at 0 means "not implemented").

Use in-process as ``async with Simulator(site) as sim:`` (port 0 picks a free port:
``sim.port``), or from synchronous code and other event loops with :class:`SimulatorThread`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from adapters.convention import from_device_w, soc_kwh, to_device_w
from adapters.registers import (Located, Point, RegisterMap, decode, encode, encode_raw, enum_code, enum_name,
                                load_profile, locate)
from adapters.sim.model import ManualClock, SiteModel, SimSiteParams, UnitModel, WallClock

log = logging.getLogger(__name__)

SUNSPEC_BASE = 40000
METER = "meter"
#: The simulated meter's energy counters [kWh] at start: a meter that has been counting for a while.
METER_COUNTER_START_KWH = 1000.0
WRITE_CODES = (5, 6, 15, 16, 22, 23)


def _enum(points: Mapping[str, Point], point: str, name: str) -> int | None:
    """Raw value of enum entry ``name`` of ``point`` (None if the map has no such point)."""
    return enum_code(points[point], name) if point in points else None


def _bit(p: Point | None, name: str) -> int:
    """Mask of bit ``name`` in a bitfield point (0 if absent)."""
    if p is None:
        return 0
    return next((1 << k for k, v in (p.bits or {}).items() if v == name), 0)


async def _absent_device(*_args: Any) -> ExcCodes:
    """The action of the catch-all device 0: no such unit behind this gateway."""
    return ExcCodes.GATEWAY_NO_RESPONSE


@dataclass
class Faults:
    """Injected faults of one device: reject writes (exception 04), freeze registers, delay answers [s],
    and garbage readings: ``values`` (point -> the value presented, in the point's unit, whatever the
    model says) and ``raw`` (point -> the registers presented, e.g. ``(0x8000,)``)."""

    reject_writes: bool = False
    freeze: bool = False
    delay_s: float = 0.0
    values: dict[str, float] = field(default_factory=dict)
    raw: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass
class _Image:
    """The register image of one device: its map, located points, and register -> point index."""

    name: str
    unit_id: int
    rmap: RegisterMap
    located: dict[str, Located]
    blocks: list[SimData]
    by_register: dict[int, Located] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for loc in self.located.values():
            for a in range(loc.address, loc.address + loc.point.size):
                self.by_register[a] = loc

    def sf(self, p: Point) -> int | None:
        """The scale factor this simulator presents for ``p`` (None if it has none)."""
        return None if p.sf is None else self.rmap.points[p.sf].simulated


def build_image(name: str, unit_id: int, rmap: RegisterMap) -> _Image:
    """Registers of a device presenting ``rmap``: the SunSpec chain and/or the absolute blocks."""
    blocks: list[SimData] = []
    model_addr: dict[int, int] = {}
    chain_end = SUNSPEC_BASE
    if rmap.kind == "sunspec":
        present = [m for m in rmap.models if any(p.model and p.model[0] == m for p in rmap.points.values())]
        regs = [0x5375, 0x6E53]
        for m in present:
            model_addr[m] = SUNSPEC_BASE + len(regs)
            regs += [m, rmap.models[m]] + [0] * rmap.models[m]
        regs += [0xFFFF, 0]
        chain_end = SUNSPEC_BASE + len(regs)
        blocks.append(SimData(SUNSPEC_BASE, values=regs, datatype=DataType.REGISTERS))
    located = locate(rmap, model_addr)
    absolute = [lc for lc in located.values() if lc.point.address is not None]
    if absolute:
        lo = min(lc.address for lc in absolute)
        hi = max(lc.address + lc.point.size for lc in absolute)
        if rmap.kind == "sunspec" and lo < chain_end and hi > SUNSPEC_BASE:
            raise ValueError(f"{rmap.source}: absolute points {lo}..{hi - 1} overlap the SunSpec chain")
        blocks.append(SimData(lo, values=[0] * (hi - lo), datatype=DataType.REGISTERS))
    return _Image(name, unit_id, rmap, located, blocks)


@dataclass(frozen=True)
class UnitSnapshot:
    """One unit as the simulator sees it. Powers [kW] (+ = discharge for ``output_kw``)."""

    name: str
    unit_id: int
    vehicle: str | None
    soc_pct: float | None
    output_kw: float
    charge_kw: float
    discharge_kw: float
    setpoint_kw: float
    remote_enabled: bool
    reverted: bool
    reversion_timeout_s: float


@dataclass(frozen=True)
class SiteSnapshot:
    """The simulated site at one instant: time, units, meter [kW, + = import], energies [kWh]."""

    time: dt.datetime
    grid_up: bool
    units: tuple[UnitSnapshot, ...]
    meter_kw: float
    import_kwh: float
    export_kwh: float
    unserved_kw: float
    load_kw: float
    pv_kw: float

    def unit(self, name: str) -> UnitSnapshot:
        """The snapshot of unit ``name``."""
        return next(u for u in self.units if u.name == name)


class Simulator:
    """The simulated site served over Modbus TCP. See the module docstring."""

    def __init__(self, site: SimSiteParams, *, host: str = "127.0.0.1", port: int = 0,
                 clock: Callable[[], float] | None = None, serial_port: str | None = None,
                 baudrate: int = 19200, parity: str = "E"):
        self.site = site
        self.host = host
        self._requested_port = port
        self.serial = (serial_port, baudrate, parity) if serial_port else None
        self.port: int | None = None
        self.clock = clock or WallClock()
        start = site.start or dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        self.model = SiteModel(site, start=start, w=self.clock())
        self._lock = threading.Lock()
        self.images: dict[str, _Image] = {}
        for up in site.units:
            rmap = up.profile if isinstance(up.profile, RegisterMap) else load_profile(up.profile)
            self.images[up.name] = build_image(up.name, up.unit_id, rmap)
        mmap = site.meter_profile if isinstance(site.meter_profile, RegisterMap) else load_profile(site.meter_profile)
        self.images[METER] = build_image(METER, site.meter_unit_id, mmap)
        self.faults = {name: Faults() for name in self.images}
        #: the last write requests served: (device, function code, address, register count)
        self.writes: deque[tuple[str, int, int, int]] = deque(maxlen=256)
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> int:
        """Listen on host:port (port 0: a free one) and return the port; or serve RTU on ``serial_port``
        (returns 0)."""
        devices = [SimDevice(id=img.unit_id, simdata=list(img.blocks), action=functools.partial(self._action, name))
                   for name, img in self.images.items()]
        # pymodbus serves unknown unit ids from device 0: answer them as a gateway does for an
        # absent device (exception 0B) instead of failing inside pymodbus (exception 04 + traceback)
        devices.append(SimDevice(id=0, simdata=[SimData(0, count=0x10000, values=0, datatype=DataType.REGISTERS)],
                                 action=_absent_device))
        if self.serial is not None:  # Modbus RTU on a serial line (or one end of a pty pair)
            device, baudrate, parity = self.serial
            self._server = ModbusSerialServer(devices, framer=FramerType.RTU, port=device, baudrate=baudrate,
                                              parity=parity, bytesize=8, stopbits=1)
            await self._server.serve_forever(background=True)
            log.info("simulator serving Modbus RTU on %s, units %s", device, self.unit_ids())
            return 0
        port = self.port if self.port is not None else self._requested_port
        self._server = ModbusTcpServer(devices, address=(self.host, port))
        await self._server.serve_forever(background=True)
        self.port = self._server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        log.info("simulator listening on %s:%d, units %s", self.host, self.port, self.unit_ids())
        return self.port

    async def stop(self) -> None:
        """Stop listening and close every client connection."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()

    async def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down ``down_s`` seconds, start again on the same port (the model keeps running)."""
        await self.stop()
        await asyncio.sleep(down_s)
        await self.start()

    def drop_connections(self) -> int:
        """Close every client connection (the listener stays); returns how many were closed."""
        if self._server is None:
            return 0
        conns = list(self._server.active_connections.values())
        for c in conns:
            c.close()
        return len(conns)

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ API
    def unit_ids(self) -> dict[str, int]:
        """Device name -> Modbus unit id (the meter is ``"meter"``)."""
        return {name: img.unit_id for name, img in self.images.items()}

    def _now(self) -> None:
        self.model.advance(self.clock())

    def snapshot(self) -> SiteSnapshot:
        """The site now (advances the physics first)."""
        with self._lock:
            self._now()
            m = self.model
            units = tuple(UnitSnapshot(u.p.name, u.p.unit_id, u.stay.vehicle if u.stay else None, m.soc_pct(u),
                                       u.output_kw, max(-u.output_kw, 0.0), max(u.output_kw, 0.0), u.setpoint_kw,
                                       u.remote_enabled, u.reverted, u.rvrt_timeout_s) for u in m.units)
            load, pv = m.load_pv_kw(m.now)
            return SiteSnapshot(m.now, m.grid_up, units, m.meter_kw, m.import_kwh, m.export_kwh, m.unserved_kw, load, pv)

    def set_grid(self, up: bool) -> None:
        """Inject (up=False) or clear a grid outage."""
        with self._lock:
            self._now()
            self.model.grid_up = up
            self.model.meter_kw = self.model._net_kw([u.output_kw for u in self.model.units])

    def set_fault(self, device: str, *, reject_writes: bool | None = None, freeze: bool | None = None,
                  delay_s: float | None = None, values: Mapping[str, float] | None = None,
                  raw: Mapping[str, tuple[int, ...]] | None = None) -> None:
        """Set faults of ``device`` (a unit name or ``"meter"``); None leaves a fault as it is.

        ``values`` presents each named point as that value in its unit (encoded through the map:
        ``{"power_w": 327670.0}``, ``{"soc_pct": 500.0}``, ``{"power_w": math.inf}`` on a float32 map),
        ``raw`` as those registers (``{"power_w": (0x8000,)}``); each replaces the previous table ({} clears
        it). ValueError if a point is not the device's or a value cannot be encoded."""
        f = self.faults[device]
        img = self.images[device]
        for name, value in (values or {}).items():
            p = self._point(img, name).point
            encode(p, value, img.sf(p))  # ValueError now, not a silent "not implemented" at every read
        for name, regs in (raw or {}).items():
            size = self._point(img, name).point.size
            if len(regs) != size or not all(isinstance(r, int) and 0 <= r <= 0xFFFF for r in regs):
                raise ValueError(f"{name} of {device} is {size} register(s) of 0..0xFFFF; got {list(regs)}")
        with self._lock:
            if values is not None:
                f.values = dict(values)
            if raw is not None:
                f.raw = {k: tuple(v) for k, v in raw.items()}
            if reject_writes is not None:
                f.reject_writes = reject_writes
            if freeze is not None:
                f.freeze = freeze
            if delay_s is not None:
                f.delay_s = delay_s

    @staticmethod
    def _point(img: _Image, name: str) -> Located:
        """The located point ``name`` of a device; ValueError naming the device's points if it has none."""
        if name not in img.located:
            raise ValueError(f"{img.name} has no point {name!r}; it has {sorted(img.located)}")
        return img.located[name]

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._lock:
            for name in self.faults:
                self.faults[name] = Faults()

    def set_alarm(self, unit: str, alarm: str, on: bool = True) -> None:
        """Raise or clear a named alarm bit of a unit (e.g. ``OVER_TEMP``)."""
        bit = _bit(self.images[unit].rmap.points.get("alarms"), alarm)
        if not bit:
            raise KeyError(f"alarm {alarm!r} is not a bit of {unit}'s alarms point")
        with self._lock:
            u = self.model.unit(unit)
            u.alarm_bits = (u.alarm_bits | bit) if on else (u.alarm_bits & ~bit)

    def set_soc(self, vehicle: str, soc_pct: float) -> None:
        """Set a vehicle's SOC [%] (tests: start from a known state)."""
        with self._lock:
            self._now()
            v = self.model.vehicles[vehicle]
            self.model.energy_kwh[vehicle] = soc_kwh(soc_pct, v.capacity_kwh)

    # ------------------------------------------------------------------ Modbus
    async def _action(self, device: str, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        """Called by pymodbus before it answers: advance, apply a write, render the registers."""
        f = self.faults[device]
        if f.delay_s:
            await asyncio.sleep(f.delay_s)
        with self._lock:
            self._now()
            if set_values is not None and function_code in WRITE_CODES:
                self.writes.append((device, function_code, address, len(set_values)))
                if f.reject_writes:
                    return ExcCodes.DEVICE_FAILURE
                code = self._apply_write(device, address, [int(v) for v in set_values])
                if code is not None:
                    return code
            if not f.freeze:
                self._render(device, registers, start_address)
        return None

    def _apply_write(self, device: str, address: int, values: list[int]) -> ExcCodes | None:
        """Check a write against the map and the unit's ratings, then apply it (all or nothing)."""
        img = self.images[device]
        decoded: dict[str, Any] = {}
        i = 0
        while i < len(values):
            loc = img.by_register.get(address + i)
            if loc is None or loc.address != address + i or loc.address + loc.point.size > address + len(values) \
                    or not loc.point.writable:
                return ExcCodes.ILLEGAL_ADDRESS
            p = loc.point
            v = decode(p, values[i:i + p.size], img.sf(p))
            if v is None or (p.enum and v not in p.enum) or (p.range and not p.range[0] <= v <= p.range[1]):
                return ExcCodes.ILLEGAL_VALUE
            decoded[p.name] = v
            i += p.size
        if device == METER:
            return ExcCodes.ILLEGAL_ADDRESS
        u = self.model.unit(device)
        sign = img.rmap.sign
        for name in ("setpoint_w", "reversion_setpoint_w"):
            if name in decoded:
                ch, dis = from_device_w(decoded[name], sign)
                if ch > u.p.max_charge_kw + 1e-9 or dis > u.p.max_discharge_kw + 1e-9:
                    return ExcCodes.ILLEGAL_VALUE
        mode = img.rmap.points.get("setpoint_mode")
        if mode is not None and "setpoint_mode" in decoded and decoded["setpoint_mode"] != enum_code(mode, "WATTS"):
            return ExcCodes.ILLEGAL_VALUE  # only setpoints in watts are simulated
        self._apply_unit(u, decoded, img.rmap)
        return None

    def _apply_unit(self, u: UnitModel, values: dict[str, Any], rmap: RegisterMap) -> None:
        """Apply checked control values to a unit; control points restart its watchdog."""
        w, sign, pts = self.model.w, rmap.sign, rmap.points
        if "setpoint_w" in values:
            ch, dis = from_device_w(values["setpoint_w"], sign)
            u.setpoint_kw = dis - ch
        if "reversion_setpoint_w" in values:
            ch, dis = from_device_w(values["reversion_setpoint_w"], sign)
            u.rvrt_setpoint_kw = dis - ch
        if "setpoint_enable" in values:
            u.remote_enabled = enum_name(pts["setpoint_enable"], values["setpoint_enable"]) == "ENABLED"
        if "reversion_enable" in values:
            u.rvrt_enable = enum_name(pts["reversion_enable"], values["reversion_enable"]) == "ENABLED"
        if "reversion_timeout_s" in values:
            u.rvrt_timeout_s = float(values["reversion_timeout_s"])
        if "controller_heartbeat" in values:
            u.controller_hb = int(values["controller_heartbeat"])
        if values.keys() & {"setpoint_w", "setpoint_enable", "reversion_timeout_s", "controller_heartbeat"}:
            u.touch(w)

    def _render(self, device: str, registers: list[int], start: int) -> None:
        """Write the model's current values into the device's registers."""
        img, fault = self.images[device], self.faults[device]
        values = self._meter_values(img) if device == METER else self._unit_values(img, self.model.unit(device))
        values |= fault.values
        for name, loc in img.located.items():
            p = loc.point
            value = values.get(name, p.simulated)
            regs = list(fault.raw[name]) if name in fault.raw else None
            if regs is None and value is not None:
                try:
                    regs = encode(p, value, img.sf(p))
                except ValueError:
                    regs = None  # cannot be shown (e.g. no scale factor): present as not implemented
            if regs is None:
                regs = (encode_raw(p, math.nan) if p.type == "float32" else
                        encode_raw(p, p.not_implemented) if p.not_implemented is not None else [0] * p.size)
            registers[loc.address - start:loc.address - start + p.size] = regs

    def _unit_values(self, img: _Image, u: UnitModel) -> dict[str, Any]:
        """Point values of a unit from the model (None = not implemented / unknown)."""
        m, pts, sign = self.model, img.rmap.points, img.rmap.sign
        v = m.vehicle_of(u)
        soc = m.soc_pct(u)
        watts = lambda kw: None if kw is None else kw * 1000.0  # noqa: E731
        signed = lambda kw: to_device_w(max(-kw, 0.0), max(kw, 0.0), sign)  # noqa: E731  (+kw = discharge)
        code = functools.partial(_enum, pts)
        islanding = not m.grid_up and u.stay is not None and u.p.islanded_rating_kw > 0
        vals: dict[str, Any] = {
            "manufacturer": "v2h-ems", "model_name": u.p.model_name, "serial_number": f"SIM{u.p.unit_id:03d}",
            "grid_connection": code("grid_connection", "CONNECTED" if m.grid_up else "DISCONNECTED"),
            "alarms": u.alarm_bits | (0 if m.grid_up else _bit(pts.get("alarms"), "GRID_DISCONNECT")),
            "der_mode": _bit(pts.get("der_mode"), "GRID_FORMING" if islanding else "GRID_FOLLOWING"),
            "power_w": signed(u.output_kw),
            "rated_power_w": u.p.rating_kw * 1000, "rated_charge_w": u.p.max_charge_kw * 1000,
            "rated_discharge_w": u.p.max_discharge_kw * 1000, "max_charge_w": u.p.max_charge_kw * 1000,
            "max_discharge_w": u.p.max_discharge_kw * 1000,
            "setpoint_enable": code("setpoint_enable", "ENABLED" if u.remote_enabled else "DISABLED"),
            "setpoint_mode": code("setpoint_mode", "WATTS"), "setpoint_w": signed(u.setpoint_kw),
            "reversion_setpoint_w": signed(u.rvrt_setpoint_kw),
            "reversion_enable": code("reversion_enable", "ENABLED" if u.rvrt_enable else "DISABLED"),
            "reversion_timeout_s": int(u.rvrt_timeout_s),
            "reversion_remaining_s": int(math.ceil(max(u.deadline_w() - m.w, 0.0))) if u.armed else 0,
            "soc_pct": soc, "battery_soc_pct": soc, "storage_status": code("storage_status", "OK"), "soh_pct": None,
            "local_remote": code("local_remote", "REMOTE" if u.remote_enabled else "LOCAL"),
            "heartbeat": int(m.w) & 0xFFFF, "controller_heartbeat": u.controller_hb, "battery_events": 0,
            "plug_state": code("plug_state", "PLUGGED" if v else "UNPLUGGED"), "vehicle_id": v.id if v else "",
            "inverter_state": code("inverter_state", "RUNNING" if abs(u.output_kw) > 1e-6 else "STANDBY"),
        }
        if v is not None:
            e = m.energy_kwh[v.id]
            vals |= {"capacity_wh": v.capacity_kwh * 1000, "vehicle_capacity_wh": v.capacity_kwh * 1000,
                     "energy_available_wh": max(e - soc_kwh(v.min_soc_pct, v.capacity_kwh), 0.0) * 1000,
                     "soc_min_pct": v.min_soc_pct, "soc_max_pct": v.max_soc_pct,
                     "vehicle_max_charge_w": watts(v.max_charge_kw), "vehicle_max_discharge_w": watts(v.max_discharge_kw)}
        else:
            vals |= {k: None for k in ("capacity_wh", "vehicle_capacity_wh", "energy_available_wh", "soc_min_pct",
                                       "soc_max_pct", "vehicle_max_charge_w", "vehicle_max_discharge_w")}
        return vals

    def _meter_values(self, img: _Image) -> dict[str, Any]:
        """Point values of the site meter (+ = import in the product; the map's sign on the wire)."""
        m, pts = self.model, img.rmap.points
        return {"manufacturer": "v2h-ems", "model_name": "site meter simulator", "serial_number": "SIM-METER",
                "power_w": to_device_w(max(m.meter_kw, 0.0), max(-m.meter_kw, 0.0), img.rmap.sign),
                "import_energy_wh": (METER_COUNTER_START_KWH + m.import_kwh) * 1000,
                "export_energy_wh": (METER_COUNTER_START_KWH + m.export_kwh) * 1000,
                "voltage_v": 202.0 if m.grid_up else 0.0, "frequency_hz": 60.0 if m.grid_up else 0.0,
                "events": 0 if m.grid_up else _bit(pts.get("events"), "POWER_FAILURE"),
                "grid_present": _enum(pts, "grid_present", "UP" if m.grid_up else "DOWN")}


class SimulatorThread:
    """A :class:`Simulator` on its own event loop in a thread named ``ems-sim`` (clean stop).

    ``with SimulatorThread(site) as st: st.port ...`` (keyword arguments go to :class:`Simulator`, or to
    ``simulator``: e.g. :class:`~adapters.sim.echonet.EchonetSimulator` for an ECHONET Lite node).
    API calls on ``st.sim`` that only touch the model (snapshot, set_grid, set_fault, set_soc) are
    thread-safe; :meth:`call` runs a coroutine function on the simulator's loop
    (``st.call(st.sim.restart)``).
    """

    def __init__(self, site: SimSiteParams, *, simulator: type[Simulator] | None = None, **simulator_kw: Any):
        self.sim = (simulator or Simulator)(site, **simulator_kw)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    @property
    def port(self) -> int:
        """The port the simulator listens on."""
        assert self.sim.port is not None
        return self.sim.port

    def start(self, timeout_s: float = 10.0) -> int:
        """Start the thread and the server; returns the port."""
        self._thread = threading.Thread(target=self._run, name="ems-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("simulator did not start")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self.sim.port or 0  # 0: serving RTU

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        """Serve until :meth:`stop` sets the stop event; asyncio.run then cleans the loop up."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.sim.start()
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.sim.stop()

    def call(self, fn: Callable[..., Awaitable[Any]] | Callable[..., Any], *args: Any, timeout_s: float = 10.0) -> Any:
        """Run ``fn(*args)`` on the simulator's loop (awaited if it is a coroutine function)."""
        assert self._loop is not None

        async def run() -> Any:
            result = fn(*args)
            return await result if asyncio.iscoroutine(result) else result
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout_s)

    def stop(self) -> None:
        """Stop the server and the loop, join the thread."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            assert self._stop is not None
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join()
        self._thread = None

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["Faults", "ManualClock", "SiteSnapshot", "Simulator", "SimulatorThread", "UnitSnapshot", "build_image"]
