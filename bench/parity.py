"""Daemon and study agree: the office's two working days of tests/ems/test_parity.py, billed from
the daemon's metered windows and from the study's ``mpc``; prints one JSON object (no pass/fail).

- ``manual``: the test's run (the daemon's job methods on a manual clock, a dispatch tick every
  60 simulated s, the plan and forecast jobs at every :00/:30, re-plans at once): deterministic;
- ``service``: ``ems run``'s real service, APScheduler jobs on a simulated clock at ``--speed``
  (default 2400x: a dispatch tick every 120 simulated s; 48 simulated hours take 72 s), where ticks
  and plans land wherever the machine's load puts them: varies from run to run.

Each with the study's figures beside it: bill (``compute_bill`` over the two days: the month's basic
charge at the span's peak plus energy and levy), peak, import, vehicle energy, and the bill difference.

Usage: .venv/bin/python bench/parity.py [--speed X] [--skip-service] [--skip-manual]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ems.clock import SimClock  # noqa: E402
from ems.config import load_site  # noqa: E402
from ems.daemon import Service  # noqa: E402
from ems.study.run import Scenario, run_scenario  # noqa: E402
from tests.ems.daemon_helpers import site_copy  # noqa: E402
from tests.ems.test_parity import END, SITE, START, TICK_S, compare, run_daemon, span_csv  # noqa: E402


def service_run(cfg, speed: float) -> dict:
    """The real service from START until the first ticks after END (they close the last window)."""
    out: dict = {}

    async def go():
        async with Service(cfg, clock=SimClock(START, speed)) as svc:
            d = svc.daemon
            wall = time.perf_counter()
            await svc.serve(END + pd.Timedelta(seconds=2.5 * d.dispatch_interval_s))
            out.update(wall_s=time.perf_counter() - wall, windows=[w for w in d.windows if START <= w.start < END],
                       stats=d.stats, interval_s=d.dispatch_interval_s, skipped_jobs=d.stats.skipped_jobs)
    asyncio.run(go())
    return out


def rounded(figures: dict) -> dict:
    """The figures for printing, with the window that set each side's peak."""
    steps = figures["per_step"]
    return {side: {k: round(v, 2) for k, v in figures[side].items()} for side in ("study", "daemon")} | {
        "bill_difference_pct": round(figures["bill_difference_pct"], 3),
        "peak_window": {side: str(steps[f"{side}_kw"].idxmax()) for side in ("study", "daemon")}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--speed", type=float, default=2400.0)
    p.add_argument("--skip-service", action="store_true")
    p.add_argument("--skip-manual", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ems-parity-") as tmp:
        config = site_copy(Path(tmp), SITE)
        cfg = load_site(config)
        data = span_csv(cfg, START, END, Path(tmp) / "two-days.csv")
        t0 = time.perf_counter()
        study = run_scenario(Scenario(str(config), str(data), None, "mpc"))
        out: dict = {"span": [str(START), str(END)], "study_wall_s": round(time.perf_counter() - t0, 1)}
        if not args.skip_manual:
            d = run_daemon(cfg, START, END)
            out["manual"] = {"tick_s": TICK_S, "wall_s": round(d["wall_s"], 1),
                             **rounded(compare(cfg, study, d))}
        if not args.skip_service:
            fresh = Path(tmp) / "service"   # a fresh database
            fresh.mkdir()
            cfg = load_site(site_copy(fresh, SITE))
            d = service_run(cfg, args.speed)
            if len(d["windows"]) != len(study.index):
                out["service_error"] = f"{len(d['windows'])} windows metered, {len(study.index)} expected"
            else:
                out["service"] = {"speed": args.speed, "tick_s": d["interval_s"], "wall_s": round(d["wall_s"], 1),
                                  "skipped_jobs": d["skipped_jobs"], **rounded(compare(cfg, study, d))}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
