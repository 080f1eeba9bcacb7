"""Benchmark of the forecasts on the shipped household year: backtest scores and time per forecast.

Prints JSON (no pass/fail). The house's location is not documented (ems/data/README.md). Assumed:
45.83 N, 6.86 E, the coordinates in the configuration of EMHASS, the project the data comes from;
among the candidates tried (France, west to east) they leave the fewest PV readings at negative
solar elevation (3, against 8-107), i.e. the data's sunrise and sunset agree with them. Altitude
from pvlib's shipped Altitude.h5 (``lookup_altitude``); calendar Europe/Paris with French holidays.
The array's orientation and size are not documented either: they are fitted on the first 28 days
(the backtest's warm-up, never scored) to the clearest days' measured PV shape.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pvlib

from ems.config import PvArray, SiteConfig, load_site
from ems.forecast import SiteForecaster, forecast_site, read_history_csv
from ems.forecast.backtest import backtest
from ems.forecast.pv import PvModel

ROOT = Path(__file__).resolve().parent.parent
HOUSEHOLD = ROOT / "ems" / "data" / "household-2024-30min.csv"
LATITUDE, LONGITUDE = 45.83, 6.86
CALIBRATION_DAYS = 28
STRIDE_HOURS = 6.0


def household_site() -> SiteConfig:
    """The home example's config moved to the house's assumed place and calendar (module docstring)."""
    cfg = load_site(ROOT / "configs" / "home-v2h.yaml")
    site = cfg.site.model_copy(update={"name": "household (assumed 45.83N 6.86E)", "timezone": "Europe/Paris",
                                       "latitude_deg": LATITUDE, "longitude_deg": LONGITUDE,
                                       "altitude_m": float(pvlib.location.lookup_altitude(LATITUDE, LONGITUDE))})
    tariff = cfg.tariff.model_copy(update={"timezone": "Europe/Paris", "holidays_country": "FR", "extra_holidays": []})
    return cfg.model_copy(update={"site": site, "tariff": tariff})


def fit_array(cfg: SiteConfig, history: pd.DataFrame) -> tuple[PvArray, dict]:
    """Tilt, azimuth and kWp that best match the clearest calibration days (least squares)."""
    cal = history[history.index < history.index[0] + pd.Timedelta(days=CALIBRATION_DAYS)]
    step = pd.Timedelta(minutes=30)
    probe = PvModel(cfg.site, [])
    geom = probe.compute_geometry(cal.index, step)
    pv = cal["pv_kw"].fillna(0.0).to_numpy()
    day = cal.index.tz_convert(cfg.site.timezone).normalize()
    # clear days judged independently of the array: measured energy per clear-sky GHI energy
    score = pd.Series(pv).groupby(day).sum() / pd.Series(geom.cs_ghi).groupby(day).sum()
    clear = np.isin(day, score.nlargest(5).index)
    best = None
    for azimuth in range(90, 271, 15):
        for tilt in range(0, 61, 10):
            arr = PvArray(name="fit", capacity_kwp=1.0, tilt_deg=tilt, azimuth_deg=azimuth)
            model = PvModel(cfg.site, [arr]).clear_sky_power_kw(geom)[clear]
            scale = float(model @ pv[clear] / (model @ model))
            resid = float(np.sum((pv[clear] - scale * model) ** 2))
            if best is None or resid < best[0]:
                best = (resid, tilt, azimuth, scale)
    _, tilt, azimuth, scale = best
    array = PvArray(name="fitted", capacity_kwp=round(scale, 2), tilt_deg=tilt, azimuth_deg=azimuth)
    return array, {"tilt_deg": tilt, "azimuth_deg": azimuth, "capacity_kwp": round(scale, 2),
                   "calibration_days": CALIBRATION_DAYS, "clear_days_used": 5}


def recorded_forecast_mae(history: pd.DataFrame, sf: SiteForecaster) -> dict:
    """MAE of the PV forecast the house itself recorded (lead time unknown), daylight rows only."""
    raw = pd.read_csv(HOUSEHOLD, usecols=["timestamp", "pv_forecast_kw"])
    rec = raw["pv_forecast_kw"].to_numpy(dtype=float)
    h = sf.history
    day = sf.pv.geometry(h.index, h.step).zenith < 90
    ok = np.isfinite(rec) & np.isfinite(h.pv_kw) & day
    return {"mae_kw": float(np.mean(np.abs(rec[ok] - h.pv_kw[ok]))), "samples": int(ok.sum()),
            "note": "the house's own recorded PV forecast; its lead time is not documented"}


def timing(cfg: SiteConfig, history: pd.DataFrame, sf: SiteForecaster) -> dict:
    """Seconds per 48 h forecast: warm (prepared SiteForecaster) and cold (forecast_site from scratch)."""
    starts = pd.date_range("2024-06-01", periods=200, freq="3h", tz="UTC")
    tic = time.perf_counter()
    for t0 in starts:
        sf.forecast(t0, 48)
    warm = (time.perf_counter() - tic) / len(starts)
    tic = time.perf_counter()
    for t0 in starts[:5]:
        forecast_site(cfg, t0, 48, history=history)
    cold = (time.perf_counter() - tic) / 5
    return {"seconds_per_48h_forecast_prepared": warm, "seconds_per_48h_forecast_cold": cold,
            "forecasts_timed": len(starts), "step_minutes": 30}


def main() -> None:
    """Backtest on the household year and print the figures as JSON."""
    warnings.simplefilter("ignore")  # pvlib's pandas-4 deprecation notices
    history = read_history_csv(HOUSEHOLD)
    base = household_site()
    array, fit = fit_array(base, history)
    cfg = base.model_copy(update={"pv": [array]})
    sf = SiteForecaster(cfg, history)
    result = backtest(sf, horizon_hours=48, stride_hours=STRIDE_HOURS, warmup_days=CALIBRATION_DAYS)
    out = {
        "data": "ems/data/household-2024-30min.csv",
        "assumed_site": {"latitude_deg": LATITUDE, "longitude_deg": LONGITUDE, "altitude_m": cfg.site.altitude_m,
                         "timezone": cfg.site.timezone, "holidays": "FR"},
        "fitted_array": fit,
        "backtest": {"stride_hours": STRIDE_HOURS, **result["timing"]},
        "load": _summary(result["load"]),
        "pv": _summary(result["pv"]),
        "pv_recorded_forecast_of_the_house": recorded_forecast_mae(history, sf),
        "timing": timing(cfg, history, sf),
        "targets": {"load_skill_vs_persistence_48h_min": 0.10, "seconds_per_48h_forecast_max": 0.2},
    }
    print(json.dumps(out, indent=1, default=float))


def _summary(score: dict) -> dict:
    """The overall figures, the lead bins and the per-hour MAE curve, rounded."""
    r = lambda v: round(v, 4) if isinstance(v, float) else v  # noqa: E731
    o = score["overall"]
    return {
        "mae_kw": r(o["forecast"]["mae_kw"]), "rmse_kw": r(o["forecast"]["rmse_kw"]), "nmae": r(o["forecast"]["nmae"]),
        "normaliser_kw": r(score["normaliser_kw"]), "samples": o["samples"],
        "persistence_mae_kw": r(o["persistence"]["mae_kw"]), "climatology_mae_kw": r(o["climatology"]["mae_kw"]),
        "skill_vs_persistence": r(o["skill_vs_persistence"]), "skill_vs_climatology": r(o["skill_vs_climatology"]),
        "by_lead_bin": {k: {"mae_kw": r(v["forecast"]["mae_kw"]), "rmse_kw": r(v["forecast"]["rmse_kw"]),
                            "nmae": r(v["forecast"]["nmae"]), "skill_vs_persistence": r(v["skill_vs_persistence"]),
                            "skill_vs_climatology": r(v["skill_vs_climatology"])} for k, v in score["by_lead_bin"].items()},
        "mae_by_lead_hour_kw": [r(x["forecast"]) for x in score["mae_by_lead_hour"]],
    }


if __name__ == "__main__":
    main()
