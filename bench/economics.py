"""Whose money: the office with driver-owned cars, priced and free; prints one JSON object (no pass/fail).

The office (configs/office-v2b.yaml: three employees' cars settled at 40 JPY/kWh) over a span of its
shipped 30-minute year (default: 1-14 July 2024), every strategy of ``ems study``, and the same site
with the drivers' energy at 0 JPY/kWh (a copy of the config written beside it for the run and
removed after). Printed per price and strategy: the bill, the drivers' settlement (positive = paid
to drivers), bill + settlement, wear, kWh taken out of the cars and put in, the span's peak, missed
departures; and the checks of issue 11: mpc at 40 takes at most a third of the kWh it takes at 0;
mpc's peak at 40 against the building alone; oracle <= mpc <= none on bill + settlement.

Usage: .venv/bin/python bench/economics.py [--start 2024-07-01] [--days 14] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ems.study import execute, scenarios  # noqa: E402
from ems.study.summary import summarise  # noqa: E402

CONFIG = ROOT / "configs/office-v2b.yaml"
DATA = ROOT / "configs/data/office-2024-30min.csv"
STRATEGIES = ["building", "none", "rule", "mpc", "oracle"]


def figures(s: dict) -> dict:
    """The figures of one strategy, rounded for reading."""
    return {"bill_jpy": round(s["bill"]["total"]), "driver_settlement_jpy": round(s["driver_settlement"]),
            "bill_plus_settlement_jpy": round(s["bill_plus_settlement"]), "wear_jpy": round(s["battery_wear_cost"]),
            "net_cost_jpy": round(s["net_cost"]), "discharged_kwh": round(s["vehicle_discharged_kwh"], 1),
            "charged_kwh": round(s["vehicle_charged_kwh"], 1), "peak_kw": round(s["peak_kw"], 2),
            "missed": s["departure_targets_missed"]}


def run(config: Path, data: Path, workers: int) -> dict:
    """Every strategy on one config: strategy -> summary figures."""
    results = execute(scenarios([(str(config), str(data))], [], STRATEGIES), workers=workers)
    tree = summarise(results, {})["results"]
    return next(iter(next(iter(tree.values())).values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", default="2024-07-01")
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    free = CONFIG.with_name(".bench-office-price0.yaml")
    text = CONFIG.read_text()
    if "energy_price_per_kwh: 40" not in text:
        raise SystemExit(f"{CONFIG}: expected the drivers' price 'energy_price_per_kwh: 40'")
    free.write_text(text.replace("energy_price_per_kwh: 40", "energy_price_per_kwh: 0"))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            frame = pd.read_csv(DATA)
            stamps = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_convert("Asia/Tokyo")
            first = pd.Timestamp(args.start, tz="Asia/Tokyo")
            keep = (stamps >= first) & (stamps < first + pd.Timedelta(days=args.days))
            data = Path(tmp) / "span.csv"
            frame[keep.to_numpy()].to_csv(data, index=False)
            priced, at_zero = run(CONFIG, data, args.workers), run(free, data, args.workers)
    finally:
        free.unlink(missing_ok=True)
    p, z = priced, at_zero
    bs = {k: p[k]["bill_plus_settlement"] for k in ("none", "mpc", "oracle")}
    out = {
        "site": "office-v2b", "span": {"start": args.start, "days": args.days},
        "price_40": {k: figures(v) for k, v in p.items()},
        "price_0": {k: figures(v) for k, v in z.items()},
        "mpc_discharged_ratio_40_vs_0": round(p["mpc"]["vehicle_discharged_kwh"] / max(z["mpc"]["vehicle_discharged_kwh"], 1e-9), 3),
        "mpc_peak_below_building_kw": round(p["building"]["peak_kw"] - p["mpc"]["peak_kw"], 2),
        "oracle_le_mpc_le_none_on_bill_plus_settlement": bs["oracle"] <= bs["mpc"] + 1e-6 <= bs["none"] + 2e-6,
        "mpc_share_of_oracle_net_saving": p["mpc"]["share_of_oracle_net_saving"],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
