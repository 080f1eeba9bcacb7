"""Weather forecasts for a study's ``mpc`` (``ems study --weather-forecast noisy|FILE.csv``).

Without the option the study's ``mpc`` uses no weather (its PV forecast is clear sky x measured
clearness, its load forecast the history's profile). With it, at every step ``mpc`` is given the
weather forecast that was *available* then, as a daemon fed by a weather service would be, and
its :class:`~ems.forecast.site.SiteForecaster` runs the pvlib chain on that forecast's GHI and
adds the load model's temperature terms. The actual data the site is simulated on never change.

**Which forecast is available at a step** (both sources): a forecast archive is rows of
``(issued_at, timestamp, weather)``; at origin ``t0`` each target interval takes the row with the
latest ``issued_at <= t0`` (:meth:`ForecastArchive.available`). ``issued_at`` is when the forecast
reached the EMS (a model run plus its delivery delay), not the run's nominal time.

**The history's weather** (the load model fits its temperature terms on the past, read only before
each origin): the actual weather (``noisy``, or ``--weather-actual``); for a recorded file without
``--weather-actual``, the archive's shortest-lead row of each past interval (what a site without
its own thermometer would have).

``noisy``: the actual weather of the span plus seeded errors (:func:`noisy_archive`):

- the actual weather: ``--weather-actual WEATHER.csv`` (the format of
  :func:`ems.forecast.weather.read_weather_csv`) or, by default, pvlib's shipped TMY3 year
  ``723170TYA.CSV`` moved to the site and to each calendar year by its clear-sky index
  (:func:`ems.forecast.weather.clear_sky_index_transfer`): the weather the shipped office and shelter
  years (``configs/data``) were generated from, so it *is* their actual weather; for other data give
  ``--weather-actual``;
- a forecast is issued every ``ISSUE_EVERY_HOURS`` (on the UTC clock), covering from
  ``ISSUE_BEFORE_HOURS`` before its issue to one issue interval past the plan horizon;
- cloud error on the clear-sky index ``k = GHI / GHI_clear`` (Ineichen at the site):
  ``k_f = clip(k + s_k(L) z_k, 0, K_MAX)``, ``GHI_f = k_f GHI_clear`` (unchanged where the clear
  sky is under ``MIN_CLEAR_GHI_WM2``); ``dni``/``dhi`` are dropped (the PV model splits ``GHI_f``);
- temperature error ``T_f = T + s_T(L) z_T``; wind is passed unchanged;
- ``s(L) = s_0 + (s_inf - s_0) (1 - exp(-L / ERROR_TAU_HOURS))`` with ``L`` the lead from the issue
  to the interval's midpoint (0 for intervals before the issue): ``SIGMA_K`` 0.12 -> 0.30 (0.23 at
  24 h, 0.28 at 48 h) and ``SIGMA_T`` 1.0 -> 1.8 K (1.5 K at 24 h, 1.7 K at 48 h);
- ``z = sqrt(SHARED) Z_common(t) + sqrt(1 - SHARED) Z_issue(t)``: unit-variance AR(1) series along
  the target time (``RHO_K_PER_HOUR`` 0.9, ``RHO_T_PER_HOUR`` 0.95: a wrongly timed front is wrong for
  hours), one per issue and one common to every issue, so successive issues revise the forecast
  but keep half of its error (correlation ``SHARED`` = 0.5 between any two issues of a target);
- zero-mean errors: no bias is modelled; truncating ``k_f`` at 0 makes overcast hours slightly too
  bright on average.

Deterministic: ``Z_issue`` is drawn from ``numpy.random.default_rng([seed, 2, issue hour])`` and
``Z_common`` per UTC calendar year from ``default_rng([seed, 1, year])``, so an issue's forecast
depends only on the seed and the actual weather, whatever span is studied.

**Magnitudes: assumptions, not measurements.** No published verification of the forecasts a
Japanese site would use was found with which to fix them. What the literature found supports is
the shape: NWP GHI forecasts break even with persistence only after 2-3 h (Remund et al. 2008,
"Comparison of solar radiation forecasts for the USA"), which the forecaster's measured 2-h PV
ratio already covers; the best NWP-based day-ahead GHI forecasts have ~50 % skill against
persistence (Perez et al. 2013, Solar Energy 94, 305-326), and NWP tends to forecast too clear
skies (Mathiesen and Kleissl 2011, Solar Energy 85, 967-977: biases over 200 W/m^2 near noon in
cloudy conditions; not modelled here); hourly irradiance RMSE grows with the forecast day (IFS DNI
at Evora, Forecasting 2020, 2(2), 7: about 45 % higher on day 3 than on day 1). ECMWF's forecast
user guide ("2m temperature errors") gives systematic 2-m temperature errors generally under
0.5 degC and errors that "often don't depend strongly on the forecast range", hence the small
growth of ``s_T``. Over the office's 2024 (seed 1) these settings give an hourly daytime GHI RMSE
of 20 % of the mean daytime GHI at 0-6 h lead, 27 % at 6-24 h and 34 % at 24-48 h, and a
temperature RMSE of 1.1, 1.3 and 1.6 K (each study reports its own in mpc's
``weather_forecast.verification``); treat them as a plausible middle, not as any given service.

**Recorded forecasts** (``--weather-forecast FILE.csv``, :func:`read_forecast_csv`): one row per
(issue, target interval): ``issued_at`` (ISO 8601 with offset, when the forecast reached the EMS)
*or* ``lead_h`` (hours from ``issued_at`` to ``timestamp``; ``issued_at = timestamp - lead_h``),
``timestamp`` (ISO 8601 with offset, the interval start; the row is the mean over the interval, as
in weather CSVs), ``ghi_wm2``, ``temp_air_c``, optionally ``dni_wm2`` and ``dhi_wm2`` (both or
neither) and ``wind_speed_ms``. Rows may come in any order; an (issue, interval) pair appears
once; empty cells are missing (the PV forecast falls back to clear sky x clearness there, the load
to no temperature terms); the interval length is the smallest step between distinct timestamps
and must divide a day. An archive of day-ahead values only (one lead per target) works too: each
target then comes from its one row once that is issued. :meth:`ForecastArchive.to_csv` writes the
format (``issued_at`` flavour), e.g. to record a ``noisy`` forecast.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ems.config import SiteConfig
from ems.errors import ConfigError, DataError, Problem
from ems.forecast.site import SiteForecaster
from ems.forecast.weather import NIGHT_OFFSET_WM2, VARIABLE_MAP_CSV

NOISY = "noisy"
ISSUE_EVERY_HOURS = 6
ISSUE_BEFORE_HOURS = 3
SIGMA_K = (0.12, 0.30)       # clear-sky index error at lead 0 and far ahead (assumption, module docstring)
SIGMA_T = (1.0, 1.8)         # air temperature error [K] at lead 0 and far ahead (assumption)
ERROR_TAU_HOURS = 24.0
RHO_K_PER_HOUR = 0.9
RHO_T_PER_HOUR = 0.95
SHARED = 0.5
K_MAX = 1.2
MIN_CLEAR_GHI_WM2 = 10.0
#: the forecaster looks this far back of an origin (its 2-h PV ratio window, plus slack)
LOOK_BACK = pd.Timedelta(hours=6)
TMY_NAME = "723170TYA.CSV"


def lead_sigma(lead_h: np.ndarray, sigma: tuple[float, float]) -> np.ndarray:
    """``s_0 + (s_inf - s_0) (1 - exp(-L / ERROR_TAU_HOURS))`` for leads ``L`` [h] (negative: 0)."""
    s0, s_inf = sigma
    return s0 + (s_inf - s0) * (1.0 - np.exp(-np.maximum(lead_h, 0.0) / ERROR_TAU_HOURS))


def ar1(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """``n`` values of a stationary unit-variance AR(1) series with lag-1 correlation ``rho``."""
    from scipy.signal import lfilter
    e = rng.standard_normal(n)
    if n == 0:
        return e
    out = np.empty(n)
    out[0] = e[0]
    if n > 1:
        out[1:] = lfilter([np.sqrt(1.0 - rho * rho)], [1.0, -rho], e[1:], zi=[rho * e[0]])[0]
    return out


# ----- archives ------------------------------------------------------------------------------------

@dataclass
class ForecastArchive:
    """Forecast rows ``(issued_at, timestamp, values)``, sorted by ``issued_at`` then ``timestamp``
    (UTC nanoseconds); ``values`` by pvlib name (ghi, temp_air, ...); ``step`` the interval length."""

    issued_ns: np.ndarray
    time_ns: np.ndarray
    values: dict[str, np.ndarray]
    step: pd.Timedelta
    source: str
    meta: dict = field(default_factory=dict)
    _cache: tuple[int, pd.DataFrame] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        order = np.lexsort((self.time_ns, self.issued_ns))
        self.issued_ns, self.time_ns = self.issued_ns[order], self.time_ns[order]
        self.values = {k: np.asarray(v, dtype=float)[order] for k, v in self.values.items()}
        self.issues = np.unique(self.issued_ns)
        lead = self.time_ns - self.issued_ns
        self._max_lead_ns = int(lead.max()) if len(lead) else 0

    def __len__(self) -> int:
        return len(self.time_ns)

    def _frame(self, rows: np.ndarray) -> pd.DataFrame:
        index = pd.DatetimeIndex(pd.to_datetime(self.time_ns[rows], unit="ns", utc=True), name="timestamp")
        out = pd.DataFrame({k: v[rows] for k, v in self.values.items()}, index=index)
        out.attrs["step"] = self.step
        out.attrs["source"] = self.source
        return out

    def available(self, now: pd.Timestamp) -> pd.DataFrame:
        """The weather known at ``now``: per target interval (from ``LOOK_BACK`` before the latest
        issue on), the row issued last at or before ``now``; an empty frame before the first issue."""
        now_ns = pd.Timestamp(now).as_unit("ns").value
        k = int(np.searchsorted(self.issues, now_ns, side="right"))
        if self._cache is not None and self._cache[0] == k:
            return self._cache[1]
        if k == 0:
            frame = self._frame(np.zeros(0, dtype=int))
        else:
            last = int(self.issues[k - 1])
            lo = int(np.searchsorted(self.issued_ns, last - LOOK_BACK.value - self._max_lead_ns, side="left"))
            hi = int(np.searchsorted(self.issued_ns, last, side="right"))
            rows = np.arange(lo, hi)
            rows = rows[self.time_ns[rows] >= last - LOOK_BACK.value]
            rows = rows[np.lexsort((self.issued_ns[rows], self.time_ns[rows]))]   # by time, then issue
            t = self.time_ns[rows]
            keep = np.ones(len(rows), dtype=bool)
            keep[:-1] = t[:-1] != t[1:]                                          # the last issue of each time
            frame = self._frame(rows[keep])
        self._cache = (k, frame)
        return frame

    def best_estimate(self) -> pd.DataFrame:
        """Per target interval the row with the shortest lead >= 0 (else the least negative one):
        the archive's own estimate of what happened, used as the history's weather."""
        lead = self.time_ns - self.issued_ns
        key = np.where(lead >= 0, lead, np.iinfo(np.int64).max // 2 - lead)
        rows = np.lexsort((key, self.time_ns))
        t = self.time_ns[rows]
        keep = np.ones(len(rows), dtype=bool)
        keep[1:] = t[1:] != t[:-1]
        return self._frame(rows[keep])

    def to_csv(self, path: str | Path, zone: str = "UTC") -> Path:
        """Write the archive in the recorded-forecast format (``issued_at`` flavour)."""
        names = {v: k for k, v in VARIABLE_MAP_CSV.items()}
        issued = pd.to_datetime(self.issued_ns, unit="ns", utc=True).tz_convert(zone)
        times = pd.to_datetime(self.time_ns, unit="ns", utc=True).tz_convert(zone)
        frame = pd.DataFrame({"issued_at": [t.isoformat() for t in issued], "timestamp": [t.isoformat() for t in times]})
        for k, v in self.values.items():
            frame[names[k]] = np.round(v, 3)
        path = Path(path)
        frame.to_csv(path, index=False)
        return path


def read_forecast_csv(path: str | Path) -> ForecastArchive:
    """A recorded forecast archive (the format in the module docstring); DataError naming file,
    row, column and value for anything else."""
    from ems.timeseries import parse_timestamps, read_csv_raw, to_numbers
    where = str(path)
    df = read_csv_raw(path)
    if ("issued_at" in df.columns) == ("lead_h" in df.columns):
        raise DataError(Problem(where, 1, "issued_at/lead_h", list(df.columns),
                                "give exactly one of the columns issued_at (when the forecast was available) or "
                                "lead_h (hours from then to the timestamp)"))
    missing = [c for c in ("ghi_wm2", "temp_air_c") if c not in df.columns]
    if missing:
        raise DataError(Problem(where, 1, ",".join(missing), list(df.columns),
                                f"missing column(s) {missing}; a forecast file has issued_at (or lead_h), timestamp, "
                                "ghi_wm2, temp_air_c[, dni_wm2, dhi_wm2, wind_speed_ms]"))
    if ("dni_wm2" in df.columns) != ("dhi_wm2" in df.columns):
        raise DataError(Problem(where, 1, "dni_wm2/dhi_wm2", list(df.columns), "give both dni_wm2 and dhi_wm2, or neither"))
    if df.empty:
        raise DataError(Problem(where, None, "", None, "no data rows", has_value=False))
    times = parse_timestamps(df["timestamp"].str.strip(), where)
    if "issued_at" in df.columns:
        try:
            issued = parse_timestamps(df["issued_at"].str.strip(), where)
        except DataError as exc:
            raise DataError([replace(p, path="issued_at", message=p.message.replace("timestamp", "issued_at", 1))
                             for p in exc.problems]) from None
    else:
        lead = to_numbers(df, "lead_h", where, allow_negative=True, allow_empty=False)
        issued = times - pd.to_timedelta(lead, unit="h")
    t_ns, i_ns = times.as_unit("ns").asi8, issued.as_unit("ns").asi8
    pairs = pd.Series(np.arange(len(df))).groupby([i_ns, t_ns]).transform("size").to_numpy()
    dup = np.flatnonzero(pairs > 1)
    if dup.size:
        raise DataError([Problem(where, int(i) + 2, "timestamp", df["timestamp"].iat[i],
                                 "this (issued_at, timestamp) pair appears more than once") for i in dup[:20]])
    distinct = np.unique(t_ns)
    if len(distinct) < 2:
        raise DataError(Problem(where, None, "timestamp", len(distinct), "need at least two target intervals to know the step"))
    step = pd.Timedelta(int(np.diff(distinct).min()), "ns")
    if pd.Timedelta(days=1) % step:
        raise DataError(Problem(where, None, "timestamp", str(step), "the step between target intervals must divide a day"))
    values = {}
    problems = []
    for col in ("ghi_wm2", "dni_wm2", "dhi_wm2", "temp_air_c", "wind_speed_ms"):
        if col not in df.columns:
            continue
        v = to_numbers(df, col, where, allow_negative=True, allow_empty=True)
        if col.endswith("_wm2"):
            for i in np.flatnonzero(v < NIGHT_OFFSET_WM2)[:20]:
                problems.append(Problem(where, int(i) + 2, col, float(v[i]),
                                        f"negative irradiance; allowed: >= {NIGHT_OFFSET_WM2} W/m^2 (read as 0)"))
            v = np.where(np.isnan(v), v, np.maximum(v, 0.0))
        values[VARIABLE_MAP_CSV[col]] = v
    if problems:
        raise DataError(problems)
    return ForecastArchive(i_ns, t_ns, values, step, where, {"kind": "file", "path": where})


@functools.lru_cache(maxsize=4)
def cached_forecast_csv(path: str) -> ForecastArchive:
    """:func:`read_forecast_csv` once per process."""
    return read_forecast_csv(path)


# ----- actual weather --------------------------------------------------------------------------------

def tmy_path() -> Path:
    """pvlib's shipped TMY3 file the generated site years were made from."""
    import pvlib
    return Path(pvlib.__file__).parent / "data" / TMY_NAME


