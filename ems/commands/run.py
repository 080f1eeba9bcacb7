"""``ems run --config CONFIG [--speed X] [--start ISO] [--until ISO] [--peaks-history H.csv]``: the gateway daemon.

Chargers with ``adapter: {kind: simulator}`` are served by an in-process simulator over real
loopback Modbus TCP, so the example sites run on any machine. ``--speed X`` runs a simulated clock
X times faster than real time (simulated chargers only); ``--until`` ends the run at that
(simulated) time. SIGINT/SIGTERM stop it cleanly (0 W, remote control released, store closed);
SIGHUP reloads the config (so does saving the file). ``--peaks-history`` (or the config's
``peaks_history_csv``) seeds the store's monthly peaks from past bills at start, so the demand
ratchet holds the real contract from the first plan.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import pandas as pd

from ems.commands.argtypes import SPEED, number
from ems.billing import check_history_up_to
from ems.clock import SimClock, WallClock
from ems.config import load_site, peaks_history
from ems.daemon import run_site
from ems.errors import DataError, Problem
from ems.timegrid import month_of

NAME = "run"
HELP = "run the daemon: plan every step, dispatch setpoints, guard the demand peak, outage mode, store"


def parse_time(text: str | None, option: str) -> pd.Timestamp | None:
    """An aware timestamp from ``--start``/``--until`` (an offset is required)."""
    if text is None:
        return None
    try:
        t = pd.Timestamp(text)
    except ValueError:
        raise DataError(Problem(option, None, option, text, "not an ISO 8601 time")) from None
    if t.tzinfo is None:
        raise DataError(Problem(option, None, option, text, "give a UTC offset, e.g. 2024-07-08T12:00+09:00"))
    return t


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``ems run``."""
    p.add_argument("--config", required=True, metavar="CONFIG", help="site YAML file")
    p.add_argument("--speed", type=SPEED, default=1.0,
                   help="simulated seconds per real second (default 1; > 1 needs simulated chargers)")
    p.add_argument("--start", metavar="ISO8601", help="simulated start time with offset (default: now)")
    p.add_argument("--until", metavar="ISO8601", help="stop at this (simulated) time (default: run until a signal)")
    p.add_argument("--database", metavar="PATH_OR_URL", help="override daemon.database")
    p.add_argument("--peaks-history", metavar="H.csv",
                   help="CSV month,peak_kw (months YYYY-MM, as for ems bill): the site's monthly peaks from past "
                        "bills, seeded into the store at start so the ratchet holds the real contract from the first "
                        "plan; re-seeding is idempotent, a higher metered peak wins (default: the config's "
                        "peaks_history_csv)")
    p.add_argument("--solver", choices=("thread", "process"), default="process",
                   help="where plans are solved: a worker process with its own planner (default: the model build "
                        "never competes with a dispatch tick for the interpreter lock; bench/daemon.py: office tick "
                        "p99 29-36 ms against 58 ms in a thread) or a worker thread (one process, less memory)")
    p.add_argument("--dispatch-interval", type=number(0.0, 3600.0, lo_open=True), metavar="S",
                   help="dispatch interval in simulated seconds (default: daemon.dispatch_interval_s, "
                        "at least speed x 0.05 s)")


def run(args: argparse.Namespace) -> int:
    """Run the daemon until --until or a signal; print a one-line summary."""
    cfg = load_site(args.config)
    start = parse_time(args.start, "--start")
    until = parse_time(args.until, "--until")
    if args.speed == 1.0 and start is None:
        clock = WallClock()
    else:
        clock = SimClock(start if start is not None else pd.Timestamp.now(tz="UTC").floor("s"), args.speed)
    if until is not None and until <= clock.now():
        raise DataError(Problem("--until", None, "--until", args.until, f"must be after the start {clock.now().isoformat()}"))
    found = peaks_history(cfg, args.peaks_history)   # checked before anything starts (the daemon seeds it)
    if found is not None:
        check_history_up_to(found[0], month_of(clock.now(), cfg.tariff.timezone), found[1],
                            "the daemon's start month")
    daemon = asyncio.run(run_site(cfg, clock=clock, until=until, signals=True, config_path=args.config,
                                  database=args.database, dispatch_interval_s=args.dispatch_interval,
                                  solver_process=args.solver == "process", peaks_history_csv=args.peaks_history))
    s = daemon.stats
    print(f"daemon stopped at {daemon.clock.now().tz_convert(cfg.zone).isoformat()}: {s.plans} plans, {s.ticks} dispatch "
          f"ticks, store {daemon.store.url}", file=sys.stderr)
    return 0
