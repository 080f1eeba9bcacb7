"""How far the site's own forecasts miss, upward: quantiles of the net import error for the plan's peak.

The demand charge is set by the highest 30-minute window of the month, so a plan that prices its
peak on the point forecast alone spends car energy as if the load were certain. Here the site's
own history is replayed (as :mod:`ems.forecast.backtest` does, forecasting from the past only) over
the weeks before ``end``, and the error of the *net* import forecast (measured load - PV minus
forecast load - PV) is collected by lead-time class and local time-of-day block. The q-quantile of
each class, where positive, is the *uplift*: how much more than forecast the site may import then
in q of the cases. The planner adds it to the demand windows (never to the energy bill), so the
plan's peak level and the car energy held for it cover that load (``planner.peak_quantile_pct``).

Classes: lead 0-3 h, 3-12 h, 12-48 h (the load forecast's level correction fades within hours) x
eight 3-hour blocks of the local day (occupancy and PV differ by hour); a class with fewer than
``MIN_SAMPLES`` errors takes the quantile of its whole lead class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ems.errors import DataError
from ems.forecast.site import SiteForecaster

LEAD_EDGES_H = (0.0, 3.0, 12.0, 48.0)   # lead-time classes [h)
HOUR_BLOCK = 3                          # local hours per time-of-day class
MIN_SAMPLES = 20                        # errors a class needs for its own quantile
REPLAY_DAYS = 42                        # weeks of origins replayed before ``end`` (the load profile's own window)
STRIDE_HOURS = 12.0                     # origins at local midnight and noon


def error_class(start: pd.Timestamp, index: pd.DatetimeIndex, zone: str) -> tuple[np.ndarray, np.ndarray]:
    """(lead class, local 3-hour block) of each step of ``index`` for a forecast made at ``start``."""
    lead_h = np.asarray((index - start) / pd.Timedelta(hours=1))
    rows = np.clip(np.searchsorted(LEAD_EDGES_H, lead_h, side="right") - 1, 0, len(LEAD_EDGES_H) - 2)
    return rows, np.asarray(index.tz_convert(zone).hour) // HOUR_BLOCK


@dataclass(frozen=True)
class NetErrorQuantile:
    """The ``quantile`` (fraction) of the net import forecast's error [kW] by lead class (rows,
    ``LEAD_EDGES_H``) and local 3-hour block (columns), from ``samples`` errors of ``origins``
    forecasts."""

    quantile: float
    table: np.ndarray
    samples: int
    origins: int

    def uplift_kw(self, start: pd.Timestamp, index: pd.DatetimeIndex, zone: str) -> np.ndarray:
        """The load the plan should allow for above its forecast at each step of ``index`` for a
        forecast made at ``start`` [kW] (>= 0)."""
        rows, cols = error_class(start, index, zone)
        return np.maximum(self.table[rows, cols], 0.0)


def _origins(forecaster: SiteForecaster, end: pd.Timestamp, horizon_h: float, days: float) -> list[pd.Timestamp]:
    """Local midnights and noons whose whole horizon ends by ``end`` and that have history before them."""
    zone = forecaster.cfg.site.timezone
    last = (end - pd.Timedelta(hours=horizon_h)).tz_convert(zone).floor("12h")
    first = last - pd.Timedelta(days=days)
    out = []
    for t0 in pd.date_range(first, last, freq=pd.Timedelta(hours=STRIDE_HOURS)):
        if forecaster.history_days(t0, recent=True) >= 1.0:
            out.append(t0)
    return out


def net_error_quantile(forecaster: SiteForecaster, end: pd.Timestamp, quantile: float,
                       horizon_hours: float = 48.0, days: float = REPLAY_DAYS) -> NetErrorQuantile | None:
    """The net import error's ``quantile`` (a fraction, e.g. 0.9) quantile per class from forecasts made in the
    ``days`` before ``end`` (all of whose horizon is measured before ``end``); None when the
    history holds no such forecast (a new site: the plan then prices the point forecast)."""
    h = forecaster.history
    if h.step != forecaster.step:
        return None
    errors: list[np.ndarray] = []
    classes: list[tuple[np.ndarray, np.ndarray]] = []
    n = int(round(horizon_hours * 3600 / h.step.total_seconds()))
    used = 0
    for t0 in _origins(forecaster, end, horizon_hours, days):
        try:
            fc = forecaster.forecast(t0, horizon_hours)
        except DataError:
            continue
        pos = h.position(t0)
        if pos + n > len(h.index):
            continue
        truth = h.load_kw[pos:pos + n] - (h.pv_kw[pos:pos + n] if h.pv_kw is not None else 0.0)
        err = truth - (fc.load_kw.to_numpy() - fc.pv_kw.to_numpy())
        ok = np.isfinite(err)
        rows, cols = error_class(t0, fc.load_kw.index, forecaster.cfg.site.timezone)
        errors.append(err[ok])
        classes.append((rows[ok], cols[ok]))
        used += 1
    if not used:
        return None
    err = np.concatenate(errors)
    rows = np.concatenate([c[0] for c in classes])
    cols = np.concatenate([c[1] for c in classes])
    q = quantile
    table = np.zeros((len(LEAD_EDGES_H) - 1, 24 // HOUR_BLOCK))
    for r in range(table.shape[0]):
        in_row = rows == r
        pooled = float(np.quantile(err[in_row], q)) if in_row.any() else 0.0
        for c in range(table.shape[1]):
            cell = in_row & (cols == c)
            table[r, c] = float(np.quantile(err[cell], q)) if cell.sum() >= MIN_SAMPLES else pooled
    return NetErrorQuantile(q, table, int(err.size), used)
