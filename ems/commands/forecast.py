"""``ems forecast``: print a site's PV and load forecast, or backtest the forecasts on its history.

    ems forecast --config CONFIG [--hours 48] [--start ISO] [--weather FILE [--weather-format F] | --fetch] [--json]
    ems forecast backtest --config CONFIG --history HISTORY.csv [--stride-hours 6] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import pandas as pd

from adapters.yamlsafe import InputFileError, open_regular
from ems.commands.argtypes import HOURS, aware_time
from ems.config import load_site
from ems.errors import DataError, Problem

NAME = "forecast"
HELP = "print the PV and load forecast of a site, or backtest the forecasts on its history"
#: --weather-format: the reader of each format in :mod:`ems.forecast.weather` (imported when a forecast is made,
#: with pvlib, not for ``ems forecast --help``)
READERS = {"csv": "read_weather_csv", "tmy": "read_tmy", "open-meteo": "read_open_meteo"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments: action (show | backtest), config, horizon, origin, history, weather, output form."""
    p.add_argument("action", nargs="?", choices=("show", "backtest"), default="show",
                   help="show (default): the forecast from now or --start; backtest: replay the history")
    p.add_argument("--config", required=True, help="site YAML file")
    p.add_argument("--hours", type=HOURS, default=None, help="horizon [h] (default: the planner's horizon_hours)")
    p.add_argument("--start", default=None, help="forecast origin, ISO 8601 with offset (default: now, floored to the step)")
    p.add_argument("--history", default=None, help="history CSV (timestamp, load_kw[, pv_kw]); default: load.history_csv")
    p.add_argument("--weather", default=None, help="weather file: CSV (ghi_wm2, temp_air_c, ...), TMY3/TMY2, or Open-Meteo JSON")
    p.add_argument("--weather-format", choices=sorted(READERS), default=None, help="default: from the file name")
    p.add_argument("--fetch", action="store_true",
                   help="fetch the weather forecast from Open-Meteo as the daemon does (daemon.weather: url, models, "
                        "timeout_s); when it fails, clear sky x the measured clearness, with a note")
    p.add_argument("--stride-hours", type=HOURS, default=6.0, help="backtest: hours between forecast origins (default 6)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _fetched(cfg) -> pd.DataFrame | None:
    """``--fetch``: the Open-Meteo forecast for the site (``daemon.weather``), or None with a note on
    stderr when the fetch fails (the forecast then uses clear sky, as the daemon's fallback)."""
    from ems.forecast.weather import WeatherFetchError, fetch_site_weather
    try:
        data, meta = fetch_site_weather(cfg)
    except WeatherFetchError as exc:
        print(f"ems forecast: weather not fetched from {exc.url} ({exc.fault.value}: {exc.message}); "
              "clear sky x the measured clearness instead", file=sys.stderr)
        return None
    print(f"ems forecast: weather fetched from {cfg.daemon.weather.url} ({meta.get('models')}, {len(data)} h to "
          f"{(data.index[-1] + meta['step']).isoformat() if len(data) else '-'})", file=sys.stderr)
    data.attrs["step"] = meta["step"]
    return data


def _weather(args: argparse.Namespace, cfg=None) -> pd.DataFrame | None:
    """The weather frame named on the command line (``--fetch``: fetched for ``cfg``), if any."""
    if args.fetch:
        if args.weather:
            raise DataError(Problem("command line", None, "--fetch", args.weather, "give --weather FILE or --fetch, not both"))
        return _fetched(cfg)
    if not args.weather:
        return None
    from ems.forecast import weather
    fmt = args.weather_format or _guess_format(args.weather)
    data, meta = getattr(weather, READERS[fmt])(args.weather)
    data.attrs["step"] = meta["step"]
    return data


def _guess_format(path: str) -> str:
    """``.json``: Open-Meteo; a CSV whose header starts with ``timestamp``: our CSV; else TMY."""
    if path.lower().endswith(".json"):
        return "open-meteo"
    from ems.timeseries import MAX_CSV_BYTES
    try:   # a regular file only (a FIFO would block, /dev/zero has no end of line), its first 4 KiB at most
        with open_regular(path, MAX_CSV_BYTES, "weather file") as fh:
            first = fh.readline(4096).decode("utf-8", "replace")
    except (OSError, InputFileError):
        return "csv"  # the reader reports the missing file with its name
    return "csv" if first.strip().lower().startswith("timestamp") else "tmy"


def _origin(args: argparse.Namespace, step_minutes: int) -> pd.Timestamp:
    """--start, or now floored to the plan step."""
    if args.start:
        return aware_time(args.start, "--start", "start")
    return pd.Timestamp.now(tz="UTC").floor(f"{step_minutes}min")


def run(args: argparse.Namespace) -> int:
    """Show a forecast or run a backtest; exit 0, or 2 on invalid input (raised as InputError)."""
    from ems.forecast import SiteForecaster, read_history_csv
    from ems.forecast.backtest import backtest, format_table
    warnings.filterwarnings("ignore", module="pvlib")  # pandas-4 deprecation notices from inside pvlib
    cfg = load_site(args.config)
    history = read_history_csv(args.history, cfg.load.history_column) if args.history else None
    if args.action == "backtest":
        if history is None and not cfg.load.history_csv:
            raise DataError(Problem(args.config, None, "load.history_csv", None, "give --history HISTORY.csv", has_value=False))
        sf = SiteForecaster(cfg, history, _weather(args, cfg))
        result = backtest(sf, horizon_hours=args.hours or 48.0, stride_hours=args.stride_hours)
        print(json.dumps(result, indent=1, default=str) if args.json else format_table(result))
        return 0
    sf = SiteForecaster(cfg, history, _weather(args, cfg))
    start = _origin(args, cfg.planner.step_minutes)
    fc = sf.forecast(start, args.hours or cfg.planner.horizon_hours)
    if args.json:
        frame = pd.DataFrame({"pv_kw": fc.pv_kw, "load_kw": fc.load_kw, "critical_kw": fc.critical_kw})
        doc = {"meta": fc.meta, "forecast": [{"timestamp": t.isoformat(), **row} for t, row in
                                              zip(frame.index.tz_convert(cfg.site.timezone), frame.round(3).to_dict("records"))]}
        print(json.dumps(doc, indent=1, default=str))
        return 0
    print(f"{cfg.site.name}: forecast from {start.tz_convert(cfg.site.timezone)} ({fc.meta['pv_source']}; "
          f"history to {fc.meta['history_end']})")
    if fc.meta.get("history_age_hours") and fc.meta["history_age_hours"] > 24:
        print(f"  note: the history ends {fc.meta['history_age_hours'] / 24:.0f} days before the origin; the load "
              "profile is from its last weeks", file=sys.stderr)
    print(f"{'time (' + cfg.site.timezone + ')':<26} {'PV kW':>7} {'load kW':>8} {'critical kW':>11}")
    for t, pv, load, crit in zip(fc.pv_kw.index.tz_convert(cfg.site.timezone), fc.pv_kw, fc.load_kw, fc.critical_kw):
        print(f"{t.strftime('%Y-%m-%d %a %H:%M'):<26} {pv:7.2f} {load:8.2f} {crit:11.2f}")
    return 0
