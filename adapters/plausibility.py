"""Plausibility of device readings: a reading the product cannot believe is a typed fault, never a number.

A reading is *unknown* when its register holds the map's "not implemented" sentinel (SunSpec: int16
0x8000, uint16 0xFFFF, acc32 0, uint32 0xFFFFFFFF, int32 0x80000000, float32 NaN, or a scale factor
that is 0x8000 or outside -10..10): :func:`adapters.registers.decode` gives None. It is
*implausible* when it is not a finite number, lies outside the register map's ``range``, or lies
beyond a physical bound the adapter knows (SOC 0-100 %, a unit's power within its rating with a
margin, a meter's power within :data:`METER_MAX_KW`). The caller may add bounds only it knows (the
daemon: the site's import limit, the SOC a unit's rating can move in the time between two readings).

Each problem is one :class:`ReadingFault` naming the device, the point, the :class:`FaultKind`, the
value and the bounds; the adapters return them in ``ChargerState.faults`` and
``MeterReading.faults`` and never pass the bad number on. Callers branch on these fields, never on
message text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any


class FaultKind(Enum):
    """Why a reading is not believed."""

    UNKNOWN = "unknown"              # the "not implemented" sentinel, or its scale factor is unknown
    NOT_FINITE = "not-finite"        # +inf / -inf (NaN is float32's sentinel: UNKNOWN)
    MAP_RANGE = "map-range"          # outside the register map's ``range`` for the point
    PHYSICAL = "physical"            # beyond a physical bound: SOC 0-100 %, a rating with margin, METER_MAX_KW
    SITE_LIMIT = "site-limit"        # a meter power beyond the site's grid limits with margin (the daemon's check)
    SOC_JUMP = "soc-jump"            # SOC moved more than the unit's rating allows in the time between readings


#: A unit's measured power may exceed its configured rating by this share (plus RATING_SLACK_KW)
#: before it counts as implausible: inverters overshoot a little and meters read a little high.
RATING_MARGIN = 1.25
#: ... plus this absolute slack [kW].
RATING_SLACK_KW = 0.5
#: SOC [%] outside this range is not a state of charge.
SOC_RANGE_PCT = (0.0, 100.0)
#: No site this product controls draws or feeds more than this at its meter [kW] (10 MW: far above
#: any low- or high-voltage contract); a larger reading is garbage whatever the site.
METER_MAX_KW = 10_000.0


@dataclass(frozen=True)
class ReadingFault:
    """One reading not believed: ``device``, ``point`` (the register map's point name), ``kind``,
    the ``value`` read in the point's unit (None when unknown), the bounds [``low``, ``high``] it
    was checked against (None when not a bound problem) and that unit."""

    device: str
    point: str
    kind: FaultKind
    value: float | None = None
    low: float | None = None
    high: float | None = None
    unit: str = ""

    def __str__(self) -> str:
        shown = "unknown (not implemented)" if self.value is None else f"{self.value:g} {self.unit}".rstrip()
        where = f"{self.device}: {self.point} = {shown}"
        if self.kind in (FaultKind.UNKNOWN, FaultKind.NOT_FINITE) or self.low is None or self.high is None:
            return f"{where} ({self.kind.value})"
        return f"{where}: outside [{self.low:g}, {self.high:g}]{' ' + self.unit if self.unit else ''} ({self.kind.value})"


def is_number(value: Any) -> bool:
    """True for an int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def judge(device: str, point: str, value: Any, low: float = -math.inf, high: float = math.inf,
          kind: FaultKind = FaultKind.PHYSICAL, unit: str = "") -> ReadingFault | None:
    """The fault of one numeric reading, or None if it is a finite number in [``low``, ``high``].

    None (unknown) is :attr:`FaultKind.UNKNOWN`, a non-finite number :attr:`FaultKind.NOT_FINITE`,
    a number outside the bounds ``kind``.
    """
    if value is None or not is_number(value):
        return ReadingFault(device, point, FaultKind.UNKNOWN, None, None, None, unit)
    if not math.isfinite(value):
        return ReadingFault(device, point, FaultKind.NOT_FINITE, float(value), None, None, unit)
    if not low <= value <= high:
        return ReadingFault(device, point, kind, float(value), low, high, unit)
    return None


def power_bound_kw(rating_kw: float) -> float:
    """The largest believable power [kW] of a unit rated ``rating_kw``: the rating with
    :data:`RATING_MARGIN` and :data:`RATING_SLACK_KW`."""
    return rating_kw * RATING_MARGIN + RATING_SLACK_KW


def has_fault(faults: tuple[ReadingFault, ...], point: str) -> bool:
    """True if ``faults`` hold one for ``point``."""
    return any(f.point == point for f in faults)


def check_into(faults: dict[str, ReadingFault], device: str, point: str, value: Any, low: float, high: float,
               unit: str = "", kind: FaultKind = FaultKind.PHYSICAL) -> None:
    """Record in ``faults[point]`` the fault of ``value`` against [``low``, ``high``] (:func:`judge`),
    unless ``point`` has a fault already (the register map's own check came first)."""
    if point not in faults:
        fault = judge(device, point, value, low, high, kind, unit)
        if fault is not None:
            faults[point] = fault
