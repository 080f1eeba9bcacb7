"""Does a weather forecast improve the PV forecast, and by how much? Prints one JSON object.

The backtest of ``ems.forecast.backtest`` (origins every ``--stride-hours`` from local midnight after
28 days of warm-up, 48 h horizons, each forecast reading only the past; PV scored on daylight
intervals, normalised by the arrays' AC capacity) over the shipped office year
(``configs/data/office-2024-30min.csv``: PV from this project's pvlib model of the office's arrays
driven by pvlib's TMY3 year moved to Nagoya), with the same :class:`SiteForecaster` given:

- ``none``: no weather (clear sky x the clearness measured over the last day and two weeks, and the
  last 2 h's measured-to-modelled ratio): what the daemon does offline;
- ``forecast``: at each origin the weather forecast available then, the study's ``noisy`` archive
  (``ems.study.weather``: the actual weather plus seeded errors growing with lead time, issued every
  6 h; seeds ``--seeds``): what the daemon does with a weather service; its errors are assumptions
  (the module's docstring), not a measured service's;
- ``actual``: the actual weather itself at every lead (a perfect forecast). The office's PV was made
  from that very weather with the same model chain, so this is an upper bound, not a result.

Usage: .venv/bin/python bench/pv_weather.py [--stride-hours 6] [--seeds 1,2,3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from ems.config import load_site  # noqa: E402
from ems.forecast import SiteForecaster, read_history_csv  # noqa: E402
from ems.forecast.backtest import backtest  # noqa: E402
from ems.study.weather import WeatherForecaster, actual_weather, noisy_archive, verification  # noqa: E402


def pv_scores(result: dict) -> dict:
    """The PV block of a backtest: overall and by lead bin, MAE [kW], nMAE, skill vs persistence."""
    pv = result["pv"]

    def row(b: dict) -> dict:
        f = b["forecast"]
        return {"mae_kw": round(f["mae_kw"], 3), "nmae": round(f["nmae"], 4), "rmse_kw": round(f["rmse_kw"], 3),
                "persistence_mae_kw": round(b["persistence"]["mae_kw"], 3),
                "skill_vs_persistence": round(b["skill_vs_persistence"], 3)}
    return {"overall_0_48h": row(pv["overall"]), **{k: row(v) for k, v in pv["by_lead_bin"].items()},
            "samples": pv["overall"]["samples"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stride-hours", type=float, default=6.0)
    p.add_argument("--seeds", default="1,2,3")
    args = p.parse_args()
    warnings.filterwarnings("ignore", module="pvlib")
    cfg = load_site(ROOT / "configs" / "office-v2b.yaml")
    history = read_history_csv(cfg.load.history_csv)
    first, last = history.index[0], history.index[-1] + pd.Timedelta(minutes=30)
    actual = actual_weather(cfg, first - pd.Timedelta(days=1), last + pd.Timedelta(days=3))
    out: dict = {"site": cfg.site.name, "data": "configs/data/office-2024-30min.csv", "stride_hours": args.stride_hours,
                 "pv_capacity_kw": None}
    tic = time.perf_counter()
    sf = SiteForecaster(cfg, history)
    out["pv_capacity_kw"] = round(sf.pv.capacity_kw, 2)
    out["none"] = pv_scores(backtest(sf, stride_hours=args.stride_hours))
    for seed in (int(s) for s in args.seeds.split(",")):
        archive = noisy_archive(cfg, actual, first, last, seed, 48.0)
        wf = WeatherForecaster(cfg, history, archive, actual)
        out[f"forecast_seed_{seed}"] = pv_scores(backtest(wf, stride_hours=args.stride_hours))
        out[f"forecast_seed_{seed}"]["weather_verification"] = verification(archive, actual)
    out["actual"] = pv_scores(backtest(SiteForecaster(cfg, history, actual), stride_hours=args.stride_hours))
    seeds = [k for k in out if k.startswith("forecast_seed_")]
    none = out["none"]["overall_0_48h"]["mae_kw"]
    out["forecast_mae_kw_mean"] = round(sum(out[k]["overall_0_48h"]["mae_kw"] for k in seeds) / len(seeds), 3)
    out["improvement_vs_none"] = {k: round(1 - out[k]["overall_0_48h"]["mae_kw"] / none, 3) for k in (*seeds, "actual")}
    out["wall_s"] = round(time.perf_counter() - tic, 1)
    print(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
