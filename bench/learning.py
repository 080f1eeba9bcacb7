"""Does the daemon's forecast learn from its meter? Prints one JSON object (no pass/fail).

The office (configs/office-v2b.yaml) runs through the real daemon (``Service``: the simulator
replaying the true year over loopback Modbus TCP as the building's load and PV, the three V2B units
and their cars, the SQLite store) for ``--days`` simulated days from
``--start``, in fast mode on a manual clock, as ``bench/daemon.py``'s month: a plan (and with it a
forecast, the forecaster first rebuilt from the store) every 30 minutes as in production, a dispatch
tick every ``--dispatch-s`` simulated seconds (default 300) instead of 5. The true year is the
*noisy office year* (``configs/data/make_noisy_office.py``, seed 1: occupancy noise, weather-driven
cooling, surprise afternoons), or with ``--data shipped`` the shipped office CSV, whose load repeats
the same BDEW day per season and day type (a forecaster with the true history is then exact). The
daemon's history file is the true year cut at the start (day 0): after that the forecaster has only what the daemon metered
(``ems.daemon.learning``: load = import - export - charge + discharge + estimated PV).

With ``--weather`` the references are given, at each origin, the weather the daemon had in its cache
then (the same forecaster: only the history differs); ``true_history_no_weather`` is shown too.

Scored over the last ``--score-days`` days: at every planning step the daemon's own load forecast
(the forecaster's output, before the plan's nowcast) against the true load over the whole horizon
(48 h, and the day-ahead lead 23.5-24 h), and its load - PV against the true net (what the grid
meter sees of the building, the quantity the plan's import is made of), next to the same forecaster
(``SiteForecaster``) at the same origins given

- ``true_history``: the true CSV up to each origin (what the daemon would know with a perfect meter
  and a PV meter);
- ``seed_only``: the CSV cut at day 0 and nothing after (a daemon that never learns).

``--weather``: the daemon's weather cache is filled every 3 simulated hours from the study's
``noisy`` forecast archive (the office's TMY weather with seeded forecast errors, the forecast
available then: ``ems.study.weather``), as the weather job would from Open-Meteo; without it the run is
offline and the PV estimate behind the metered load is clear sky x 0.773.

Usage: .venv/bin/python bench/learning.py [--days 60] [--start 2024-06-01T00:00+09:00] [--weather]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ems.clock import ManualClock  # noqa: E402
from ems.config import load_site  # noqa: E402
from ems.daemon import Service  # noqa: E402
from ems.forecast import SiteForecaster, read_history_csv  # noqa: E402
from ems.forecast.pv import PvModel  # noqa: E402
from ems.store import cached_weather, record_weather, site_energy  # noqa: E402

WEATHER_EVERY = pd.Timedelta(hours=3)


def office(tmp: Path, start: pd.Timestamp, noisy_seed: int | None) -> tuple:
    """The office config with the true year as its history (``noisy_seed``: the noisy office year of
    that seed, else the shipped one), the same config whose history file is that year cut at
    ``start``, and the true year."""
    cfg = load_site(ROOT / "configs" / "office-v2b.yaml")
    path = cfg.load.history_csv
    if noisy_seed is not None:
        sys.path.insert(0, str(ROOT / "configs" / "data"))
        from make_noisy_office import noisy_office_year
        path = str(noisy_office_year(noisy_seed).write_csv(tmp / "truth.csv"))
    truth = read_history_csv(path)
    raw = pd.read_csv(path)
    raw[pd.to_datetime(raw["timestamp"], format="ISO8601") < start].to_csv(tmp / "seed.csv", index=False)
    full = cfg.model_copy(update={"load": cfg.load.model_copy(update={"history_csv": path})})
    cut = cfg.model_copy(update={"load": cfg.load.model_copy(update={"history_csv": str(tmp / "seed.csv")})})
    return full, cut, truth


def weather_archive(cfg, start: pd.Timestamp, end: pd.Timestamp):
    """The study's noisy forecast archive (seed 1) over the run."""
    from ems.study.weather import actual_weather, noisy_archive
    actual = actual_weather(cfg, start - pd.Timedelta(days=2), end + pd.Timedelta(days=3))
    return noisy_archive(cfg, actual, start, end, 1, cfg.planner.horizon_hours)


