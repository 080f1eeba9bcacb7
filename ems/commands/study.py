"""``ems study``: a span of a site's data under tariffs x strategies; summary.json, report.html, PNGs.

``ems study --config CONFIG --data YEAR.csv [--tariff A.yaml ...] [--strategy building,none,rule,mpc,oracle]
[--out DIR] [--workers N] [--scheduler ADDRESS [--scheduler-insecure]] [--sites DIR] [--seed N --stochastic]
[--weather-forecast noisy|FILE.csv [--seed N] [--weather-actual WEATHER.csv]]``
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ems.commands.argtypes import insecure_scheduler, integer, output_folder, scheduler_address
from ems.config import load_site
from ems.errors import ConfigError, DataError, Problem
from ems.extras import require

NAME = "study"
HELP = "simulate a year (or any span) of a site's data under tariffs and control strategies; write a report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``ems study``."""
    p.add_argument("--config", metavar="CONFIG", help="site YAML file (or --sites)")
    p.add_argument("--data", metavar="YEAR.csv",
                   help="CSV timestamp,load_kw,pv_kw at 15 or 30 minutes (default: the config's load.history_csv)")
    p.add_argument("--sites", metavar="DIR", help="study every site config (*.yaml) in this folder, each on its own "
                                                  "load.history_csv (or --data)")
    p.add_argument("--tariff", action="append", default=[], metavar="A.yaml",
                   help="tariff to compare (repeat; default: each config's own tariff)")
    p.add_argument("--strategy", default="building,none,rule,mpc,oracle", metavar="LIST",
                   help="comma-separated strategies: building (the building alone, no cars), none (unmanaged "
                        "charging), rule (timer), mpc (the daemon's planning and dispatch), oracle (perfect "
                        "foresight) (default: all)")
    p.add_argument("--out", type=output_folder, default="study-out", metavar="DIR",
                   help="output folder, created if missing in an existing folder (default: study-out)")
    p.add_argument("--workers", type=integer(1, 256), default=min(4, os.cpu_count() or 1), metavar="N",
                   help="local worker processes (default: up to 4; 1 runs in this process)")
    p.add_argument("--scheduler", type=scheduler_address, metavar="ADDRESS",
                   help="run on this Dask distributed scheduler: tcp://127.0.0.1:8786 (this machine, or an SSH tunnel "
                        "to one), tls://host:8786 (with the Dask TLS settings), or tcp:// to another machine with "
                        "--scheduler-insecure (README 'Running it at scale')")
    p.add_argument("--scheduler-insecure", action="store_true",
                   help="allow a plain tcp:// scheduler on another machine: unauthenticated and unencrypted, and "
                        "Dask unpickles what it is sent; only on a network you trust")
    p.add_argument("--stochastic", action="store_true", help="draw vehicle arrivals, departures and trips around "
                                                             "the configured windows (needs --seed)")
    p.add_argument("--seed", type=integer(0, 2**32 - 1), metavar="N", help="seed of the drawn vehicle stays (with --stochastic) and of "
                                                         "the noisy weather forecast (with --weather-forecast noisy)")
    p.add_argument("--weather-forecast", metavar="noisy|FILE.csv",
                   help="the weather forecast mpc is given at each step (default: none): 'noisy' (the actual weather "
                        "plus seeded errors growing with lead time; needs --seed) or a recorded forecast CSV "
                        "(issued_at or lead_h, timestamp, ghi_wm2, temp_air_c[, dni_wm2, dhi_wm2, wind_speed_ms])")
    p.add_argument("--weather-actual", metavar="WEATHER.csv",
                   help="the actual weather of the span (timestamp, ghi_wm2, temp_air_c, ...) for --weather-forecast "
                        "(default: pvlib's TMY3 year moved to the site, the weather the shipped office and shelter "
                        "years were made from)")
    p.add_argument("--fill-gaps", action="store_true",
                   help="fill missing rows and empty cells from the same clock time on the nearest day (PV else 0)")
    p.add_argument("--no-report", action="store_true", help="write summary.json and series only (no plots)")
    p.add_argument("--json", action="store_true", help="print summary.json instead of the short table")


