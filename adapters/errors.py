"""Error types of the device layer.

:class:`AdapterError` is the one error a device operation raises: it names the device, the
register (point name and address) and the value involved, so a log line says exactly what failed.
:class:`RegisterMapError` lists every problem of a register-map file (file, line, key, value,
what is allowed), like the application's configuration errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class AdapterError(Exception):
    """A device operation failed (connect, read, write, read-back, protocol exception).

    ``device`` is the configured device name, ``register`` the point name and address (or ``""``
    for the connection itself), ``value`` the value read or written (None if none), and
    ``exception_code`` the Modbus exception code when the device answered with one.
    """

    def __init__(self, device: str, register: str, value: Any, message: str, *,
                 exception_code: int | None = None, retryable: bool = False):
        self.device = device
        self.register = register
        self.value = value
        self.message = message
        self.exception_code = exception_code
        self.retryable = retryable
        where = f"{device}: {register}" if register else device
        if value is not None:
            where += f" = {value!r}"
        super().__init__(f"{where}: {message}")


class CapabilityError(AdapterError):
    """The unit answers but cannot do what this controller needs (found at start-up, before any write).

    ``missing`` names each missing ability (e.g. ``"Set 0xEB charging electric power setting"``);
    ``consequence`` says what the adapter does instead (it refuses to drive the unit).
    """

    def __init__(self, device: str, missing: list[str], consequence: str):
        self.missing = tuple(missing)
        self.consequence = consequence
        super().__init__(device, "", None, f"the unit lacks what control needs: {'; '.join(missing)}. {consequence}")


@dataclass(frozen=True)
class MapProblem:
    """One problem in a register-map file: file, 1-based line (None if unknown), key path, value."""

    where: str
    line: int | None
    key: str
    value: Any
    message: str

    def __str__(self) -> str:
        loc = self.where if self.line is None else f"{self.where}:{self.line}"
        if not self.key:
            return f"{loc}: {self.message}"
        text = repr(self.value)   # a short excerpt: a whole section of the file is never repeated
        shown = "" if self.value is None else f" = {text if len(text) <= 80 else text[:80] + '...'}"
        return f"{loc}: {self.key}{shown}: {self.message}"


class RegisterMapError(ValueError):
    """A register-map file is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[MapProblem] | MapProblem):
        self.problems = problems if isinstance(problems, list) else [problems]
        super().__init__("\n".join(str(p) for p in self.problems))
