"""Operator overrides (issue 12): what a driver or an operator changes on a running daemon through
the HTTP API (ems/web), kept in the store so that a restart keeps them (:class:`Overrides`).

Five kinds, at most one in force per kind and car (a new one replaces the old, which ends
``replaced by <id>``):

============== ==================================================== ===================================
kind           what                                                 ends
============== ==================================================== ===================================
``departure``  a car leaves at ``depart`` with ``target_soc_pct``   at ``depart``
               (the stay under way; a car here without a
               configured stay gets one)
``boost``      charge a car now at full power to                    ``until`` (default: its departure,
               ``target_soc_pct``, no discharge                     else :data:`BOOST_DEFAULT_H`)
``pause-v2b``  no discharge from one car (``vehicle``) or all       ``until``
``reserve``    hold the outage reserve for ``hours`` of the         ``until``
               critical load (when above ``outage.reserve_hours``)
``peak-target`` the demand guard holds this 30-minute average       ``until``
               [kW] instead of the plan's peak
============== ==================================================== ===================================

Where each applies (one place each, read at every use, so adding, cancelling or expiring one
takes effect at the next tick, and each asks for a re-plan):

- the plan (:meth:`Overrides.for_plan`, from :meth:`ems.daemon.plans.PlanKeeper.make`): a departure
  or a boost changes the car's stays (:class:`ems.vehicles.Stay`), a boost or a pause stops its
  discharge and a raised reserve holds more (:class:`ems.planning.OperatorLimits`), a peak target
  above the month's peak is planned as already paid for (the plan does not spend car energy to
  stay under a level the operator allows; a target below it is left to the guard);
- the dispatch tick (:class:`ems.daemon.dispatcher.Dispatcher`): :meth:`Overrides.departure` (the
  departure target and time), :meth:`Overrides.boost_kwh` (full charge until the target),
  :meth:`Overrides.no_discharge`, :meth:`Overrides.reserve` (held hard whatever ``outage.mode``)
  and :meth:`Overrides.peak_target_kw` (the guard's target, at most the import limit).

Every override and its end is an event (``override``, ``override-ended``) with who and when.
Values are checked against the running config and the daemon's clock before anything changes
(:class:`OverrideError`: the field, the value, what is allowed).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from ems.config import Vehicle
from ems.daemon.host import Host
from ems.daemon.links import Links
from ems.daemon.tracker import Tracker
from ems.planning import OperatorLimits
from ems.vehicles import Stay
from ems.timegrid import local_iso
from ems.vehicles import stays as vehicle_stays

#: How far ahead an override may reach [days] (a departure, an ``until``).
MAX_AHEAD_DAYS = 7
#: A boost without ``until`` on a car with no known departure lasts this long [h].
BOOST_DEFAULT_H = 12.0
#: The events an override's start and end write.
STARTED, ENDED = "override", "override-ended"


class _Spec(BaseModel):
    """Fields every override takes: ``by``, who set it (free text; recorded with the override)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    by: str | None = Field(default=None, min_length=1, max_length=64)

    @property
    def vehicle_id(self) -> str | None:
        """The car it is for (None: the whole site)."""
        return getattr(self, "vehicle", None)

    @property
    def ends(self) -> dt.datetime | None:
        """When it ends as given (None: worked out when it is added)."""
        return getattr(self, "until", None)


class DepartureSpec(_Spec):
    """A car's departure time and the SOC it needs then [%] for the stay under way."""

    kind: Literal["departure"]
    vehicle: str
    depart: AwareDatetime
    target_soc_pct: float = Field(ge=0, le=100)

    @property
    def ends(self) -> dt.datetime:
        return self.depart


class BoostSpec(_Spec):
    """Charge a car now at full power to ``target_soc_pct`` [%], no discharge, until ``until``."""

    kind: Literal["boost"]
    vehicle: str
    target_soc_pct: float = Field(ge=0, le=100)
    until: AwareDatetime | None = None


class PauseSpec(_Spec):
    """No discharge (V2B/V2H paused) from one car, or from every car (``vehicle`` null), until ``until``."""

    kind: Literal["pause-v2b"]
    vehicle: str | None = None
    until: AwareDatetime


class ReserveSpec(_Spec):
    """Hold the outage reserve for ``hours`` of the critical load [h] until ``until``."""

    kind: Literal["reserve"]
    hours: float = Field(gt=0, le=24 * 14)
    until: AwareDatetime


