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
        shown = "" if self.value is None else f" = {self.value!r}"
        return f"{loc}: {self.key}{shown}: {self.message}"


class RegisterMapError(ValueError):
    """A register-map file is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[MapProblem] | MapProblem):
        self.problems = problems if isinstance(problems, list) else [problems]
        super().__init__("\n".join(str(p) for p in self.problems))
