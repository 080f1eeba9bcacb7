"""Clocks: the wall clock for the daemon on a gateway, a faster simulated clock for the simulator,
the demo and tests, and a manual clock for tick-by-tick tests.

All return aware UTC timestamps. ``speed`` is simulated seconds per real second.
"""

from __future__ import annotations

import time
from typing import Protocol

import pandas as pd


class Clock(Protocol):
    """What the daemon needs from a clock."""

    speed: float

    def now(self) -> pd.Timestamp:
        """The current (simulated) time, aware UTC."""
        ...


class WallClock:
    """Real time."""

    speed = 1.0

    def now(self) -> pd.Timestamp:
        """The current wall-clock time, aware UTC."""
        return pd.Timestamp.now(tz="UTC")


class SimClock:
    """Simulated time starting at ``start`` and running ``speed`` times faster than real time."""

    def __init__(self, start: pd.Timestamp, speed: float = 1.0):
        if start.tzinfo is None:
            raise ValueError("SimClock start must be time-zone aware")
        if not speed > 0:
            raise ValueError(f"speed must be positive; got {speed}")
        self.start = start.tz_convert("UTC")
        self.speed = float(speed)
        self._t0 = time.monotonic()
        self._frozen: float | None = None

    def now(self) -> pd.Timestamp:
        """Simulated time: start + elapsed real time x speed."""
        return self.start + pd.Timedelta(seconds=self.elapsed_real_s() * self.speed)

    def elapsed_real_s(self) -> float:
        """Real seconds this clock has run since it started (time while frozen not counted) [s]."""
        return self._frozen if self._frozen is not None else time.monotonic() - self._t0

    def freeze(self) -> None:
        """Stop simulated time (e.g. while a daemon starts up: at high speed a second of start-up
        would otherwise be an hour of simulated time)."""
        if self._frozen is None:
            self._frozen = time.monotonic() - self._t0

    def release(self) -> None:
        """Let simulated time run again from where it stood."""
        if self._frozen is not None:
            self._t0, self._frozen = time.monotonic() - self._frozen, None

    def real_seconds(self, sim_seconds: float) -> float:
        """How long ``sim_seconds`` of simulated time take in real time [s]."""
        return sim_seconds / self.speed


class ManualClock:
    """A clock that moves only when told (tick-by-tick tests: ``timeleap``)."""

    speed = 1.0

    def __init__(self, start: pd.Timestamp):
        if start.tzinfo is None:
            raise ValueError("ManualClock start must be time-zone aware")
        self.t = start.tz_convert("UTC")

    def now(self) -> pd.Timestamp:
        """The time last set."""
        return self.t

    def timeleap(self, seconds: float) -> pd.Timestamp:
        """Move the clock forward by ``seconds``; return the new time."""
        self.t = self.t + pd.Timedelta(seconds=seconds)
        return self.t