@functools.lru_cache(maxsize=8)
def tmy_weather(latitude: float, longitude: float, altitude_m: float, timezone: str, years: tuple[int, ...]) -> pd.DataFrame:
    """The TMY3 year moved to the site and to each of ``years`` (hourly, interval start, UTC)."""
    from ems.forecast.weather import clear_sky_index_transfer, read_tmy
    data, meta = read_tmy(tmy_path())
    parts = [clear_sky_index_transfer(data, meta, latitude=latitude, longitude=longitude, altitude_m=altitude_m,
                                      timezone=timezone, year=y) for y in years]
    out = pd.concat(parts).sort_index()
    out = out[~out.index.duplicated()]
    out.attrs["step"] = pd.Timedelta(hours=1)
    out.attrs["source"] = f"pvlib TMY3 {TMY_NAME} moved to the site"
    return out


def actual_weather(cfg: SiteConfig, first: pd.Timestamp, last: pd.Timestamp, path: str | None = None) -> pd.DataFrame:
    """The weather that happened over ``[first, last)``: ``path`` (a weather CSV) or the site's TMY
    years; a DataError when the file does not cover the span."""
    if path is None:
        zone = cfg.site.timezone
        years = tuple(range(pd.Timestamp(first).tz_convert(zone).year, pd.Timestamp(last).tz_convert(zone).year + 1))
        return tmy_weather(cfg.site.latitude_deg, cfg.site.longitude_deg, cfg.site.altitude_m, zone, years)
    from ems.forecast.weather import read_weather_csv
    data, meta = read_weather_csv(path)
    data.attrs["step"] = meta["step"]
    data.attrs["source"] = str(path)
    return data