class PeakTargetSpec(_Spec):
    """The demand guard holds this 30-minute average import [kW] until ``until``."""

    kind: Literal["peak-target"]
    kw: float = Field(gt=0)
    until: AwareDatetime


Spec = Annotated[DepartureSpec | BoostSpec | PauseSpec | ReserveSpec | PeakTargetSpec, Field(discriminator="kind")]
#: Parses a request body (JSON text) into one of the specs; pydantic's ValidationError names the field.
SPEC: TypeAdapter[Spec] = TypeAdapter(Spec)
KINDS = ("departure", "boost", "pause-v2b", "reserve", "peak-target")


class OverrideError(ValueError):
    """An override the running site cannot take: ``field``, the ``value`` given, and what is ``allowed``."""

    def __init__(self, field: str, value: Any, allowed: str):
        super().__init__(f"{field}: {allowed} (got {value!r})")
        self.field, self.value, self.allowed = field, value, allowed


@dataclass(frozen=True)
class Override:
    """One override: its spec, id, who set it and when, when it ends (aware timestamps)."""

    id: str
    spec: DepartureSpec | BoostSpec | PauseSpec | ReserveSpec | PeakTargetSpec
    created_at: pd.Timestamp
    created_by: str
    expires_at: pd.Timestamp

    @property
    def key(self) -> tuple[str, str | None]:
        """What it replaces: the override of the same kind for the same car (or the site)."""
        return self.spec.kind, self.spec.vehicle_id

    def text(self, zone: dt.tzinfo) -> str:
        """One line for the events and the page (English; times local, to the minute)."""
        s = self.spec
        until = f"until {local_iso(self.expires_at, zone)}"
        if isinstance(s, DepartureSpec):
            return f"{s.vehicle} leaves at {local_iso(self.expires_at, zone)} with {s.target_soc_pct:g} %"
        if isinstance(s, BoostSpec):
            return f"{s.vehicle}: charge now to {s.target_soc_pct:g} %, no discharge, {until}"
        if isinstance(s, PauseSpec):
            return f"discharge paused for {s.vehicle or 'every car'} {until}"
        if isinstance(s, ReserveSpec):
            return f"outage reserve {s.hours:g} h {until}"
        return f"peak target {s.kw:g} kW {until}"

    def to_json(self, zone: dt.tzinfo) -> dict[str, Any]:
        """The override for the API: spec fields, id, who, when (site-local ISO 8601, to the second)."""
        return {"id": self.id, **self.spec.model_dump(mode="json", exclude={"by"}), "by": self.created_by,
                "created_at": local_iso(self.created_at, zone), "expires_at": local_iso(self.expires_at, zone),
                "text": self.text(zone)}


def _hours(a: pd.Timestamp, b: pd.Timestamp) -> float:
    return (b - a) / pd.Timedelta(hours=1)


@dataclass(frozen=True)
class PlanOverrides:
    """What a plan takes from the overrides in force (:meth:`Overrides.for_plan`): ``stays`` for the
    planner's ``stays`` (None: the configured windows), ``limits``, ``peak_floor_kw`` (a peak target
    the plan may use as already paid for, None: none) and the ``ids`` in force."""

    stays: dict[str, list[Stay]] | None = None
    limits: OperatorLimits | None = None
    peak_floor_kw: float | None = None
    ids: tuple[str, ...] = ()


