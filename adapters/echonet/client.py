"""ECHONET Lite over UDP: one shared socket per local address, requests matched by TID, retries.

Why not pychonet's client (2.8.2, the library of Home Assistant's ECHONET Lite integration):
its ``ECHONETAPIClient.echonetMessage`` sends every request to port 3610 (no per-device port),
waits for the answer by polling in 0.1 s sleeps (every request takes at least 100 ms, even on
loopback; timeouts in whole 0.1 s ticks), allows one outstanding request per node (a second one
waits, then returns None when the first is slow), reports only a bool (a SetC answered SetC_SNA for
one of two properties counts as success) with the values in a shared state dict, and drops from a
request the EPCs its cached property map does not list (a silent no-op where this project wants an
error). pychonet is used in the tests as the independent peer of the simulated node instead.

Here: :class:`Endpoint` is one asyncio UDP socket bound to ``local_host:local_port`` and shared by
every ECHONET Lite device of the process on that address (units and meter alike; real nodes answer,
and announce, to port 3610, so the daemon listens there by default). Answers are matched to requests
by (node address, TID); a timed-out request's TID is forgotten, so a late answer can never be taken
for the next request's. :class:`EchonetObject` is one object (class + instance) of one node:
``get``, ``set`` (SetC, then read back and compared), the property maps, retries with backoff
(:class:`~adapters.link.RetryPolicy`) after timeouts; a refusal (``*_SNA``) is the node's decision
and is not retried. Every failure is one :class:`~adapters.errors.AdapterError` naming the device,
the EPCs and the value.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from adapters.echonet.frame import (ANSWERS, CONTROLLER, EOJ, ESV, PORT, Frame, FrameError, Property,
                                    decode_or_log, decode_property_map)
from adapters.errors import AdapterError
from adapters.link import RetryPolicy

log = logging.getLogger(__name__)

#: EPCs every ECHONET Lite device object has (the super class), and their names in messages
STATUS_ANNOUNCEMENT_MAP, SET_MAP, GET_MAP = 0x9D, 0x9E, 0x9F
SUPER_NAMES = {0x80: "operation status", 0x88: "fault status", 0x8A: "manufacturer code",
               STATUS_ANNOUNCEMENT_MAP: "status change announcement property map", SET_MAP: "Set property map",
               GET_MAP: "Get property map"}


@dataclass(frozen=True)
class EchonetLink:
    """Where one ECHONET Lite object is and how it is asked.

    ``host``/``port``: the node (UDP, 3610 by the standard); ``instance``: the object's instance
    code (1 for the first unit of its class); ``timeout_s``: per request [s]; ``local_host``/
    ``local_port``: where answers are received (3610: real nodes answer and announce to that port;
    0: any free port, for a simulator on the same machine); ``max_properties``: most properties in
    one request (larger reads are split).
    """

    host: str
    instance: int = 1
    port: int = PORT
    timeout_s: float = 2.0
    local_host: str = "0.0.0.0"
    local_port: int = PORT
    max_properties: int = 16

    def describe(self) -> str:
        """``host:port instance N`` for messages."""
        return f"{self.host}:{self.port} instance {self.instance}"


@dataclass(frozen=True)
class PropertyMaps:
    """What an object says it can do: EPCs it announces on change, accepts in Set, answers in Get."""

    announce: frozenset[int]
    set: frozenset[int]
    get: frozenset[int]


Listener = Callable[[Frame, tuple[str, int]], None]


class Endpoint(asyncio.DatagramProtocol):
    """One UDP socket of this process on ``local_host:local_port`` (see the module docstring)."""

    def __init__(self, key: tuple[int, str, int]):
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[tuple[str, int], tuple[int, asyncio.Future[Frame]]] = {}  # (host, TID) -> (ESV asked, answer)
        self.listeners: dict[str, list[Listener]] = {}
        self.users = 0
        self.malformed = 0   # datagrams that were not ECHONET Lite frames
        self.unmatched = 0   # answers nobody waits for (late, duplicated, or for another controller)
        self._tid = random.randrange(0x10000)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        for _, fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("local ECHONET Lite socket closed"))
        _ENDPOINTS.pop(self.key, None)

    def error_received(self, exc: Exception) -> None:
        log.debug("ECHONET Lite socket %s: %s", self.key[1:], exc)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """An answer wakes its request; an announcement goes to the node's listeners; junk is counted."""
        frame = decode_or_log(data, addr, "ECHONET Lite client")
        if frame is None:
            self.malformed += 1
            return
        asked, fut = self.pending.get((addr[0], frame.tid), (None, None))
        if fut is not None and not fut.done() and frame.esv in ANSWERS[asked]:  # type: ignore[index]
            fut.set_result(frame)
            return
        if frame.esv in (ESV.INF, ESV.INFC):
            if frame.esv == ESV.INFC and self.transport is not None:  # a confirmed announcement wants its receipt
                reply = Frame(frame.tid, CONTROLLER, frame.seoj, ESV.INFC_RES, tuple(Property(p.epc) for p in frame.props))
                self.transport.sendto(reply.encode(), addr)
            for listener in self.listeners.get(addr[0], []):
                listener(frame, addr)
            return
        self.unmatched += 1

    def next_tid(self) -> int:
        """A transaction id not waiting for an answer from anyone."""
        while True:
            self._tid = (self._tid + 1) & 0xFFFF
            if all(tid != self._tid for _, tid in self.pending):
                return self._tid

    async def exchange(self, addr: tuple[str, int], deoj: EOJ, esv: int, props: tuple[Property, ...],
                       timeout_s: float) -> Frame:
        """Send one request and wait for its answer (asyncio.TimeoutError after ``timeout_s``)."""
        assert self.transport is not None
        tid = self.next_tid()
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self.pending[(addr[0], tid)] = (esv, fut)
        try:
            self.transport.sendto(Frame(tid, CONTROLLER, deoj, esv, props).encode(), addr)
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self.pending.pop((addr[0], tid), None)


