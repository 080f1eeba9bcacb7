"""Weather sources for the PV forecast, as ``get_``/``read_`` pairs in the style of pvlib.iotools.

Every ``read_*`` returns ``(data, meta)``: ``data`` is indexed by UTC time, **interval-start
labelled** (each row is the mean over ``[t, t + meta["step"])``), with columns renamed to pvlib's
names through a ``VARIABLE_MAP``:

- ``ghi``, ``dni``, ``dhi``: global horizontal, direct normal, diffuse horizontal irradiance [W/m^2];
- ``temp_air``: air temperature [degC]; ``wind_speed``: wind speed at 10 m [m/s].

Only ``ghi`` is required; a missing ``dni``/``dhi`` pair is split from ``ghi`` by a published
decomposition model in :mod:`ems.forecast.pv`. ``get_open_meteo`` is the only function here that
uses the network (the tests call it only against a local HTTP server serving a recorded response);
``read_open_meteo`` parses a saved response.
"""

from __future__ import annotations

import datetime as dt
import json
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pvlib

from ems.config import OPEN_METEO_URL
from ems.errors import DataError, Problem
from adapters.yamlsafe import InputFileError, open_regular
from ems.timeseries import UNIT_BOUNDS, read_series_csv

WEATHER_COLUMNS = ("ghi", "dni", "dhi", "temp_air", "wind_speed")
IRRADIANCE_COLUMNS = ("ghi", "dni", "dhi")

#: Pyranometers read a few W/m^2 below zero at night (thermal zero offset; ISO 9060 allows up to
#: about 10 W/m^2 for field instruments). Values down to this are read as 0; lower ones are errors.
NIGHT_OFFSET_WM2 = -10.0

#: CSV weather file header -> pvlib name (units in the header, as in the rest of the project).
VARIABLE_MAP_CSV = {
    "ghi_wm2": "ghi",
    "dni_wm2": "dni",
    "dhi_wm2": "dhi",
    "temp_air_c": "temp_air",
    "wind_speed_ms": "wind_speed",
}

#: pvlib's TMY3 reader (map_variables=True) already uses pvlib names.
VARIABLE_MAP_TMY3 = {name: name for name in WEATHER_COLUMNS}

#: pvlib's TMY2 reader keeps the file's names; temperature and wind are in tenths (scale below).
VARIABLE_MAP_TMY2 = {"GHI": "ghi", "DNI": "dni", "DHI": "dhi", "DryBulb": "temp_air", "Wspd": "wind_speed"}
TMY2_SCALE = {"temp_air": 0.1, "wind_speed": 0.1}

#: Open-Meteo hourly variable -> pvlib name.
VARIABLE_MAP_OPEN_METEO = {
    "shortwave_radiation": "ghi",
    "direct_normal_irradiance": "dni",
    "diffuse_radiation": "dhi",
    "temperature_2m": "temp_air",
    "wind_speed_10m": "wind_speed",
}
#: Units Open-Meteo may answer with, and the factor to the project's unit.
OPEN_METEO_UNITS = {
    "shortwave_radiation": {"W/m²": 1.0},
    "direct_normal_irradiance": {"W/m²": 1.0},
    "diffuse_radiation": {"W/m²": 1.0},
    "temperature_2m": {"°C": 1.0},
    "wind_speed_10m": {"m/s": 1.0, "km/h": 1 / 3.6},
}


#: the unit of each weather column, for its physical range (:data:`ems.timeseries.UNIT_BOUNDS`)
UNITS = {"ghi": "wm2", "dni": "wm2", "dhi": "wm2", "temp_air": "c", "wind_speed": "ms"}
#: largest Open-Meteo response read [bytes] (16 days x 24 h x 5 variables is about 30 KB)
MAX_JSON_BYTES = 16 * 2**20


