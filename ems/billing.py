"""Bills from metered interval data: what the utility will charge, independent of the optimizer.

Inputs are a meter frame (``import_kw``, ``export_kw``; interval-start, time-zone aware, regular
step dividing 30 minutes) and a :class:`~ems.tariff.Tariff`. The rules (README "How bills are
computed"):

- billing months are calendar months in the tariff's time zone;
- demand tariffs: the month's peak is the largest 30-minute average import over the fixed
  :00/:30 windows (local time) that start in the month; the contract kW is the largest of this
  month's peak, the peaks of the previous ``ratchet_months`` months (from the data itself, or from
  ``peaks_history`` for months before the data) and ``minimum_contract_kw``;
  basic = :meth:`~ems.tariff.BasicCharge.demand_rate` (after the power factor) x contract kW;
- fixed, per-ampere and per-kVA basic charges are the same amount every month;
- a partially metered first or last month still pays the full monthly basic charge (a real bill
  covers whole months; the partial energy is billed as metered);
- energy: time-of-use periods, or increasing blocks on the month's metered import kWh;
- adders (fuel-cost adjustment, renewable levy): import kWh x the month's rate, per adder;
- export credit: export kWh x the export rate of its interval;
- total = basic + energy + adders - export credit.

Nothing is rounded: real bills round each line to the yen, so a bill computed here can differ from
the utility's by a few yen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ems.errors import DataError, Problem
from ems.tariff import _MONTH as _MONTH_RE
from ems.tariff import Tariff
from ems.timegrid import WINDOW, divides_window, month_start, ns_into_window
from ems.timegrid import month_add as month_add  # re-exported: tests and callers import it from here
from ems.timeseries import YEARS, read_csv_raw, read_series_csv, to_numbers


@dataclass
class MonthBill:
    """One billing month [currency unless stated].

    ``contract_kw`` is None for tariffs without a demand charge; ``contract_month`` is the month
    whose peak set it (``"minimum"`` when ``minimum_contract_kw`` binds). ``peak_kw`` is this month's
    own largest 30-minute average import (combined with ``peaks_history`` for that month, if given).
    ``partial`` is True when the data covers only part of the month (the basic charge is still the
    full month's).
    """

    month: str
    contract_kw: float | None
    contract_month: str | None
    peak_kw: float
    basic: float
    energy: float
    energy_by_period: dict[str, float]
    adders: float
    adders_by_name: dict[str, float]
    export_credit: float
    total: float
    import_kwh: float
    export_kwh: float
    import_kwh_by_period: dict[str, float] = field(default_factory=dict)
    partial: bool = False


@dataclass
class Bill:
    """A bill over consecutive billing months; ``total`` is the sum of the months' totals."""

    months: list[MonthBill]
    total: float
    currency: str = "JPY"
    tariff: str = ""

    def to_json(self) -> dict:
        """Plain JSON-ready dict: ``{"months": [...], "total": ..., "currency": ..., "tariff": ...}``."""
        return {"months": [asdict(m) for m in self.months], "total": self.total,
                "currency": self.currency, "tariff": self.tariff}

    def peaks(self) -> dict[str, float]:
        """Each billed month's peak [kW]: the history to carry into the next bill."""
        return {m.month: m.peak_kw for m in self.months}


# ----- reading ---------------------------------------------------------------------------------

def read_meter_csv(path: str | Path) -> pd.DataFrame:
    """Read a meter CSV: ``timestamp`` (ISO 8601 with offset, interval start), ``import_kw``,
    optional ``export_kw`` (0 kW when absent). Strict: no gaps, duplicates, unsorted rows,
    negative or non-numeric values; the step must divide 30 minutes. Index in UTC;
    ``attrs`` carry ``step``, ``source`` and ``start`` (to name file rows in later errors).
    """
    meter = read_series_csv(path, ["import_kw"], optional=["export_kw"])
    if "export_kw" not in meter.columns:
        meter["export_kw"] = 0.0
    meter.attrs["start"] = meter.index[0]
    return meter[["import_kw", "export_kw"]]


def read_peaks_history_csv(path: str | Path) -> dict[str, float]:
    """Read the site's real monthly peaks from before the data: CSV ``month,peak_kw``.

    ``month`` is ``"YYYY-MM"``; each month at most once; ``peak_kw`` a non-negative number [kW].
    """
    where = str(path)
    df = read_csv_raw(path, key="month")
    if "peak_kw" not in df.columns:
        raise DataError(Problem(where, 1, "peak_kw", list(df.columns), "missing column; the header must be month,peak_kw"))
    if df.empty:
        raise DataError(Problem(where, None, "", None, "no data rows", has_value=False))
    months = df["month"].str.strip()
    problems = [Problem(where, i + 2, "month", m, "expected a month 'YYYY-MM', e.g. 2024-07")
                for i, m in enumerate(months) if not _MONTH_RE.match(m)]
    problems += [Problem(where, i + 2, "month", m, f"must be in the years {YEARS[0]}-{YEARS[1]}")
                 for i, m in enumerate(months) if _MONTH_RE.match(m) and not YEARS[0] <= int(m[:4]) <= YEARS[1]]
    first_row: dict[str, int] = {}
    for i, m in enumerate(months):
        if m in first_row:
            problems.append(Problem(where, i + 2, "month", m, f"duplicate of row {first_row[m]}"))
        first_row.setdefault(m, i + 2)
    if problems:
        raise DataError(problems)
    peaks = to_numbers(df, "peak_kw", where, allow_negative=False, allow_empty=False)
    return {m: float(v) for m, v in zip(months, peaks)}


def check_history_up_to(history: Mapping[str, float], month: str, where: str, what: str) -> None:
    """DataError naming each month of a history read by :func:`read_peaks_history_csv` (file
    ``where``, rows in file order) that comes after ``month``: a history holds past peaks, and a
    peak from after the plan or the daemon's start cannot be known yet. ``what`` names ``month``
    in the message (e.g. "the plan's start month")."""
    problems = [Problem(where, row, "month", m, f"is after {what} {month}; the history holds past bills only")
                for row, m in enumerate(history, 2) if m > month]
    if problems:
        raise DataError(problems)


# ----- checks ----------------------------------------------------------------------------------

def _where(meter: pd.DataFrame) -> str:
    return str(meter.attrs.get("source", "meter data"))


def _row_of(meter: pd.DataFrame, ts: pd.Timestamp, pos: int) -> int | None:
    """Spreadsheet row (header = 1) of the interval at ``ts`` in the meter's source file, if known.

    Files read by :func:`read_meter_csv` are gap-free from ``attrs["start"]``, so the row follows
    from the time even after the frame was sliced. Frames built in code have no rows (None).
    """
    if "source" not in meter.attrs:
        return None
    start, step = meter.attrs.get("start"), meter.attrs.get("step")
    if start is None or step is None:
        return pos + 2
    return int((ts - start) / step) + 2


def _problem(meter: pd.DataFrame, pos: int, column: str, value: object, message: str) -> Problem:
    ts = meter.index[pos]
    row = _row_of(meter, ts, pos)
    if row is None:
        message = f"{message} (interval starting {ts.isoformat()})"
    return Problem(_where(meter), row, column, value, message)


def meter_step(meter: pd.DataFrame) -> pd.Timedelta:
    """Check a meter frame built in code or read from a file; return its step.

    Rules (DataError otherwise): a time-zone aware DatetimeIndex, strictly increasing, one regular
    step that divides 30 minutes, column ``import_kw`` (``export_kw`` optional), finite
    non-negative values.
    """
    where = _where(meter)
    idx = meter.index
    if not isinstance(idx, pd.DatetimeIndex) or idx.tz is None:
        raise DataError(Problem(where, None, "timestamp", None, "the index must be time-zone aware timestamps",
                                has_value=False))
    if "import_kw" not in meter.columns:
        raise DataError(Problem(where, None, "import_kw", list(meter.columns), "missing column import_kw"))
    if len(idx) < 2:
        raise DataError(Problem(where, None, "timestamp", len(idx), "need at least two intervals to know the step"))
    d = np.diff(idx.as_unit("ns").asi8)  # in ns whatever the index's resolution
    step = pd.Timedelta(int(d[d > 0].min()) if (d > 0).any() else 0, unit="ns")
    if not divides_window(step):
        raise DataError(Problem(where, None, "timestamp", str(step),
                                "step does not divide 30 minutes; allowed steps: 1, 5, 10, 15 or 30 minutes..."))
    bad = np.flatnonzero(d != step.value)
    if bad.size:
        raise DataError([_problem(meter, int(i) + 1, "timestamp", idx[i + 1].isoformat(),
                                  f"duplicate, unsorted or gap: expected every {step} after {idx[i].isoformat()}")
                         for i in bad[:20]])
    problems = []
    for col in [c for c in ("import_kw", "export_kw") if c in meter.columns]:
        v = meter[col].to_numpy(dtype=float)
        for i in np.flatnonzero(~np.isfinite(v) | (v < 0))[:20]:
            problems.append(_problem(meter, int(i), col, float(v[i]), "must be a finite, non-negative number [kW]"))
    if problems:
        raise DataError(problems)
    return step


# ----- demand ----------------------------------------------------------------------------------

def window_demand_kw(meter: pd.DataFrame, tariff: Tariff, *,
                     edges: Literal["error", "drop"] = "error") -> pd.Series:
    """Average import [kW] of each fixed 30-minute window (:00 and :30 in the tariff's local time).

    Returns a Series indexed by window start (tariff-local, aware). A 15-minute meter averages two
    steps, a 5-minute meter six. Interval starts must lie on the step grid of those windows.
    A window the data covers only in part (at the start or end) is a DataError naming its first row,
    unless ``edges="drop"``: then the caller accepts that partial windows are left out.
    """
    step = meter_step(meter)
    local = meter.index.tz_convert(tariff.zone)
    into_ns = ns_into_window(local)   # time since the start of the enclosing :00/:30 window
    off_grid = np.flatnonzero(into_ns % step.value)
    if off_grid.size:
        raise DataError([_problem(meter, int(i), "timestamp", local[i].isoformat(),
                                  f"interval start is not on the {step} grid of the fixed :00/:30 demand windows")
                         for i in off_grid[:20]])
    starts = meter.index - pd.to_timedelta(into_ns, unit="ns")
    per_window = int(WINDOW / step)
    grouped = meter["import_kw"].groupby(starts)
    counts, demand = grouped.size(), grouped.mean()
    short = counts[counts < per_window]
    if len(short):
        if edges == "error":
            problems = []
            for ws, n in short.iloc[:20].items():
                pos = int(np.searchsorted(starts, ws))
                problems.append(_problem(
                    meter, pos, "timestamp", meter.index[pos].tz_convert(tariff.zone).isoformat(),
                    f"the 30-minute demand window starting {ws.tz_convert(tariff.zone):%Y-%m-%d %H:%M} holds "
                    f"{n} of {per_window} intervals; demand is metered on whole :00/:30 windows, so start and "
                    "end the data on window boundaries"))
            raise DataError(problems)
        demand = demand[counts >= per_window]
    demand.index = pd.DatetimeIndex(demand.index).tz_convert(tariff.zone)
    demand.index.name = "window_start"
    return demand.rename("demand_kw")


def month_peaks_kw(meter: pd.DataFrame, tariff: Tariff, *,
                   edges: Literal["error", "drop"] = "error") -> dict[str, float]:
    """Each billing month's largest 30-minute average import [kW] (windows grouped by their start)."""
    demand = window_demand_kw(meter, tariff, edges=edges)
    if demand.empty:
        return {}
    return {str(m): float(v) for m, v in demand.groupby(tariff.months(demand.index)).max().items()}


def _check_history(history: Mapping[str, float]) -> dict[str, float]:
    """Validate an in-code peaks history: ``"YYYY-MM"`` keys, finite non-negative kW."""
    problems = []
    for m, v in history.items():
        if not isinstance(m, str) or not _MONTH_RE.match(m):
            problems.append(Problem("peaks history", None, "month", m, "expected a month 'YYYY-MM'"))
        elif not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            problems.append(Problem("peaks history", None, m, v, "peak must be a finite, non-negative number [kW]"))
    if problems:
        raise DataError(problems)
    return {m: float(v) for m, v in history.items()}


def contract_kw(month: str, peaks: Mapping[str, float], ratchet_months: int,
                minimum_kw: float = 0.0) -> tuple[float, str]:
    """Contract kW of ``month`` and the month that set it.

    contract = max(peak[month - k] for k = 0..ratchet_months, minimum_kw); months absent from
    ``peaks`` count as no peak. Ties go to the latest month (the one that holds the contract
    longest); ``"minimum"`` when ``minimum_kw`` is above every peak.
    """
    best, best_month = -1.0, "minimum"
    for k in range(ratchet_months, -1, -1):   # oldest first, so a later equal peak takes over
        m = month_add(month, -k)
        if m in peaks and peaks[m] >= best:
            best, best_month = peaks[m], m
    if minimum_kw > best:
        return float(minimum_kw), "minimum"
    return float(best), best_month


def site_contract_kw(month: str, peaks: Mapping[str, float], tariff: Tariff) -> tuple[float, str | None]:
    """The contract kW ``month`` holds under ``tariff`` given the monthly ``peaks`` so far, and the
    month that set it (:func:`contract_kw`: ``"minimum"`` when ``minimum_contract_kw`` binds).
    (0.0, None) when no peak and no minimum holds it. Without a demand charge: the month's own peak."""
    b = tariff.basic
    if b.kind != "demand":
        return (float(peaks[month]), month) if month in peaks else (0.0, None)
    kw, by = contract_kw(month, peaks, b.ratchet_months, b.minimum_contract_kw)
    return (0.0, None) if by == "minimum" and b.minimum_contract_kw <= 0 else (kw, by)


# ----- the bill --------------------------------------------------------------------------------

def _block_lines(tariff: Tariff, kwh: float) -> tuple[dict[str, float], dict[str, float]]:
    """Energy charge and kWh of each increasing block for a month's import ``kwh``."""
    cost, used, lower = {}, {}, 0.0
    for i, b in enumerate(tariff.blocks, 1):
        upper = math.inf if b.up_to_kwh is None else b.up_to_kwh
        name = f"block {i} ({lower:g}-{upper:g} kWh)" if b.up_to_kwh is not None else f"block {i} (over {lower:g} kWh)"
        part = max(0.0, min(kwh, upper) - lower)
        used[name], cost[name] = part, part * b.rate_per_kwh
        lower = upper
    return cost, used


def _month_is_partial(month: str, first: pd.Timestamp, end: pd.Timestamp, tariff: Tariff) -> bool:
    """Whether the data [first, end) covers only part of ``month`` (tariff-local)."""
    m0 = month_start(month, tariff.zone)
    m1 = month_start(month_add(month, 1), tariff.zone)
    return bool(first > m0 or end < m1)


def compute_bill(meter: pd.DataFrame, tariff: Tariff, peaks_history: Mapping[str, float] | None = None) -> Bill:
    """The bill of every billing month the meter data touches (see the module docstring for rules).

    ``peaks_history`` maps ``"YYYY-MM"`` to real monthly peaks [kW]; it fills the ratchet for months
    before the data, and for a month the data covers the larger of the two counts (a partial first
    month can carry the peak metered before the data starts).
    """
    step = meter_step(meter)
    dt_h = step / pd.Timedelta(hours=1)
    idx = meter.index
    months = tariff.months(idx)
    imp_kwh = meter["import_kw"].to_numpy(dtype=float) * dt_h
    exp_kwh = (meter["export_kw"].to_numpy(dtype=float) if "export_kw" in meter.columns else np.zeros(len(idx))) * dt_h
    frame = pd.DataFrame({"month": months, "imp": imp_kwh, "exp": exp_kwh,
                          "credit": exp_kwh * tariff.export_rate(idx)})
    if not tariff.blocks:
        frame["period"] = tariff.period_names(idx)
        frame["cost"] = imp_kwh * tariff.energy_rate(idx)
        by_period = frame.groupby(["month", "period"], sort=False)[["cost", "imp"]].sum()
    per_month = frame.groupby("month", sort=True)[["imp", "exp", "credit"]].sum()

    basic_charge = tariff.basic
    demand = basic_charge.kind == "demand"
    metered = month_peaks_kw(meter, tariff, edges="error" if demand else "drop")
    peaks = _check_history(peaks_history or {})
    for m, v in metered.items():
        peaks[m] = max(v, peaks.get(m, v))

    end = idx[-1] + step
    out: list[MonthBill] = []
    for month, row in per_month.iterrows():
        month = str(month)
        if tariff.blocks:
            energy_by, kwh_by = _block_lines(tariff, float(row["imp"]))
        else:
            sub = by_period.loc[month]
            energy_by = {str(k): float(v) for k, v in sub["cost"].items()}
            kwh_by = {str(k): float(v) for k, v in sub["imp"].items()}
        adders_by = {a.name: float(row["imp"]) * a.rate(month) for a in tariff.adders}
        if demand:
            ckw, cmonth = contract_kw(month, peaks, basic_charge.ratchet_months, basic_charge.minimum_contract_kw)
            basic = basic_charge.demand_rate() * ckw
        else:
            ckw, cmonth, basic = None, None, basic_charge.fixed_amount()
        energy, adders, credit = sum(energy_by.values()), sum(adders_by.values()), float(row["credit"])
        out.append(MonthBill(
            month=month, contract_kw=ckw, contract_month=cmonth, peak_kw=float(peaks.get(month, 0.0)),
            basic=float(basic), energy=float(energy), energy_by_period=energy_by, adders=float(adders),
            adders_by_name=adders_by, export_credit=credit, total=float(basic + energy + adders - credit),
            import_kwh=float(row["imp"]), export_kwh=float(row["exp"]), import_kwh_by_period=kwh_by,
            partial=_month_is_partial(month, idx[0], end, tariff),
        ))
    return Bill(months=out, total=float(sum(m.total for m in out)), currency=tariff.currency, tariff=tariff.name)


# ----- text ------------------------------------------------------------------------------------

def format_bill(bill: Bill, tariff: Tariff) -> str:
    """A readable table per month: line items, contract kW and the month that set it."""
    cur = bill.currency
    b = tariff.basic
    lines = [f"Tariff: {tariff.name} ({tariff.describe_basic()}); amounts in {cur}, not rounded "
             "(real bills round each line to the yen)"]
    for m in bill.months:
        head = f"{m.month}" + ("  (partial month: data covers part of it; the full basic charge applies)" if m.partial else "")
        lines.append("")
        lines.append(head)
        if m.contract_kw is not None:
            setter = "minimum_contract_kw" if m.contract_month == "minimum" else f"the peak of {m.contract_month}"
            lines.append(f"  contract {m.contract_kw:,.2f} kW, set by {setter}; this month's peak {m.peak_kw:,.2f} kW")
            lines.append(_item(f"basic charge {b.rate_per_kw_month:,.2f}/kW x {m.contract_kw:,.2f} kW"
                               f" x PF factor {b.pf_factor:.2f}", m.basic))
        else:
            lines.append(f"  this month's peak {m.peak_kw:,.2f} kW (no demand charge)")
            lines.append(_item(f"basic charge ({b.kind})", m.basic))
        for name, amount in m.energy_by_period.items():
            lines.append(_item(f"energy {name}: {m.import_kwh_by_period.get(name, 0.0):,.1f} kWh", amount))
        for name, amount in m.adders_by_name.items():
            lines.append(_item(f"{name}: {m.import_kwh:,.1f} kWh x {tariff_adder_rate(tariff, name, m.month):g}/kWh", amount))
        if m.export_kwh or m.export_credit:
            lines.append(_item(f"export credit: {m.export_kwh:,.1f} kWh", -m.export_credit))
        lines.append(_item("month total", m.total))
    lines.append("")
    lines.append(_item(f"TOTAL over {len(bill.months)} month(s)", bill.total, indent=""))
    return "\n".join(lines)


def tariff_adder_rate(tariff: Tariff, name: str, month: str) -> float:
    """Rate of the adder called ``name`` in ``month`` [currency/kWh]."""
    return next(a.rate(month) for a in tariff.adders if a.name == name)


def _item(label: str, amount: float, indent: str = "    ") -> str:
    return f"{indent}{label:<64} {amount:>14,.2f}"