_ENDPOINTS: dict[tuple[int, str, int], Endpoint] = {}


async def acquire_endpoint(local_host: str, local_port: int, device: str) -> Endpoint:
    """The shared endpoint on ``local_host:local_port`` of the running loop (bound on first use)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), local_host, local_port)
    ep = _ENDPOINTS.get(key)
    if ep is None or ep.loop is not loop or ep.transport is None or ep.transport.is_closing():
        try:
            _, ep = await loop.create_datagram_endpoint(lambda: Endpoint(key), local_addr=(local_host, local_port),
                                                        family=socket.AF_INET)
        except OSError as exc:
            raise AdapterError(device, "", None, f"cannot open the local ECHONET Lite socket {local_host}:{local_port} "
                               f"({exc}); another ECHONET Lite program (or the simulator) may hold it: give the adapter "
                               "another local_port (0 = any) if the units answer to the request's port") from None
        _ENDPOINTS[key] = ep
    ep.users += 1
    return ep


def release_endpoint(ep: Endpoint) -> None:
    """One user fewer; the socket closes with its last user."""
    ep.users -= 1
    if ep.users <= 0 and ep.transport is not None:
        ep.transport.close()
        _ENDPOINTS.pop(ep.key, None)


def epc_label(epcs: Iterable[int], names: Mapping[int, str]) -> str:
    """``0xDA operation mode setting, 0xEB ...`` for messages."""
    return ", ".join(f"0x{e:02X} {names.get(e, SUPER_NAMES.get(e, ''))}".rstrip() for e in epcs)


def missing_abilities(maps: PropertyMaps, get: Iterable[int], setting: Iterable[int], names: Mapping[int, str]) -> list[str]:
    """What an object lacks of the EPCs a controller must Get and Set, one phrase each."""
    return ([f"answer 0x{e:02X} {names.get(e, '')} in Get (not in its Get property map 0x9F)" for e in get if e not in maps.get]
            + [f"take 0x{e:02X} {names.get(e, '')} in SetC (not in its Set property map 0x9E)" for e in setting
               if e not in maps.set])


class EchonetObject:
    """One object of one node (e.g. the V2H unit 0x027E01 at 192.168.1.40); see the module docstring.

    ``names``: EPC -> name, for messages.
    """

    def __init__(self, device: str, link: EchonetLink, class_code: int, names: Mapping[int, str],
                 retry: RetryPolicy = RetryPolicy()):
        if retry.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1; got {retry.attempts}")
        self.device = device
        self.link = link
        self.eoj = EOJ.of(class_code, link.instance)
        self.names = names
        self.retry = retry
        self.endpoint: Endpoint | None = None
        self.addr: tuple[str, int] | None = None
        self.requests = 0  # requests sent (every attempt counts)

    async def open(self) -> None:
        """Resolve the node's address and take the shared local socket."""
        if self.endpoint is not None:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(self.link.host, self.link.port, family=socket.AF_INET,
                                                                 type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise AdapterError(self.device, "", None, f"cannot resolve {self.link.host}: {exc}", retryable=True) from None
        self.addr = infos[0][4][:2]
        self.endpoint = await acquire_endpoint(self.link.local_host, self.link.local_port, self.device)

    async def close(self) -> None:
        """Give the shared socket back (closed with its last user)."""
        if self.endpoint is not None:
            ep, self.endpoint = self.endpoint, None
            release_endpoint(ep)

    def listen(self, listener: Listener) -> None:
        """Call ``listener(frame, addr)`` for every announcement (INF/INFC) this node sends."""
        assert self.endpoint is not None and self.addr is not None
        self.endpoint.listeners.setdefault(self.addr[0], []).append(listener)

    def unlisten(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        if self.endpoint is not None and self.addr is not None:
            found = self.endpoint.listeners.get(self.addr[0], [])
            if listener in found:
                found.remove(listener)

    async def request(self, esv: int, props: tuple[Property, ...], value: object = None) -> Frame:
        """One request with retries after timeouts; the node's answer (success or ``*_SNA``)."""
        if self.endpoint is None or self.addr is None:
            raise AdapterError(self.device, "", None, "request before open()")
        label = epc_label((p.epc for p in props), self.names)
        ok, refused = ANSWERS[esv]
        delay = self.retry.backoff_s
        for attempt in range(self.retry.attempts):
            self.requests += 1
            try:
                answer = await self.endpoint.exchange(self.addr, self.eoj, esv, props, self.link.timeout_s)
            except (asyncio.TimeoutError, ConnectionError, OSError) as exc:
                why = str(exc) or "timed out"
                if attempt + 1 < self.retry.attempts:
                    log.debug("%s: %s attempt %d: %s; retrying in %.3f s", self.device, label, attempt + 1, why, delay)
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, self.retry.backoff_max_s)
                    continue
                raise AdapterError(self.device, label, value, f"no answer from {self.eoj} at {self.link.describe()} "
                                   f"within {self.link.timeout_s:g} s ({self.retry.attempts} attempts): {why}",
                                   retryable=True) from None
            if answer.seoj != self.eoj or answer.esv not in (ok, refused):
                raise AdapterError(self.device, label, value, f"{self.link.describe()} answered {answer.describe()} "
                                   f"to {ESV(esv).name} for {self.eoj}")
            return answer
        raise AssertionError("unreachable")

    async def get(self, epcs: Iterable[int]) -> dict[int, bytes]:
        """Values of the EPCs (split into requests of ``max_properties``); AdapterError naming every
        EPC the node refused (Get_SNA) or answered without data."""
        epcs = list(dict.fromkeys(epcs))
        out: dict[int, bytes] = {}
        for i in range(0, len(epcs), self.link.max_properties):
            chunk = epcs[i:i + self.link.max_properties]
            answer = await self.request(ESV.GET, tuple(Property(e) for e in chunk))
            got = answer.values()
            missing = [e for e in chunk if not got.get(e)]
            if missing:
                raise AdapterError(self.device, epc_label(missing, self.names), None,
                                   f"{self.eoj} at {self.link.describe()} did not give "
                                   f"{'them' if len(missing) > 1 else 'it'} ({ESV(answer.esv).name})")
            out.update((e, got[e]) for e in chunk)
        return out

    async def set(self, values: Mapping[int, bytes], shown: object = None, verify: bool = True) -> None:
        """SetC of every property in one request (in the order given), then read back and compared.

        AdapterError naming the EPCs the node refused (SetC_SNA), or whose read-back differs.
        """
        answer = await self.request(ESV.SETC, tuple(Property(e, v) for e, v in values.items()), shown)
        if answer.esv == ESV.SETC_SNA:
            refused = [p.epc for p in answer.props if p.edt] or list(values)
            raise AdapterError(self.device, epc_label(refused, self.names), shown,
                               f"{self.eoj} at {self.link.describe()} refused the setting (SetC_SNA)")
        if verify:
            back = await self.get(values)
            wrong = {e: back[e].hex() for e, v in values.items() if back[e] != v}
            if wrong:
                raise AdapterError(self.device, epc_label(wrong, self.names), shown,
                                   f"read back {wrong} after writing { {e: v.hex() for e, v in values.items()} }")

    async def property_maps(self) -> PropertyMaps:
        """The object's three property maps (AdapterError if the node gives none or a malformed one)."""
        raw = await self.get((STATUS_ANNOUNCEMENT_MAP, SET_MAP, GET_MAP))
        try:
            return PropertyMaps(*(decode_property_map(raw[e]) for e in (STATUS_ANNOUNCEMENT_MAP, SET_MAP, GET_MAP)))
        except FrameError as exc:
            raise AdapterError(self.device, epc_label(raw, self.names), None, f"malformed property map: {exc}") from None


__all__ = ["EchonetLink", "EchonetObject", "Endpoint", "PropertyMaps", "acquire_endpoint", "epc_label",
           "missing_abilities", "release_endpoint"]
