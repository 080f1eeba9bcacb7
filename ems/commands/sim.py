"""``ems sim --config CONFIG``: serve the site's simulated V2H units and meter over Modbus TCP.

Every charger whose adapter is ``simulator`` becomes one Modbus unit id (SunSpec-shaped, or the
map its ``profile`` names); the site meter is unit 240. Any Modbus client can talk to it, e.g.
``mbpoll -m tcp -p 5020 -a 1 -0 -r 40000 -c 4 -t 4:hex -1 127.0.0.1`` reads the "SunS" marker.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import signal
import sys

from adapters.sim import Simulator, SiteSnapshot
from ems.commands.argtypes import integer, number
from ems.config import load_site
from ems.devices import METER_UNIT_ID, sim_site

NAME = "sim"
HELP = "serve the site's simulated V2H units and meter over Modbus TCP (until Ctrl-C)"


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or value != value:
        raise argparse.ArgumentTypeError(f"must be a number > 0; got {text}")
    return value


def _aware(text: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if t.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a UTC offset, e.g. 2025-01-06T18:00+09:00; got {text!r}")
    return t


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments: the site config, where to listen, the simulated clock, the load replay."""
    p.add_argument("--config", required=True, metavar="CONFIG", help="site YAML file")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; Modbus has no authentication)")
    p.add_argument("--port", type=integer(0, 65535), default=5020, help="TCP port (default 5020; 0 = any free port)")
    p.add_argument("--serial", metavar="DEVICE", help="serve Modbus RTU on this serial device instead of TCP")
    p.add_argument("--baudrate", type=integer(300, 4_000_000), default=19200, help="RTU baud rate (default 19200)")
    p.add_argument("--parity", choices=("N", "E", "O"), default="E", help="RTU parity (default E, 8 data bits, 1 stop bit)")
    p.add_argument("--speed", type=_positive, default=1.0, help="simulated seconds per real second (default 1)")
    p.add_argument("--replay", metavar="DATA.csv", help="load/PV history to replay (default: the site's load.history_csv)")
    p.add_argument("--start", type=_aware, help="simulated start time, ISO 8601 with offset (default: now)")
    p.add_argument("--initial-soc", type=number(0.0, 100.0), metavar="PCT", help="SOC of every vehicle at start [%%] (default: mid-window)")
    p.add_argument("--duration", type=_positive, metavar="S", help="stop after S real seconds (default: run until Ctrl-C)")
    p.add_argument("--status-every", type=number(0.0, 86400.0), default=10.0, metavar="S",
                   help="print the site state every S seconds (0: never)")


def status_line(snap: SiteSnapshot, zone: dt.tzinfo) -> str:
    """One line: simulated local time, meter (+ import) and each unit's vehicle, SOC and power."""
    parts = [f"{snap.time.astimezone(zone):%a %Y-%m-%d %H:%M:%S %Z}", f"grid {'up' if snap.grid_up else 'DOWN'}",
             f"meter {snap.meter_kw:+.2f} kW"]
    for u in snap.units:
        soc = "-" if u.soc_pct is None else f"{u.soc_pct:.1f} %"
        flow = f"charge {u.charge_kw:.2f}" if u.charge_kw > 0 else f"discharge {u.discharge_kw:.2f}"
        parts.append(f"{u.name}[{u.unit_id}] {u.vehicle or 'no vehicle'} {soc} {flow} kW")
    return " | ".join(parts)


async def serve(sim: Simulator, duration_s: float | None, status_every_s: float, zone: dt.tzinfo) -> None:
    """Run the simulator until SIGINT/SIGTERM or ``duration_s``; print status lines."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with sim:
            ids = ", ".join(f"unit {uid} = {name}" for name, uid in sim.unit_ids().items())
            where = f"Modbus RTU on {sim.serial[0]}" if sim.serial else f"listening on {sim.host}:{sim.port}"
            print(f"simulator {where} ({ids}); speed x{sim.site.speed:g}", flush=True)
            deadline = None if duration_s is None else loop.time() + duration_s
            while not stop.is_set():
                timeout = status_every_s if status_every_s > 0 else None
                if deadline is not None:
                    if deadline - loop.time() <= 0:
                        break
                    timeout = min(timeout or math.inf, deadline - loop.time())
                try:
                    await asyncio.wait_for(stop.wait(), timeout)
                except asyncio.TimeoutError:
                    if status_every_s > 0:
                        print(status_line(sim.snapshot(), zone), flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    """Build the simulated site from the config and serve it."""
    cfg = load_site(args.config)
    site = sim_site(cfg, replay=args.replay, speed=args.speed, start=args.start, initial_soc_pct=args.initial_soc)
    if not site.units:
        print(f"{args.config}: no charger uses the simulator adapter (adapter: {{kind: simulator}}); nothing to serve",
              file=sys.stderr)
        return 2
    sim = Simulator(site, host=args.host, port=args.port, serial_port=args.serial, baudrate=args.baudrate,
                    parity=args.parity)
    try:
        asyncio.run(serve(sim, args.duration, args.status_every, cfg.zone))
    except (RuntimeError, OSError) as exc:  # pymodbus: "Could not start listen"; a serial device refusing
        where = f"Modbus RTU on {args.serial}" if args.serial else f"{args.host}:{args.port}"
        print(f"error: cannot serve {where}: {exc} (in use? unsupported settings?)", file=sys.stderr)
        return 1
    print(f"simulator stopped (meter unit {METER_UNIT_ID})", flush=True)
    return 0
