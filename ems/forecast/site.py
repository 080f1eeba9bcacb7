"""One site's forecaster: history cleaned and indexed once, then cheap forecasts at any origin.

PV forecast at origin ``t0`` for a plan interval ``t`` (lead ``L`` hours to its midpoint)::

    pv(t) = model(t) * (1 + (r - 1) * exp(-L / PV_FADE_TAU_HOURS))     [kW]

- ``model``: the pvlib chain of :mod:`ems.forecast.pv` driven by the weather given; where there is
  none (or it does not cover ``t``) by clear sky with GHI scaled by a clearness ``k(L)`` that runs
  from the last ``CLEARNESS_WINDOW_HOURS``' measured clearness (measured PV energy / modelled
  clear-sky PV energy: "smart persistence" of yesterday's sky) to the last
  ``CLEARNESS_LONG_DAYS``' one with the e-folding time ``CLEARNESS_TAU_HOURS``; with no PV
  measurements at all ``k = DEFAULT_CLEARNESS``.
- ``r``: measured / modelled PV energy over the last ``RATIO_WINDOW_HOURS`` (what the sky and the
  array are doing *now*), faded with the e-folding time ``PV_FADE_TAU_HOURS``.

Only history strictly before ``t0`` is read (rows ``[:position(t0)]``); the cleaning rules are
causal, so cleaning the whole history once leaks nothing into a backtest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ems.config import SiteConfig
from ems.errors import DataError, Problem
from ems.forecast.clean import clean_history, read_history_csv
from ems.forecast.load import LoadForecaster, LoadSettings, lead_hours
from ems.forecast.pv import PvModel, SolarGeometry
from ems.forecast.weather import align_weather
from ems.timegrid import is_whole, step_count, step_grid

CLEARNESS_WINDOW_HOURS = 24.0
CLEARNESS_LONG_DAYS = 14.0
CLEARNESS_TAU_HOURS = 24.0  # tried 6, 12, 24 h on the household backtest: 24 h best (by 0.5 % MAE)
RATIO_WINDOW_HOURS = 2.0
#: e-folding time of the measured-to-forecast ratio [h]. The household's PV clear-sky index keeps
#: a correlation of 0.68 after 2 h and 0.55 after 4 h, but most of that is the day's overall sky,
#: which the 24-h clearness already carries; of 1 h and 2 h the household backtest preferred 2 h.
PV_FADE_TAU_HOURS = 2.0
#: Clearness used when the site has no PV measurements: the annual GHI of pvlib's TMY3 file for
#: Greensboro NC (36.1 N, a humid subtropical climate like Nagoya's) is 0.773 of Ineichen clear sky.
DEFAULT_CLEARNESS = 0.773
CLEARNESS_MAX = 1.5  # a larger ratio means the configured array is smaller than the real one
#: Bounds of the 2-h ratio: 0 (snow on the panels) to 3 (a sunny gap in a day modelled as overcast);
#: beyond 3 the model or the meter is wrong, and tripling the next hours would only spread the fault.
RATIO_MIN, RATIO_MAX = 0.0, 3.0
#: The ratio and clearness are formed only over windows whose modelled energy reaches this share of
#: one hour at the arrays' AC capacity: dawn ratios of two tiny numbers are noise.
MIN_MODEL_ENERGY_SHARE = 0.05
#: The solar geometry is prepared this far past the history's end plus 3 days (a reused PvModel then
#: serves the daemon's rebuilds of the following days without computing it again).
PREPARE_AHEAD = pd.Timedelta(days=7)


@dataclass(frozen=True)
class Forecast:
    """Forecasts on the plan index (UTC-aware, interval-start labelled), never NaN.

    ``pv_kw``: AC output of all arrays [kW] >= 0; ``load_kw``: building load without the EV
    chargers [kW] >= 0; ``critical_kw``: the critical circuits [kW]; ``meta``: sources and
    corrections used (see :meth:`SiteForecaster.forecast`).
    """

    pv_kw: pd.Series
    load_kw: pd.Series
    critical_kw: pd.Series
    meta: dict = field(default_factory=dict)


def plan_index(start: pd.Timestamp, hours: float, step: pd.Timedelta) -> pd.DatetimeIndex:
    """Interval starts ``start, start+step, ...`` covering ``hours``; errors for a naive or unaligned start."""
    start = pd.Timestamp(start)
    if start.tzinfo is None:
        raise DataError(Problem("forecast", None, "start", str(start), "start needs a time zone, e.g. 2024-07-01T00:00+09:00"))
    n = step_count(hours, step)
    if n < 1 or not is_whole(n):
        raise DataError(Problem("forecast", None, "hours", hours, f"must be a positive whole number of {step} steps"))
    if start.as_unit("ns").value % step.value:
        raise DataError(Problem("forecast", None, "start", str(start), f"must be on a {step} boundary (the plan's step)"))
    return step_grid(start, n, step).tz_convert("UTC")


def max_load_kw(cfg: SiteConfig) -> float:
    """Most a building can draw [kW]: grid import limit + PV AC + every charger discharging."""
    pv = PvModel(cfg.site, cfg.pv).capacity_kw if cfg.pv else 0.0
    return cfg.grid.import_limit_kw + pv + sum(c.max_discharge_kw for c in cfg.chargers)


def site_history(cfg: SiteConfig) -> pd.DataFrame:
    """The history named by ``load.history_csv``; a DataError telling how to give one if none."""
    if not cfg.load.history_csv:
        raise DataError(Problem(cfg.source or "config", None, "load.history_csv", None,
                                "the load forecast needs the site's past measurements: set load.history_csv "
                                "(a CSV with timestamp, load_kw[, pv_kw]) or pass history=", has_value=False))
    return read_history_csv(cfg.load.history_csv, cfg.load.history_column)


def _energy_ratio(measured: np.ndarray, model: np.ndarray, min_energy: float) -> float | None:
    """sum(measured)/sum(model) over the rows where both are known; None if the model energy is too small."""
    ok = np.isfinite(measured) & np.isfinite(model)
    denom = model[ok].sum()
    if denom <= min_energy or denom <= 0:
        return None
    return float(measured[ok].sum() / denom)


def model_pv_kw(pv: PvModel, weather: pd.DataFrame | None, index: pd.DatetimeIndex, step: pd.Timedelta,
                geom: SolarGeometry, clearness: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Modelled PV AC power [kW] on ``index`` (interval starts, ``step`` wide): the pvlib chain driven by
    ``weather`` (a frame with ``ghi`` [W/m^2], optional ``dni``, ``dhi``, ``temp_air`` [degC],
    ``wind_speed`` [m/s]) where it covers an interval, clear sky with GHI x ``clearness`` elsewhere;
    and the mask of the intervals the weather did not cover (all of them without weather)."""
    fallback = pv.clearness_power_kw(geom, clearness)
    if weather is None or "ghi" not in weather or weather.empty:
        return fallback, np.ones(len(index), dtype=bool)
    w = align_weather(weather, index, step, geom.cs_ghi, geom.zenith)
    covered = np.isfinite(w["ghi"])
    model = pv.power_kw(geom, w["ghi"], w.get("dni"), w.get("dhi"), w.get("temp_air"), w.get("wind_speed"))
    return np.where(covered, model, fallback), ~covered


