"""``ems plan``: one schedule for a site, now or from a given start, from given or forecast inputs.

Input CSVs (``--pv``, ``--load``): ``timestamp`` (ISO 8601 with offset, interval start) and ``kw``.
Without them the forecast module supplies PV and load. ``--soc leaf=55`` sets a vehicle's state of
charge in percent; a vehicle not given is assumed at its minimum SOC (the cautious assumption: the
plan charges it), and the summary says so. ``--peaks-history H.csv`` (``month,peak_kw``, read as by
``ems bill``; default: the config's ``peaks_history_csv``) and ``--month-peak-kw X`` (this month's
metered peak so far) give the demand ratchet the contract the site already holds; without them a
demand-tariff plan prices every peak as a new record. Output: a readable table and the summary, or
with ``--json`` the summary as one JSON object; ``--out`` writes the schedule CSV.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ems.commands.argtypes import HOURS, aware_time, output_file
from ems.billing import check_history_up_to, site_contract_kw
from ems.config import SiteConfig, load_site, peaks_history
from ems.errors import DataError, Problem
from ems.outputs import write_atomic
from ems.timegrid import month_of
from ems.timeseries import read_series_csv

if TYPE_CHECKING:  # the planner (pyomo, scipy) is imported when a plan is made, not for `ems plan --help`
    from ems.planning import PlanResult

NAME = "plan"
HELP = "compute one optimised charge/discharge schedule for a site and print or save it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``ems plan``."""
    p.add_argument("--config", required=True, metavar="CONFIG", help="site YAML file")
    p.add_argument("--start", metavar="ISO8601", help="plan start with UTC offset (default: now, floored to the step)")
    p.add_argument("--hours", type=HOURS, metavar="H", help="horizon in hours (default: the config's horizon_hours)")
    p.add_argument("--pv", metavar="PV.csv", help="PV forecast CSV: timestamp,kw (default: the forecast module)")
    p.add_argument("--load", metavar="LOAD.csv", help="load forecast CSV: timestamp,kw (default: the forecast module)")
    p.add_argument("--soc", nargs="+", default=[], metavar="VEHICLE=PCT", help="state of charge of vehicles in percent")
    p.add_argument("--peaks-history", metavar="H.csv",
                   help="CSV month,peak_kw (months YYYY-MM, as for ems bill): the site's monthly peaks from past bills, "
                        "up to the plan's month, so the demand ratchet prices peaks against the contract already held "
                        "(default: the config's peaks_history_csv; without either, no contract is held)")
    p.add_argument("--month-peak-kw", metavar="KW",
                   help="this billing month's metered peak so far [kW] (largest 30-minute average import); a plan "
                        "peak below it costs nothing (default 0)")
    p.add_argument("--out", type=output_file, metavar="SCHEDULE.csv",
                   help="write the schedule to this CSV (its folder must exist; written whole or not at all)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def parse_start(text: str | None, cfg: SiteConfig) -> pd.Timestamp:
    """The plan start: ``text`` (ISO 8601 with offset) or now floored to the planning step."""
    if text is None:
        return pd.Timestamp.now(tz=cfg.zone).floor(f"{cfg.planner.step_minutes}min")
    return aware_time(text, "--start", "start")


def parse_soc(items: list[str], cfg: SiteConfig) -> tuple[dict[str, float], list[str]]:
    """``VEHICLE=PCT`` items as kWh per vehicle, plus notes for vehicles assumed at their minimum."""
    known = {v.id: v for v in cfg.vehicles}
    soc: dict[str, float] = {}
    problems = []
    for item in items:
        vid, sep, pct = item.partition("=")
        try:
            value = float(pct)
        except ValueError:
            value = math.nan
        if not sep or vid not in known:
            problems.append(Problem("--soc", None, "soc", item, f"expected VEHICLE=PCT with a vehicle of {sorted(known)}"))
        elif not 0 <= value <= 100:
            problems.append(Problem("--soc", None, vid, pct, "a percentage from 0 to 100"))
        else:
            soc[vid] = known[vid].pct_kwh(value)
    if problems:
        raise DataError(problems)
    notes = []
    for vid, v in known.items():
        if vid not in soc:
            soc[vid] = v.min_soc_kwh
            notes.append(f"no --soc for {vid}: assumed at its minimum {v.min_soc_pct:g} %")
    return soc, notes


def parse_month_peak(text: str | None) -> float:
    """``--month-peak-kw``: a finite number >= 0 [kW] (0 when not given)."""
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise DataError(Problem("--month-peak-kw", None, "month_peak_kw", text, "a number of kW >= 0, e.g. 85.5"))
    return value


def contract_state(args: argparse.Namespace, cfg: SiteConfig, start: pd.Timestamp) -> tuple[dict[str, float], float, list[str]]:
    """The ratchet inputs of the plan: the peaks history (``--peaks-history``, else the config's
    ``peaks_history_csv``; months up to the start month), this month's peak so far, and notes on the
    contract they hold."""
    month_peak = parse_month_peak(args.month_peak_kw)
    month = month_of(start, cfg.tariff.timezone)
    found = peaks_history(cfg, args.peaks_history)
    history, where = found if found is not None else ({}, "")
    if found is not None:
        check_history_up_to(history, month, where, "the plan's start month")
    if cfg.tariff.basic.kind != "demand":
        return history, month_peak, []
    peaks = dict(history)
    if month_peak > 0 or month in peaks:
        peaks[month] = max(month_peak, peaks.get(month, 0.0))
    kw, by = site_contract_kw(month, peaks, cfg.tariff)
    if found is None and month_peak == 0:
        return history, month_peak, [
            "no peaks history (--peaks-history or peaks_history_csv) nor --month-peak-kw: the plan assumes no "
            "contract is held yet, so every peak is priced as a new ratchet record"]
    if by is None:
        return history, month_peak, [f"no peak in the ratchet window of {month} in {where or '--month-peak-kw'}"]
    setter = {"minimum": "minimum_contract_kw", month: "this month's peak so far"}.get(by, f"the peak of {by} in {where}")
    return history, month_peak, [f"contract for {month} already {kw:,.2f} kW, set by {setter}"]


def read_kw_csv(path: str) -> pd.Series:
    """A ``timestamp,kw`` CSV as a Series [kW] (strict: offsets, order, no gaps, no negatives)."""
    return read_series_csv(path, ["kw"])["kw"]


def inputs(args: argparse.Namespace, cfg: SiteConfig, start: pd.Timestamp, hours: float) -> tuple[pd.Series, pd.Series]:
    """PV and load series: from the CSVs given, the rest from the forecast module."""
    pv = read_kw_csv(args.pv) if args.pv else None
    load = read_kw_csv(args.load) if args.load else None
    if pv is None or load is None:
        from ems.forecast import forecast_site  # lazy: only when a forecast is needed
        fc = forecast_site(cfg, start, hours)
        pv = fc.pv_kw if pv is None else pv
        load = fc.load_kw if load is None else load
    return pv, load


def write_schedule(result: PlanResult, path: str) -> None:
    """The schedule as CSV: ISO 8601 timestamps with offset, then the columns in order."""
    out = result.schedule.copy()
    out.index = [t.isoformat() for t in out.index]
    out.index.name = "timestamp"
    write_atomic(path, lambda tmp: out.round(4).to_csv(tmp))


def table(result: PlanResult, cfg: SiteConfig) -> str:
    """A readable schedule: time, PV, load, grid, each charger's setpoint (+ charge, - discharge), SOC %, price."""
    s = result.schedule
    price = cfg.tariff.import_price(s.index)
    head = ["time", "price", "pv", "load", "import", "export"] + [c.id for c in cfg.chargers] + [f"{v.id} %" for v in cfg.vehicles]
    rows = [head]
    for i, (ts, row) in enumerate(s.iterrows()):
        line = [ts.strftime("%a %H:%M"), f"{price[i]:.2f}", f"{row.pv_kw:.2f}", f"{row.load_kw:.2f}", f"{row.import_kw:.2f}",
                f"{row.export_kw:.2f}"]
        line += [f"{row[f'{c.id}_charge_kw'] - row[f'{c.id}_discharge_kw']:+.2f}" for c in cfg.chargers]
        line += [f"{100 * row[f'{v.id}_soc_kwh'] / v.capacity_kwh:.0f}" for v in cfg.vehicles]
        rows.append(line)
    widths = [max(len(r[j]) for r in rows) for j in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def json_summary(result: PlanResult) -> dict:
    """The summary with plain JSON types."""
    def plain(x):
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, (np.floating, float)):
            return round(float(x), 6)
        if isinstance(x, np.integer):
            return int(x)
        return x
    return plain(result.summary)


def run(args: argparse.Namespace) -> int:
    """Plan and print; exit 0 with a schedule (also a fallback one, flagged), 2 on invalid input."""
    from ems.planning import Planner, SiteState
    cfg = load_site(args.config)
    start = parse_start(args.start, cfg)
    hours = args.hours if args.hours is not None else cfg.planner.horizon_hours
    soc, notes = parse_soc(args.soc, cfg)
    history, month_peak, contract_notes = contract_state(args, cfg, start)
    pv, load = inputs(args, cfg, start, hours)
    state = SiteState(soc_kwh=soc, month_peak_kw=month_peak, peak_history_kw=history)
    result = Planner(cfg).plan(start, pv, load, state, hours=hours)
    result.outcome.messages[:0] = notes + contract_notes
    if args.out:
        write_schedule(result, args.out)
    summary = json_summary(result)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(table(result, cfg))
    print()
    for key in ("status", "objective", "energy_cost", "demand_cost", "ratchet_cost", "export_credit", "wear_cost",
                "penalty_cost", "terminal_value", "peak_kw", "build_seconds", "solve_seconds"):
        value = summary[key]
        print(f"{key:>15}: {value:,.3f}" if isinstance(value, float) else f"{key:>15}: {value}")
    for m in summary["messages"]:
        print(f"  note: {m}")
    if args.out:
        print(f"schedule written to {args.out}", file=sys.stderr)
    return 0