def clear_ghi(cfg: SiteConfig, index: pd.DatetimeIndex, step: pd.Timedelta) -> np.ndarray:
    """Ineichen clear-sky GHI at the site at the interval midpoints [W/m^2]."""
    import pvlib
    loc = pvlib.location.Location(cfg.site.latitude_deg, cfg.site.longitude_deg, altitude=cfg.site.altitude_m)
    return loc.get_clearsky(index + step / 2, model="ineichen")["ghi"].to_numpy()


def _common(seed: int, index: pd.DatetimeIndex, step: pd.Timedelta, which: int, rho_hour: float) -> np.ndarray:
    """The error common to every issue on ``index``: an AR(1) series per UTC calendar year, drawn
    from ``default_rng([seed, 1, year, which])`` over the whole year (so it does not depend on the span)."""
    out = np.empty(len(index))
    years = np.asarray(index.year)
    rho = rho_hour ** (step / pd.Timedelta(hours=1))
    for y in np.unique(years):
        start = pd.Timestamp(f"{y}-01-01", tz="UTC")
        n = int((pd.Timestamp(f"{y + 1}-01-01", tz="UTC") - start) / step)
        series = ar1(np.random.default_rng([seed, 1, int(y), which]), n, rho)
        pos = ((index[years == y] - start) / step).to_numpy().astype(int)
        out[years == y] = series[pos]
    return out