class Overrides:
    """The overrides in force (:attr:`active`), kept in the store; see the module docstring."""

    def __init__(self, host: Host, tracker: Tracker, links: Links, new_id: Callable[[], str] = lambda: secrets.token_hex(6)):
        self.host = host
        self.tracker = tracker
        self.links = links
        self.active: list[Override] = []
        self._new_id = new_id

    # ----------------------------------------------------------------- lifecycle
    def resume(self, now: pd.Timestamp) -> None:
        """The overrides still in force at ``now`` from the store (a restart keeps them)."""
        self.active = []
        for row in reversed(self.host.store.overrides(active_at=now)):
            spec = SPEC.validate_python({**row["spec"], "by": None}, strict=False)
            self.active.append(Override(row["id"], spec, pd.Timestamp(row["created_at"]), row["created_by"],
                                        pd.Timestamp(row["expires_at"])))

    def add(self, spec: DepartureSpec | BoostSpec | PauseSpec | ReserveSpec | PeakTargetSpec, who: str,
            now: pd.Timestamp) -> Override:
        """Check ``spec`` against the running site (:class:`OverrideError`, nothing changed), store it
        (``who``: who set it, as the API puts it), end the one it replaces, log it and ask for a re-plan."""
        expires = self._check(spec, now)
        new = Override(self._new_id(), spec, now, who[:200], expires)
        for old in [o for o in self.active if o.key == new.key]:
            self._end(old, now, f"replaced by {new.id}")
        self.host.store.record_override(new.id, spec.kind, spec.vehicle_id, spec.model_dump(mode="json", exclude={"by"}),
                                        now, new.created_by, expires)
        self.active.append(new)
        self.host.event(STARTED, f"{new.text(self.host.cfg.zone)} (set by {new.created_by})", override=new.id,
                        by=new.created_by, spec=new.spec.model_dump(mode="json", exclude={"by"}))
        self.host.request_replan(STARTED)
        return new

    def cancel(self, oid: str, who: str, now: pd.Timestamp) -> Override:
        """End the override ``oid`` now (KeyError when none such is in force) and ask for a re-plan."""
        found = next((o for o in self.active if o.id == oid), None)
        if found is None:
            raise KeyError(oid)
        self._end(found, now, f"cancelled by {who}")
        self.host.request_replan(ENDED)
        return found

    def expire(self, now: pd.Timestamp) -> None:
        """End the overrides whose time is up (each tick); a re-plan if any ended."""
        done = [o for o in self.active if o.expires_at <= now]
        for o in done:
            self._end(o, now, "expired")
        if done:
            self.host.request_replan(ENDED)

    def _end(self, o: Override, now: pd.Timestamp, why: str) -> None:
        self.active.remove(o)
        self.host.store.end_override(o.id, now, why)
        self.host.event(ENDED, f"{o.text(self.host.cfg.zone)}: {why}", override=o.id, why=why)

    def _check(self, spec: DepartureSpec | BoostSpec | PauseSpec | ReserveSpec | PeakTargetSpec,
               now: pd.Timestamp) -> pd.Timestamp:
        """When ``spec`` ends, once it is known to fit the site now; OverrideError otherwise."""
        cfg = self.host.cfg
        latest = now + pd.Timedelta(days=MAX_AHEAD_DAYS)
        v = None
        if spec.vehicle_id is not None:
            v = next((x for x in cfg.vehicles if x.id == spec.vehicle_id), None)
            if v is None:
                raise OverrideError("vehicle", spec.vehicle_id, f"one of the site's vehicles {[x.id for x in cfg.vehicles]}"
                                    + (" or null for every car" if isinstance(spec, PauseSpec) else ""))
        if isinstance(spec, (DepartureSpec, BoostSpec)):
            assert v is not None
            if not v.min_soc_pct <= spec.target_soc_pct <= v.max_soc_pct:
                raise OverrideError("target_soc_pct", spec.target_soc_pct, f"between {v.id}'s min_soc_pct and max_soc_pct, "
                                    f"{v.min_soc_pct:g}..{v.max_soc_pct:g} %")
            if not self._here(v, now):
                raise OverrideError("vehicle", v.id, "a car plugged in now or in a configured stay now (an override is "
                                    "for the stay under way)")
        if isinstance(spec, ReserveSpec) and cfg.load.critical_kw <= 0:
            raise OverrideError("hours", spec.hours, "no reserve: the site has no critical circuits (load.critical_circuits)")
        if isinstance(spec, PeakTargetSpec) and spec.kw > cfg.grid.import_limit_kw:
            raise OverrideError("kw", spec.kw, f"at most the import limit, {cfg.grid.import_limit_kw:g} kW")
        field = "depart" if isinstance(spec, DepartureSpec) else "until"
        ends = spec.ends
        if ends is None:   # a boost: until the car leaves, else BOOST_DEFAULT_H
            dep = self.departure(v, now) if v is not None else None
            hours = dep[1] if dep is not None and dep[1] > 0 else BOOST_DEFAULT_H
            return min(now + pd.Timedelta(hours=hours), latest)
        t = pd.Timestamp(ends)
        if not now < t <= latest:
            raise OverrideError(field, ends.isoformat(), f"a time after now ({local_iso(now, cfg.zone)}) and at most "
                                f"{MAX_AHEAD_DAYS} days ahead, ISO 8601 with an offset")
        return t

    def _here(self, v: Vehicle, now: pd.Timestamp) -> bool:
        """Whether ``v`` is plugged in now, or expected here now by its configured windows."""
        return any(u.vehicle == v.id and u.plugged for u in self.links.units) or self.tracker.departure(v, now) is not None

    # ----------------------------------------------------------------- what the tick and the page use
    def in_force(self, now: pd.Timestamp) -> list[Override]:
        """The overrides in force at ``now``, oldest first."""
        return [o for o in self.active if o.created_at <= now < o.expires_at]

    def _find(self, kind: str, vehicle: str | None, now: pd.Timestamp) -> Override | None:
        return next((o for o in self.in_force(now) if o.key == (kind, vehicle)), None)

    def departure(self, v: Vehicle, now: pd.Timestamp) -> tuple[float, float] | None:
        """(target kWh, hours to departure) of ``v``'s stay under way: a departure override's, else the
        tracker's (configured windows or the stored departure); None when none is known."""
        o = self._find("departure", v.id, now)
        if o is not None:
            assert isinstance(o.spec, DepartureSpec)
            return v.pct_kwh(o.spec.target_soc_pct), _hours(now, o.expires_at)
        return self.tracker.departure(v, now)

    def boost_kwh(self, v: Vehicle, now: pd.Timestamp) -> float | None:
        """The energy a boost charges ``v`` to now [kWh] (None: no boost)."""
        o = self._find("boost", v.id, now)
        return None if o is None else v.pct_kwh(o.spec.target_soc_pct)   # type: ignore[union-attr]

    def no_discharge(self, vehicle_id: str, now: pd.Timestamp) -> bool:
        """Whether the car may not discharge now (paused for it or for every car, or boosting)."""
        return any(self._find(k, who, now) is not None
                   for k, who in (("pause-v2b", vehicle_id), ("pause-v2b", None), ("boost", vehicle_id)))

    def reserve(self, now: pd.Timestamp) -> Override | None:
        """The raised outage reserve in force (its ``spec.hours``), or None."""
        return self._find("reserve", None, now)

    def peak_target_kw(self, now: pd.Timestamp) -> float | None:
        """The operator's peak target in force [kW], or None."""
        o = self._find("peak-target", None, now)
        return None if o is None else o.spec.kw   # type: ignore[union-attr]

    def for_plan(self, now: pd.Timestamp, start: pd.Timestamp, end: pd.Timestamp,
                 is_holiday: Callable[[dt.date], bool]) -> PlanOverrides:
        """What a plan over [start, end) made at ``now`` takes from the overrides in force (module docstring)."""
        active = self.in_force(now)
        if not active:
            return PlanOverrides()
        cfg = self.host.cfg
        stays: dict[str, list[Stay]] = {}
        for v in cfg.vehicles:
            dep, boost = self._find("departure", v.id, now), self._find("boost", v.id, now)
            if dep is None and boost is None:
                continue
            found = vehicle_stays(v, start, end, cfg.zone, is_holiday)
            cur = next((s for s in found if s.arrive <= now < s.depart), None)
            if dep is not None:   # the stay under way (or one from the plan's start) ends at the override's time
                assert isinstance(dep.spec, DepartureSpec)
                new = Stay(v.id, cur.arrive if cur else start, dep.expires_at, v.pct_kwh(dep.spec.target_soc_pct),
                           cur.arrival_kwh if cur else None, cur.trip_kwh if cur else None)
                found = [s for s in found if s is not cur and s.arrive >= new.depart] + [new]
            elif cur is not None:   # a boost: the car leaves with at least its boost's target
                assert isinstance(boost.spec, BoostSpec)   # type: ignore[union-attr]
                need = max(cur.target_kwh, v.pct_kwh(boost.spec.target_soc_pct))   # type: ignore[union-attr]
                found = [dataclasses.replace(s, target_kwh=need) if s is cur else s for s in found]
            stays[v.id] = sorted(found, key=lambda s: s.arrive)
        r = self.reserve(now)
        limits = OperatorLimits(frozenset(v.id for v in cfg.vehicles if self.no_discharge(v.id, now)),
                                r.spec.hours if r is not None else 0.0,   # type: ignore[union-attr]
                                r.expires_at if r is not None else None)
        return PlanOverrides(stays or None, limits, self.peak_target_kw(now), tuple(o.id for o in active))
