"""Noisy office summer: the EMS against perfect foresight on data it cannot know in advance; prints
one JSON object (no pass/fail).

The shipped office year repeats one BDEW day per season and day type, so its load is easy to
forecast. This bench makes a *noisy office year* instead (``configs/data/make_noisy_office.py``,
deterministic from ``--seed``: the shipped load x half-hourly occupancy noise, + cooling of about
1 kW per K the TMY air temperature is above 24 degC on working days 08-18, + two surprise afternoons
a month June-September with 8-12 kW more for 2-4 h that neither the history nor the weather shows),
writes it to a temporary folder with a copy of ``configs/office-v2b.yaml`` whose ``load.history_csv``
is the noisy year (so ``mpc`` forecasts from the noisy year's own past, as the study does), and runs
``ems study`` on ``--months`` (default July-September 2024) with ``building``, ``none``, ``oracle``
and ``mpc`` once per ``--weather`` variant: ``none`` (no weather, the study's default) and ``noisy``
(``--weather-forecast noisy``: the TMY weather plus seeded forecast errors, ``ems.study.weather``;
its seed is ``--weather-seed``, default ``--seed``).

Printed: per strategy the site's bill, the drivers' settlement, the battery wear and the net cost
(bill + settlement + wear) [JPY], the span's peak; per mpc variant its share of the oracle's net
saving against ``none`` and against ``building``, per month its peak, the oracle's and the gap,
the peaks it set while refilling cars (``peaks_set_by_refill``), plans, fallbacks, missed
departures, the weather forecast's verification; the surprises in the span; wall times.

Usage: .venv/bin/python bench/noisy_office.py [--seed 1] [--months 7-9] [--weather none,noisy]
       [--weather-seed N] [--workers 2]
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
sys.path.insert(0, str(ROOT / "configs" / "data"))

from make_noisy_office import YEAR, noisy_office_year  # noqa: E402

from ems.study import execute, scenarios  # noqa: E402
from ems.study.summary import summarise  # noqa: E402

CONFIG = ROOT / "configs/office-v2b.yaml"
BASE = ["building", "none", "oracle"]
SHARE_MIN = 1e-6


def log(msg: str) -> None:
    print(f"[noisy_office] {msg}", file=sys.stderr, flush=True)


def parse_months(text: str) -> list[int]:
    """``7-9`` or ``7,8,9``: consecutive months of the year."""
    if "-" in text:
        a, b = (int(x) for x in text.split("-", 1))
        months = list(range(a, b + 1))
    else:
        months = sorted(int(x) for x in text.split(","))
    if not months or months != list(range(months[0], months[-1] + 1)) or months[0] < 1 or months[-1] > 12:
        raise SystemExit(f"--months {text!r}: give consecutive months of the year, e.g. 7-9")
    return months


def site_files(tmp: Path, seed: int, months: list[int], peak_quantile: float | None = None,
               peak_hedge: float | None = None):
    """The noisy year, the config copy reading it as its history (with ``planner.peak_quantile_pct``
    and ``planner.peak_hedge_pct`` when given), the span's CSV."""
    year = noisy_office_year(seed)
    noisy = year.write_csv(tmp / f"noisy-office-{YEAR}-30min.csv")
    text = CONFIG.read_text()
    quantile = "" if peak_quantile is None else f"\n  peak_quantile_pct: {peak_quantile:g}"
    if peak_hedge is not None:
        quantile += f"\n  peak_hedge_pct: {peak_hedge:g}"
    for old, new in (("tariff: tariffs/", f"tariff: {ROOT}/configs/tariffs/"),
                     ("history_csv: data/office-2024-30min.csv", f"history_csv: {noisy}"),
                     ("  horizon_hours: 48", "  horizon_hours: 48" + quantile)):
        if old not in text:
            raise SystemExit(f"{CONFIG}: expected {old!r}")
        text = text.replace(old, new)
    config = tmp / CONFIG.name          # same stem: the site label stays office-v2b
    config.write_text(text)
    frame = year.frame
    keep = frame.index.month.isin(months)
    span = tmp / "span.csv"
    rows = frame[keep]
    span.write_text("timestamp,load_kw,pv_kw\n" + "".join(
        f"{t.isoformat()},{a:.3f},{b:.3f}\n" for t, a, b in zip(rows.index, rows["load_kw"], rows["pv_kw"])))
    return year, config, span, rows


def money(s: dict) -> dict:
    return {"bill_jpy": round(s["bill"]["total"]), "driver_settlement_jpy": round(s["driver_settlement"]),
            "wear_jpy": round(s["battery_wear_cost"]), "net_cost_jpy": round(s["net_cost"]),
            "peak_kw": round(s["peak_kw"], 2), "monthly_peaks_kw": {m: round(v, 2) for m, v in s["monthly_peaks_kw"].items()},
            "departures_missed": s["departure_targets_missed"],
            "wall_s": round(s["wall_seconds"], 1)}


def share(group: dict, base: str) -> float | None:
    """mpc's share of the oracle's net saving against ``base``."""
    b, m, o = (group[k]["net_cost"] for k in (base, "mpc", "oracle"))
    return None if b - o <= SHARE_MIN else round((b - m) / (b - o), 4)


