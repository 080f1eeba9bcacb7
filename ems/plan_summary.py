"""The typed outcome of a plan: what the planner decided, what it costs, and what it could not meet.

Code branches on these fields (``status``, ``fallback``, ``infeasible``, ``shortfalls[i].kind``);
the ``text`` of a shortfall and ``messages`` are for people only. :meth:`PlanSummary.as_dict` is
the JSON summary (``ems plan --json``, the store, the study), with the keys it has always had.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any


class PlanStatus(StrEnum):
    """How the schedule was obtained."""

    OPTIMAL = "optimal"      # the MILP optimum (within the configured gap)
    FEASIBLE = "feasible"    # the solver stopped at its time limit with a valid schedule
    FALLBACK = "fallback"    # no optimised schedule: the safe rule of models.fallback


class ShortfallKind(StrEnum):
    """Which requirement a shortfall belongs to (the families of :mod:`models.requirements`)."""

    TARGET = "target"        # a departure target [kWh]
    MIN_SOC = "min_soc"      # the driver's minimum SOC [kWh]
    MAX_SOC = "max_soc"      # a car above its charge ceiling at the start [kWh]
    FINAL = "final"          # the final SOC option (end at least at the start) [kWh]
    RESERVE = "reserve"      # the outage reserve [kWh]
    IMPORT = "import"        # the grid import limit [kW]
    UNSERVED = "unserved"    # critical load not served in an outage [kWh]
    TRIP = "trip"            # a trip longer than the car can be charged for [kWh]
    SHARED = "shared"        # cars sharing one unit need more than it can deliver [kWh]


@dataclass(frozen=True)
class Shortfall:
    """One requirement not met.

    ``subject``: the vehicle or charger id, or "site"; ``at``: readable local time of the boundary
    or step; ``amount``: how much is missing [kWh, kW for ``import``]; ``planned``: True when it is
    in the solved schedule, False when it was found before solving (the requirement is out of
    reach whatever the plan does); ``text``: the sentence for people.
    """

    kind: ShortfallKind
    subject: str
    at: str
    amount: float
    planned: bool
    text: str

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {"kind": str(self.kind), "subject": self.subject, "at": self.at, "amount": self.amount,
                "planned": self.planned, "text": self.text}


@dataclass
class PlanSummary:
    """The summary of one plan (or of consecutive monthly plans, see ``months``).

    Money in the tariff's currency: ``objective`` is what the model minimised (energy + demand +
    ratchet + wear + driver settlement + penalty + hedge - export credit - terminal value); ``bill_cost``
    what the horizon's bills show (energy + demand + fixed - export credit);
    ``driver_settlement`` what the site pays the drivers of driver-owned cars for the energy it
    takes from them, per stay on balance (the energy the plan adds earns it nothing: it never sells
    a driver a charge the driver did not ask for). ``peak_kw``: highest 30-minute average
    import of the schedule; ``month_peaks_kw``: per billing month "YYYY-MM", the peak the plan
    prices (metered so far, the schedule, any allowance for forecast error) [kW];
    ``planned_peaks_kw``: per month the schedule's own peak on the point forecast [kW];
    ``final_soc_kwh``: each vehicle's energy at the horizon end [kWh]; ``unserved_kwh`` critical
    load left unserved in a planned outage [kWh]. ``infeasible``: the requirements could not all be
    met together, so the plan was solved with each of them relaxed; ``relaxed`` the families
    relaxed. ``build_seconds``/``solve_seconds``: model preparation and solver time [s].
    ``near_peak_kw``: with ``planner.peak_hedge_pct``, the first month's highest planned average
    in the near term (at least its metered peak) [kW]; ``hedge_cost`` its price in the objective
    (a planning price, on no bill).
    """

    status: PlanStatus
    method: str
    fallback: bool
    infeasible: bool
    relaxed: list[str]
    objective: float
    energy_cost: float
    demand_cost: float
    ratchet_cost: float
    export_credit: float
    wear_cost: float
    driver_settlement: float
    penalty_cost: float
    terminal_value: float
    fixed_cost: float
    bill_cost: float
    peak_kw: float
    unserved_kwh: float
    month_peaks_kw: dict[str, float]
    final_soc_kwh: dict[str, float]
    build_seconds: float
    solve_seconds: float
    shortfalls: list[Shortfall] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    months: int = 1
    planned_peaks_kw: dict[str, float] = field(default_factory=dict)
    near_peak_kw: dict[str, float] = field(default_factory=dict)
    hedge_cost: float = 0.0

    def shortfalls_of(self, kind: ShortfallKind) -> list[Shortfall]:
        """The shortfalls of one requirement family."""
        return [s for s in self.shortfalls if s.kind is kind]

    def peak_in(self, month: str) -> float:
        """The schedule's own peak in billing month "YYYY-MM" [kW]: its highest 30-minute average
        import on the point forecast (``planned_peaks_kw``; ``month_peaks_kw`` also holds what was
        metered and any allowance for forecast error); the whole plan's peak when the month is not
        priced separately (no demand charge). With a near-term hedge (``planner.peak_hedge_pct``)
        the level of the near term instead (``near_peak_kw``, its first month only): a peak the
        forecast sees tomorrow does not license one now. The demand guard holds this level."""
        if month in self.near_peak_kw:
            return float(self.near_peak_kw[month])
        return float(self.planned_peaks_kw.get(month, self.peak_kw))

    @property
    def departures_short(self) -> bool:
        """Whether some car would leave below its departure target under this plan."""
        return bool(self.shortfalls_of(ShortfallKind.TARGET))

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary: every field, enums as their values, shortfalls as objects."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["status"] = str(self.status)
        out["shortfalls"] = [s.as_dict() for s in self.shortfalls]
        out["messages"] = list(self.messages)
        out["relaxed"] = list(self.relaxed)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PlanSummary:
        """A summary read back from :meth:`as_dict` (a stored plan)."""
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["status"] = PlanStatus(d["status"])
        kw["shortfalls"] = [Shortfall(ShortfallKind(s["kind"]), s["subject"], s["at"], float(s["amount"]),
                                      bool(s["planned"]), s["text"]) for s in d.get("shortfalls", [])]
        kw.setdefault("infeasible", False)
        kw.setdefault("driver_settlement", 0.0)   # plans stored before driver-owned cars existed
        kw.setdefault("messages", [])
        return cls(**kw)


def add_up(parts: Iterable[PlanSummary], labels: Iterable[str]) -> PlanSummary:
    """One summary for consecutive plans (``labels`` name each, e.g. "2024-07", for the messages):
    money, energy and seconds add up, the peak is the largest, the status the worst."""
    parts, labels = list(parts), list(labels)
    additive = ("objective", "energy_cost", "demand_cost", "ratchet_cost", "export_credit", "wear_cost",
                "driver_settlement", "penalty_cost", "terminal_value", "fixed_cost", "bill_cost", "unserved_kwh", "build_seconds",
                "solve_seconds", "hedge_cost")
    sums = {k: float(sum(getattr(p, k) for p in parts)) for k in additive}
    statuses = [p.status for p in parts]
    status = next((s for s in (PlanStatus.FALLBACK, PlanStatus.FEASIBLE) if s in statuses), statuses[0])
    return PlanSummary(
        status=status, method=",".join(sorted({p.method for p in parts})), fallback=any(p.fallback for p in parts),
        infeasible=any(p.infeasible for p in parts), relaxed=sorted({f for p in parts for f in p.relaxed}),
        peak_kw=max(p.peak_kw for p in parts),
        month_peaks_kw={k: v for p in parts for k, v in p.month_peaks_kw.items()},
        planned_peaks_kw={k: v for p in parts for k, v in p.planned_peaks_kw.items()},
        near_peak_kw={k: v for p in parts for k, v in p.near_peak_kw.items()},
        final_soc_kwh=dict(parts[-1].final_soc_kwh),
        shortfalls=[s for p in parts for s in p.shortfalls],
        messages=[f"{label}: {m}" for p, label in zip(parts, labels) for m in p.messages],
        months=len(parts), **sums)
