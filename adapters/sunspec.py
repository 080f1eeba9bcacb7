"""SunSpec discovery: find the "SunS" marker and walk the model chain.

The marker 0x5375 0x6E53 ("SunS") sits at 40000, else 0, else 50000. After it, each model is
an ID register, a length register L and L registers of data; the next model starts L + 2 further
on; ID 0xFFFF ends the chain. Devices differ in small ways (model 1 with L = 65, a chain that ends
with an illegal-address error instead of 0xFFFF), which are tolerated here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from adapters.errors import AdapterError

log = logging.getLogger(__name__)

SUNS = [0x5375, 0x6E53]
BASES = (40000, 0, 50000)
END_ID = 0xFFFF
MAX_MODELS = 64  # a safety stop for a corrupt chain that never ends

Reader = Callable[[int, int, str], Awaitable[list[int]]]


@dataclass(frozen=True)
class ModelHeader:
    """One model in the chain: its ID, the address of its ID register, its length L."""

    id: int
    address: int
    length: int


async def discover(read: Reader, device: str) -> tuple[int, list[ModelHeader]]:
    """Base address and model chain of a SunSpec device.

    ``read(address, count, label)`` reads holding registers and raises AdapterError. Connection
    failures propagate; exception answers at a base mean "not here" and the next base is tried.
    """
    answers: list[str] = []
    for base in BASES:
        try:
            regs = await read(base, 2, f"SunS@{base}")
        except AdapterError as exc:
            if exc.exception_code is None:
                raise
            answers.append(f"{base}: exception {exc.exception_code:02d}")
            continue
        if regs == SUNS:
            return base, await walk(read, base + 2, device)
        answers.append(f"{base}: {regs[0]:#06x} {regs[1]:#06x}")
    hint = ""
    if answers and all(a.endswith(("exception 04", "exception 11", "exception 10")) for a in answers):
        hint = "; every read failed with a device/gateway error: is the unit id right?"
    raise AdapterError(device, "SunS@40000/0/50000", None,
                       f"no SunSpec marker 'SunS' found ({'; '.join(answers)}){hint}")


async def walk(read: Reader, address: int, device: str) -> list[ModelHeader]:
    """The model chain starting at ``address`` (the first model's ID register)."""
    models: list[ModelHeader] = []
    for _ in range(MAX_MODELS):
        try:
            mid, length = await read(address, 2, f"model header@{address}")
        except AdapterError as exc:
            if models and exc.exception_code == 2:
                log.info("%s: chain ends with an illegal-address answer at %d (no 0xFFFF end marker)", device, address)
                return models
            raise
        if mid == END_ID:
            return models
        models.append(ModelHeader(mid, address, length))
        address += length + 2
        if address > 0xFFFF:
            raise AdapterError(device, f"model {mid}@{address - length - 2}", length,
                               "model length runs past the end of the register space")
    raise AdapterError(device, f"model header@{address}", None, f"more than {MAX_MODELS} models: corrupt chain?")
