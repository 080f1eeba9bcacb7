"""Backtest: replay a site's history, forecasting from the past only, and score by lead time.

At every origin ``t0`` (local midnight plus multiples of ``stride_hours``, after ``warmup_days``
of history, while the full horizon still has measurements) the :class:`SiteForecaster` makes a
forecast that reads only rows before ``t0``. Each forecast is scored against the cleaned
measurements, next to two references made from the same past:

- *persistence*: the same time on the last day that is fully in the past (``t - 1 d`` for leads
  up to 24 h, ``t - 2 d`` up to 48 h);
- *climatology*: the mean of the same local time-of-day slot over the 28 days before ``t0``.

All three are scored on the same samples (measured, and both references defined). PV is scored
on daylight intervals only (sun above the horizon at the midpoint): night zeros would flatter
every method alike. Metrics: MAE and RMSE [kW]; normalised MAE (load: / mean measured load;
PV: / the arrays' AC capacity); skill ``1 - MAE / MAE_reference``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ems.errors import DataError, Problem
from ems.forecast.site import SiteForecaster

CLIMATOLOGY_DAYS = 28
LEAD_BINS_H = ((0, 1), (1, 3), (3, 6), (6, 12), (12, 24), (24, 48))


@dataclass
class Replay:
    """Forecast, references and truth for one quantity: arrays (origins x lead steps) [kW]."""

    forecast: np.ndarray
    persistence: np.ndarray
    climatology: np.ndarray
    truth: np.ndarray
    daylight: np.ndarray | None = None


def origins(forecaster: SiteForecaster, horizon_hours: float, stride_hours: float, warmup_days: float) -> pd.DatetimeIndex:
    """Forecast origins: local midnights plus multiples of the stride, inside the history."""
    h = forecaster.history
    zone = forecaster.cfg.site.timezone
    first = (h.index[0] + pd.Timedelta(days=warmup_days)).tz_convert(zone).normalize() + pd.Timedelta(days=1)
    last = h.index[-1] + h.step - pd.Timedelta(hours=horizon_hours)
    if last < first:
        raise DataError(Problem("history", None, "timestamp", f"{h.index[0]} .. {h.index[-1]}",
                                f"too short to backtest: need {warmup_days:g} days of warm-up plus {horizon_hours:g} h"))
    out = pd.date_range(first, last.tz_convert(zone), freq=pd.Timedelta(hours=stride_hours))
    return out.tz_convert("UTC")


def _slot_of(index: pd.DatetimeIndex, zone: str, step: pd.Timedelta) -> np.ndarray:
    """Local time-of-day slot of each timestamp."""
    local = index.tz_convert(zone)
    return ((local.hour * 60 + local.minute) // int(step.total_seconds() // 60)).to_numpy()


def _references(values: np.ndarray, pos: int, n: int, per_day: int, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Persistence and climatology for the ``n`` steps from grid position ``pos`` (past rows only)."""
    j = np.arange(n)
    days_back = np.ceil((j + 1) / per_day).astype(int)
    src = pos + j - days_back * per_day
    persistence = np.where(src >= 0, values[np.maximum(src, 0)], np.nan)
    lo = max(0, pos - CLIMATOLOGY_DAYS * per_day)
    past, past_slots = values[lo:pos], slots[lo:pos]
    ok = np.isfinite(past)
    total = np.bincount(past_slots[ok], weights=past[ok], minlength=per_day)
    count = np.bincount(past_slots[ok], minlength=per_day)
    with np.errstate(invalid="ignore"):
        clim_by_slot = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return persistence, clim_by_slot[slots[pos:pos + n]]


def replay(forecaster: SiteForecaster, horizon_hours: float = 48.0, stride_hours: float = 6.0,
           warmup_days: float = 28.0) -> tuple[dict[str, Replay], dict]:
    """Run every origin; return the replays of ``load`` and ``pv`` and timing facts."""
    h = forecaster.history
    if h.step != forecaster.step:
        raise DataError(Problem("history", None, "timestamp", str(h.step),
                                f"backtest needs the history at the plan step ({forecaster.step})"))
    starts = origins(forecaster, horizon_hours, stride_hours, warmup_days)
    n = int(round(horizon_hours * 3600 / h.step.total_seconds()))
    per_day = int(pd.Timedelta(days=1) / h.step)
    slots = _slot_of(h.index, forecaster.cfg.site.timezone, h.step)
    series = {"load": h.load_kw, "pv": h.pv_kw if (h.pv_kw is not None and forecaster.cfg.pv) else None}
    rows: dict[str, list[list[np.ndarray]]] = {k: [] for k, v in series.items() if v is not None}
    t_total = 0.0
    for t0 in starts:
        tic = time.perf_counter()
        fc = forecaster.forecast(t0, horizon_hours)
        t_total += time.perf_counter() - tic
        pos = h.position(t0)
        for key, values in series.items():
            if values is None:
                continue
            pers, clim = _references(values, pos, n, per_day, slots)
            pred = (fc.load_kw if key == "load" else fc.pv_kw).to_numpy()
            rows[key].append([pred, pers, clim, values[pos:pos + n]])
    out: dict[str, Replay] = {}
    for key, lists in rows.items():
        arr = [np.array([r[i] for r in lists]) for i in range(4)]
        out[key] = Replay(*arr)
    if "pv" in out:
        zen = np.array([forecaster.pv.geometry(pd.date_range(t0, periods=n, freq=h.step), h.step).zenith for t0 in starts])
        out["pv"].daylight = zen < 90.0
    timing = {"origins": len(starts), "first_origin": str(starts[0]), "last_origin": str(starts[-1]),
              "stride_hours": stride_hours, "horizon_hours": horizon_hours,
              "seconds_per_forecast": t_total / max(len(starts), 1)}
    return out, timing


