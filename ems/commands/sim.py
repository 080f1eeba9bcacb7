"""``ems sim --config CONFIG``: serve the site's simulated V2H units and meter over Modbus TCP.

Every charger whose adapter is ``simulator`` becomes one Modbus unit id (SunSpec-shaped, or the
map its ``profile`` names); the site meter is unit 240. Any Modbus client can talk to it, e.g.
``mbpoll -m tcp -p 5020 -a 1 -0 -r 40000 -c 4 -t 4:hex -1 127.0.0.1`` reads the "SunS" marker.

``--protocol echonet`` serves the site as one ECHONET Lite node instead
(:class:`~adapters.sim.echonet.EchonetSimulator`): every charger whose adapter is ``echonet_lite``
becomes a 0x027E object with its configured ``instance``, the meter 0x028801 (and 0x028A01), on
the host and port those adapters name (3610 by default), with the same physics and faults.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import signal
import sys

from adapters.sim import Simulator, SiteSnapshot
from adapters.sim.echonet import EchonetSimulator
from ems.commands.argtypes import SPEED, aware_time, integer, number
from ems.config import load_site
from ems.devices import METER_UNIT_ID, sim_address, sim_site
from ems.errors import DataError

NAME = "sim"
HELP = "serve the site's simulated V2H units and meter over Modbus TCP or ECHONET Lite (until Ctrl-C)"


def _aware(text: str) -> dt.datetime:
    """``--start``: :func:`~ems.commands.argtypes.aware_time` as an argparse type."""
    try:
        return aware_time(text, "--start").to_pydatetime()
    except DataError as exc:
        raise argparse.ArgumentTypeError(exc.problems[0].message + f"; got {text[:40]!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments: the site config, where to listen, the simulated clock, the load replay."""
    p.add_argument("--config", required=True, metavar="CONFIG", help="site YAML file")
    p.add_argument("--protocol", choices=("modbus", "echonet"), default="modbus",
                   help="modbus (default): the simulator-adapter chargers over Modbus; echonet: the echonet_lite ones "
                        "as an ECHONET Lite node")
    p.add_argument("--host", help="interface to bind (default 127.0.0.1, echonet: the chargers' host; neither protocol "
                                  "has authentication)")
    p.add_argument("--port", type=integer(0, 65535), help="TCP port (default 5020), echonet: UDP port (default: the "
                                                          "chargers' port, 3610); 0 = any free port")
    p.add_argument("--multicast", action="store_true", help="echonet: announce to 224.0.23.0 too (and, bound to "
                                                            "0.0.0.0, answer multicast discovery)")
    p.add_argument("--serial", metavar="DEVICE", help="serve Modbus RTU on this serial device instead of TCP")
    p.add_argument("--baudrate", type=integer(300, 4_000_000), default=19200, help="RTU baud rate (default 19200)")
    p.add_argument("--parity", choices=("N", "E", "O"), default="E", help="RTU parity (default E, 8 data bits, 1 stop bit)")
    p.add_argument("--speed", type=SPEED, default=1.0, help="simulated seconds per real second (default 1)")
    p.add_argument("--replay", metavar="DATA.csv", help="load/PV history to replay (default: the site's load.history_csv)")
    p.add_argument("--start", type=_aware, help="simulated start time, ISO 8601 with offset (default: now)")
    p.add_argument("--initial-soc", type=number(0.0, 100.0), metavar="PCT", help="SOC of every vehicle at start [%%] (default: mid-window)")
    p.add_argument("--duration", type=number(0.0, 1e9, lo_open=True), metavar="S",
                   help="stop after S real seconds (default: run until Ctrl-C)")
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
            echonet = isinstance(sim, EchonetSimulator)
            ids = ", ".join(f"{'instance' if echonet else 'unit'} {uid} = {name}" for name, uid in sim.unit_ids().items())
            where = f"Modbus RTU on {sim.serial[0]}" if sim.serial else \
                f"{'ECHONET Lite node on UDP' if echonet else 'listening on'} {sim.host}:{sim.port}"
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
    site = sim_site(cfg, replay=args.replay, speed=args.speed, start=args.start, initial_soc_pct=args.initial_soc,
                    protocol=args.protocol)
    kind = "simulator" if args.protocol == "modbus" else "echonet_lite"
    if not site.units:
        print(f"{args.config}: no charger uses the {kind} adapter (adapter: {{kind: {kind}}}); nothing to serve",
              file=sys.stderr)
        return 2
    if args.protocol == "echonet":
        if args.serial:
            print("error: --serial is Modbus RTU; ECHONET Lite runs over UDP", file=sys.stderr)
            return 2
        host, port = sim_address(cfg, "echonet")
        args.host, args.port = args.host or host, port if args.port is None else args.port
        sim: Simulator = EchonetSimulator(site, host=args.host, port=args.port, multicast=args.multicast, zone=cfg.zone)
    else:
        args.host, args.port = args.host or "127.0.0.1", 5020 if args.port is None else args.port
        sim = Simulator(site, host=args.host, port=args.port, serial_port=args.serial, baudrate=args.baudrate,
                        parity=args.parity)
    try:
        asyncio.run(serve(sim, args.duration, args.status_every, cfg.zone))
    except (RuntimeError, OSError) as exc:  # pymodbus: "Could not start listen"; a serial device refusing
        where = f"Modbus RTU on {args.serial}" if args.serial else f"{args.host}:{args.port}"
        print(f"error: cannot serve {where}: {exc} (in use? unsupported settings?)", file=sys.stderr)
        return 1
    meter = f"unit {METER_UNIT_ID}" if args.protocol == "modbus" else "0x028801 / 0x028A01"
    print(f"simulator stopped (meter {meter})", flush=True)
    return 0
