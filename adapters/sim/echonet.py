"""The simulated site as one ECHONET Lite node over UDP (asyncio; port 3610 by default).

The node presents the node profile 0x0EF001, one V2H object 0x027E<instance> per simulated unit
and the site meter twice, as the low-voltage smart meter 0x028801 and the high-voltage one
0x028A01 (a real site has one of them; the simulator serves both so either adapter can be tried).
Physics, plug-in schedules, the replayed load and fault injection are those of the Modbus
simulator (:class:`~adapters.sim.server.Simulator`, whose model, lock, snapshot, ``set_grid``,
``set_soc``, ``set_alarm`` and ``set_fault`` this class inherits); only the wire differs.

Services: Get (0x62) -> Get_Res 0x72 / Get_SNA 0x52 (an EPC not in the Get map comes back with PDC
0); SetC (0x61) -> Set_Res 0x71 / SetC_SNA 0x51 (the refused properties echoed, the accepted ones
with PDC 0, the accepted ones applied); SetI (0x60) -> nothing, or SetI_SNA 0x50; INF_REQ (0x63)
-> INF 0x73 / INF_SNA 0x53, to the requester. Instance 0 addresses every instance of a class.
Frames that do not parse, other services and objects the node does not have are ignored (counted
in :attr:`EchonetSimulator.malformed` / :attr:`EchonetSimulator.ignored`), as the standard says.

A unit: 0xDA charge (0x42) runs the car at 0xEB watts, discharge (0x43) at 0xEC watts, standby
(0x44) holds 0 W; 0x80 off holds 0 W in any mode. Settings above the unit's rating, or a mode other
than those three, are refused (SetC_SNA). There is no watchdog: the unit keeps its mode until told
otherwise (as real units do). Status changes of 0x80, 0xDA, 0xC7 (and the meter's 0x80) are
announced (INF, DEOJ 0x0EF001) to every address that has sent a request, and to 224.0.23.0 when
``multicast`` is on; at start the node announces its instance list (0xD5).

Faults (``set_fault(device, ...)``, device = a unit's name or ``"meter"``): ``reject_writes`` ->
SetC_SNA for every property; ``freeze`` -> Get answers the values last answered; ``delay_s`` ->
every answer of that object comes that much later (past a client's timeout: a silent node);
``values={"power_w": w, "soc_pct": pct}`` -> 0xD3 / 0xE7 and 0xE4 present that number (W on the
wire, + = charge resp. import; %), whatever the model says (a value that does not fit presents
the overflow sentinel).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import socket
import struct
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.echonet.frame import (EOJ, ESV, MULTICAST, NODE_PROFILE, PORT, Frame, Property, decode_or_log,
                                    encode_property_map, s32, u8, u32)
from adapters.sim.model import SimSiteParams, SiteModel, UnitModel
from adapters.sim.server import METER, METER_COUNTER_START_KWH, Simulator

log = logging.getLogger(__name__)

V2H, LOW_VOLTAGE_METER, HIGH_VOLTAGE_METER = 0x027E, 0x0288, 0x028A
ON, OFF = 0x30, 0x31
CHARGE, DISCHARGE, STANDBY = 0x42, 0x43, 0x44
#: the unit codes the simulated meters count in (0x0288: 0xE1 0x02 = 0.01 kWh; 0x028A: 0xE6 0x01 = 0.1 kWh)
LOW_UNIT, LOW_KWH_PER_COUNT, HIGH_UNIT, HIGH_KWH_PER_COUNT = 0x02, 0.01, 0x01, 0.1
MANUFACTURER = b"\xff\xff\xff"           # "not registered" (an experimental node)
RELEASE = b"\x00\x00R\x00"               # Appendix Release R
LITE_VERSION = b"\x01\x0d\x01\x00"       # ECHONET Lite 1.13, format 1
OVERFLOW = 0x7FFFFFFF
MAP_EPCS = (0x9D, 0x9E, 0x9F)
REQUESTS = (ESV.GET, ESV.SETC, ESV.SETI, ESV.INF_REQ)

Getter = Callable[[], bytes]
Setter = Callable[[bytes], bool]


@dataclass
class UnitSettings:
    """What the controller set on one simulated 0x027E unit: operation status, mode, powers [W]."""

    on: bool = True
    mode: int = STANDBY
    charge_w: int = 0
    discharge_w: int = 0


@dataclass
class NodeObject:
    """One object of the node: its EOJ, the simulator device it belongs to, its properties."""

    eoj: EOJ
    device: str | None                       # a unit name, METER, or None (the node profile)
    get: dict[int, Getter]
    set: dict[int, Setter] = field(default_factory=dict)
    announce: tuple[int, ...] = ()
    answered: dict[int, bytes] = field(default_factory=dict)    # last values answered (frozen Gets)
    announced: dict[int, bytes] = field(default_factory=dict)   # last values announced

    def maps(self, read_only: Iterable[int] = ()) -> None:
        """Add the property maps (0x9D announce, 0x9E Set, 0x9F Get) to the Get table."""
        setting = [e for e in self.set if e not in set(read_only)]
        for e in list(self.set):
            if e not in setting:
                del self.set[e]
        gets = set(self.get) | set(MAP_EPCS)
        for epc, epcs in zip(MAP_EPCS, (self.announce, setting, gets)):
            self.get[epc] = (lambda m=encode_property_map(epcs): m)


class _Datagrams(asyncio.DatagramProtocol):
    """The node's socket: every datagram goes to :meth:`EchonetSimulator._receive`."""

    def __init__(self, sim: EchonetSimulator):
        self.sim = sim

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sim._receive(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("ECHONET Lite simulator socket: %s", exc)


class EchonetSimulator(Simulator):
    """The simulated site served as an ECHONET Lite node (see the module docstring).

    ``instances``: unit name -> 0x027E instance code (default: each unit's ``unit_id``);
    ``meter_instance``: the meters' instance code; ``read_only``: unit name -> EPCs left out of that
    unit's Set map (tests: a unit that takes no 0xEB); ``zone``: the meter's clock for 0xEA/0xEB;
    ``multicast``: announce to 224.0.23.0 too (and join the group when bound to 0.0.0.0);
    ``announce_every_s``: how often status changes are looked for between requests [real s].
    """

    def __init__(self, site: SimSiteParams, *, host: str = "127.0.0.1", port: int = PORT,
                 clock: Callable[[], float] | None = None, instances: Mapping[str, int] | None = None,
                 meter_instance: int = 1, read_only: Mapping[str, Iterable[int]] | None = None,
                 zone: dt.tzinfo = zoneinfo.ZoneInfo("Asia/Tokyo"), multicast: bool = False,
                 announce_every_s: float = 0.5):
        super().__init__(site, host=host, port=port, clock=clock)
        self.instances = {u.name: (instances or {}).get(u.name, u.unit_id) for u in site.units}
        codes = list(self.instances.values())
        if not all(1 <= i <= 0x7F for i in codes + [meter_instance]) or len(set(codes)) != len(codes):
            raise ValueError(f"instance codes are distinct and in 1..127; got {self.instances}, meter {meter_instance}")
        self.meter_instance = meter_instance
        self.zone = zone
        self.multicast = multicast
        self.announce_every_s = announce_every_s
        self.settings = {u.name: UnitSettings(charge_w=round(u.max_charge_kw * 1000), discharge_w=round(u.max_discharge_kw * 1000))
                         for u in site.units}
        self.objects: dict[EOJ, NodeObject] = {}
        for u in self.model.units:
            obj = self._unit_object(u)
            obj.maps((read_only or {}).get(u.p.name, ()))
            self.objects[obj.eoj] = obj
        for obj in (self._low_voltage_meter(), self._high_voltage_meter()):
            obj.maps()
            self.objects[obj.eoj] = obj
        node = self._node_profile()
        node.maps()
        self.objects[node.eoj] = node
        self.peers: set[tuple[str, int]] = set()   # where announcements go
        self.malformed = 0
        self.ignored = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._answering: set[asyncio.Task[None]] = set()
        self._tid = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> int:
        """Bind host:port (port 0: a free one), announce the instance list; returns the port."""
        loop = asyncio.get_running_loop()
        port = self.port if self.port is not None else self._requested_port
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
            if self.multicast:
                self._join_multicast(sock)
        except OSError:
            sock.close()
            raise
        transport, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(self), sock=sock)
        self._transport = transport  # type: ignore[assignment]
        self.port = sock.getsockname()[1]
        with self._lock:
            self._now()
            for obj in self.objects.values():
                obj.announced = {e: obj.get[e]() for e in obj.announce if e in obj.get}
        node = self.objects[NODE_PROFILE]
        self._send_inf(node, [Property(0xD5, node.get[0xD6]())])
        self._ticker = asyncio.create_task(self._tick(), name="echonet-sim-announce")
        log.info("ECHONET Lite simulator on %s:%d, instances %s", self.host, self.port, self.unit_ids())
        return self.port

    def _join_multicast(self, sock: socket.socket) -> None:
        """Announce through the bound interface; listen to 224.0.23.0 when bound to every interface."""
        if self.host not in ("", "0.0.0.0"):
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.host))
        else:
            mreq = struct.pack("=4s4s", socket.inet_aton(MULTICAST), socket.inet_aton("0.0.0.0"))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)

    async def stop(self) -> None:
        """Stop announcing and answering (delayed answers are dropped), close the socket."""
        tasks = list(self._answering) + ([self._ticker] if self._ticker is not None else [])
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._ticker = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def set_fault(self, device: str, *, values: Mapping[str, float] | None = None, **flags: Any) -> None:
        """:meth:`Simulator.set_fault`, with ``values`` for the node's own EDTs: ``power_w`` (0xD3 of a unit,
        0xE7 of the meter; W on the wire) and ``soc_pct`` (0xE4 of a unit; %)."""
        unknown = set(values or {}) - ({"power_w"} if device == METER else {"power_w", "soc_pct"})
        if unknown:
            raise ValueError(f"{device} presents no {sorted(unknown)} over ECHONET Lite; it has power_w"
                             f"{'' if device == METER else ' and soc_pct'}")
        super().set_fault(device, **flags)
        if values is not None:
            with self._lock:
                self.faults[device].values = dict(values)

    def drop_connections(self) -> int:
        """UDP has no connections: nothing to drop (0)."""
        return 0

    def unit_ids(self) -> dict[str, int]:
        """Device name -> instance code (units: 0x027E; ``"meter"``: 0x0288 and 0x028A)."""
        return {**self.instances, METER: self.meter_instance}

    async def _tick(self) -> None:
        """Look for status changes to announce every ``announce_every_s`` real seconds."""
        while True:
            await asyncio.sleep(self.announce_every_s)
            with self._lock:
                self._now()
                self._announce_changes()

    # ------------------------------------------------------------------ objects
    def _unit_object(self, u: UnitModel) -> NodeObject:
        """The 0x027E object of one unit (see the module docstring)."""
        m, st, name = self.model, self.settings[u.p.name], u.p.name
        fault = lambda: self.faults[name].values  # noqa: E731

        def vehicle_status() -> int:
            v = m.vehicle_of(u)
            if v is None:
                return 0x30
            soc = m.soc_pct(u) or 0.0
            return 0x40 | (0x01 if soc < v.max_soc_pct - 1e-6 else 0) | (0x02 if soc > v.min_soc_pct + 1e-6 else 0)

        def limits(unit_kw: float, vehicle_kw: Callable[[], float | None]) -> bytes:
            car = vehicle_kw() if m.vehicle_of(u) is not None else None
            return u32(0) + u32(round(min(unit_kw, car if car is not None else math.inf) * 1000))

        def energy_wh() -> float:
            v = m.vehicle_of(u)
            return m.energy_kwh[v.id] * 1000 if v is not None else 0.0

        def capacity_wh() -> float:
            v = m.vehicle_of(u)
            return v.capacity_kwh * 1000 if v is not None else 0.0

        def soc_pct() -> bytes:
            pct = fault().get("soc_pct", m.soc_pct(u) or 0.0)
            return u8(min(max(round(pct), 0), 0xFF)) if math.isfinite(pct) else u8(0xFF)

        get: dict[int, Getter] = {
            0x80: lambda: u8(ON if st.on else OFF), 0x82: lambda: RELEASE, 0x83: lambda: _identification(name),
            0x88: lambda: u8(0x41 if u.alarm_bits else 0x42), 0x8A: lambda: MANUFACTURER,
            0xC0: lambda: u32(round(capacity_wh())),
            0xC2: lambda: u32(round(max(energy_wh() - _min_wh(m, u), 0.0))),
            0xC5: lambda: u32(round(u.p.max_charge_kw * 1000)), 0xC6: lambda: u32(round(u.p.max_discharge_kw * 1000)),
            0xC7: lambda: u8(vehicle_status()),
            0xC8: lambda: limits(u.p.max_charge_kw, lambda: m.vehicle_of(u).max_charge_kw),  # type: ignore[union-attr]
            0xC9: lambda: limits(u.p.max_discharge_kw, lambda: m.vehicle_of(u).max_discharge_kw),  # type: ignore[union-attr]
            0xD3: lambda: _s32_or_overflow(fault().get("power_w", -u.output_kw * 1000)),
            0xD6: lambda: u32(round(u.discharged_kwh * 1000) & 0xFFFFFFFF),
            0xD8: lambda: u32(round(u.charged_kwh * 1000) & 0xFFFFFFFF),
            0xDA: lambda: u8(st.mode),
            0xDB: lambda: u8(0x01 if not m.grid_up and u.stay is not None and u.p.islanded_rating_kw > 0 else 0x00),
            0xE2: lambda: u32(round(energy_wh())), 0xE4: soc_pct,
            0xEB: lambda: u32(st.charge_w), 0xEC: lambda: u32(st.discharge_w),
        }

        def setter(attr: str, allowed: Callable[[int], bool], size: int) -> Setter:
            def apply(edt: bytes) -> bool:
                if len(edt) != size or not allowed(int.from_bytes(edt, "big")):
                    return False
                setattr(st, attr, int.from_bytes(edt, "big") if attr != "on" else edt[0] == ON)
                self._follow(u)
                return True
            return apply

        sets = {0x80: setter("on", lambda x: x in (ON, OFF), 1),
                0xDA: setter("mode", lambda x: x in (CHARGE, DISCHARGE, STANDBY), 1),
                0xEB: setter("charge_w", lambda x: x <= round(u.p.max_charge_kw * 1000), 4),
                0xEC: setter("discharge_w", lambda x: x <= round(u.p.max_discharge_kw * 1000), 4)}
        return NodeObject(EOJ.of(V2H, self.instances[name]), name, get, sets, (0x80, 0xC7, 0xDA))

    def _follow(self, u: UnitModel) -> None:
        """The unit's model follows its settings: the mode's power, or 0 W; never a watchdog."""
        st = self.settings[u.p.name]
        u.remote_enabled = st.on and st.mode in (CHARGE, DISCHARGE)
        u.setpoint_kw = -st.charge_w / 1000 if st.mode == CHARGE else st.discharge_w / 1000 if st.mode == DISCHARGE else 0.0
        u.rvrt_timeout_s = 0.0
        u.touch(self.model.w)

    def _meter_common(self, cls: int) -> dict[int, Getter]:
        """Properties both meters have."""
        return {0x80: lambda: u8(ON), 0x82: lambda: RELEASE, 0x83: lambda: _identification(f"meter{cls:04X}"),
                0x88: lambda: u8(0x42), 0x8A: lambda: MANUFACTURER, 0xD3: lambda: u32(1)}

    def _low_voltage_meter(self) -> NodeObject:
        """0x0288: power 0xE7, counters 0xE0/0xE3 in 0.01 kWh, fixed-time readings 0xEA/0xEB."""
        m = self.model
        counter = lambda kwh: u32(round((METER_COUNTER_START_KWH + kwh) / LOW_KWH_PER_COUNT) % 10**8)  # noqa: E731

        def fixed(index: int) -> bytes:
            t, *kwh = m.fixed_time or (m.now, m.import_kwh, m.export_kwh)
            local = t.astimezone(self.zone)
            stamp = local.year.to_bytes(2, "big") + bytes((local.month, local.day, local.hour, local.minute, local.second))
            return stamp + counter(kwh[index])

        get = self._meter_common(LOW_VOLTAGE_METER) | {
            0xD7: lambda: u8(8), 0xE0: lambda: counter(m.import_kwh), 0xE1: lambda: u8(LOW_UNIT),
            0xE3: lambda: counter(m.export_kwh),
            0xE7: lambda: _s32_or_overflow(self.faults[METER].values.get("power_w", m.meter_kw * 1000)),
            0xEA: lambda: fixed(0), 0xEB: lambda: fixed(1)}
        return NodeObject(EOJ.of(LOW_VOLTAGE_METER, self.meter_instance), METER, get, announce=(0x80,))

    def _high_voltage_meter(self) -> NodeObject:
        """0x028A: cumulative active energy 0xE2 in 0.1 kWh (no instantaneous power)."""
        m = self.model
        get = self._meter_common(HIGH_VOLTAGE_METER) | {
            0xD4: lambda: u8(0x00), 0xE5: lambda: u8(8), 0xE6: lambda: u8(HIGH_UNIT),
            0xE2: lambda: u32(round((METER_COUNTER_START_KWH + m.import_kwh) / HIGH_KWH_PER_COUNT) % 10**8)}
        return NodeObject(EOJ.of(HIGH_VOLTAGE_METER, self.meter_instance), METER, get, announce=(0x80,))

    def _node_profile(self) -> NodeObject:
        """0x0EF001: version, identification, the instance and class lists."""
        eojs = sorted(self.objects)
        classes = sorted({e.class_code for e in eojs})
        instance_list = bytes([len(eojs)]) + b"".join(e.to_bytes() for e in eojs)
        get = {0x80: lambda: u8(ON), 0x82: lambda: LITE_VERSION, 0x83: lambda: _identification("node"),
               0x8A: lambda: MANUFACTURER, 0x8C: lambda: b"V2H-EMS-SIM ",
               0xD3: lambda: len(eojs).to_bytes(3, "big"), 0xD4: lambda: (len(classes) + 1).to_bytes(2, "big"),
               0xD6: lambda: instance_list,
               0xD7: lambda: bytes([len(classes)]) + b"".join(c.to_bytes(2, "big") for c in classes)}
        return NodeObject(NODE_PROFILE, None, get, announce=(0x80, 0xD5))

    # ------------------------------------------------------------------ requests
    def _receive(self, data: bytes, addr: tuple[str, int]) -> None:
        """Parse a datagram; hand each addressed object's answer to a task (faults may delay it)."""
        frame = decode_or_log(data, addr, "ECHONET Lite simulator")
        if frame is None:
            self.malformed += 1
            return
        targets = [o for e, o in self.objects.items() if e == frame.deoj or
                   (frame.deoj.instance == 0 and e.class_code == frame.deoj.class_code)]
        if frame.esv not in REQUESTS or not targets:
            self.ignored += 1
            return
        self.peers.add(addr)
        for obj in targets:
            task = asyncio.ensure_future(self._serve(obj, frame, addr))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

    async def _serve(self, obj: NodeObject, frame: Frame, addr: tuple[str, int]) -> None:
        """Answer one request for one object (after the object's injected delay)."""
        delay = self.faults[obj.device].delay_s if obj.device else 0.0
        if delay:
            await asyncio.sleep(delay)
        with self._lock:
            self._now()
            answer = self._answer(obj, frame)
            self._announce_changes()
        if answer is not None and self._transport is not None:
            self._transport.sendto(answer.encode(), addr)

    def _answer(self, obj: NodeObject, frame: Frame) -> Frame | None:
        """The answer to ``frame`` from ``obj`` (None: SetI that succeeded)."""
        if frame.esv in (ESV.GET, ESV.INF_REQ):
            frozen = obj.device is not None and self.faults[obj.device].freeze
            props = []
            for p in frame.props:
                if p.epc not in obj.get or (frame.esv == ESV.INF_REQ and p.epc in MAP_EPCS + (0xD5,)):
                    props.append(Property(p.epc))
                    continue
                value = obj.answered.get(p.epc) if frozen else None
                value = value if value is not None else obj.get[p.epc]()
                obj.answered[p.epc] = value
                props.append(Property(p.epc, value))
            ok = all(p.edt for p in props)
            esv = (ESV.GET_RES if ok else ESV.GET_SNA) if frame.esv == ESV.GET else (ESV.INF if ok else ESV.INF_SNA)
            return Frame(frame.tid, obj.eoj, frame.seoj, esv, tuple(props))
        reject = obj.device is not None and self.faults[obj.device].reject_writes
        props = []
        for p in frame.props:
            self.writes.append((obj.device or "node", frame.esv, p.epc, len(p.edt)))
            setter = obj.set.get(p.epc)
            accepted = not reject and setter is not None and setter(p.edt)
            props.append(Property(p.epc) if accepted else Property(p.epc, p.edt or b"\x00"))
        if all(not p.edt for p in props):
            return None if frame.esv == ESV.SETI else Frame(frame.tid, obj.eoj, frame.seoj, ESV.SET_RES, tuple(props))
        return Frame(frame.tid, obj.eoj, frame.seoj, ESV.SETI_SNA if frame.esv == ESV.SETI else ESV.SETC_SNA, tuple(props))

    # ------------------------------------------------------------------ announcements
    def _announce_changes(self) -> None:
        """INF for every announced property whose value changed since it was last announced."""
        for obj in self.objects.values():
            changed = []
            for e in obj.announce:
                if e in obj.get:
                    value = obj.get[e]()
                    if obj.announced.get(e) != value:
                        obj.announced[e] = value
                        changed.append(Property(e, value))
            if changed:
                self._send_inf(obj, changed)

    def _send_inf(self, obj: NodeObject, props: list[Property]) -> None:
        """One INF from ``obj`` to the node profile of every peer (and the multicast group if on)."""
        if self._transport is None:
            return
        self._tid = (self._tid + 1) & 0xFFFF
        data = Frame(self._tid, obj.eoj, NODE_PROFILE, ESV.INF, tuple(props)).encode()
        targets = set(self.peers) | ({(MULTICAST, PORT)} if self.multicast else set())
        for addr in targets:
            try:
                self._transport.sendto(data, addr)
            except OSError as exc:  # e.g. no multicast route on this host
                log.debug("ECHONET Lite simulator: INF to %s failed: %s", addr, exc)


def _identification(name: str) -> bytes:
    """0x83: 0xFE, the manufacturer code, then 13 bytes unique to the object."""
    return b"\xfe" + MANUFACTURER + name.encode()[:13].ljust(13, b"\x00")


def _min_wh(m: SiteModel, u: UnitModel) -> float:
    """The plugged vehicle's energy at its minimum SOC [Wh]."""
    v = m.vehicle_of(u)
    return v.capacity_kwh * v.min_soc_pct * 10 if v is not None else 0.0


def _s32_or_overflow(value: float) -> bytes:
    """A signed 4-byte number, or the overflow sentinel 0x7FFFFFFF if it does not fit (inf, nan, huge)."""
    if not math.isfinite(value) or not -0x7FFFFFFF <= round(value) < 0x7FFFFFFE:
        return u32(OVERFLOW)
    return s32(round(value))


__all__ = ["EchonetSimulator", "UnitSettings"]
