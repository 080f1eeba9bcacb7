"""Readings the daemon believes (:class:`ReadingGuard`): plausibility at the device boundary.

The adapters turn "not implemented" sentinels, non-finite numbers, values outside the register
map's range, SOC outside 0-100 % and powers beyond a unit's rating into typed faults
(:mod:`adapters.plausibility`) and never pass the bad number on. The guard adds the bounds only the
site knows, holds the last good value for a short time and says what the rest of the daemon may
trust; it decides by the faults' fields, never by their text:

- **Meter power**: an import above ``SITE_MARGIN`` x ``grid.import_limit_kw``, or an export above
  ``SITE_MARGIN`` x what the site can feed in (``grid.export_limit_kw`` + the PV's AC capacity + the
  chargers' discharge ratings) + ``EXPORT_SLACK_KW``, is a ``SITE_LIMIT`` fault. For :data:`HOLD_S` simulated seconds after
  the last good reading the last good import and export stand in (:attr:`MeterQuality.HELD`); after
  that the reading is dropped (:attr:`MeterQuality.DROPPED`) and the meter counts as lost, as when it
  does not answer: the demand guard sees only the chargers. A tick that is not GOOD never updates
  the forecast miss, and its demand window is flagged, so it never becomes a metered peak.
- **Unit SOC**: unknown, outside 0-100 % or the map's range, or a move the unit's rating cannot make
  in the time since the last good reading (``SOC_JUMP``) reads as None from the first bad reading:
  nothing is discharged (the dispatcher and the adapter's clamp), the tracker keeps the last good
  SOC and carries it forward with the unit's measured power, and charging toward the departure
  target goes on. A new level that stays self-consistent for :data:`JUMP_CONFIRM_S` is accepted.
- **Unit power**: unknown or beyond the rating: the last good power for :data:`HOLD_S`, then the
  unit's own setpoint read-back as the estimate, with the SOC treated as unknown (the safe rule: no
  discharge).

Events: one ``reading-fault`` (warning) when a point's fault starts, one ``reading-recovered`` when
it reads good again, never one per tick.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum

import pandas as pd

from adapters import ChargerState, MeterReading
from adapters.plausibility import RATING_MARGIN, FaultKind, ReadingFault, has_fault, judge
from ems.config import SiteConfig
from ems.daemon.host import Host

#: A bad reading is replaced by the last good one for at most this long after it [simulated s];
#: then the safe rule (module docstring). A minute: a glitch or a short burst rides through on the
#: last value, a meter or unit that keeps reading garbage is not believed for longer.
HOLD_S = 60.0
#: The meter's import may exceed the site's import limit by this factor before it counts as implausible
#: (a breaker carries 1.5 x its rating for minutes at most).
SITE_MARGIN = 1.5
#: ... and an export beyond SITE_MARGIN x what the site can feed in plus this [kW] (a meter's noise
#: around 0 on a site that cannot export at all).
EXPORT_SLACK_KW = 1.0
#: A SOC move beyond what the rating allows is a jump only beyond this much more [% of capacity]
#: (register resolution, a BMS re-estimating its SOC by a point).
JUMP_SLACK_PCT = 2.0
#: A new SOC level that stays consistent with itself this long [simulated s] is accepted after a jump.
JUMP_CONFIRM_S = 600.0


class MeterQuality(Enum):
    """What a tick's meter reading is worth."""

    GOOD = "good"          # read and believed
    HELD = "held"          # not believed: the last good import/export stand in (within HOLD_S)
    DROPPED = "dropped"    # not believed for longer than HOLD_S: no reading (the meter counts as lost)
    LOST = "lost"          # the meter did not answer
    ABSENT = "absent"      # the site has no meter


@dataclass(frozen=True)
class Episode:
    """One fault of one point, from its first bad reading (``since``) until a good one."""

    fault: ReadingFault
    since: pd.Timestamp