def _metrics(err: np.ndarray, norm: float) -> dict[str, float]:
    """MAE, RMSE [kW] and normalised MAE of an error sample."""
    mae = float(np.mean(np.abs(err))) if err.size else float("nan")
    return {"mae_kw": mae, "rmse_kw": float(np.sqrt(np.mean(err ** 2))) if err.size else float("nan"),
            "nmae": mae / norm if norm > 0 else float("nan")}


def score(rep: Replay, step: pd.Timedelta, normaliser: float | None = None) -> dict:
    """Scores of one replay overall (0-48 h), per lead bin and per lead hour (see module docstring)."""
    mask = np.isfinite(rep.truth) & np.isfinite(rep.persistence) & np.isfinite(rep.climatology)
    if rep.daylight is not None:
        mask &= rep.daylight
    norm = normaliser if normaliser else float(np.mean(rep.truth[mask])) if mask.any() else float("nan")
    lead_h = (np.arange(rep.truth.shape[1]) * step / pd.Timedelta(hours=1))
    methods = {"forecast": rep.forecast, "persistence": rep.persistence, "climatology": rep.climatology}

    def block(cols: np.ndarray) -> dict:
        m = mask & cols[None, :]
        res = {name: _metrics((pred - rep.truth)[m], norm) for name, pred in methods.items()}
        res["samples"] = int(m.sum())
        fc = res["forecast"]["mae_kw"]
        res["skill_vs_persistence"] = 1 - fc / res["persistence"]["mae_kw"] if res["persistence"]["mae_kw"] else float("nan")
        res["skill_vs_climatology"] = 1 - fc / res["climatology"]["mae_kw"] if res["climatology"]["mae_kw"] else float("nan")
        return res

    overall = block(np.ones_like(lead_h, dtype=bool))
    bins = {f"{a}-{b}h": block((lead_h >= a) & (lead_h < b)) for a, b in LEAD_BINS_H if (lead_h < b).any() and (lead_h >= a).any()}
    hours = np.floor(lead_h).astype(int)
    by_hour = [{"lead_h": int(x), **{k: v["mae_kw"] for k, v in block(hours == x).items() if isinstance(v, dict)}}
               for x in np.unique(hours)]
    return {"normaliser_kw": norm, "overall": overall, "by_lead_bin": bins, "mae_by_lead_hour": by_hour}


def backtest(forecaster: SiteForecaster, horizon_hours: float = 48.0, stride_hours: float = 6.0,
             warmup_days: float = 28.0) -> dict:
    """Replay and score load and PV; a JSON-ready dict."""
    reps, timing = replay(forecaster, horizon_hours, stride_hours, warmup_days)
    out = {"timing": timing, "load": score(reps["load"], forecaster.step)}
    if "pv" in reps:
        out["pv"] = score(reps["pv"], forecaster.step, forecaster.pv.capacity_kw)
    return out


def format_table(result: dict) -> str:
    """A plain-text table of the scores by lead bin."""
    lines = [f"origins: {result['timing']['origins']} every {result['timing']['stride_hours']:g} h "
             f"({result['timing']['first_origin']} .. {result['timing']['last_origin']}), "
             f"{result['timing']['seconds_per_forecast'] * 1000:.1f} ms per forecast"]
    for key in ("load", "pv"):
        if key not in result:
            continue
        s = result[key]
        lines.append(f"\n{key.upper()} (normalised by {s['normaliser_kw']:.3f} kW)")
        lines.append(f"{'lead':>8} {'MAE kW':>8} {'RMSE kW':>8} {'nMAE':>7} {'pers MAE':>9} {'clim MAE':>9} "
                     f"{'skill/pers':>10} {'skill/clim':>10}")
        for name, b in [*s["by_lead_bin"].items(), ("0-48h", s["overall"])]:
            f = b["forecast"]
            lines.append(f"{name:>8} {f['mae_kw']:8.3f} {f['rmse_kw']:8.3f} {f['nmae']:7.3f} {b['persistence']['mae_kw']:9.3f} "
                         f"{b['climatology']['mae_kw']:9.3f} {b['skill_vs_persistence']:10.1%} {b['skill_vs_climatology']:10.1%}")
    return "\n".join(lines)
