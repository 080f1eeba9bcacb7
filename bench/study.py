"""Study speed and quality: prints one JSON object (no pass/fail).

The office (configs/office-v2b.yaml, three V2B units) on its shipped year at 30 minutes
(configs/data/office-2024-30min.csv): every strategy run as one scenario of ``ems.study`` in a
2-process pool (mpc on one core, the others on the second), with

- ``oracle``: wall time of the perfect-foresight year (12 chained monthly MILPs + replay; target <= 60 s);
- ``mpc``: wall time of re-planning every step (17,568 plans in the leap year 2024; target <= 10 min
  on 2 cores), seconds per step, plans that fell back to the safe rule;
- the share of the oracle's saving against ``none`` that mpc (and the installer's rule) capture
  (target for mpc >= 85 %), missed departures, reserve breaches.

Usage: .venv/bin/python bench/study.py [--days N] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ems.study import execute, scenarios  # noqa: E402
from ems.study.summary import summarise  # noqa: E402

CONFIG = ROOT / "configs/office-v2b.yaml"
DATA = ROOT / "configs/data/office-2024-30min.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, help="only the first N days (default: the whole year)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = DATA
        if args.days:
            data = Path(tmp) / "office.csv"
            pd.read_csv(DATA).iloc[:48 * args.days].to_csv(data, index=False)
        items = scenarios([(str(CONFIG), str(data))], [], ["none", "rule", "mpc", "oracle"])
        t0 = time.perf_counter()
        results = execute(items, workers=args.workers)
        wall = time.perf_counter() - t0
    summary = summarise(results, {})
    f = summary["results"]["office-v2b"]["config"]
    steps = f["mpc"]["span"]["steps"]
    out = {
        "site": "office-v2b", "data": str(DATA.relative_to(ROOT)), "steps": steps, "step_minutes": 30,
        "workers": args.workers, "total_wall_s": round(wall, 1),
        "oracle_wall_s": round(f["oracle"]["wall_seconds"], 1), "oracle_target_s": 60,
        "mpc_wall_s": round(f["mpc"]["wall_seconds"], 1), "mpc_target_s": 600,
        "mpc_plans": f["mpc"]["plans"], "mpc_seconds_per_step": round(f["mpc"]["wall_seconds"] / steps, 4),
        "mpc_plan_fallbacks": f["mpc"]["plan_fallbacks"], "mpc_steps_without_forecast": f["mpc"]["steps_without_forecast"],
        "bills_jpy": {s: round(x["bill"]["total"]) for s, x in f.items()},
        "peak_kw": {s: round(x["peak_kw"], 2) for s, x in f.items()},
        "share_of_oracle_saving": {s: None if x["share_of_oracle_saving"] is None else round(x["share_of_oracle_saving"], 4)
                                   for s, x in f.items()},
        "mpc_share_target": 0.85,
        "driver_settlement_jpy": {s: round(x["driver_settlement"]) for s, x in f.items()},
        "net_cost_jpy": {s: round(x["net_cost"]) for s, x in f.items()},
        "share_of_oracle_net_saving": {s: None if x["share_of_oracle_net_saving"] is None
                                       else round(x["share_of_oracle_net_saving"], 4) for s, x in f.items()},
        "departure_targets_missed": {s: x["departure_targets_missed"] for s, x in f.items()},
        "reserve_breaches": {s: x["reserve_breaches"] for s, x in f.items()},
        "outage_median_hours": {s: x["outage_survival"].get("median_hours") for s, x in f.items()},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
