"""``ems status --config CONFIG [--json]``: what the daemon is doing, read from its store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from ems.commands.argtypes import integer
from ems.billing import site_contract_kw
from ems.config import load_site
from ems.errors import ConfigError, Problem
from ems.store import Store, engine_url
from ems.timegrid import month_add, month_of

NAME = "status"
HELP = ("show the last plan, setpoints, SOC, this month's peak and contract kW (with where each ratchet month's peak "
        "came from: bill history or metered), and recent events")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments: the site config (its daemon.database names the store)."""
    p.add_argument("--config", required=True, help="site YAML file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--events", type=integer(0, 100_000), default=10, help="how many recent events to show (default 10)")


def collect(store: Store, cfg, now: pd.Timestamp, n_events: int = 10) -> dict:
    """The status as a plain dict (used by the CLI and the daemon's tests).

    Contract fields: ``contract_kw`` and ``contract_set_by`` (the month whose peak sets it,
    ``"minimum"`` for minimum_contract_kw, None without any), ``contract_source`` (``"bill"``: a
    seeded peaks history of past bills, ``"metered"``: the daemon's meter, or None),
    ``month_peak_source`` likewise for this month's peak, and ``contract_months``: each month of the
    ratchet window that has a peak, oldest first, ``{"month", "peak_kw", "source", "bill_kw",
    "metered_kw"}``.
    """
    sources = store.month_peak_sources()
    peaks = {m: r["peak_kw"] for m, r in sources.items()}
    month = month_of(now, cfg.tariff.zone)
    ratchet = cfg.tariff.basic.ratchet_months if cfg.tariff.basic.kind == "demand" else 0
    window = [month_add(month, -k) for k in range(ratchet, -1, -1)]
    contract_kw, set_by = site_contract_kw(month, peaks, cfg.tariff)
    last = store.last_plan()
    return {
        "site": cfg.site.name,
        "month": month,
        "month_peak_kw": peaks.get(month, 0.0),
        "month_peak_source": sources[month]["source"] if month in sources else None,
        "contract_kw": contract_kw,
        "contract_set_by": set_by,
        "contract_source": sources[set_by]["source"] if set_by in sources else None,
        "contract_months": [{"month": m, "peak_kw": sources[m]["peak_kw"], "source": sources[m]["source"],
                             "bill_kw": sources[m]["bill_kw"], "metered_kw": sources[m]["metered_kw"]}
                            for m in window if m in sources],
        "last_plan": None if last is None else {
            "created_at": last["created_at"], "start": last["start"], "status": last["status"],
            "fallback": last["fallback"], "peak_kw": last["peak_kw"], "objective": last["objective"],
        },
        "devices": store.latest_telemetry(),
        "events": store.events(limit=n_events),
        "faults": [e for e in store.events(limit=200) if e["severity"] != "info"][:n_events],
    }


def daemon_now(store: Store) -> pd.Timestamp:
    """The daemon's last (possibly simulated) time from the store, else the wall clock."""
    saved = store.get_state("now")
    return pd.Timestamp(saved).tz_convert("UTC") if saved else pd.Timestamp.now(tz="UTC")


def run(args: argparse.Namespace) -> int:
    """Print the status of the site's store."""
    cfg = load_site(args.config)
    url = engine_url(cfg.daemon.database)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise ConfigError(Problem(args.config, None, "daemon.database", cfg.daemon.database,
                                  "no database yet: start the daemon with `ems run` first"))
    with Store(cfg.daemon.database) as store:
        status = collect(store, cfg, daemon_now(store), args.events)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    src = {"bill": "bill history", "metered": "metered"}
    by = status["contract_set_by"]
    setter = "" if by is None else " (minimum_contract_kw)" if by == "minimum" else \
        f" (set in {by}, {src[status['contract_source']]})"
    print(f"{status['site']}  month {status['month']}: peak {status['month_peak_kw']:.2f} kW"
          + (f" ({src[status['month_peak_source']]})" if status["month_peak_source"] else "")
          + f", contract {status['contract_kw']:.2f} kW" + setter)
    if status["contract_months"]:
        print("contract months (ratchet window):")
        for row in status["contract_months"]:
            other = row["metered_kw"] if row["source"] == "bill" else row["bill_kw"]
            note = "" if other is None else \
                f" (metered {other:.2f} kW)" if row["source"] == "bill" else f" (bill {other:.2f} kW)"
            print(f"  {row['month']}  {row['peak_kw']:>9.2f} kW  {src[row['source']]}{note}"
                  + ("  <- sets the contract" if row["month"] == by else ""))
    lp = status["last_plan"]
    print("last plan: none" if lp is None else
          f"last plan {lp['created_at']} from {lp['start']}: {lp['status']}{' (FALLBACK)' if lp['fallback'] else ''}, "
          f"planned peak {lp['peak_kw'] or 0:.2f} kW")
    for dev, row in sorted(status["devices"].items()):
        print(f"  {dev}: at {row['ts']} plugged={row['plugged']} soc={row['soc_kwh']} kWh "
              f"setpoint +{row['setpoint_charge_kw']}/-{row['setpoint_discharge_kw']} kW ({row['reason']})")
    if status["faults"]:
        print("active faults / warnings:")
        for e in status["faults"]:
            print(f"  {e['ts']} {e['severity']} {e['kind']}: {e['message']}")
    print("recent events:")
    for e in status["events"]:
        print(f"  {e['ts']} {e['severity']} {e['kind']}: {e['message']}")
    return 0
