"""``ems run --config CONFIG [--speed X] [--start ISO] [--until ISO] [--peaks-history H.csv]``: the gateway daemon.

Chargers with ``adapter: {kind: simulator}`` are served by an in-process simulator over real
loopback Modbus TCP, so the example sites run on any machine. ``--speed X`` runs a simulated clock
X times faster than real time (simulated chargers only); ``--until`` ends the run at that
(simulated) time. SIGINT/SIGTERM stop it cleanly (0 W, remote control released, store closed);
SIGHUP reloads the config (so does saving the file). ``--peaks-history`` (or the config's
``peaks_history_csv``) seeds the store's monthly peaks from past bills at start, so the demand
ratchet holds the real contract from the first plan.

The database (``--database``, else ``daemon.database``, else the site's file in the state directory:
:mod:`ems.paths`) is marked with whose data it holds (:func:`claim_database`): a real site's (the
wall clock and a real meter) or a simulation's (``--speed`` other than 1, ``--start``, or the
simulator's meter). The monthly peaks in it feed the demand ratchet, so a simulated run refuses a real
site's database unless ``--allow-real-db`` is given, and a real run refuses a simulated database.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import pandas as pd

from ems.commands.argtypes import SPEED, aware_time, number
from ems.billing import check_history_up_to
from ems.clock import Clock, SimClock, WallClock
from ems.config import MeterSimulated, SimulatorAdapter, SiteConfig, load_site, peaks_history
from ems.errors import DataError, Problem
from ems.timegrid import local_iso, month_of

NAME = "run"
#: the store's state key that says whose data the database holds: REAL or SIMULATED
ORIGIN = "data_origin"
REAL, SIMULATED = "real", "simulated"
HELP = "run the daemon: plan every step, dispatch setpoints, guard the demand peak, outage mode, store"


def parse_time(text: str | None, option: str) -> pd.Timestamp | None:
    """An aware timestamp from ``--start``/``--until`` (an offset is required)."""
    return None if text is None else aware_time(text, option)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``ems run``."""
    p.add_argument("--config", required=True, metavar="CONFIG", help="site YAML file")
    p.add_argument("--speed", type=SPEED, default=1.0,
                   help="simulated seconds per real second (default 1; > 1 needs simulated chargers)")
    p.add_argument("--start", metavar="ISO8601", help="simulated start time with offset (default: now)")
    p.add_argument("--until", metavar="ISO8601", help="stop at this (simulated) time (default: run until a signal)")
    p.add_argument("--database", metavar="PATH_OR_URL",
                   help="override daemon.database (default: the site's file in the state directory: $STATE_DIRECTORY, "
                        "else $XDG_STATE_HOME/ems, else ~/.local/state/ems)")
    p.add_argument("--allow-real-db", action="store_true",
                   help="let a simulated run (--speed other than 1, --start, or a simulated meter) write into a database "
                        "that holds a real site's data (its simulated peaks then count in that site's demand ratchet)")
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


def simulated_run(cfg: SiteConfig, clock: Clock) -> bool:
    """Whether a run's data are simulated: its clock is, or its meter readings come from the simulator."""
    if not isinstance(clock, WallClock):
        return True
    if cfg.meter is not None:
        return isinstance(cfg.meter.adapter, MeterSimulated)
    return any(isinstance(c.adapter, SimulatorAdapter) for c in cfg.chargers)


def claim_database(database: str, simulated: bool, allow_real: bool = False) -> str:
    """Check that a run whose data are ``simulated`` (or real) may write into ``database``; mark a
    database not marked yet. Return whose data it holds (REAL or SIMULATED). A database from before the
    mark counts as real if it holds data. DataError (exit 2): a simulated run on a real site's database
    without ``allow_real``, or a real run on a simulated database."""
    from ems.store import Store
    with Store(database) as store:
        marked = store.get_state(ORIGIN)
        origin = marked or (REAL if store.count("telemetry") or store.count("monthly_peaks") else
                            SIMULATED if simulated else REAL)
        if simulated and origin == REAL and not allow_real:
            raise DataError(Problem(database, None, "", None, has_value=False, message=(
                "holds a real site's data (the daemon on the wall clock with a real meter); this simulated run "
                "(--speed other than 1, --start, or a simulated meter) would write simulated peaks into that site's "
                "demand ratchet: give another --database, or --allow-real-db to use this one anyway")))
        if not simulated and origin == SIMULATED:
            raise DataError(Problem(database, None, "", None, has_value=False, message=(
                "holds simulated data (written by a run with --speed other than 1, --start, or a simulated meter); "
                "its monthly peaks would set this real site's contract through the demand ratchet: give a fresh "
                "database (--database or daemon.database)")))
        if marked is None:
            store.set_state(ORIGIN, origin)
    return origin


def run(args: argparse.Namespace) -> int:
    """Run the daemon until --until or a signal; print a one-line summary."""
    from ems.daemon import Service, run_site  # the daemon, planner, solver and store: imported to run, not for --help
    from ems.devices import claim_devices
    from ems.store import engine_url
    cfg = load_site(args.config)
    start = parse_time(args.start, "--start")
    until = parse_time(args.until, "--until")
    if args.speed == 1.0 and start is None:
        clock = WallClock()
    else:
        clock = SimClock(start if start is not None else pd.Timestamp.now(tz="UTC").floor("s"), args.speed)
    if until is not None and until <= clock.now():
        raise DataError(Problem("--until", None, "--until", args.until, f"must be after the start {local_iso(clock.now(), 'UTC')}"))
    found = peaks_history(cfg, args.peaks_history)   # checked before anything starts (the daemon seeds it)
    if found is not None:
        check_history_up_to(found[0], month_of(clock.now(), cfg.tariff.timezone), found[1],
                            "the daemon's start month")
    database = args.database or cfg.daemon.database
    # built first: the devices, register maps and the replay are checked before the database is touched
    service = Service(cfg, clock=clock, config_path=args.config, database=database,
                      dispatch_interval_s=args.dispatch_interval, solver_process=args.solver == "process",
                      peaks_history_csv=args.peaks_history)
    simulated = simulated_run(cfg, clock)
    claim_devices(cfg)   # held for the life of this process: a second daemon on one unit is refused
    origin = claim_database(database, simulated, args.allow_real_db)
    print(f"ems run: store {engine_url(database)} ({origin} data"
          + (", simulated data added: --allow-real-db" if simulated and origin == REAL else "") + ")", file=sys.stderr)
    http = cfg.daemon.http
    if http.enabled:
        where = f"[{http.listen}]" if ":" in http.listen else http.listen
        print(f"ems run: web page and API at http://{where}:{http.port or '<free port, see the http event>'}/"
              + ("" if http.token else " (read only: no daemon.http.token)"), file=sys.stderr)
    daemon = asyncio.run(run_site(cfg, clock=clock, until=until, signals=True, service=service))
    s = daemon.stats
    print(f"daemon stopped at {local_iso(daemon.clock.now(), cfg.zone)}: {s.plans} plans, {s.ticks} dispatch "
          f"ticks, store {daemon.store.url}", file=sys.stderr)
    return 0
