"""Building load forecast from the site's own history.

Model, for a target interval of day type ``d`` (weekday / Saturday / Sunday-or-holiday, from the
tariff's calendar: Japanese public holidays by default) and local time-of-day slot ``s``::

    load(t) = P[d, s] + beta_h*(HDH(t) - H[d, s]) + beta_c*(CDH(t) - C[d, s]) + delta * exp(-lead(t)/tau)   [kW]

- ``P[d, s]``: weighted **median** of the same slot over the days of type ``d`` in the last
  ``weeks`` weeks before the origin's local date, weights ``0.5 ** (age_days / half_life_days)``
  (recent weeks count more; a Saturday profile still has six Saturdays behind it). The median is
  the point forecast that minimises the expected absolute error (Gneiting 2011); household loads
  are skewed by short appliance bursts, and on the household year the median cuts the 0-48 h MAE
  by 5 % against the weighted mean (``statistic="mean"`` gives the expected energy instead). A slot
  with no data falls back to all day types, then to the window's mean.
- ``delta``: the level of the last ``level_window_hours`` (measured minus profile), faded out with
  the e-folding time ``tau = level_tau_hours``. On the household year the residual against a
  same-slot median has autocorrelation 0.70, 0.46 and 0.20 at 0.5, 1 and 2 h (e-folding about
  1.3 h); among tau = 1, 1.5, 2, 3 h and 1- or 2-h windows the backtest was best at 1.5 h and 1 h.
- the temperature terms only when air temperature covers the history and the horizon:
  heating/cooling degree-hours ``max(18.3 - T, 0)`` / ``max(T - 18.3, 0)`` (the 65 degF base of
  ASHRAE's degree-days), their profile means ``H``/``C`` weighted like ``P``, and
  ``beta`` fitted by least squares on the deviations in the same window.

Everything works on a day x slot matrix built once from the cleaned history, so one forecast is
a few weighted means over a 42 x 48 array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import pandas as pd

from ems.errors import DataError, Problem

DAY_TYPES = ("weekday", "saturday", "sunday_holiday")
BASE_TEMP_C = 18.3  # ASHRAE degree-day base (65 degF)
MIN_TEMPERATURE_DAYS = 14  # fewer overlapping days than this: the regression is not attempted
PROFILES_KEPT = 8  # profiles kept per forecaster (one per window: a receding horizon asks for one a day)
NS_PER_MINUTE = 60_000_000_000
NS_PER_HOUR = 60 * NS_PER_MINUTE
NS_PER_DAY = 24 * NS_PER_HOUR


@dataclass(frozen=True)
class LoadSettings:
    """Tuning of the load model (defaults chosen on the household backtest, README "Forecasts")."""

    weeks: int = 6
    half_life_days: float = 14.0
    level_window_hours: float = 1.0
    level_tau_hours: float = 1.5
    statistic: Literal["median", "mean"] = "median"


def weighted_mean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per column of ``x`` (rows = days), the mean of the finite values weighted by ``w`` (NaN if none)."""
    ok = np.isfinite(x)
    num = (np.where(ok, x, 0.0) * w[:, None]).sum(0)
    den = (ok * w[:, None]).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def weighted_median(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per column of ``x``, the weighted median of the finite values: the smallest value whose
    cumulative weight reaches half the column's total (NaN if none)."""
    if x.shape[0] == 0:   # no days at all
        return np.full(x.shape[1], np.nan)
    order = np.argsort(x, axis=0)  # NaN sorts last
    xs = np.take_along_axis(x, order, axis=0)
    ws = np.where(np.isfinite(xs), w[order], 0.0)
    cw = np.cumsum(ws, axis=0)
    total = cw[-1:] if len(cw) else np.zeros((1, x.shape[1]))
    idx = np.argmax(cw >= 0.5 * total, axis=0)[None, :]
    med = np.take_along_axis(xs, idx, axis=0)[0] if len(xs) else np.full(x.shape[1], np.nan)
    return np.where(total[0] > 0, med, np.nan)


def _wall_ns(index: pd.DatetimeIndex, zone: str) -> np.ndarray:
    """Local wall-clock time in ``zone`` of each timestamp of an aware index [ns since 1970-01-01 local]."""
    return index.tz_convert(zone).tz_localize(None).as_unit("ns").asi8


def lead_hours(index: pd.DatetimeIndex, start: pd.Timestamp, step: pd.Timedelta) -> np.ndarray:
    """Lead time from ``start`` to the midpoint of each interval of ``index`` (starts, ``step`` wide) [h]."""
    return (index.as_unit("ns").asi8 - pd.Timestamp(start).as_unit("ns").value) / NS_PER_HOUR + step / pd.Timedelta(hours=2)


def day_type_codes(labels: np.ndarray) -> np.ndarray:
    """Tariff day types (weekday/saturday/sunday/holiday) -> 0 weekday, 1 Saturday, 2 Sunday or holiday."""
    return np.where(labels == "weekday", 0, np.where(labels == "saturday", 1, 2))


class LoadForecaster:
    """Day-type x time-of-day profile with level adjustment, fitted once on a regular history."""

    def __init__(self, index: pd.DatetimeIndex, load_kw: np.ndarray, step: pd.Timedelta, zone: str,
                 day_types: Callable[[pd.DatetimeIndex], np.ndarray], settings: LoadSettings = LoadSettings(),
                 temp_air: np.ndarray | None = None):
        self.step = step
        self.zone = zone
        self.settings = settings
        self.day_types = day_types
        self.slot_minutes = int(step.total_seconds() // 60)
        self.n_slots = 1440 // self.slot_minutes
        wall = _wall_ns(index, zone)
        self.first_day = pd.Timestamp(int(wall[0]) // NS_PER_DAY * NS_PER_DAY, unit="ns")
        day, slot = self._day_number(wall), self._slot(wall)
        self.n_days = int(day.max()) + 1
        self.matrix = self._pivot(day, slot, load_kw)
        self.temp = None if temp_air is None else self._pivot(day, slot, temp_air)
        dates = pd.date_range(self.first_day, periods=self.n_days, freq="D").tz_localize(zone) + pd.Timedelta(hours=12)
        self.types = day_type_codes(day_types(dates))
        self._index_ns = index.as_unit("ns").asi8
        self._wall_ns = wall   # local wall clock of each history row [ns]
        self._load = load_kw
        self._code_of_day = dict(enumerate(self.types.tolist()))   # day number -> day-type code, grown on demand
        self._profiles: dict[int, np.ndarray] = {}   # window end (day number) -> the load profile P
        measured = np.isfinite(load_kw)
        self._measured_ns = self._index_ns[measured]   # rows with a load measurement, and their days
        self._measured_day = day[measured]

    def _day_number(self, wall: np.ndarray) -> np.ndarray:
        """Local calendar day (of local wall-clock times [ns]) counted from the first history day."""
        return (wall // NS_PER_DAY - self.first_day.value // NS_PER_DAY).astype(int)

    def _slot(self, wall: np.ndarray) -> np.ndarray:
        """Local time-of-day slot (history step wide) of local wall-clock times [ns]."""
        return (wall % NS_PER_DAY // (self.slot_minutes * NS_PER_MINUTE)).astype(int)

    def _day_codes(self, days: np.ndarray) -> np.ndarray:
        """Day-type code (:func:`day_type_codes` of the tariff's day type at local noon) of each day
        number; each day's is looked up once."""
        unique, inverse = np.unique(days, return_inverse=True)
        new = [int(d) for d in unique if int(d) not in self._code_of_day]
        if new:
            midnight = (self.first_day + pd.to_timedelta(new, unit="D")).tz_localize(self.zone)
            self._code_of_day.update(zip(new, day_type_codes(self.day_types(midnight + pd.Timedelta(hours=12))).tolist()))
        return np.array([self._code_of_day[int(d)] for d in unique], dtype=int)[inverse]

    def _pivot(self, day: np.ndarray, slot: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Mean of ``values`` per (day, slot); NaN where none (a DST hour twice is averaged)."""
        total = np.zeros((self.n_days, self.n_slots))
        count = np.zeros((self.n_days, self.n_slots))
        ok = np.isfinite(values)
        np.add.at(total, (day[ok], slot[ok]), values[ok])
        np.add.at(count, (day[ok], slot[ok]), 1)
        with np.errstate(invalid="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def _window(self, start: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
        """Rows (days) of the profile window before ``start``'s local date, and their weights.

        When the history ends before ``start`` the window ends at the last day with data before
        ``start`` (and the caller's meta reports how stale it is); rows after ``start`` never count."""
        return self._window_rows(self._window_end(start))

    def _window_end(self, start: pd.Timestamp) -> int:
        """The day number after the profile window of ``start`` (:meth:`_window`)."""
        d0 = self._origin_day(start)
        k = int(np.searchsorted(self._measured_ns, pd.Timestamp(start).as_unit("ns").value, side="left"))
        last = int(self._measured_day[k - 1]) if k else -1   # last day with a load measurement before start
        return min(d0, last + 1)

    def _window_rows(self, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows (days) of the profile window that ends before day ``end``, and their weights."""
        rows = np.arange(max(0, end - 7 * self.settings.weeks), max(end, 0))
        age = end - rows  # 1 = the day before
        return rows, 0.5 ** ((age - 1) / self.settings.half_life_days)

    def _origin_day(self, start: pd.Timestamp) -> int:
        """``start``'s local date as a day number (negative before the history's first day)."""
        return (pd.Timestamp(start).tz_convert(self.zone).date() - self.first_day.date()).days

    def window_days(self, start: pd.Timestamp, recent: bool = False) -> float:
        """Days' worth of load measurements the profile at ``start`` is built from: in its window
        (:meth:`_window`, which falls back to the last weeks with data), or with ``recent`` only in the
        ``weeks`` weeks right before ``start``'s local date (stale history does not count)."""
        if recent:
            d0 = self._origin_day(start)
            rows = np.arange(max(0, d0 - 7 * self.settings.weeks), min(max(d0, 0), self.n_days))
        else:
            rows, _ = self._window(start)
            rows = rows[rows < self.n_days]
        return float(np.isfinite(self.matrix[rows]).sum() * self.slot_minutes / 1440)

    def _weighted_profile(self, rows: np.ndarray, w: np.ndarray, values: np.ndarray, statistic: str | None = None) -> np.ndarray:
        """Weighted mean or median per (day type, slot) with the fallbacks of the module docstring."""
        stat = weighted_median if (statistic or self.settings.statistic) == "median" else weighted_mean
        x = values[rows]
        types = self.types[rows]
        all_types = stat(x, w)
        finite = x[np.isfinite(x)]
        overall = float(finite.mean()) if finite.size else np.nan
        all_types = np.where(np.isfinite(all_types), all_types, overall)
        out = np.empty((len(DAY_TYPES), self.n_slots))
        for t in range(len(DAY_TYPES)):
            sel = types == t
            prof = stat(x[sel], w[sel]) if sel.any() else all_types
            out[t] = np.where(np.isfinite(prof), prof, all_types)
        return out

    def _targets(self, wall: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Day type and slot of each target interval, from its local wall-clock time [ns]."""
        return self._day_codes(self._day_number(wall)), self._slot(wall)

    def _profile_table(self, start: pd.Timestamp) -> np.ndarray:
        """The weighted day-type x slot profile ``P`` at ``start`` [kW] (computed once per window)."""
        end = self._window_end(start)
        prof = self._profiles.get(end)
        if prof is None:
            if len(self._profiles) >= PROFILES_KEPT:
                self._profiles.clear()
            prof = self._profiles[end] = self._weighted_profile(*self._window_rows(end), self.matrix)
        if not np.isfinite(prof).all():
            raise DataError(Problem("history", None, "load_kw", None,
                                    f"no load measurements on a day before {start}: the load profile is built "
                                    "from whole days of history before the forecast start's date", has_value=False))
        return prof

    def profile(self, start: pd.Timestamp, index: pd.DatetimeIndex) -> np.ndarray:
        """The weighted day-type profile ``P`` at each interval of ``index`` [kW] (no level, no temperature)."""
        return self._profile_table(start)[self._targets(_wall_ns(index, self.zone))]

    def level_offset(self, start: pd.Timestamp) -> float:
        """``delta``: mean measured minus mean profile over the last ``level_window_hours`` [kW] (0 if no data)."""
        t = pd.Timestamp(start).as_unit("ns").value
        window_ns = int(self.settings.level_window_hours * 3600e9)
        lo, end = (int(i) for i in np.searchsorted(self._index_ns, [t - window_ns, t], side="left"))
        measured = self._load[lo:end]
        ok = np.isfinite(measured)
        if not ok.any():
            return 0.0
        past = self._profile_table(start)[self._targets(self._wall_ns[lo:end][ok])]
        return float(measured[ok].mean() - past.mean())

    def temperature_terms(self, start: pd.Timestamp, index: pd.DatetimeIndex, temp_air: np.ndarray) -> tuple[np.ndarray, dict]:
        """``beta_h*(HDH - H) + beta_c*(CDH - C)`` at each interval [kW], and what was fitted."""
        if self.temp is None or not np.isfinite(temp_air).all():
            return np.zeros(len(index)), {"used": False, "reason": "no air temperature for history and horizon"}
        rows, w = self._window(start)
        usable = np.isfinite(self.temp[rows]) & np.isfinite(self.matrix[rows])
        if usable.any(axis=1).sum() < MIN_TEMPERATURE_DAYS:
            return np.zeros(len(index)), {"used": False, "reason": f"under {MIN_TEMPERATURE_DAYS} days of temperature history"}
        heat, cool = np.maximum(BASE_TEMP_C - self.temp, 0.0), np.maximum(self.temp - BASE_TEMP_C, 0.0)
        mats = [self._masked(m, rows, usable) for m in (self.matrix, heat, cool)]
        profs = [self._weighted_profile(rows, w, m, "mean") for m in mats]
        row_types = self.types[rows]
        dev = [(m[rows] - p[row_types])[usable] for m, p in zip(mats, profs)]
        sqrt_w = np.sqrt(np.broadcast_to(w[:, None], usable.shape)[usable])
        beta, *_ = np.linalg.lstsq(np.column_stack(dev[1:]) * sqrt_w[:, None], dev[0] * sqrt_w, rcond=None)
        types, slots = self._targets(_wall_ns(index, self.zone))
        h_fc, c_fc = np.maximum(BASE_TEMP_C - temp_air, 0.0), np.maximum(temp_air - BASE_TEMP_C, 0.0)
        terms = beta[0] * (h_fc - profs[1][types, slots]) + beta[1] * (c_fc - profs[2][types, slots])
        return terms, {"used": True, "beta_heating_kw_per_c": float(beta[0]), "beta_cooling_kw_per_c": float(beta[1])}

    def _masked(self, values: np.ndarray, rows: np.ndarray, both: np.ndarray) -> np.ndarray:
        """A full-size matrix equal to ``values`` on the window's usable cells, NaN elsewhere."""
        out = np.full_like(values, np.nan)
        out[rows] = np.where(both, values[rows], np.nan)
        return out

    def forecast(self, start: pd.Timestamp, index: pd.DatetimeIndex, step: pd.Timedelta,
                 temp_air: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
        """Load [kW] on ``index`` (interval starts; ``step`` wide) made at ``start``, and its meta."""
        base = self.profile(start, index)
        delta = self.level_offset(start)
        fade = np.exp(-lead_hours(index, start, step) / self.settings.level_tau_hours)
        meta: dict = {"level_offset_kw": delta, "level_tau_hours": self.settings.level_tau_hours}
        terms = np.zeros(len(index))
        if temp_air is not None:
            terms, meta["temperature"] = self.temperature_terms(start, index, temp_air)
        return np.clip(base + terms + delta * fade, 0.0, None), meta