class SiteForecaster:
    """Prepared once per site (history cleaned, geometry precomputed); :meth:`forecast` per origin."""

    def __init__(self, cfg: SiteConfig, history: pd.DataFrame | None = None, weather: pd.DataFrame | None = None, *,
                 step_minutes: int | None = None, load_settings: LoadSettings = LoadSettings(),
                 pv_fade_tau_hours: float = PV_FADE_TAU_HOURS, pv_model: PvModel | None = None):
        self.cfg = cfg
        self.step = pd.Timedelta(minutes=step_minutes or cfg.planner.step_minutes)
        self.pv_fade_tau_hours = pv_fade_tau_hours
        # ``pv_model``: a PvModel of ``cfg``'s arrays to reuse, with the geometry it has prepared (the
        # daemon rebuilds its forecaster every step as its meter adds windows)
        self.pv = pv_model if pv_model is not None else PvModel(cfg.site, cfg.pv)
        raw = site_history(cfg) if history is None else history
        where = str(raw.attrs.get("source", "history"))
        self.source = where
        self.history = clean_history(raw, is_night=self._night, max_load_kw=max_load_kw(cfg),
                                     pv_kwp=sum(a.capacity_kwp for a in cfg.pv) or None, where=where)
        h = self.history
        if h.step > self.step:
            if h.step % self.step:
                raise DataError(Problem(where, None, "timestamp", str(h.step),
                                        f"the history step must be a multiple of the plan step {self.step}"))
        elif self.step % h.step:
            raise DataError(Problem(where, None, "timestamp", str(h.step), f"the history step must divide the plan step {self.step}"))
        self.weather = weather
        self._pv_weather = weather is not None and "ghi" in weather
        hist_temp = None
        if weather is not None and "temp_air" in weather:
            geom = self.pv.geometry(h.index, h.step)
            hist_temp = align_weather(weather[["temp_air"]], h.index, h.step, geom.cs_ghi, geom.zenith)["temp_air"]
        load_index, load_values, load_temp = self._load_grid(hist_temp)
        self.load = LoadForecaster(load_index, load_values, max(h.step, self.step), cfg.site.timezone,
                                   cfg.tariff.day_types, load_settings, load_temp)
        self._pv_clear_hist = self.pv.clear_sky_power_kw(self.pv.geometry(h.index, h.step)) if (cfg.pv and h.pv_kw is not None) else None

    def _night(self, index: pd.DatetimeIndex) -> np.ndarray:
        """True where the sun is below the horizon at the interval midpoint (prepares the geometry)."""
        step = pd.Timedelta(int(np.diff(index.as_unit("ns").asi8[:2])[0]), "ns") if len(index) > 1 else self.step
        end = index[-1] + pd.Timedelta(days=3)
        if not self.pv.covers(index[0], end, step):   # a reused model may hold it already
            self.pv.prepare(index[0], end + PREPARE_AHEAD, step)
        return self.pv.geometry(index, step).zenith >= 90.0

    def _load_grid(self, temp: np.ndarray | None) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray | None]:
        """The load history on the profile grid: the history's own, or its means over coarser plan steps."""
        h = self.history
        if h.step >= self.step:
            return h.index, h.load_kw, temp
        groups = (h.index.as_unit("ns").asi8 - h.index[:1].as_unit("ns").asi8[0]) // self.step.value
        frame = pd.DataFrame({"load": h.load_kw, "temp": np.nan if temp is None else temp}).groupby(groups).mean()
        index = h.index[0] + pd.to_timedelta(frame.index.to_numpy() * self.step.value, unit="ns")
        return pd.DatetimeIndex(index), frame["load"].to_numpy(), None if temp is None else frame["temp"].to_numpy()

    # --- PV --------------------------------------------------------------------------------
    def _min_energy(self, hours: float) -> float:
        """Smallest modelled energy [kW x intervals] for which a ratio is formed (per window hour)."""
        return MIN_MODEL_ENERGY_SHARE * self.pv.capacity_kw * (pd.Timedelta(hours=1) / self.history.step) * min(hours, 1.0)

    def clearness(self, start: pd.Timestamp, hours: float = CLEARNESS_WINDOW_HOURS) -> tuple[float, str]:
        """Measured / clear-sky PV energy over the last ``hours``, and where the value came from."""
        h = self.history
        if h.pv_kw is None or self._pv_clear_hist is None:
            return DEFAULT_CLEARNESS, "default (no PV measurements)"
        end = h.position(start)
        lo = h.position(pd.Timestamp(start) - pd.Timedelta(hours=hours))
        k = _energy_ratio(h.pv_kw[lo:end], self._pv_clear_hist[lo:end], self._min_energy(hours))
        if k is None:
            return DEFAULT_CLEARNESS, "default (no daylight PV measured in the window)"
        return min(max(k, 0.0), CLEARNESS_MAX), f"measured over the last {hours:g} h"

    def clearness_by_lead(self, start: pd.Timestamp, lead_h: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """``k(L) = k_long + (k_day - k_long) * exp(-L / CLEARNESS_TAU_HOURS)``: yesterday's sky for
        the next hours, the last two weeks' mean sky for the day after."""
        k_day, src = self.clearness(start)
        k_long, src_long = self.clearness(start, CLEARNESS_LONG_DAYS * 24.0)
        k = k_long + (k_day - k_long) * np.exp(-np.maximum(lead_h, 0.0) / CLEARNESS_TAU_HOURS)
        return k, {"pv_clearness_day": k_day, "pv_clearness_long": k_long, "pv_clearness_source": src,
                   "pv_clearness_tau_hours": CLEARNESS_TAU_HOURS}

    def _pv_model(self, index: pd.DatetimeIndex, geom: SolarGeometry, clearness: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model PV [kW] on ``index`` (:func:`model_pv_kw` with this forecaster's weather)."""
        return model_pv_kw(self.pv, self.weather if self._pv_weather else None, index, self.step, geom, clearness)

    def forecast_pv(self, start: pd.Timestamp, index: pd.DatetimeIndex) -> tuple[np.ndarray, dict[str, Any]]:
        """PV [kW] on ``index`` made at ``start`` (module docstring), and its meta."""
        if not self.cfg.pv:
            return np.zeros(len(index)), {"pv_source": "none (no PV arrays configured)"}
        n_past = int(RATIO_WINDOW_HOURS * 3600 / self.step.total_seconds())
        ext = pd.date_range(index[0] - n_past * self.step, periods=n_past + len(index), freq=self.step)
        geom = self.pv.geometry(ext, self.step)
        lead_ext = lead_hours(ext, start, self.step)
        k, k_meta = self.clearness_by_lead(start, lead_ext)
        model, uncovered = self._pv_model(ext, geom, k)
        meta: dict[str, Any] = {
            "pv_source": "weather" if self._pv_weather else "clear sky x measured clearness", **k_meta,
            "pv_intervals_without_weather": int(uncovered[n_past:].sum()) if self._pv_weather else None,
        }
        r = self._recent_ratio(start, ext[:n_past], model[:n_past])
        meta["pv_ratio"] = r
        meta["pv_fade_tau_hours"] = self.pv_fade_tau_hours
        factor = 1.0 + ((r if r is not None else 1.0) - 1.0) * np.exp(-lead_ext[n_past:] / self.pv_fade_tau_hours)
        return np.clip(model[n_past:] * factor, 0.0, None), meta

    def _recent_ratio(self, start: pd.Timestamp, past: pd.DatetimeIndex, model_past: np.ndarray) -> float | None:
        """Measured / modelled PV over the last RATIO_WINDOW_HOURS (history resampled to the plan step)."""
        h = self.history
        if h.pv_kw is None:
            return None
        lo, end = h.position(past[0]), h.position(start)
        measured = h.pv_kw[lo:end]
        if len(measured) == 0:
            return None
        if h.step != self.step:  # put the measurements on the plan grid of ``past`` (means per plan interval)
            t = h.index[lo:end].as_unit("ns").asi8
            bucket = (t - past[:1].as_unit("ns").asi8[0]) // self.step.value
            measured = pd.Series(measured).groupby(bucket).mean().reindex(range(len(past))).to_numpy()
        energy = MIN_MODEL_ENERGY_SHARE * self.pv.capacity_kw * (pd.Timedelta(hours=1) / self.step) * min(RATIO_WINDOW_HOURS, 1.0)
        r = _energy_ratio(measured, model_past[: len(measured)], energy)
        return None if r is None else min(max(r, RATIO_MIN), RATIO_MAX)

    # --- history ------------------------------------------------------------------------------
    def history_days(self, start: pd.Timestamp, recent: bool = False) -> float:
        """Days' worth of load measurements the load profile at ``start`` is built from; with
        ``recent`` only those in the profile's weeks right before ``start``'s date (a study's
        receding horizon forecasts once this reaches a day)."""
        return self.load.window_days(start, recent)

    def _check_history(self, start: pd.Timestamp) -> None:
        """A DataError naming the history and its first timestamp when no load was measured on any
        day before ``start``'s date (the profile would have nothing to be built from)."""
        if self.load.window_days(start) > 0:
            return
        zone, h = self.cfg.site.timezone, self.history
        at = pd.Timestamp(start).tz_convert(zone).isoformat()
        measured = h.index[np.isfinite(h.load_kw)]
        first = h.index[0].tz_convert(zone).isoformat() if len(h.index) else None
        if first is None or pd.Timestamp(start) <= h.index[0]:
            head = f"the forecast start {at} is before the history begins ({first or 'it is empty'})"
        else:
            head = f"no load measurements on a day before the forecast start {at} (the history begins at {first})"
        if len(measured) and measured[0] != h.index[0]:
            head += f"; its first load measurement is at {measured[0].tz_convert(zone).isoformat()}"
        if len(measured):
            day = measured[0].tz_convert(zone).tz_localize(None).normalize() + pd.Timedelta(days=1)
            first_ok = day.tz_localize(zone, nonexistent="shift_forward", ambiguous=True)
            tail = f"; the earliest start is {first_ok.isoformat()}"
        else:
            tail = "; it holds no load measurements at all"
        raise DataError(Problem(self.source, None, "load_kw", None,
                                f"{head}: the load forecast builds its profile from at least one day of load "
                                f"measurements before the start's date{tail}", has_value=False))

    # --- everything ---------------------------------------------------------------------------
    def forecast(self, start: pd.Timestamp, hours: float) -> Forecast:
        """PV, load and critical load for ``hours`` from ``start`` on the plan grid.

        ``meta`` keys: pv_source, pv_clearness(+_source), pv_ratio, pv_fade_tau_hours,
        pv_intervals_without_weather, level_offset_kw, level_tau_hours, temperature,
        history_end, history_age_hours, cleaning (counts per rule), step_minutes.
        """
        index = plan_index(start, hours, self.step)
        self._check_history(start)
        pv, pv_meta = self.forecast_pv(start, index)
        temp = None
        if self.weather is not None and "temp_air" in self.weather:
            geom = self.pv.geometry(index, self.step)
            temp = align_weather(self.weather[["temp_air"]], index, self.step, geom.cs_ghi, geom.zenith)["temp_air"]
        load, load_meta = self.load.forecast(start, index, self.step, temp)
        pos = self.history.position(start)
        last = self.history.index[pos - 1] if pos else None
        meta = {**pv_meta, **load_meta, "step_minutes": int(self.step.total_seconds() // 60),
                "history_end": str(last) if last is not None else None,
                "history_age_hours": float((pd.Timestamp(start) - last) / pd.Timedelta(hours=1)) if last is not None else None,
                "cleaning": self.history.report}
        critical = np.full(len(index), self.cfg.load.critical_kw)
        return Forecast(pd.Series(pv, index=index, name="pv_kw"), pd.Series(load, index=index, name="load_kw"),
                        pd.Series(critical, index=index, name="critical_kw"), meta)
