"""Forecasts for the planner: PV from weather with pvlib, building load from the site's history.

Public API (the planner, daemon and study call exactly this)::

    forecast_site(cfg, start, hours, *, step_minutes=None, history=None, weather=None) -> Forecast

For many origins (a study's receding horizon, a backtest) build a :class:`SiteForecaster` once
and call its :meth:`~SiteForecaster.forecast`: the history is cleaned, indexed and the solar
geometry precomputed only once. Weather comes from the ``read_*``/``get_*`` functions of
:mod:`ems.forecast.weather` (CSV, TMY, Open-Meteo).
"""

from __future__ import annotations

import pandas as pd

from ems.config import SiteConfig
from ems.forecast.clean import History, clean_history, read_history_csv
from ems.forecast.load import LoadForecaster, LoadSettings
from ems.forecast.pv import PvModel
from ems.forecast.site import Forecast, SiteForecaster, plan_index
from ems.forecast.weather import get_open_meteo, read_open_meteo, read_tmy, read_weather_csv

__all__ = [
    "Forecast", "History", "LoadForecaster", "LoadSettings", "PvModel", "SiteForecaster", "clean_history",
    "forecast_site", "get_open_meteo", "plan_index", "read_history_csv", "read_open_meteo", "read_tmy",
    "read_weather_csv",
]


def forecast_site(cfg: SiteConfig, start: pd.Timestamp, hours: float, *, step_minutes: int | None = None,
                  history: pd.DataFrame | None = None, weather: pd.DataFrame | None = None) -> Forecast:
    """PV, load and critical load for ``hours`` from ``start`` (aware, on a step boundary).

    ``history``: the site's past measurements (UTC-indexed, ``load_kw`` and optionally ``pv_kw``
    [kW]); by default read from ``cfg.load.history_csv``. Only rows before ``start`` are used.
    ``weather``: a frame from :mod:`ems.forecast.weather` (``ghi`` [W/m^2], optional ``dni``,
    ``dhi``, ``temp_air`` [degC], ``wind_speed`` [m/s]); without it PV is clear sky scaled by
    the clearness measured over the last day. ``step_minutes`` defaults to the planner's step.
    """
    return SiteForecaster(cfg, history, weather, step_minutes=step_minutes).forecast(start, hours)