def _check_irradiance(data: pd.DataFrame, where: str) -> pd.DataFrame:
    """Irradiance must not be negative beyond a pyranometer's night offset (small offsets -> 0); every
    value (NaN: missing) must be finite and in its unit's physical range."""
    problems = []
    for col, unit in UNITS.items():
        if col in data:
            lo, hi = UNIT_BOUNDS[unit]
            bad = np.flatnonzero(((data[col] < lo) | (data[col] > hi) | np.isinf(data[col])).to_numpy())
            problems += [Problem(where, None, col, float(data[col].iat[i]), f"at {data.index[i]}: outside "
                                 f"{lo:,g}..{hi:,g}, the physical range of this quantity") for i in bad[:20]]
    for col in IRRADIANCE_COLUMNS:
        if col not in data:
            continue
        bad = np.flatnonzero((data[col] < NIGHT_OFFSET_WM2).to_numpy())
        problems += [Problem(where, None, col, float(data[col].iat[i]),
                             f"negative irradiance at {data.index[i]}; allowed: >= {NIGHT_OFFSET_WM2} W/m^2 "
                             "(a night-time zero offset, read as 0)") for i in bad[:20]]
        data[col] = data[col].clip(lower=0.0)
    if problems:
        raise DataError(problems)
    return data


def read_weather_csv(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a weather CSV: ``timestamp`` (ISO 8601 with offset, interval start), ``ghi_wm2``,
    ``temp_air_c``, optionally ``dni_wm2``, ``dhi_wm2``, ``wind_speed_ms``.

    Rows are means over ``[timestamp, next timestamp)``. Any step that divides a day is accepted
    (hourly files are common). Empty cells are missing values (the PV forecast falls back to the
    clear-sky model for those intervals and says so in its meta). Returns ``(data, meta)``.
    """
    optional = ["dni_wm2", "dhi_wm2", "wind_speed_ms"]
    raw = read_series_csv(path, ["ghi_wm2", "temp_air_c"], optional, allow_gaps=True, allow_negative=True,
                          allow_empty=True, require_divides_30=False)
    step = raw.attrs["step"]
    if pd.Timedelta(days=1) % step != pd.Timedelta(0):
        raise DataError(Problem(str(path), None, "timestamp", str(step), "the step must divide a day (e.g. 10, 15, "
                                "30 or 60 minutes)"))
    if ("dni_wm2" in raw) != ("dhi_wm2" in raw):
        raise DataError(Problem(str(path), 1, "dni_wm2/dhi_wm2", list(raw.columns),
                                "give both dni_wm2 and dhi_wm2, or neither (ghi_wm2 is then split by a decomposition model)"))
    data = _check_irradiance(raw.rename(columns=VARIABLE_MAP_CSV), str(path))
    meta = {"source": "csv", "path": str(path), "step": raw.attrs["step"], "label": "start"}
    return data, meta


def read_tmy(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a TMY3 (``.csv``) or TMY2 (``.tm2``) file with pvlib; return interval-start UTC data.

    TMY3 rows carry the *end* of their hour (pvlib warns: 01:00 holds 00:00-01:00), so they are
    moved back one hour; pvlib's TMY2 reader already labels the start. ``meta`` is pvlib's
    (latitude, longitude, altitude, TZ, station name) plus ``step`` and ``format``.
    """
    path = Path(path)
    fmt = "tmy2" if path.suffix.lower() == ".tm2" else "tmy3"
    try:
        open_regular(path, MAX_JSON_BYTES, f"{fmt.upper()} file").close()   # never a FIFO or a device for pvlib
        if fmt == "tmy2":
            data, meta = pvlib.iotools.read_tmy2(str(path))
            data = data.rename(columns=VARIABLE_MAP_TMY2)[list(VARIABLE_MAP_TMY2.values())].astype(float)
            for col, scale in TMY2_SCALE.items():
                data[col] = data[col] * scale
        else:
            data, meta = pvlib.iotools.read_tmy3(str(path), map_variables=True)
            data = data.rename(columns=VARIABLE_MAP_TMY3)[list(WEATHER_COLUMNS)].astype(float)
            data.index = data.index - pd.Timedelta(hours=1)
    except InputFileError as exc:
        raise DataError(Problem(str(path), None, "", None, exc.message, has_value=False)) from None
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise DataError(Problem(str(path), None, "", None, f"not a {fmt.upper()} file pvlib can read: "
                                f"{type(exc).__name__}: {str(exc)[:120]}", has_value=False)) from None
    data.index = data.index.tz_convert("UTC")
    data.index.name = "timestamp"
    data = _check_irradiance(data, str(path))
    return data, {**meta, "format": fmt, "path": str(path), "step": pd.Timedelta(hours=1), "label": "start"}


def _open_meteo_index(hourly: dict[str, Any], offset_s: int, where: str) -> pd.DatetimeIndex:
    """Open-Meteo times (ISO local times without offset, or unix seconds) as a UTC index."""
    times = hourly.get("time")
    if not isinstance(times, list) or not times:
        raise DataError(Problem(where, None, "hourly.time", times, "expected a non-empty list of times"))
    if isinstance(times[0], (int, float)):
        try:
            return pd.DatetimeIndex(pd.to_datetime(times, unit="s", utc=True))
        except (ValueError, TypeError, OverflowError) as exc:
            raise DataError(Problem(where, None, "hourly.time", times[0], f"not unix seconds: {str(exc)[:120]}")) from None
    naive = pd.to_datetime(pd.Series(times), format="ISO8601", errors="coerce")
    if naive.isna().any():
        i = int(np.flatnonzero(naive.isna().to_numpy())[0])
        raise DataError(Problem(where, None, f"hourly.time[{i}]", times[i], "not an ISO 8601 time"))
    return pd.DatetimeIndex(naive - pd.Timedelta(seconds=offset_s)).tz_localize("UTC")


def _json_file(path: str | Path, where: str) -> Any:
    """A JSON document from a regular file of at most MAX_JSON_BYTES; NaN and Infinity refused."""
    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON (write null for a missing value)")
    try:
        with open_regular(path, MAX_JSON_BYTES, "JSON file") as fh:
            return json.loads(fh.read().decode("utf-8"), parse_constant=constant)
    except InputFileError as exc:
        raise DataError(Problem(where, None, "", None, exc.message, has_value=False)) from None
    except (OSError, ValueError, RecursionError) as exc:   # JSONDecodeError, UnicodeDecodeError are ValueErrors
        raise DataError(Problem(where, None, "", None, f"cannot read as JSON: {str(exc)[:160]}", has_value=False)) from None


def read_open_meteo(source: str | Path | dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Parse an Open-Meteo forecast response (a saved JSON file, or the decoded mapping).

    Open-Meteo's hourly radiation is the mean over the *preceding* hour, while temperature and
    wind are instants at the stated time. This returns interval-start rows: radiation labelled
    ``t - 1 h``; temperature and wind as the mean of the instants at both ends of the hour.
    Units are checked against ``hourly_units`` (wind in km/h is converted to m/s).
    """
    where = str(source) if not isinstance(source, dict) else "open-meteo response"
    doc = source if isinstance(source, dict) else _json_file(source, where)
    if not isinstance(doc, dict):
        raise DataError(Problem(where, None, "", type(doc).__name__, "an Open-Meteo response is a JSON object"))
    if type(doc.get("utc_offset_seconds", 0)) is not int or abs(doc.get("utc_offset_seconds", 0)) > 86400:
        raise DataError(Problem(where, None, "utc_offset_seconds", doc.get("utc_offset_seconds"),
                                "whole seconds from -86400 to 86400"))
    if doc.get("error"):
        raise DataError(Problem(where, None, "reason", doc.get("reason"), "Open-Meteo answered with an error"))
    hourly, units = doc.get("hourly"), doc.get("hourly_units") or {}
    if not isinstance(hourly, dict):
        raise DataError(Problem(where, None, "hourly", hourly, "no 'hourly' block; request hourly variables"))
    if "shortwave_radiation" not in hourly:
        raise DataError(Problem(where, None, "hourly", sorted(hourly), "missing 'shortwave_radiation' (GHI)"))
    index = _open_meteo_index(hourly, int(doc.get("utc_offset_seconds", 0)), where)
    columns = {}
    for name, ours in VARIABLE_MAP_OPEN_METEO.items():
        if name not in hourly:
            continue
        unit = units.get(name)
        if unit not in OPEN_METEO_UNITS[name]:
            raise DataError(Problem(where, None, f"hourly_units.{name}", unit,
                                    f"unexpected unit; allowed: {sorted(OPEN_METEO_UNITS[name])}"))
        if not isinstance(hourly[name], list) or not all(v is None or type(v) in (int, float) for v in hourly[name]):
            raise DataError(Problem(where, None, f"hourly.{name}", hourly[name], "a list of numbers (null: missing)"))
        values = np.array([np.nan if v is None else v for v in hourly[name]], dtype=float)
        if len(values) != len(index):
            raise DataError(Problem(where, None, f"hourly.{name}", len(values), f"length differs from hourly.time ({len(index)})"))
        columns[ours] = values * OPEN_METEO_UNITS[name][unit]
    step = pd.Timedelta(hours=1)
    data = pd.DataFrame(columns, index=index - step)
    for col in ("temp_air", "wind_speed"):
        if col in data:  # instants at t-1h and t -> the hour's mean; the first row has no t-1h instant
            inst = pd.Series(columns[col], index=index)
            data[col] = ((inst + inst.shift(1)) / 2).fillna(inst).to_numpy()
    if ("dni" in data) != ("dhi" in data):
        data = data.drop(columns=[c for c in ("dni", "dhi") if c in data])
    data.index.name = "timestamp"
    data = _check_irradiance(data, where)
    meta = {k: doc.get(k) for k in ("latitude", "longitude", "elevation", "generationtime_ms", "timezone")}
    meta.update({"source": "open-meteo", "path": where, "step": step, "label": "start",
                 "models": doc.get("_request", {}).get("models")})
    return data, meta


class FetchFault(Enum):
    """Why a weather fetch gave no forecast (the daemon's ``weather-fallback`` event names it)."""

    TIMEOUT = "timeout"              # no connection or no answer within the timeout
    UNREACHABLE = "unreachable"      # no route, DNS failure, connection refused, TLS failure
    HTTP_ERROR = "http-error"        # the server answered with an HTTP error status (or an error document)
    BAD_RESPONSE = "bad-response"    # an answer that is not an Open-Meteo forecast (not JSON, wrong units, ...)


class WeatherFetchError(Exception):
    """A weather fetch that gave no forecast: ``fault`` (:class:`FetchFault`), ``url`` and a short message."""

    def __init__(self, fault: FetchFault, url: str, message: str):
        super().__init__(f"{fault.value}: {message}")
        self.fault, self.url, self.message = fault, url, message


def get_open_meteo(latitude: float, longitude: float, *, forecast_days: int = 3, past_days: int = 1,
                   models: str = "jma_seamless", timeout_s: float = 30.0, save_to: str | Path | None = None,
                   url: str = OPEN_METEO_URL) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fetch an hourly forecast from Open-Meteo (no key; ``jma_seamless`` = JMA MSM + GSM for Japan).

    Uses the network. ``past_days`` includes recent hours so the measured-to-forecast ratio can be
    formed. ``save_to`` keeps the raw JSON (how the tests' recorded responses are made). ``timeout_s``
    bounds the connection and each read [s] (requests' timeouts, not the whole transfer). Any
    failure is a :class:`WeatherFetchError` naming its :class:`FetchFault`.
    """
    import requests  # a pvlib dependency; imported here so parsing never needs it

    params = {
        "latitude": latitude, "longitude": longitude, "hourly": ",".join(VARIABLE_MAP_OPEN_METEO),
        "models": models, "timezone": "GMT", "wind_speed_unit": "ms",
        "forecast_days": forecast_days, "past_days": past_days,
    }
    try:
        resp = requests.get(url, params=params, timeout=(timeout_s, timeout_s))
        body = resp.content[:MAX_JSON_BYTES + 1]
    except requests.Timeout as exc:
        raise WeatherFetchError(FetchFault.TIMEOUT, url, f"no answer within {timeout_s:g} s ({type(exc).__name__})") from None
    except requests.RequestException as exc:
        raise WeatherFetchError(FetchFault.UNREACHABLE, url, f"{type(exc).__name__}: {str(exc)[:160]}") from None
    try:
        doc = json.loads(body.decode("utf-8")) if len(body) <= MAX_JSON_BYTES else None
    except ValueError:   # JSONDecodeError, UnicodeDecodeError
        doc = None
    reason = doc.get("reason") if isinstance(doc, dict) else None
    if resp.status_code != 200 or (isinstance(doc, dict) and doc.get("error")):
        raise WeatherFetchError(FetchFault.HTTP_ERROR, url, f"HTTP {resp.status_code}" + (f": {str(reason)[:160]}" if reason else ""))
    if not isinstance(doc, dict):
        raise WeatherFetchError(FetchFault.BAD_RESPONSE, url, f"not a JSON object ({len(body)} bytes)")
    doc["_request"] = params
    try:
        data, meta = read_open_meteo(doc)
    except DataError as exc:
        raise WeatherFetchError(FetchFault.BAD_RESPONSE, url, str(exc).splitlines()[0][:200]) from None
    if save_to is not None:
        Path(save_to).write_text(json.dumps(doc), encoding="utf-8")
    return data, meta


def fetch_site_weather(cfg: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """:func:`get_open_meteo` for a site (``cfg``: a SiteConfig) with its ``daemon.weather`` settings
    (url, models, forecast and past days, timeout); raises :class:`WeatherFetchError`."""
    w = cfg.daemon.weather
    return get_open_meteo(cfg.site.latitude_deg, cfg.site.longitude_deg, forecast_days=w.forecast_days,
                          past_days=w.past_days, models=w.models, timeout_s=w.timeout_s, url=w.url)


def clear_sky_index_transfer(data: pd.DataFrame, meta: dict[str, Any], *, latitude: float, longitude: float,
                             altitude_m: float, timezone: str, year: int) -> pd.DataFrame:
    """Move a TMY year to another site and calendar year, keeping its sequence of real skies.

    Each hour keeps its wall-clock time (month, day, hour in the source's local standard time
    become the same local clock time of ``year`` in ``timezone``; 29 February repeats the 28th)
    and its clear-sky index ``k = GHI / GHI_clear`` (pvlib Ineichen at the *source* station);
    the site's GHI is ``k`` times the site's own clear-sky GHI, so sunrise and noon follow the
    site's sun, not the station's. ``dni``/``dhi`` are dropped (the PV model splits ``ghi``);
    temperature and wind are carried over unchanged. Where the source's clear-sky GHI is under
    10 W/m^2 (the sun within about a degree of the horizon) ``k`` is taken from the nearest
    hour of the same day with more light, because a ratio of two near-zero numbers is noise.
    """
    src = pvlib.location.Location(meta["latitude"], meta["longitude"], altitude=meta.get("altitude", 0))
    mid = data.index + pd.Timedelta(minutes=30)
    cs = src.get_clearsky(mid, model="ineichen")["ghi"].to_numpy()
    k = pd.Series(np.where(cs >= 10.0, data["ghi"].to_numpy() / np.maximum(cs, 1e-9), np.nan), index=data.index)
    local = data.index.tz_convert(dt.timezone(dt.timedelta(hours=float(meta["TZ"]))))
    day = local.strftime("%m-%d")
    k = k.groupby(day).transform(lambda s: s.ffill().bfill()).fillna(0.0).clip(0.0, 1.5)
    frame = pd.DataFrame({"k": k.to_numpy(), "temp_air": data["temp_air"].to_numpy(),
                          "wind_speed": data["wind_speed"].to_numpy()},
                         index=pd.MultiIndex.from_arrays([day, local.hour], names=["mmdd", "hour"]))
    frame = frame[~frame.index.duplicated()]
    target = pd.date_range(f"{year}-01-01", f"{year + 1}-01-01", freq="h", inclusive="left", tz=timezone)
    mmdd = np.where(target.strftime("%m-%d") == "02-29", "02-28", target.strftime("%m-%d"))
    rows = frame.reindex(pd.MultiIndex.from_arrays([mmdd, target.hour]))
    dst = pvlib.location.Location(latitude, longitude, tz=timezone, altitude=altitude_m)
    cs_site = dst.get_clearsky(target + pd.Timedelta(minutes=30), model="ineichen")["ghi"].to_numpy()
    out = pd.DataFrame({"ghi": rows["k"].to_numpy() * cs_site, "temp_air": rows["temp_air"].to_numpy(),
                        "wind_speed": rows["wind_speed"].to_numpy()}, index=target.tz_convert("UTC"))
    out.index.name = "timestamp"
    return out.interpolate(limit_direction="both")


def weather_step(weather: pd.DataFrame) -> pd.Timedelta:
    """The weather's step: ``attrs["step"]`` when a reader set it, else the smallest interval."""
    step = weather.attrs.get("step")
    if step is None:
        d = np.diff(weather.index.as_unit("ns").asi8)
        step = pd.Timedelta(int(d.min()), "ns") if len(d) else pd.Timedelta(hours=1)
    return pd.Timedelta(step)


def align_weather(weather: pd.DataFrame, index: pd.DatetimeIndex, step: pd.Timedelta,
                  cs_ghi: np.ndarray, zenith: np.ndarray) -> dict[str, np.ndarray]:
    """Weather means on the plan intervals ``index`` (``step`` wide); NaN where not covered.

    - weather step <= plan step: the mean of the weather rows inside each plan interval;
    - coarser weather (hourly for a 30-min plan): each plan interval takes its weather interval's
      clear-sky index, ``ghi = k * cs_ghi`` with ``k = GHI_w / mean(cs_ghi over the plan intervals
      of that weather interval)``, which keeps the hourly energy and gives each half hour the
      sun's own shape; ``dhi`` keeps the hour's diffuse fraction and ``dni = (ghi - dhi)/cos(z)``
      (cos z floored at 0.065 as in Erbs' model); temperature and wind are held for the hour.
    """
    wstep = weather_step(weather)
    n = len(index)
    t0 = index[:1].as_unit("ns").asi8[0]
    w_ns = weather.index.as_unit("ns").asi8
    out: dict[str, np.ndarray] = {}
    if wstep <= step:
        bucket = (w_ns - t0) // step.value
        keep = (bucket >= 0) & (bucket < n)
        for col in weather.columns:
            vals = weather[col].to_numpy(dtype=float)[keep]
            ok = np.isfinite(vals)
            total = np.bincount(bucket[keep][ok], weights=vals[ok], minlength=n)
            count = np.bincount(bucket[keep][ok], minlength=n)
            with np.errstate(invalid="ignore"):
                out[col] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return out
    plan_ns = index.as_unit("ns").asi8
    pos = np.searchsorted(w_ns, plan_ns, side="right") - 1
    inside = (pos >= 0) & (plan_ns < w_ns[np.maximum(pos, 0)] + wstep.value)
    pos = np.where(inside, pos, 0)

    def take(col: str) -> np.ndarray:
        return np.where(inside, weather[col].to_numpy(dtype=float)[pos], np.nan)

    if "ghi" in weather:
        ghi_w = take("ghi")
        cs_mean = pd.Series(cs_ghi).groupby(np.where(inside, pos, -1)).transform("mean").to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            out["ghi"] = np.where(cs_mean >= 10.0, ghi_w * cs_ghi / np.maximum(cs_mean, 1e-9), ghi_w)
            if "dni" in weather and "dhi" in weather:
                frac = np.where(ghi_w > 0, take("dhi") / np.where(ghi_w > 0, ghi_w, 1.0), 1.0)
                out["dhi"] = np.clip(frac, 0.0, 1.0) * out["ghi"]
                cosz = np.maximum(np.cos(np.radians(zenith)), 0.065)
                out["dni"] = np.clip((out["ghi"] - out["dhi"]) / cosz, 0.0, None)
    for col in ("temp_air", "wind_speed"):
        if col in weather:
            out[col] = take(col)
    return out
