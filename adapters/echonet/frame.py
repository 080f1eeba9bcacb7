"""ECHONET Lite frames (format 1, EHD 0x1081): encode, decode, property maps and EDT numbers.

A frame is ``EHD(2) TID(2) SEOJ(3) DEOJ(3) ESV(1) OPC(1)`` then OPC properties, each
``EPC(1) PDC(1) EDT(PDC)``. A request's properties carry no data for Get / INF_REQ (PDC 0) and the
value for SetC / SetI; a response carries the value for Get_Res / INF, nothing for Set_Res, and for
a ``*_SNA`` answer the properties the node refused (Get_SNA: PDC 0 for those; SetC_SNA: the
refused value echoed, PDC 0 for the accepted ones).

Everything a node sends is parsed by :meth:`Frame.decode`, which raises :class:`FrameError` (never
IndexError or struct.error) on a short, long or inconsistent datagram, so a malformed frame is one
clear event, not a crash. This module does no I/O: the client (:mod:`adapters.echonet.client`) and
the simulated node (:mod:`adapters.sim.echonet`) share it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

log = logging.getLogger(__name__)

EHD = 0x1081
HEADER_LEN = 12
PORT = 3610
MULTICAST = "224.0.23.0"


class ESV(IntEnum):
    """ECHONET Lite service codes (the ones this package sends or answers)."""

    SETI = 0x60
    SETC = 0x61
    GET = 0x62
    INF_REQ = 0x63
    SETI_SNA = 0x50
    SETC_SNA = 0x51
    GET_SNA = 0x52
    INF_SNA = 0x53
    SET_RES = 0x71
    GET_RES = 0x72
    INF = 0x73
    INFC = 0x74
    INFC_RES = 0x7A


#: the answers a request may get: (success, refusal)
ANSWERS: dict[int, tuple[int, int]] = {
    ESV.GET: (ESV.GET_RES, ESV.GET_SNA),
    ESV.SETC: (ESV.SET_RES, ESV.SETC_SNA),
    ESV.INF_REQ: (ESV.INF, ESV.INF_SNA),
}


class FrameError(ValueError):
    """A datagram that is not a well-formed ECHONET Lite format-1 frame."""


@dataclass(frozen=True, order=True)
class EOJ:
    """An ECHONET object: class group code, class code, instance code (1 byte each)."""

    group: int
    cls: int
    instance: int

    def __post_init__(self) -> None:
        for name in ("group", "cls", "instance"):
            v = getattr(self, name)
            if not 0 <= v <= 0xFF:
                raise ValueError(f"EOJ {name} is one byte; got {v}")

    @property
    def class_code(self) -> int:
        """Group and class as one 16-bit code (0x027E)."""
        return self.group << 8 | self.cls

    def to_bytes(self) -> bytes:
        """The 3 bytes on the wire."""
        return bytes((self.group, self.cls, self.instance))

    @classmethod
    def of(cls, class_code: int, instance: int) -> EOJ:
        """``EOJ.of(0x027E, 1)``."""
        return cls(class_code >> 8 & 0xFF, class_code & 0xFF, instance)

    def __str__(self) -> str:
        return f"0x{self.group:02X}{self.cls:02X}{self.instance:02X}"


#: the node profile object, and the source object of this controller (0x05FF: controller class)
NODE_PROFILE = EOJ(0x0E, 0xF0, 0x01)
CONTROLLER = EOJ(0x05, 0xFF, 0x01)


@dataclass(frozen=True)
class Property:
    """One property of a frame: EPC and its data (empty: PDC 0)."""

    epc: int
    edt: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.epc <= 0xFF:
            raise ValueError(f"EPC is one byte; got {self.epc}")
        if len(self.edt) > 0xFF:
            raise ValueError(f"EDT of EPC 0x{self.epc:02X} is {len(self.edt)} bytes; at most 255")


@dataclass(frozen=True)
class Frame:
    """One ECHONET Lite format-1 frame."""

    tid: int
    seoj: EOJ
    deoj: EOJ
    esv: int
    props: tuple[Property, ...]

    def encode(self) -> bytes:
        """The datagram."""
        if not 0 <= self.tid <= 0xFFFF:
            raise ValueError(f"TID is two bytes; got {self.tid}")
        if not 0 <= self.esv <= 0xFF or len(self.props) > 0xFF:
            raise ValueError(f"ESV is one byte and OPC at most 255; got 0x{self.esv:X}, {len(self.props)} properties")
        out = bytearray(EHD.to_bytes(2, "big") + self.tid.to_bytes(2, "big") + self.seoj.to_bytes() + self.deoj.to_bytes())
        out += bytes((self.esv, len(self.props)))
        for p in self.props:
            out += bytes((p.epc, len(p.edt))) + p.edt
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Frame:
        """Parse a datagram; FrameError if it is not exactly one well-formed frame."""
        if len(data) < HEADER_LEN:
            raise FrameError(f"{len(data)} bytes: shorter than the 12-byte header")
        ehd = int.from_bytes(data[0:2], "big")
        if ehd != EHD:
            raise FrameError(f"EHD 0x{ehd:04X}: only ECHONET Lite format 1 (0x1081) is understood")
        if data[10] in (0x6E, 0x7E, 0x5E):
            raise FrameError(f"ESV 0x{data[10]:02X} (SetGet) is not supported")
        props = []
        i = HEADER_LEN
        for k in range(data[11]):
            if i + 2 > len(data):
                raise FrameError(f"OPC says {data[11]} properties; the frame ends inside property {k + 1}")
            epc, pdc = data[i], data[i + 1]
            if i + 2 + pdc > len(data):
                raise FrameError(f"EPC 0x{epc:02X}: PDC {pdc} runs past the end of the frame")
            props.append(Property(epc, bytes(data[i + 2:i + 2 + pdc])))
            i += 2 + pdc
        if i != len(data):
            raise FrameError(f"{len(data) - i} bytes after the last property")
        return cls(int.from_bytes(data[2:4], "big"), EOJ(*data[4:7]), EOJ(*data[7:10]), data[10], tuple(props))

    def values(self) -> dict[int, bytes]:
        """EPC -> EDT (a later property with the same EPC wins)."""
        return {p.epc: p.edt for p in self.props}

    def describe(self) -> str:
        """``GET_RES 0x027E01 -> 0x05FF01 [0x80, 0xE4]`` for messages."""
        try:
            esv = ESV(self.esv).name
        except ValueError:
            esv = f"ESV 0x{self.esv:02X}"
        return f"{esv} {self.seoj} -> {self.deoj} [{', '.join(f'0x{p.epc:02X}' for p in self.props)}]"


def decode_or_log(data: bytes, addr: tuple[str, int], who: str) -> Frame | None:
    """The frame in a received datagram, or None (logged, naming ``who`` received it and from where)."""
    try:
        return Frame.decode(data)
    except FrameError as exc:
        log.info("%s: malformed datagram from %s:%d ignored: %s", who, addr[0], addr[1], exc)
        return None


# ----------------------------------------------------------------- property maps (0x9D, 0x9E, 0x9F)
def encode_property_map(epcs: Iterable[int]) -> bytes:
    """A property map: the count, then the EPCs when fewer than 16, else a 16-byte bitmap in which
    bit ``j`` of byte ``i`` stands for EPC ``0x80 + 0x10 * j + i`` (EPCs are 0x80..0xFF)."""
    s = sorted(set(epcs))
    if any(not 0x80 <= e <= 0xFF for e in s):
        raise ValueError(f"property map EPCs are 0x80..0xFF; got {[hex(e) for e in s]}")
    if len(s) < 16:
        return bytes([len(s), *s])
    bitmap = bytearray(16)
    for e in s:
        bitmap[e & 0x0F] |= 1 << ((e >> 4) - 8)
    return bytes([len(s)]) + bytes(bitmap)


def decode_property_map(edt: bytes) -> frozenset[int]:
    """The EPCs of a property map (either form); FrameError if it is inconsistent."""
    if not edt:
        raise FrameError("empty property map")
    n = edt[0]
    if n < 16:
        if len(edt) != 1 + n:
            raise FrameError(f"property map of {n} EPCs is {len(edt)} bytes; expected {1 + n}")
        return frozenset(edt[1:])
    if len(edt) != 17:
        raise FrameError(f"property map of {n} EPCs is {len(edt)} bytes; expected a 17-byte bitmap")
    epcs = frozenset(0x80 + 0x10 * j + i for i in range(16) for j in range(8) if edt[1 + i] >> j & 1)
    if len(epcs) != n:
        raise FrameError(f"property map says {n} EPCs; its bitmap has {len(epcs)}")
    return epcs


# ----------------------------------------------------------------- numbers in EDTs (big-endian)
def unsigned(edt: bytes) -> int:
    """An unsigned big-endian number."""
    return int.from_bytes(edt, "big", signed=False)


def signed(edt: bytes) -> int:
    """A signed (two's complement) big-endian number."""
    return int.from_bytes(edt, "big", signed=True)


def u8(value: int) -> bytes:
    """One byte."""
    return int(value).to_bytes(1, "big")


def u32(value: int) -> bytes:
    """Four bytes, unsigned."""
    return int(value).to_bytes(4, "big")


def s32(value: int) -> bytes:
    """Four bytes, signed."""
    return int(value).to_bytes(4, "big", signed=True)
