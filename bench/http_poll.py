"""Dispatch tick latency while the web page polls (issue 12): prints one JSON object (no pass/fail).

The office site through the real service (``ems run``'s jobs, plans in the worker process, the
simulator over loopback Modbus TCP, SQLite) on a simulated clock at ``--speed`` (default 120x: a tick
every 6 simulated s, 50 ms of real time), for ``--seconds`` real seconds, twice: alone, then with a
client doing what the page does, only faster: ``/api/status`` every second (``--poll-s``),
``/api/events`` and ``/api/bill`` every 10 s, ``/chart.svg`` and ``/metrics`` every 10 s. Each run:
ticks, tick latency median / p99 / max [ms], skipped scheduler runs, and the requests served with
their median and p99 latency [ms].

Usage: .venv/bin/python bench/http_poll.py [--speed X] [--seconds S] [--poll-s S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ems.clock import SimClock  # noqa: E402
from ems.daemon import Service  # noqa: E402
from tests.ems.http_helpers import http_site  # noqa: E402

START = pd.Timestamp("2024-07-09T09:00+09:00")   # Tuesday: three cars plugged in, the building near its peak


def poller(base: str, stop: threading.Event, poll_s: float, latencies: list[float]) -> None:
    """Fetch like the page does (status every poll_s; events, bill, chart, metrics every 10 polls)."""
    n = 0
    while not stop.is_set():
        paths = ["api/status"] + (["api/events?limit=20", "api/bill", "chart.svg", "metrics"] if n % 10 == 0 else [])
        for p in paths:
            t0 = time.perf_counter()
            with urllib.request.urlopen(base + p, timeout=10) as r:
                r.read()
            latencies.append(time.perf_counter() - t0)
        n += 1
        stop.wait(poll_s)


def one_run(speed: float, seconds: float, poll_s: float | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        svc = Service(http_site(Path(tmp), "office-v2b"), clock=SimClock(START, speed), initial_soc_pct=60,
                      solver_process=True)
        requests: list[float] = []

        async def main() -> None:
            async with svc:
                task = asyncio.create_task(svc.serve(START + pd.Timedelta(seconds=seconds * speed)))
                while svc.http is None or svc.http.url is None:
                    await asyncio.sleep(0.01)
                stop = threading.Event()
                client = threading.Thread(target=poller, args=(svc.http.url, stop, poll_s, requests)) if poll_s else None
                if client is not None:
                    client.start()
                await task
                stop.set()
                if client is not None:
                    await asyncio.to_thread(client.join)

        asyncio.run(main())
        d = svc.daemon
        ticks = np.array(d.stats.tick_seconds) * 1000
        out = {"ticks": int(d.stats.ticks), "tick_median_ms": round(float(np.median(ticks)), 1),
               "tick_p99_ms": round(float(np.quantile(ticks, 0.99)), 1), "tick_max_ms": round(float(ticks.max()), 1),
               "skipped_jobs": d.stats.skipped_jobs, "plans": d.stats.plans}
        if requests:
            ms = np.array(requests) * 1000
            out |= {"requests": len(ms), "request_median_ms": round(float(np.median(ms)), 1),
                    "request_p99_ms": round(float(np.quantile(ms, 0.99)), 1)}
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speed", type=float, default=120.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--poll-s", type=float, default=1.0)
    args = ap.parse_args()
    print(json.dumps({"speed": args.speed, "seconds": args.seconds, "alone": one_run(args.speed, args.seconds, None),
                      "page_polling": one_run(args.speed, args.seconds, args.poll_s)}, indent=2))


if __name__ == "__main__":
    main()