async def run_daemon(cfg, truth_csv: str, start: pd.Timestamp, days: int, dispatch_s: float, db: Path,
                     score_from: pd.Timestamp, archive) -> dict:
    """The daemon for ``days`` on a manual clock; its forecasts from ``score_from`` on."""
    clock = ManualClock(start)
    step_s = cfg.planner.step_minutes * 60
    per_step = int(step_s // dispatch_s)
    forecasts: dict[pd.Timestamp, tuple[pd.Series, pd.Series]] = {}
    weather_at: dict[pd.Timestamp, pd.DataFrame] = {}
    next_weather = start
    async with Service(cfg, clock=clock, database=str(db), dispatch_interval_s=dispatch_s, replay=truth_csv) as svc:
        d = svc.daemon
        wall = time.perf_counter()
        per_day, mark = [], time.perf_counter()
        for k in range(days * 86400 // step_s):
            if k and k % (86400 // step_s) == 0:
                per_day.append(round(time.perf_counter() - mark, 1))
                mark = time.perf_counter()
                print(f"[learning] day {len(per_day)}: {per_day[-1]} s", file=sys.stderr, flush=True)
            if archive is not None and clock.now() >= next_weather:   # the weather job, on the simulated clock
                w = archive.available(clock.now())
                record_weather(svc.store, w[w.index >= clock.now() - pd.Timedelta(days=1)], clock.now(), "noisy (seed 1)")
                d.plans.forecasts.learning.weather_arrived()
                next_weather = clock.now() + WEATHER_EVERY
            for _ in range(per_step):
                await d.dispatch_once()
                await d.heartbeat_once()
                clock.timeleap(dispatch_s)
            await d.plan_once(d.replan_reason or "scheduled")
            f = d.plans.forecasts
            if f.origin is not None and f.origin >= score_from and f.forecast is not None:
                forecasts[f.origin] = (f.forecast.load_kw.copy(), f.forecast.pv_kw.copy())
                if archive is not None:   # the weather the daemon had then, for the references
                    weather_at[f.origin] = cached_weather(svc.store)
        wall = time.perf_counter() - wall
        energy = site_energy(svc.store)
        quality = svc.store.get_state("forecast_quality")
        sf = d.plans.forecasts._forecaster
        return {"forecasts": forecasts, "weather_at": weather_at, "wall_s": round(wall, 1),
                "wall_s_per_day_first_last": [per_day[0], per_day[-1]],
                "windows": len(energy),
                "flagged_windows": int((energy["flags"] != "").sum()), "pv_source": energy["pv_source"].value_counts().to_dict(),
                "history_end": str(sf.history.index[-1]), "history_source": sf.source, "quality": quality,
                "plans": d.stats.plans, "ticks": d.stats.ticks, "energy": energy}


def score(forecasts: dict[pd.Timestamp, pd.Series], truth: pd.Series, lead_h: tuple[float, float] | None = None) -> dict:
    """MAE [kW] of the forecasts against ``truth`` over their horizon (or the lead range [h])."""
    errs = []
    for origin, fc in forecasts.items():
        lead = (fc.index - origin) / pd.Timedelta(hours=1)
        sel = np.ones(len(fc), dtype=bool) if lead_h is None else (lead >= lead_h[0]) & (lead < lead_h[1])
        t = truth.reindex(fc.index[sel]).to_numpy()
        e = fc.to_numpy()[sel] - t
        errs.append(e[np.isfinite(e)])
    e = np.concatenate(errs) if errs else np.zeros(0)
    return {"mae_kw": round(float(np.mean(np.abs(e))), 3) if e.size else None, "samples": int(e.size)}


def reference(cfg, history: pd.DataFrame, origins, hours: float,
              weather_at: dict[pd.Timestamp, pd.DataFrame] | None = None) -> dict[pd.Timestamp, tuple[pd.Series, pd.Series]]:
    """The same forecaster on ``history`` at ``origins`` (each reads only the rows before it): load and
    PV; with ``weather_at``, at each origin with the weather the daemon had then."""
    if not weather_at:
        sf = SiteForecaster(cfg, history)
        return {t0: (fc.load_kw, fc.pv_kw) for t0, fc in ((t0, sf.forecast(t0, hours)) for t0 in origins)}
    pv = PvModel(cfg.site, cfg.pv)
    out = {}
    for t0 in origins:
        fc = SiteForecaster(cfg, history, weather_at[t0], pv_model=pv).forecast(t0, hours)
        out[t0] = (fc.load_kw, fc.pv_kw)
    return out


def net(forecasts: dict) -> dict[pd.Timestamp, pd.Series]:
    """Load - PV of each (load, PV) forecast [kW]."""
    return {t: load - pv for t, (load, pv) in forecasts.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--start", default="2024-06-01T00:00+09:00")
    p.add_argument("--score-days", type=int, default=7)
    p.add_argument("--dispatch-s", type=float, default=300.0)
    p.add_argument("--weather", action="store_true", help="fill the weather cache from the noisy forecast archive")
    p.add_argument("--data", choices=("noisy", "shipped"), default="noisy",
                   help="the true year: the noisy office year (seed --noise-seed; default) or the shipped office CSV")
    p.add_argument("--noise-seed", type=int, default=1)
    args = p.parse_args()
    warnings.filterwarnings("ignore", module="pvlib")
    start = pd.Timestamp(args.start)
    end = start + pd.Timedelta(days=args.days)
    score_from = end - pd.Timedelta(days=args.score_days)
    with tempfile.TemporaryDirectory(prefix="ems-learning-") as tmp:
        cfg, cut, truth = office(Path(tmp), start, args.noise_seed if args.data == "noisy" else None)
        archive = weather_archive(cfg, start, end) if args.weather else None
        out = asyncio.run(run_daemon(cut, cfg.load.history_csv, start, args.days, args.dispatch_s, Path(tmp) / "db.sqlite",
                                     score_from, archive))
    daemon_fc = out.pop("forecasts")
    weather_at = out.pop("weather_at")
    energy = out.pop("energy")
    hours = cfg.planner.horizon_hours
    origins = sorted(daemon_fc)
    end_of = {t: t + pd.Timedelta(hours=hours) - pd.Timedelta(minutes=30) for t in origins}   # the plan horizon
    daemon_fc = {t: (load[:end_of[t]], pv[:end_of[t]]) for t, (load, pv) in daemon_fc.items()}
    refs = {"true_history": reference(cfg, truth, origins, hours, weather_at),
            "seed_only": reference(cfg, truth[truth.index < start], origins, hours, weather_at)}
    if weather_at:
        refs["true_history_no_weather"] = reference(cfg, truth, origins, hours)
    load = truth["load_kw"]
    true_net = truth["load_kw"] - truth["pv_kw"]
    result = {"site": cfg.site.name, "start": str(start), "days": args.days, "dispatch_s": args.dispatch_s,
              "data": f"noisy office year, seed {args.noise_seed}" if args.data == "noisy" else "office-2024-30min.csv",
              "weather": "noisy archive (seed 1) every 3 h" if args.weather else "none (offline: PV estimate clear sky x 0.773)",
              "scored_origins": len(origins), "score_from": str(score_from), **out}
    loads = {"daemon": {t: v[0] for t, v in daemon_fc.items()}, **{k: {t: v[0] for t, v in r.items()} for k, r in refs.items()}}
    nets = {"daemon": net(daemon_fc), **{k: net(r) for k, r in refs.items()}}
    for what, fcs, truth_kw in (("load", loads, load), ("net_load_minus_pv", nets, true_net)):
        for name, lead in (("horizon_0_48h", None), ("day_ahead_23_5_24h", (23.5, 24.0))):
            block = {k: score(v, truth_kw, lead) for k, v in fcs.items()}
            d, t = block["daemon"]["mae_kw"], block["true_history"]["mae_kw"]
            block["daemon_over_true_history"] = round(d / t, 3) if d and t else None
            result[f"{what}_{name}"] = block
    metered = energy.index[(energy["flags"] == "") & energy["load_kwh"].notna()]
    est = energy.loc[metered, "load_kwh"] / 0.5
    result["metered_load_vs_true"] = {"mae_kw": round(float(np.mean(np.abs(est - load.reindex(metered)))), 3),
                                      "bias_kw": round(float(np.mean(est - load.reindex(metered))), 3), "windows": len(metered)}
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
