"""The store's size: measured in fast mode, extrapolated to a year of production. Prints one JSON object.

The office (configs/office-v2b.yaml: three V2B units, a meter) runs through the real daemon for
``--days`` simulated days (default 28) in fast mode on a manual clock, as ``bench/daemon.py``'s month:
a plan every 30 minutes (plus the event re-plans), the retention job at every local midnight (with
``--retention-days``, default 7 so that the run shows the purge at work), but a dispatch tick every
``--dispatch-s`` simulated seconds (default 300) instead of 5, so telemetry comes 60 times slower
than in production. The file is measured at each week's end (after the midnight purge and vacuum).

At the end SQLite's ``dbstat`` gives the bytes on disk of each table with its indexes, divided by its
rows: bytes per telemetry row, per plan, per event, per 30-minute window (``demand_windows``,
``site_energy``, ``day_ahead_forecasts``) and per cached weather hour (the recorded-format Open-Meteo
answer of the tests is cached once to measure it). The production year is then::

    size = R x (T x t + P x p + E x e + 48 x a) + 365 x (48 x (w + s) + 24 x h)

with ``R`` = ``daemon.retention_days`` (14 by default), ``T`` = telemetry rows a day at a 5-s tick
(17,280 ticks x 3 units), ``P``/``E`` the plans and events a day of the fast run (the plan and
event rates do not depend on the tick), lower-case letters the bytes per row: ticks, plans, events
and day-ahead forecasts (``a``) are kept ``R`` days, the windows (``w``, ``s``) and weather hours
(``h``) for ever. The write-ahead log (up to about 4 MB between checkpoints) comes on top.

Usage: .venv/bin/python bench/store.py [--days 28] [--dispatch-s 300] [--retention-days 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ems.clock import ManualClock  # noqa: E402
from ems.config import RETENTION_DAYS, load_site  # noqa: E402
from ems.daemon import Service  # noqa: E402
from ems.forecast.weather import read_open_meteo  # noqa: E402
from ems.store import file_bytes, record_weather  # noqa: E402

START = "2024-07-01T00:00+09:00"
PRODUCTION_TICK_S = 5.0
TABLES = {"telemetry": "telemetry", "plans": "plans", "events": "events", "demand_windows": "demand_windows",
          "site_energy": "site_energy", "day_ahead_forecasts": "day_ahead_forecasts", "weather_forecasts": "weather_forecasts"}
RECORDED = ROOT / "tests" / "ems" / "data" / "open-meteo-jma-nagoya.json"


def table_bytes(path: Path) -> dict[str, dict]:
    """Bytes on disk (pages, with the table's indexes) and rows of each table."""
    con = sqlite3.connect(path)
    try:
        owner = dict(con.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')").fetchall())
        pages: dict[str, int] = {}
        for name, size in con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)
            pages[table] = pages.get(table, 0) + size
        rows = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}   # noqa: S608 (fixed names)
    finally:
        con.close()
    return {t: {"bytes": pages.get(t, 0), "rows": rows[t], "bytes_per_row": round(pages.get(t, 0) / rows[t], 1) if rows[t] else None}
            for t in TABLES}


async def run(days: int, dispatch_s: float, retention_days: int, db: Path) -> dict:
    cfg = load_site(ROOT / "configs" / "office-v2b.yaml")
    cfg = cfg.model_copy(update={"daemon": cfg.daemon.model_copy(update={"retention_days": retention_days})})
    clock = ManualClock(pd.Timestamp(START))
    step_s = cfg.planner.step_minutes * 60
    per_step = int(step_s // dispatch_s)
    weeks = []
    async with Service(cfg, clock=clock, database=str(db), dispatch_interval_s=dispatch_s) as svc:
        d = svc.daemon
        wall = time.perf_counter()
        for k in range(days * 86400 // step_s):
            for _ in range(per_step):
                await d.dispatch_once()
                await d.heartbeat_once()
                clock.timeleap(dispatch_s)
            await d.plan_once(d.replan_reason or "scheduled")
            if (k + 1) % (86400 // step_s) == 0:
                d.housekeeping()                       # the retention job at local midnight
            if (k + 1) % (7 * 86400 // step_s) == 0:
                weeks.append(round(file_bytes(svc.store) / 2**20, 2))
        wall = time.perf_counter() - wall
        data, meta = read_open_meteo(RECORDED)
        record_weather(svc.store, data, clock.now(), meta.get("models"))
        d.housekeeping()
        counts = {"plans": d.stats.plans, "events": svc.store.count("events"), "ticks": d.stats.ticks}
    return {"wall_s": round(wall, 1), "file_mb_end_of_week": weeks, **counts}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=28)
    p.add_argument("--dispatch-s", type=float, default=300.0)
    p.add_argument("--retention-days", type=int, default=7)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ems-store-") as tmp:
        db = Path(tmp) / "office.sqlite"
        out = asyncio.run(run(args.days, args.dispatch_s, args.retention_days, db))
        tables = table_bytes(db)
        file_mb = db.stat().st_size / 2**20
    kept = min(args.days, args.retention_days)
    plans_per_day = tables["plans"]["rows"] / kept
    events_per_day = tables["events"]["rows"] / kept
    b = {t: v["bytes_per_row"] or 0.0 for t, v in tables.items()}
    units = 3
    ticks_per_day = 86400 / PRODUCTION_TICK_S
    per_day_kept = (ticks_per_day * units * b["telemetry"] + plans_per_day * b["plans"] + events_per_day * b["events"]
                    + 48 * b["day_ahead_forecasts"])
    per_day_forever = 48 * (b["demand_windows"] + b["site_energy"]) + 24 * b["weather_forecasts"]
    year = {r: round((r * per_day_kept + 365 * per_day_forever) / 2**20, 1) for r in sorted({7, 14, 35, RETENTION_DAYS})}
    print(json.dumps({
        "site": "office-v2b (3 units)", "simulated_days": args.days, "dispatch_s": args.dispatch_s,
        "retention_days": args.retention_days, **out, "file_mb_at_end": round(file_mb, 2), "tables": tables,
        "plans_per_day": round(plans_per_day, 1), "events_per_day": round(events_per_day, 1),
        "production": {"tick_s": PRODUCTION_TICK_S, "telemetry_rows_per_day": int(ticks_per_day * units),
                       "mb_per_day_kept_retention_days": round(per_day_kept / 2**20, 2),
                       "mb_per_year_kept_for_ever": round(365 * per_day_forever / 2**20, 2),
                       "mb_after_a_year_by_retention_days": year},
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