def noisy_archive(cfg: SiteConfig, actual: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, seed: int,
                  horizon_hours: float) -> ForecastArchive:
    """Issues every ISSUE_EVERY_HOURS (UTC) from the last one at or before ``start`` to ``end``: the
    ``actual`` weather plus the seeded errors of the module docstring."""
    step = pd.Timedelta(actual.attrs.get("step") or pd.Timedelta(hours=1))
    every = pd.Timedelta(hours=ISSUE_EVERY_HOURS)
    before = pd.Timedelta(hours=ISSUE_BEFORE_HOURS)
    cover = pd.Timedelta(hours=horizon_hours) + every + step
    first = pd.Timestamp(start).tz_convert("UTC").floor(every)
    issues = pd.date_range(first, pd.Timestamp(end).tz_convert("UTC"), freq=every, inclusive="left")
    grid = pd.date_range(first - before, issues[-1] + cover, freq=step, inclusive="left") if len(issues) else \
        pd.DatetimeIndex([], tz="UTC")
    act = actual.reindex(grid)
    cs = clear_ghi(cfg, grid, step)
    light = cs >= MIN_CLEAR_GHI_WM2
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(light, act["ghi"].to_numpy() / np.where(light, cs, 1.0), np.nan)
    temp = act["temp_air"].to_numpy() if "temp_air" in act else np.full(len(grid), np.nan)
    zc_k = _common(seed, grid, step, 0, RHO_K_PER_HOUR)
    zc_t = _common(seed, grid, step, 1, RHO_T_PER_HOUR)
    rho_k, rho_t = RHO_K_PER_HOUR ** (step / pd.Timedelta(hours=1)), RHO_T_PER_HOUR ** (step / pd.Timedelta(hours=1))
    grid_ns = grid.as_unit("ns").asi8
    n_rows = int((before + cover) / step)
    issued, times, ghi_f, temp_f, wind_f = [], [], [], [], []
    a, b = np.sqrt(SHARED), np.sqrt(1.0 - SHARED)
    for issue in issues:
        i0 = int((issue - before - grid[0]) / step)
        rows = slice(i0, i0 + n_rows)
        t_ns = grid_ns[rows]
        lead_h = (t_ns - issue.value) / 3.6e12 + step / pd.Timedelta(hours=2)
        rng = np.random.default_rng([seed, 2, int(issue.value // 3_600_000_000_000)])
        z_k = a * zc_k[rows] + b * ar1(rng, len(t_ns), rho_k)
        z_t = a * zc_t[rows] + b * ar1(rng, len(t_ns), rho_t)
        kf = np.clip(k[rows] + lead_sigma(lead_h, SIGMA_K) * z_k, 0.0, K_MAX)
        ghi_f.append(np.where(light[rows], kf * cs[rows], act["ghi"].to_numpy()[rows]))
        temp_f.append(temp[rows] + lead_sigma(lead_h, SIGMA_T) * z_t)
        if "wind_speed" in act:
            wind_f.append(act["wind_speed"].to_numpy()[rows])
        issued.append(np.full(len(t_ns), issue.value))
        times.append(t_ns)
    values = {"ghi": np.concatenate(ghi_f) if ghi_f else np.zeros(0),
              "temp_air": np.concatenate(temp_f) if temp_f else np.zeros(0)}
    if wind_f:
        values["wind_speed"] = np.concatenate(wind_f)
    meta = {"kind": NOISY, "seed": seed, "actual": actual.attrs.get("source"), "issue_every_hours": ISSUE_EVERY_HOURS,
            "issues": len(issues), "sigma_clear_sky_index": list(SIGMA_K), "sigma_temp_air_k": list(SIGMA_T),
            "error_tau_hours": ERROR_TAU_HOURS, "shared_between_issues": SHARED}
    return ForecastArchive(np.concatenate(issued) if issued else np.zeros(0, dtype=np.int64),
                           np.concatenate(times) if times else np.zeros(0, dtype=np.int64), values, step,
                           f"noisy (seed {seed})", meta)


def verification(archive: ForecastArchive, actual: pd.DataFrame, bins: tuple[float, ...] = (0, 6, 24, 48)) -> dict[str, Any]:
    """How wrong the archive was against ``actual``, by lead from issue to interval start [h]:
    daytime GHI RMSE [W/m^2] and as a share of the mean daytime GHI, temperature RMSE [K]."""
    if not len(archive):
        return {}
    t = pd.DatetimeIndex(pd.to_datetime(archive.time_ns, unit="ns", utc=True))
    act = actual.reindex(t)
    lead = (archive.time_ns - archive.issued_ns) / 3.6e12
    out = {}
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (lead >= lo) & (lead < hi)
        entry: dict[str, Any] = {"rows": int(sel.sum())}
        if "ghi" in archive.values and "ghi" in act:
            g, ga = archive.values["ghi"][sel], act["ghi"].to_numpy()[sel]
            day = np.isfinite(g) & np.isfinite(ga) & ((ga > 10) | (g > 10))
            if day.any():
                rmse = float(np.sqrt(np.mean((g[day] - ga[day]) ** 2)))
                entry.update(ghi_rmse_wm2=rmse, ghi_rmse_share_of_mean=rmse / float(ga[day].mean()))
        if "temp_air" in archive.values and "temp_air" in act:
            tf, ta = archive.values["temp_air"][sel], act["temp_air"].to_numpy()[sel]
            ok = np.isfinite(tf) & np.isfinite(ta)
            if ok.any():
                entry["temp_air_rmse_k"] = float(np.sqrt(np.mean((tf[ok] - ta[ok]) ** 2)))
        out[f"{lo:g}-{hi:g}h"] = entry
    return out


# ----- the mpc's forecaster ------------------------------------------------------------------------

class WeatherForecaster(SiteForecaster):
    """A :class:`SiteForecaster` whose weather at each origin is the forecast available then
    (:meth:`ForecastArchive.available`); the history's temperatures come from ``observed``."""

    def __init__(self, cfg: SiteConfig, history: pd.DataFrame, archive: ForecastArchive, observed: pd.DataFrame | None,
                 describe: dict | None = None):
        super().__init__(cfg, history=history, weather=observed)
        self.archive = archive
        self.describe = describe or dict(archive.meta)

    def forecast(self, start: pd.Timestamp, hours: float):
        w = self.archive.available(start)
        self.weather = w if len(w) else None
        self._pv_weather = self.weather is not None and "ghi" in self.weather
        return super().forecast(start, hours)


def archive_start(cfg: SiteConfig, first: pd.Timestamp, span_start: pd.Timestamp) -> pd.Timestamp:
    """Where the noisy forecasts begin: the span's start; with ``planner.peak_quantile_pct`` early
    enough (within the history) that the error backtest before each day replays the forecasts the
    plan is given, not forecasts from the measured weather."""
    if cfg.planner.peak_quantile_pct is None:
        return span_start
    from ems.forecast.uncertainty import REPLAY_DAYS
    lead = pd.Timedelta(days=REPLAY_DAYS) + pd.Timedelta(hours=2 * cfg.planner.horizon_hours)
    return max(pd.Timestamp(first), pd.Timestamp(span_start) - lead)


def check_option(weather_forecast: str | None, seed: int | None, weather_actual: str | None = None) -> None:
    """ConfigError/DataError for a bad ``--weather-forecast``/``--weather-actual`` before any work."""
    if weather_forecast is None:
        if weather_actual is not None:
            raise ConfigError(Problem("command line", None, "--weather-actual", weather_actual,
                                      "only used with --weather-forecast noisy|FILE.csv"))
        return
    if weather_forecast == NOISY:
        if seed is None:
            raise ConfigError(Problem("command line", None, "--seed", None, "--weather-forecast noisy needs --seed N",
                                      has_value=False))
    elif not Path(weather_forecast).is_file():
        raise ConfigError(Problem("command line", None, "--weather-forecast", weather_forecast,
                                  "give 'noisy' or a recorded forecast CSV (issued_at or lead_h, timestamp, ghi_wm2, "
                                  "temp_air_c); no such file"))
    else:
        cached_forecast_csv(str(weather_forecast))
    if weather_actual is not None and not Path(weather_actual).is_file():
        raise ConfigError(Problem("command line", None, "--weather-actual", weather_actual, "no such weather CSV"))


def weather_forecaster(cfg: SiteConfig, history: pd.DataFrame, span_index: pd.DatetimeIndex, span_end: pd.Timestamp,
                       weather_forecast: str, seed: int | None, weather_actual: str | None = None) -> WeatherForecaster:
    """The study mpc's forecaster with ``--weather-forecast`` (``noisy`` or a recorded file)."""
    first = min(history.index[0], span_index[0]) if len(history) else span_index[0]
    end = pd.Timestamp(span_end) + pd.Timedelta(hours=cfg.planner.horizon_hours) + pd.Timedelta(days=1)
    if weather_forecast == NOISY:
        if seed is None:
            raise ConfigError(Problem("study", None, "--seed", None, "--weather-forecast noisy needs --seed N", has_value=False))
        actual = actual_weather(cfg, first, end, weather_actual)
        w_step = pd.Timedelta(actual.attrs.get("step") or pd.Timedelta(hours=1))
        covered = actual["ghi"].reindex(pd.date_range(span_index[0].tz_convert("UTC").floor(w_step),
                                                      pd.Timestamp(span_end).tz_convert("UTC"), freq=w_step,
                                                      inclusive="left")).notna()
        if not covered.all():
            gap = covered.index[~covered.to_numpy()][0]
            raise DataError(Problem(actual.attrs.get("source", "weather"), None, "ghi_wm2", str(gap),
                                    "the actual weather does not cover the study span here; --weather-forecast noisy "
                                    "adds errors to the actual weather of the span"))
        archive = noisy_archive(cfg, actual, archive_start(cfg, first, span_index[0]), span_end, seed,
                                cfg.planner.horizon_hours)
        observed = actual
    else:
        archive = cached_forecast_csv(str(weather_forecast))
        archive = ForecastArchive(archive.issued_ns, archive.time_ns, dict(archive.values), archive.step, archive.source,
                                  dict(archive.meta))    # a fresh cache per scenario
        actual = actual_weather(cfg, first, end, weather_actual) if weather_actual else None
        observed = actual if actual is not None else archive.best_estimate()
    describe = dict(archive.meta)
    if weather_actual:
        describe["actual"] = weather_actual
    if actual is not None:
        describe["verification"] = verification(archive, actual)
    return WeatherForecaster(cfg, history, archive, observed, describe)
