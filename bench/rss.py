"""Resident memory of a real ``ems run`` (every process it starts): prints one JSON object.

Runs ``ems run`` on the office site at ``--speed`` (default 2400x) for ``--days`` simulated days
(default 7) from 1 July 2024, with ``--solver`` (default: ``process``, the default of ``ems run``),
in a temporary state directory, and samples the resident memory of the daemon and all its child
processes (the solver worker, multiprocessing's resource tracker) every 2 s of wall time [MB].

Usage: .venv/bin/python bench/rss.py [--days N] [--speed X] [--solver process|thread]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parent.parent
START = pd.Timestamp("2024-07-01T00:00+09:00")
SAMPLE_S = 2.0


def total_rss_mb(proc: psutil.Process) -> tuple[float, int]:
    """Resident memory of ``proc`` and its children [MB], and how many processes that is."""
    procs = [proc] + proc.children(recursive=True)
    return sum(p.memory_info().rss for p in procs) / 2**20, len(procs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--speed", type=float, default=2400.0)
    ap.add_argument("--solver", choices=("process", "thread"), default="process")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ems-rss-") as tmp:
        until = START + pd.Timedelta(days=args.days)
        cmd = [sys.executable, "-m", "ems.cli", "run", "--config", str(ROOT / "configs/office-v2b.yaml"),
               "--speed", str(args.speed), "--solver", args.solver, "--start", START.isoformat(),
               "--until", until.isoformat(), "--database", f"{tmp}/rss.sqlite"]
        env = dict(os.environ, STATE_DIRECTORY=tmp, EMS_LOCK_DIR=tmp)
        run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        proc, t0, samples = psutil.Process(run.pid), time.perf_counter(), []
        while run.poll() is None:
            try:
                mb, n = total_rss_mb(proc)
                samples.append((round(time.perf_counter() - t0, 1), round(mb, 1), n))
            except psutil.Error:   # a child ended between listing and reading: the next sample
                pass
            time.sleep(SAMPLE_S)
    steady = [mb for _, mb, _ in samples[len(samples) // 4:]]
    print(json.dumps({"site": "office-v2b", "solver": args.solver, "simulated_days": args.days, "speed": args.speed,
                      "exit_code": run.returncode, "wall_s": round(time.perf_counter() - t0, 1),
                      "max_total_rss_mb": max(mb for _, mb, _ in samples),
                      "steady_min_max_mb": [min(steady), max(steady)], "processes": max(n for _, _, n in samples),
                      "samples": len(samples)}, indent=1))


if __name__ == "__main__":
    main()
