"""The forecast the plans are made from (:class:`Forecasts`): PV and load from the current planning
step for the horizon and a margin, built in the plan worker thread, and once a local day the net
import forecast's error quantile (``planner.peak_quantile_pct``) that prices a plan's later demand
windows. A failed forecast is an event and leaves the old one in place.

The forecaster learns from the site's meter (:mod:`ems.daemon.learning`): it is rebuilt from the
history seed and the metered windows, with the cached weather forecast, at the first forecast after a
window closed or a forecast was fetched; each forecast's day-ahead value is kept for the live quality.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import Executor
from typing import Any

import pandas as pd

from ems.daemon.host import Host
from ems.daemon.learning import Learning
from ems.errors import EmsError
from ems.timegrid import WINDOW


class Forecasts:
    """The forecaster (rebuilt as the meter adds windows), the forecast in hand and its origin, the error quantile.

    ``pool`` is the plan worker thread (the same one the solver uses, so a forecast and a solve never
    run together); ``history`` the site's measured history that seeds the forecaster (None: the
    config's ``load.history_csv``); ``learning`` what the meter adds (:class:`~ems.daemon.learning.Learning`).
    """

    def __init__(self, host: Host, history: pd.DataFrame | None, pool: Executor):
        self.host = host
        self.history = history
        self._pool = pool
        self.learning = Learning(host)
        self._forecaster: Any = None
        self._built = -1   # the learning version the forecaster was built at
        self.forecast: Any = None
        self.origin: pd.Timestamp | None = None
        self._error_q: tuple[Any, Any] | None = None   # (local day, NetErrorQuantile or None) for peak_quantile_pct

    def reset(self) -> None:
        """A reloaded config: the forecaster is built again and the next plan forecasts afresh."""
        self._forecaster, self.forecast, self.origin = None, None, None
        self.learning.reset()

    def step_start(self, t: pd.Timestamp) -> pd.Timestamp:
        """Start of the planning step holding ``t`` (site-local wall clock)."""
        cfg = self.host.cfg
        return t.tz_convert(cfg.zone).floor(f"{cfg.planner.step_minutes}min")

    def _hours(self) -> float:
        """Forecast span: the horizon plus two refresh periods, in whole steps [h]."""
        cfg = self.host.cfg
        step_h = cfg.planner.step_minutes / 60
        extra = 2 * cfg.daemon.forecast_refresh_minutes / 60
        return cfg.planner.horizon_hours + math.ceil(extra / step_h) * step_h

    def _make(self, origin: pd.Timestamp):
        """Forecast from ``origin`` (worker thread), the forecaster first rebuilt if the meter or the
        weather brought something new; its day-ahead value is kept."""
        version = self.learning.version
        if self._forecaster is None or self._built != version:
            self._forecaster = self.learning.forecaster(self.history, origin, self._forecaster)
            self._built = version
        self._refresh_error_quantile(origin)
        fc = self._forecaster.forecast(origin, self._hours())
        self.learning.note_forecast(origin, fc.load_kw, fc.pv_kw)
        return fc

    def _refresh_error_quantile(self, origin: pd.Timestamp) -> None:
        """Once a local day, the net import forecast's error quantile from the weeks before
        (``planner.peak_quantile_pct``; :mod:`ems.forecast.uncertainty`), in the worker thread."""
        cfg = self.host.cfg
        q = cfg.planner.peak_quantile
        day = origin.tz_convert(cfg.zone).date()
        if q is None or (self._error_q is not None and self._error_q[0] == day):
            return
        from ems.forecast.uncertainty import net_error_quantile
        self._error_q = (day, net_error_quantile(self._forecaster, origin, q, cfg.planner.horizon_hours))

    def peak_uplift_kw(self, start: pd.Timestamp, index: pd.DatetimeIndex) -> pd.Series | None:
        """The load the plan allows for above the forecast in its later demand windows [kW] (None: off)."""
        q = self._error_q[1] if self._error_q is not None else None
        if q is None:
            return None
        return pd.Series(q.uplift_kw(start, index, self.host.cfg.zone), index=index)

    def is_current(self) -> bool:
        """Whether the forecast in hand was made from the current step (the forecast job has nothing to do)."""
        return self.forecast is not None and self.origin == self.step_start(self.host.clock.now())

    async def refresh(self) -> None:
        """A new forecast in the worker thread; a failure is an event and leaves the old forecast."""
        origin = self.step_start(self.host.clock.now())
        try:
            fc = await asyncio.get_running_loop().run_in_executor(self._pool, self._make, origin)
        except (EmsError, ValueError) as exc:
            self.host.event("forecast-failed", f"no forecast: {exc}", "error")
            return
        self.forecast, self.origin = fc, origin

    def covers(self, start: pd.Timestamp) -> bool:
        """Whether the forecast in hand serves a plan from ``start``: it covers the horizon and is less
        than ``forecast_refresh_minutes`` old. A forecast exactly one refresh period old is due: the plan
        and forecast jobs fire at the same boundary in either order, and with the default 30-minute
        refresh a plan that ran first would otherwise miss the last step's measurements (the study's
        mpc forecasts from every step; tests/ems/test_parity.py)."""
        if self.forecast is None or self.origin is None:
            return False
        cfg = self.host.cfg
        end = start + pd.Timedelta(hours=cfg.planner.horizon_hours)
        age_min = (start - self.origin) / pd.Timedelta(minutes=1)
        return self.origin <= start and self.forecast.pv_kw.index[-1] >= end - WINDOW / 2 \
            and age_min < cfg.daemon.forecast_refresh_minutes