@dataclass
class _SocSeen:
    """The last good SOC of a unit [%] and when it was read, with the vehicle it belonged to; and a
    candidate new level after a jump (``new_since``: first seen, ``new_t``/``new_pct``: last seen)."""

    t: pd.Timestamp
    pct: float
    vehicle: str | None
    new_since: pd.Timestamp | None = None
    new_t: pd.Timestamp | None = None
    new_pct: float = math.nan


def export_bound_kw(cfg: SiteConfig) -> float:
    """The largest believable export at the meter [kW]: what the site can feed in, with SITE_MARGIN
    and EXPORT_SLACK_KW."""
    pv = sum(a.ac_capacity_kw or a.capacity_kwp for a in cfg.pv)
    return SITE_MARGIN * (cfg.grid.export_limit_kw + pv + sum(c.max_discharge_kw for c in cfg.chargers)) + EXPORT_SLACK_KW


class ReadingGuard:
    """Checks and holds the meter's and the units' readings (module docstring). Owned by
    :class:`~ems.daemon.links.Links`, which runs every reading through it."""

    def __init__(self, host: Host):
        self.host = host
        self.episodes: dict[tuple[str, str], Episode] = {}
        self.meter_quality = MeterQuality.GOOD
        self._meter_good: tuple[pd.Timestamp, MeterReading] | None = None
        self._power_good: dict[str, tuple[pd.Timestamp, ChargerState]] = {}
        self._soc: dict[str, _SocSeen] = {}

    # ----------------------------------------------------------------- episodes and events
    def _episodes(self, now: pd.Timestamp, device: str, faults: tuple[ReadingFault, ...], rule: str) -> None:
        """Open an episode (one event) for each new faulty point of ``device``; close (one event) those now good."""
        bad = {f.point: f for f in faults}
        for point, f in bad.items():
            if (device, point) not in self.episodes:
                self.episodes[device, point] = Episode(f, now)
                value = f.value if f.value is None or math.isfinite(f.value) else str(f.value)   # JSON has no inf
                self.host.event("reading-fault", f"{f}; {rule}", "warning", device=device, point=point,
                                fault=f.kind.value, value=value, low=f.low, high=f.high, hold_s=HOLD_S)
        for (dev, point), ep in list(self.episodes.items()):
            if dev == device and point not in bad:
                del self.episodes[dev, point]
                seconds = (now - ep.since).total_seconds()
                self.host.event("reading-recovered", f"{device}: {point} believable again after {seconds:g} s "
                                f"({ep.fault.kind.value})", device=device, point=point, fault=ep.fault.kind.value,
                                seconds=seconds)

    # ----------------------------------------------------------------- meter
    def meter(self, now: pd.Timestamp, reading: MeterReading | None, present: bool) -> MeterReading | None:
        """The meter reading the daemon may use (None: no usable reading); sets :attr:`meter_quality`."""
        if reading is None:
            self.meter_quality = MeterQuality.LOST if present else MeterQuality.ABSENT
            return None
        cfg = self.host.cfg
        faults = reading.faults
        if reading.power_known:   # the site's own bounds, in kW
            net_kw = reading.import_kw - reading.export_kw
            fault = judge(reading.device, "power_w", net_kw, -export_bound_kw(cfg), SITE_MARGIN * cfg.grid.import_limit_kw,
                          FaultKind.SITE_LIMIT, "kW (+ = import)")
            faults += (fault,) if fault is not None else ()
        self._episodes(now, reading.device, faults, f"the last good power stands in for up to {HOLD_S:g} s, then "
                       "the meter counts as lost (the guard sees only the chargers); the window is flagged, never a peak")
        if not has_fault(faults, "power_w"):
            self._meter_good = (now, reading)
            self.meter_quality = MeterQuality.GOOD
            return reading
        good = self._meter_good
        if good is not None and (now - good[0]).total_seconds() <= HOLD_S:
            self.meter_quality = MeterQuality.HELD
            return dataclasses.replace(reading, import_kw=good[1].import_kw, export_kw=good[1].export_kw, faults=faults)
        self.meter_quality = MeterQuality.DROPPED
        return None

    # ----------------------------------------------------------------- units
    def unit(self, now: pd.Timestamp, charger_id: str, state: ChargerState | None) -> ChargerState | None:
        """The state of a unit the daemon may use: bad SOC as None, bad power held then estimated."""
        if state is None:
            return None
        faults = state.faults
        jump = self._soc_jump(now, charger_id, state) if state.soc_known else None
        if jump is not None:
            faults += (jump,)
        self._episodes(now, state.device, faults, "no discharge from this unit while it lasts (charging toward the "
                       f"departure goes on from the last good SOC); a bad power stands in for up to {HOLD_S:g} s")
        if not state.plugged:
            self._soc.pop(charger_id, None)   # the next car (or this one back from a trip) starts afresh
        if not faults:
            self._power_good[charger_id] = (now, state)
            return state
        changes: dict = {"faults": faults}
        if has_fault(faults, "soc_pct"):
            changes["soc_pct"] = None
        if has_fault(faults, "power_w"):
            good = self._power_good.get(charger_id)
            if good is not None and (now - good[0]).total_seconds() <= HOLD_S:
                changes |= {"charge_kw": good[1].charge_kw, "discharge_kw": good[1].discharge_kw}
            else:   # the safe rule: what the unit was told, and no discharge
                changes |= {"charge_kw": state.setpoint_charge_kw, "discharge_kw": state.setpoint_discharge_kw,
                            "soc_pct": None}
        else:
            self._power_good[charger_id] = (now, state)
        return dataclasses.replace(state, **changes)

    def _capacity_kwh(self, charger_id: str, state: ChargerState) -> float | None:
        """The capacity [kWh] the jump check assumes: the configured vehicle the unit names, else the
        smallest that may plug in here (the most permissive), else what the unit reports."""
        cfg = self.host.cfg
        named = [v.capacity_kwh for v in cfg.vehicles if v.id == state.vehicle_id]
        here = [v.capacity_kwh for v in cfg.vehicles if not v.chargers or charger_id in v.chargers]
        caps = named or here
        return min(caps) if caps else state.capacity_kwh

    def _max_move_pct(self, charger_id: str, state: ChargerState, dt_s: float) -> float:
        """The most the SOC can move in ``dt_s`` seconds at the unit's rating (with margin) [%]."""
        cap = self._capacity_kwh(charger_id, state)
        c = next(c for c in self.host.cfg.chargers if c.id == charger_id)
        if not cap:
            return math.inf
        return RATING_MARGIN * max(c.max_charge_kw, c.max_discharge_kw) * dt_s / 3600 / cap * 100 + JUMP_SLACK_PCT

    def _soc_jump(self, now: pd.Timestamp, charger_id: str, state: ChargerState) -> ReadingFault | None:
        """A SOC_JUMP fault if the (in-range) SOC moved more than the rating allows since the last good
        one of the same plugged vehicle; a new level consistent for JUMP_CONFIRM_S is accepted."""
        soc = float(state.soc_pct)  # type: ignore[arg-type]
        seen = self._soc.get(charger_id)
        if seen is None or not state.plugged or seen.vehicle != state.vehicle_id:
            self._soc[charger_id] = _SocSeen(now, soc, state.vehicle_id)
            return None
        dt_s = max((now - seen.t).total_seconds(), 0.0)
        allowed = self._max_move_pct(charger_id, state, dt_s)
        if abs(soc - seen.pct) <= allowed:
            self._soc[charger_id] = _SocSeen(now, soc, state.vehicle_id)
            return None
        fault = ReadingFault(state.device, "soc_pct", FaultKind.SOC_JUMP, soc, seen.pct - allowed, seen.pct + allowed, "Pct")
        if seen.new_since is None or seen.new_t is None or abs(soc - seen.new_pct) > self._max_move_pct(
                charger_id, state, max((now - seen.new_t).total_seconds(), 0.0)):
            seen.new_since = now          # a new candidate level
        elif (now - seen.new_since).total_seconds() >= JUMP_CONFIRM_S:
            self._soc[charger_id] = _SocSeen(now, soc, state.vehicle_id)   # it stayed: the unit re-based its SOC
            return None
        seen.new_t, seen.new_pct = now, soc
        return fault
