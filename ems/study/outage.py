"""Outage survival as REopt reports it: for every start hour of the span, how long the critical load
would have been carried from the energy the strategy left in the plugged-in cars at that moment.

Model of an outage starting at boundary s: the critical load (``load.critical_kw``) is served first
by the actual PV of each step, the rest by the cars plugged in at s, each through its charger's
islanded rating and discharge efficiency, down to the car's minimum SOC (the driver still has to
drive). The cars stay home for the outage; PV surplus is not stored (a conservative assumption:
not every V2H unit charges from PV while islanded); PV after the data's end counts as zero. The
site survives a step while the deficit fits in the islanded power and the cumulative deficit in
the usable energy; the survival time is the number of whole steps carried, capped at ``max_hours``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ems.config import SiteConfig

MAX_HOURS = 168.0   # survival is reported up to one week
CURVE_HOURS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 36, 48, 72, 96, 120, 168)


def hour_starts(index: pd.DatetimeIndex) -> np.ndarray:
    """Positions of the steps that start a local hour."""
    return np.flatnonzero((np.asarray(index.minute) == 0) & (np.asarray(index.second) == 0))


def survival_hours(cfg: SiteConfig, index: pd.DatetimeIndex, pv_kw: np.ndarray, soc_kwh: np.ndarray,
                   plugged: np.ndarray, charger: np.ndarray, max_hours: float = MAX_HOURS) -> np.ndarray:
    """Hours the critical load is carried from each start hour (see the module docstring).

    ``soc_kwh``: V x (T+1) SOC at boundaries; ``plugged``: V x T; ``charger``: V x T charger index
    used (-1 when none; a plugged car then counts on its first allowed charger).
    """
    dt_h = (index[1] - index[0]) / pd.Timedelta(hours=1)
    starts = hour_starts(index)
    K = int(round(max_hours / dt_h))
    crit = cfg.load.critical_kw
    if crit <= 0:
        return np.full(starts.size, max_hours)
    ids = {c.id: i for i, c in enumerate(cfg.chargers)}
    first = [([ids[c] for c in v.chargers] or [0])[0] for v in cfg.vehicles]
    island = np.array([c.islanded_rating_kw for c in cfg.chargers], dtype=float)   # 0: no islanded mode
    eta = np.array([c.discharge_efficiency for c in cfg.chargers])
    energy, power = np.zeros(starts.size), np.zeros(starts.size)
    for vi, v in enumerate(cfg.vehicles):
        here = plugged[vi, starts]
        c = np.where(charger[vi, starts] >= 0, charger[vi, starts], first[vi])
        usable = np.maximum(soc_kwh[vi, starts] - v.min_soc_kwh, 0.0)
        vmax = np.inf if v.max_discharge_kw is None else v.max_discharge_kw
        energy += np.where(here, usable * eta[c], 0.0)
        power += np.where(here, np.minimum(island[c], vmax), 0.0)
    deficit = np.concatenate([np.maximum(crit - pv_kw, 0.0), np.full(K, crit)])
    steps = deficit[starts[:, None] + np.arange(K)[None, :]]
    used = np.cumsum(steps * dt_h, axis=1)
    fail = (steps > power[:, None] + 1e-9) | (used > energy[:, None] + 1e-9)
    carried = np.where(fail.any(axis=1), fail.argmax(axis=1), K)
    return carried * dt_h


def survival_summary(hours: np.ndarray, reserve_hours: float, max_hours: float = MAX_HOURS) -> dict:
    """Distribution figures: mean/min/median/10th percentile [h], the share of start hours carried at
    least ``reserve_hours`` and each duration of CURVE_HOURS (the survival curve)."""
    if hours.size == 0:
        return {"start_hours": 0}
    curve = {str(h): float(np.mean(hours >= h)) for h in CURVE_HOURS if h <= max_hours}
    return {
        "start_hours": int(hours.size),
        "mean_hours": float(hours.mean()),
        "min_hours": float(hours.min()),
        "p10_hours": float(np.percentile(hours, 10)),
        "median_hours": float(np.median(hours)),
        "max_hours_modelled": max_hours,
        "reserve_hours": reserve_hours,
        "share_reaching_reserve": float(np.mean(hours >= reserve_hours)) if reserve_hours > 0 else 1.0,
        "curve": curve,
    }