def mpc_figures(group: dict) -> dict:
    m, o = group["mpc"], group["oracle"]
    months = {k: {"mpc_peak_kw": round(m["monthly_peaks_kw"][k], 2), "oracle_peak_kw": round(o["monthly_peaks_kw"][k], 2),
                  "gap_kw": round(m["peak_gap_kw"][k], 2) + 0.0, "peaks_set_by_refill": m.get("peaks_set_by_refill", {}).get(k)}
              for k in m["monthly_peaks_kw"]}
    out = {"share_of_oracle_net_saving_vs_none": share(group, "none"),
           "share_of_oracle_net_saving_vs_building": share(group, "building"),
           "months": months, "plans": m["plans"], "plan_fallbacks": m["plan_fallbacks"],
           "steps_without_forecast": m["steps_without_forecast"], "departures_missed": m["departure_targets_missed"],
           "reserve_breaches": m["reserve_breaches"], "wall_s": round(m["wall_seconds"], 1)}
    if "weather_forecast" in m:
        w = m["weather_forecast"]
        out["weather_forecast"] = {"kind": w.get("kind"), "seed": w.get("seed"), "issues": w.get("issues"),
                                   "verification": {lead: {k: round(v, 3) if isinstance(v, float) else v for k, v in e.items()}
                                                    for lead, e in w.get("verification", {}).items()}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1, help="seed of the noisy year (default 1)")
    ap.add_argument("--months", default="7-9", help="consecutive months of 2024 to study (default 7-9)")
    ap.add_argument("--weather", default="none,noisy", help="mpc variants: none (no weather), noisy (default both)")
    ap.add_argument("--weather-seed", type=int, help="seed of the noisy weather forecast (default --seed)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--peak-quantile", type=float, metavar="PCT",
                    help="plan with planner.peak_quantile_pct PCT (default: the config's, off)")
    ap.add_argument("--peak-hedge", type=float, metavar="PCT",
                    help="plan with planner.peak_hedge_pct PCT (default: the config's)")
    args = ap.parse_args()
    months = parse_months(args.months)
    variants = [v.strip() for v in args.weather.split(",") if v.strip()]
    if not variants or set(variants) - {"none", "noisy"}:
        raise SystemExit(f"--weather {args.weather!r}: a comma-separated list of none, noisy")
    wseed = args.seed if args.weather_seed is None else args.weather_seed
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        log(f"generating the noisy office year (seed {args.seed}) in {tmp}")
        year, config, span, rows = site_files(Path(tmp), args.seed, months, args.peak_quantile, args.peak_hedge)
        site = [(str(config), str(span))]
        items = scenarios(site, [], BASE)
        mpc_items = {v: scenarios(site, [], ["mpc"], weather_forecast=None if v == "none" else v,
                                  weather_seed=None if v == "none" else wseed)[0] for v in variants}
        everything = list(mpc_items.values()) + items
        log(f"running {len(everything)} scenarios over {len(rows)} steps ({len(variants)} mpc, each re-planning "
            f"every step) on {args.workers} workers")
        t1 = time.perf_counter()
        results = execute(everything, workers=args.workers, progress=True)
        study_wall = time.perf_counter() - t1
    by_item = dict(zip(everything, results))
    base_results = [by_item[it] for it in items]
    out_variants, strategies = {}, {}
    for v, it in mpc_items.items():
        group = summarise(base_results + [by_item[it]], {})["results"]["office-v2b"]["config"]
        for k in BASE:
            strategies.setdefault(k, money(group[k]))
        strategies["mpc" if v == "none" else f"mpc_{v}_weather"] = money(group["mpc"])
        out_variants["mpc" if v == "none" else f"mpc_{v}_weather"] = mpc_figures(group)
    frame = rows
    surprises = [s.as_dict() for s in year.surprises if s.start.month in months]
    out = {
        "site": "office-v2b", "data": f"noisy office year, seed {args.seed} (configs/data/make_noisy_office.py)",
        "span": {"start": frame.index[0].isoformat(), "end": (frame.index[-1] + pd.Timedelta(minutes=30)).isoformat(),
                 "months": [f"{YEAR}-{m:02d}" for m in months], "steps": len(frame)},
        "weather_forecast_seed": wseed if "noisy" in variants else None,
        "peak_quantile_pct": args.peak_quantile,
        "peak_hedge_pct": args.peak_hedge,
        "noisy_year_in_span": {"load_kwh": round(frame["load_kw"].sum() / 2), "cooling_kwh": round(frame["cooling_kw"].sum() / 2),
                               "peak_load_kw": round(frame["load_kw"].max(), 2),
                               "peak_load_without_surprises_kw": round((frame["load_kw"] - frame["surprise_kw"]).max(), 2),
                               "max_temp_air_c": round(frame["temp_air_c"].max(), 1), "surprises": surprises},
        "strategies": strategies,
        "mpc": out_variants,
        "wall_s": {"total": round(time.perf_counter() - t0, 1), "study": round(study_wall, 1), "workers": args.workers},
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
