"""Daemon speed and memory: prints one JSON object (no pass/fail).

- ``day``: the real service (APScheduler jobs, plans solved in the worker thread, and again in a
  worker process as ``ems run`` does by default, dispatch over
  loopback Modbus TCP to the in-process simulator, SQLite store) for a simulated day of each
  example site at ``--speed`` (default 2400x; the dispatch interval is then 120 simulated s, the
  least real time between ticks being 50 ms): wall time, plans per second of wall time, dispatch
  tick latency (read meter and units, decide, write setpoints with read-back, store telemetry)
  median and p99, also split into ticks that overlapped a plan being solved (both want the GIL)
  and the others, jobs skipped because the previous run was still going;
- ``month``: the home site for 28 simulated days (plans in the worker thread, so every byte is in
  this one process) driven cycle by cycle on a manual clock as fast as
  the machine goes (fast mode: a plan every 30 minutes as in production, but a dispatch tick every
  ``--month-dispatch-s`` simulated seconds, default 300, instead of 5, i.e. 8,064 ticks instead of
  483,840), with the process's resident memory at the end of each week (target: at most 300 MB
  and no growth from week 2 to week 4).

Usage: .venv/bin/python bench/daemon.py [--speed X] [--month-dispatch-s S] [--skip-month] [--skip-day]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ems.clock import ManualClock, SimClock  # noqa: E402
from ems.config import load_site  # noqa: E402
from ems.daemon import Service  # noqa: E402

DAYS = {"home": ("home-v2h.yaml", "2024-07-08T12:00+09:00"), "office": ("office-v2b.yaml", "2024-07-08T00:00+09:00")}
MONTH_START = "2024-07-01T00:00+09:00"


def rss_mb() -> float:
    """Resident memory of this process now [MB]."""
    return psutil.Process().memory_info().rss / 2**20


def latency_ms(values) -> dict[str, float]:
    """Median and p99 of tick durations [ms]."""
    ms = np.asarray(list(values)) * 1000
    return {"median": round(float(np.median(ms)), 1), "p99": round(float(np.percentile(ms, 99)), 1),
            "max": round(float(ms.max()), 1)}


def split_latency(stats) -> dict:
    """Tick latency of the ticks that overlapped a plan being solved, and of the others."""
    ticks, planning = np.asarray(stats.tick_seconds), np.asarray(stats.tick_during_plan, dtype=bool)
    out = {"ticks_during_plan": int(planning.sum())}
    if planning.any():
        out["tick_latency_ms_during_plan"] = latency_ms(ticks[planning])
    if (~planning).any():
        out["tick_latency_ms_no_plan"] = latency_ms(ticks[~planning])
    return out


def day(site: str, speed: float, tmp: Path, solver_process: bool = False) -> dict:
    """One simulated day through the scheduler at ``speed``."""
    name, start = DAYS[site]
    cfg = load_site(ROOT / "configs" / name)
    t0 = pd.Timestamp(start)

    async def run():
        async with Service(cfg, clock=SimClock(t0, speed), database=str(tmp / f"{site}-day-{solver_process}.sqlite"),
                           solver_process=solver_process) as svc:
            wall = time.perf_counter()
            await svc.serve(t0 + pd.Timedelta(days=1))
            return svc.daemon, time.perf_counter() - wall
    d, wall = asyncio.run(run())
    s = d.stats
    return {"site": site, "solver": "process" if solver_process else "thread", "speed": speed,
            "dispatch_interval_s": d.dispatch_interval_s, "wall_s": round(wall, 2),
            "plans": s.plans, "plans_per_s": round(s.plans / wall, 2),
            "plan_s_median": round(statistics.median(s.plan_seconds), 3), "ticks": s.ticks,
            "ticks_expected": int(86400 / d.dispatch_interval_s), "skipped_jobs": s.skipped_jobs,
            "tick_latency_ms": latency_ms(s.tick_seconds), **split_latency(s), "units": len(cfg.chargers)}


def month(dispatch_s: float, tmp: Path) -> dict:
    """28 simulated days on a manual clock, as fast as possible; RSS at each week's end."""
    cfg = load_site(ROOT / "configs" / "home-v2h.yaml")
    clock = ManualClock(pd.Timestamp(MONTH_START))
    step_s = cfg.planner.step_minutes * 60
    per_step = int(step_s // dispatch_s)

    async def run():
        weeks = []
        async with Service(cfg, clock=clock, database=str(tmp / "month.sqlite"), dispatch_interval_s=dispatch_s) as svc:
            d = svc.daemon
            wall = time.perf_counter()
            for k in range(28 * 86400 // step_s):
                for _ in range(per_step):
                    await d.dispatch_once()
                    await d.heartbeat_once()
                    clock.timeleap(dispatch_s)
                await d.plan_once(d.replan_reason or "scheduled")
                if (k + 1) % (7 * 86400 // step_s) == 0:
                    d.housekeeping()
                    weeks.append(round(rss_mb(), 1))
            wall = time.perf_counter() - wall
            rows = svc.store.count("telemetry")
            peaks = svc.store.month_peaks()
            s = d.stats
        return {"simulated_days": 28, "dispatch_interval_s": dispatch_s, "wall_s": round(wall, 1), "plans": s.plans,
                "plans_per_s": round(s.plans / wall, 2), "ticks": s.ticks, "tick_latency_ms": latency_ms(s.tick_seconds),
                "rss_mb_end_of_week": weeks, "growth_week2_to_4_mb": round(weeks[3] - weeks[1], 1),
                "telemetry_rows": rows, "month_peak_kw": round(peaks.get("2024-07", 0.0), 2),
                "replans": dict(s.replans)}
    return asyncio.run(run())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--speed", type=float, default=2400.0)
    p.add_argument("--month-dispatch-s", type=float, default=300.0)
    p.add_argument("--skip-month", action="store_true")
    p.add_argument("--skip-day", action="store_true")
    args = p.parse_args()
    out: dict = {"cpu_count": psutil.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="ems-bench-") as tmp:
        if not args.skip_day:
            out["day"] = [day(site, args.speed, Path(tmp), process) for site in DAYS for process in (False, True)]
        if not args.skip_month:
            out["month"] = month(args.month_dispatch_s, Path(tmp))
    out["rss_mb"] = round(rss_mb(), 1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