def site_list(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(config, data) pairs from --config/--sites and --data; errors name the option and value."""
    if bool(args.config) == bool(args.sites):
        raise ConfigError(Problem("command line", None, "--config/--sites", args.config or args.sites,
                                  "give exactly one of --config CONFIG or --sites DIR"))
    if args.sites:
        folder = Path(args.sites)
        configs = sorted(str(p) for p in folder.glob("*.yaml")) if folder.is_dir() else []
        if not configs:
            raise ConfigError(Problem("--sites", None, "--sites", args.sites, "no folder with site configs (*.yaml) there"))
    else:
        configs = [args.config]
    out = []
    for c in configs:
        cfg = load_site(c)
        data = args.data or cfg.load.history_csv
        if not data:
            raise DataError(Problem(c, None, "load.history_csv", None, "no study data: give --data YEAR.csv or set "
                                                                      "load.history_csv in the config", has_value=False))
        out.append((c, str(data)))
    return out


def run(args: argparse.Namespace) -> int:
    """Run the study and print where the outputs are."""
    # the extra 'study': checked before any work, not after a year's simulation when the report is drawn
    needed = ["tqdm"] + ([] if args.no_report else ["matplotlib"]) + (["distributed"] if args.scheduler else [])
    require(needed, "ems study")
    from ems.study import run_study
    if args.stochastic and args.seed is None:
        raise ConfigError(Problem("command line", None, "--seed", None, "--stochastic needs --seed N", has_value=False))
    if args.scheduler and insecure_scheduler(args.scheduler) and not args.scheduler_insecure:
        raise ConfigError(Problem("command line", None, "--scheduler", args.scheduler,
                                  "a plain tcp:// scheduler on another machine is unauthenticated and unencrypted, and "
                                  "Dask unpickles what it sends: use tls:// with the Dask TLS settings, or an SSH tunnel "
                                  "to tcp://127.0.0.1:PORT, or add --scheduler-insecure on a network you trust"))
    if args.workers < 1:
        raise ConfigError(Problem("command line", None, "--workers", args.workers, "at least 1"))
    strategies = [s.strip() for s in args.strategy.split(",") if s.strip()]
    for t in args.tariff:
        if not Path(t).is_file():
            raise ConfigError(Problem(t, None, "--tariff", t, "no such tariff file"))
    summary, _ = run_study(site_list(args), args.tariff, strategies, args.out, args.workers, args.scheduler,
                           args.seed if args.stochastic else None, progress=True, report=not args.no_report,
                           fill_gaps=args.fill_gaps, weather_forecast=args.weather_forecast, weather_seed=args.seed,
                           weather_actual=args.weather_actual)
    if args.json:
        print(json.dumps(json.loads((Path(args.out) / "summary.json").read_text()), indent=2))
        return 0
    print(plain_summary(summary))
    print()
    print(table(summary))
    print(f"\nwritten: {Path(args.out) / 'summary.json'}" + ("" if args.no_report else f", {Path(args.out) / 'report.html'}"))
    return 0


def plain_summary(summary: dict, width: int = 118) -> str:
    """The report's plain-language summary as text (:func:`ems.report.headline_lines`), per site x
    tariff, then one sentence per strategy."""
    import textwrap

    from ems.report import headline_lines, strategy_lines
    out, strategies = [], []
    for site, tariffs in summary.get("headlines", {}).items():
        for tariff, h in tariffs.items():
            out.append(f"{site} under {tariff}:")
            for line in headline_lines(h):
                out += textwrap.wrap(line, width, initial_indent="  ", subsequent_indent="    ")
            strategies += [s for s in h["contract_kw"] if s not in strategies]
    out.append("The strategies:")
    for line in strategy_lines(strategies):
        out += textwrap.wrap(line, width, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(out)


def table(summary: dict) -> str:
    """One line per site x tariff x strategy: the site's bill, the drivers' settlement, the two together,
    the battery wear, the saving net of all three against none and its share of the oracle's, peak,
    V2H energy, missed departures, median outage survival, and for mpc the steps run without a
    forecast (its warm-up: dispatch's no-plan rule); a legend says whose money each is."""
    from ems.report import money, pct
    head = f"{'site':<14} {'tariff':<18} {'strategy':<8} {'bill':>11} {'settlement':>10} {'bill+settl':>11} " \
           f"{'wear':>7} {'net saving':>11} {'of oracle':>9} {'peak kW':>7} {'V2H kWh':>7} {'missed':>6} " \
           f"{'outage h':>8} {'no fcst':>7}"
    lines = [head, "-" * len(head)]
    for site, tariffs in summary["results"].items():
        for tariff, group in tariffs.items():
            for strategy, s in group.items():
                lines.append(f"{site:<14.14} {tariff:<18.18} {strategy:<8} {s['bill']['total']:>11,.0f} "
                             f"{s['driver_settlement']:>10,.0f} {s['bill_plus_settlement']:>11,.0f} "
                             f"{s['battery_wear_cost']:>7,.0f} "
                             f"{money(s['net_saving_vs_none']):>11} {pct(s['share_of_oracle_net_saving']):>9} "
                             f"{s['peak_kw']:>7.1f} "
                             f"{s['vehicle_discharged_kwh']:>7.0f} {s['departure_targets_missed']:>6} "
                             f"{s['outage_survival'].get('median_hours', 0):>8.1f} "
                             f"{s.get('steps_without_forecast', '-'):>7}")
    lines += ["-" * len(head),
              "bill: the site's; settlement: the drivers' (+ the site pays them for energy taken, - they pay for charging);",
              "wear: the batteries' (per kWh discharged); net saving: none's bill + settlement + wear minus this strategy's,",
              "and its share of the oracle's; V2H kWh: energy the cars gave the site."]
    return "\n".join(lines)

