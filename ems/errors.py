"""The project's error types.

Every error a user can cause names where (file, line or row), what (key path or column), the bad
value, and what is allowed. All of them subclass :class:`EmsError`; input errors also subclass
``ValueError`` so library callers can catch them as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


#: a bad value is quoted up to this many characters: enough to recognise it, never a whole file
EXCERPT_CHARS = 80
#: a message is cut here: it may quote text from the input (a validator's own message)
MESSAGE_CHARS = 600
#: problems printed per error; the rest are counted (a file named by mistake can make hundreds,
#: each quoting a line of it)
MAX_SHOWN = 10


def excerpt(value: Any) -> str:
    """``repr`` of a bad value, cut to :data:`EXCERPT_CHARS` with its full length said."""
    text = repr(value)
    if len(text) <= EXCERPT_CHARS:
        return text
    return f"{text[:EXCERPT_CHARS]}... ({len(text):,} characters)"


class EmsError(Exception):
    """Base class of every error this project raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file.

    ``where`` is a file name, ``line`` its 1-based line (or data row) number when known,
    ``path`` the key path (``vehicles[0].min_soc_pct``) or column name, ``value`` the bad value
    (quoted as a short :func:`excerpt`, never in full).
    """

    where: str
    line: int | None
    path: str
    value: Any
    message: str
    has_value: bool = True

    def __str__(self) -> str:
        loc = self.where if self.line is None else f"{self.where}:{self.line}"
        head = f"{loc}: {self.path}" if self.path else loc
        if self.has_value:
            head += f" = {excerpt(self.value)}"
        return f"{head}: {self.message[:MESSAGE_CHARS]}"


class InputError(EmsError, ValueError):
    """One or more problems with an input file, reported together."""

    def __init__(self, problems: list[Problem] | Problem):
        self.problems: list[Problem] = problems if isinstance(problems, list) else [problems]
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """The problems as lines for people: the first :data:`MAX_SHOWN`, then how many more."""
        out = [str(p) for p in self.problems[:MAX_SHOWN]]
        if len(self.problems) > MAX_SHOWN:
            out.append(f"... and {len(self.problems) - MAX_SHOWN} more problem(s) not shown")
        return out


class ConfigError(InputError):
    """A site, tariff or register-map file is invalid."""


class DataError(InputError):
    """A data file (meter, history, weather, forecast CSV) is invalid."""



class PlanningError(EmsError):
    """The planner could not produce any checked schedule (never raised for infeasibility)."""
