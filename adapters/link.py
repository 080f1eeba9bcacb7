"""One Modbus connection (TCP or RTU) with timeouts, retries with backoff and reconnects.

pymodbus 3.16's own retry and background-reconnect machinery is switched off (``retries=0``,
``reconnect_delay=0``): this module decides. A request that times out or loses the connection
closes the socket (so a late answer can never be taken for the next request's), waits
``backoff_s`` (doubling up to ``backoff_max_s``), reconnects and tries again, ``attempts`` times
in all. A Modbus exception answer is the device's decision and is not retried, except
06 (busy) and 05 (acknowledge). Every failure is one :class:`~adapters.errors.AdapterError` naming
the device, the register and the value.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from adapters.errors import AdapterError

log = logging.getLogger(__name__)

EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                   4: "device failure", 5: "acknowledge", 6: "device busy", 10: "gateway path unavailable",
                   11: "gateway target failed to respond"}
RETRYABLE_CODES = {5, 6}


@dataclass(frozen=True)
class TcpLink:
    """Modbus TCP: host, port, unit id, per-request timeout [s]."""

    host: str
    port: int = 502
    unit_id: int = 1
    timeout_s: float = 1.0

    def describe(self) -> str:
        """``host:port unit N`` for messages."""
        return f"{self.host}:{self.port} unit {self.unit_id}"


@dataclass(frozen=True)
class RtuLink:
    """Modbus RTU (RS-485): serial device, baud rate, parity N/E/O, unit id, timeout [s]."""

    serial_port: str
    baudrate: int = 19200
    parity: Literal["N", "E", "O"] = "E"
    unit_id: int = 1
    timeout_s: float = 1.0

    def describe(self) -> str:
        """``port@baud parity unit N`` for messages."""
        return f"{self.serial_port}@{self.baudrate} {self.parity}81 unit {self.unit_id}"


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per request (>= 1) and the backoff between them [s]."""

    attempts: int = 3
    backoff_s: float = 0.05
    backoff_max_s: float = 1.0


class ModbusLink:
    """A client connection to one unit; ``read``/``write`` with retries. Not shared across loops."""

    def __init__(self, device: str, link: TcpLink | RtuLink, retry: RetryPolicy = RetryPolicy()):
        if retry.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1; got {retry.attempts}")
        self.device = device
        self.link = link
        self.retry = retry
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._lock = asyncio.Lock()
        self.reconnects = 0  # connections opened after the first one
        self.requests = 0    # requests sent (every attempt counts)
        self._opened = False

    @property
    def connected(self) -> bool:
        """True while the socket or serial port is open."""
        return self._client is not None and self._client.connected

    def _new_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        """A pymodbus client with its own retries and auto-reconnect disabled."""
        lk = self.link
        if isinstance(lk, TcpLink):
            return AsyncModbusTcpClient(lk.host, port=lk.port, timeout=lk.timeout_s, retries=0, reconnect_delay=0)
        return AsyncModbusSerialClient(lk.serial_port, baudrate=lk.baudrate, parity=lk.parity, bytesize=8,
                                       stopbits=1, timeout=lk.timeout_s, retries=0, reconnect_delay=0)

    async def _open(self) -> None:
        """Open the connection (AdapterError, retryable, if it cannot be opened)."""
        self._drop()
        client = self._new_client()
        if not await client.connect():
            client.close()
            raise AdapterError(self.device, "", None, f"cannot connect to {self.link.describe()} "
                               "(refused, unreachable or timed out)", retryable=True)
        if self._opened:
            self.reconnects += 1
        self._opened = True
        self._client = client

    def _drop(self) -> None:
        """Close the connection (the next request reconnects)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def connect(self) -> None:
        """Connect, retrying with backoff; AdapterError if every attempt fails."""
        async def nothing() -> None:
            return None
        async with self._lock:
            await self._with_retries(nothing, "", None)

    async def close(self) -> None:
        """Close the connection."""
        async with self._lock:
            self._drop()

    async def read(self, address: int, count: int, label: str) -> list[int]:
        """Read ``count`` holding registers (FC3) at 0-based ``address``."""
        async def once() -> list[int]:
            rr = await self._client.read_holding_registers(address, count=count, device_id=self.link.unit_id)  # type: ignore[union-attr]
            self._check(rr, label, None)
            if len(rr.registers) != count:
                raise AdapterError(self.device, label, len(rr.registers), f"asked {count} registers, got a different count")
            return list(rr.registers)
        async with self._lock:
            return await self._with_retries(once, label, None)

    async def write(self, address: int, registers: list[int], label: str, value: Any = None) -> None:
        """Write registers in ONE request (FC16, write multiple registers), never split."""
        async def once() -> None:
            rr = await self._client.write_registers(address, registers, device_id=self.link.unit_id)  # type: ignore[union-attr]
            self._check(rr, label, value)
        async with self._lock:
            await self._with_retries(once, label, value)

    def _check(self, rr: Any, label: str, value: Any) -> None:
        """Turn a Modbus exception response into an AdapterError."""
        if rr.isError():
            code = getattr(rr, "exception_code", None)
            name = EXCEPTION_NAMES.get(code or 0, "unknown")
            raise AdapterError(self.device, label, value, f"device answered Modbus exception {code:02d} ({name})"
                               f" on {self.link.describe()}", exception_code=code, retryable=code in RETRYABLE_CODES)

    async def _with_retries(self, op: Callable[[], Awaitable[Any]], label: str, value: Any) -> Any:
        """Run ``op`` up to ``attempts`` times: reconnect and back off after retryable failures."""
        delay = self.retry.backoff_s
        last: AdapterError | None = None
        for attempt in range(self.retry.attempts):
            try:
                if not self.connected:
                    await self._open()
                self.requests += 1
                return await op()
            except AdapterError as exc:
                if not exc.retryable:
                    raise
                last = exc
            except (ModbusException, asyncio.TimeoutError, OSError) as exc:
                self._drop()  # a late answer must never be read as the next request's
                last = AdapterError(self.device, label, value, f"no valid answer from {self.link.describe()}: {exc}",
                                    retryable=True)
            if attempt + 1 < self.retry.attempts:
                log.debug("%s: attempt %d failed (%s); retrying in %.3f s", self.device, attempt + 1, last, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, self.retry.backoff_max_s)
        assert last is not None
        raise last
