"""Helpers for the daemon tests: a site on a manual clock (daemon and simulator move together when
the clock leaps), a config copy in a temporary directory, and an asyncio runner that fails on
leftover tasks."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ems.clock import ManualClock
from ems.config import SiteConfig
from ems.daemon import Service

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def run(coro) -> object:
    """``asyncio.run`` that fails if the coroutine leaves tasks behind."""
    async def main():
        result = await coro
        me = asyncio.current_task()
        left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        assert not left, f"tasks left behind: {left}"
        return result
    return asyncio.run(main())


def site_copy(tmp_path: Path, name: str = "home-v2h", **replace: str) -> Path:
    """The example site ``name`` copied to ``tmp_path`` (paths made absolute, the database in tmp_path),
    with text replacements ``old=new`` applied (keys are regular expressions)."""
    text = (CONFIGS / f"{name}.yaml").read_text()
    text = re.sub(r"^tariff: (\S+)", lambda m: f"tariff: {CONFIGS / m.group(1)}", text, flags=re.M)
    text = re.sub(r"history_csv: (\S+)", lambda m: f"history_csv: {(CONFIGS / m.group(1)).resolve()}", text)
    db = f"  database: {tmp_path / 'ems.sqlite'}\n"
    text, n = re.subn(r"^daemon:\n", "daemon:\n" + db, text, flags=re.M)
    text += "" if n else "daemon:\n" + db
    for old, new in replace.items():
        text, n = re.subn(old, new, text, flags=re.M)
        assert n, f"{old!r} not in {name}.yaml"
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def constant_replay(tmp_path: Path, start: str, days: int, load_kw: float, pv_kw: float = 0.0) -> str:
    """A replay CSV with constant load and PV [kW] (30-minute steps) from ``start``."""
    idx = pd.date_range(pd.Timestamp(start) - pd.Timedelta(days=1), periods=48 * (days + 2), freq="30min")
    path = tmp_path / "replay.csv"
    pd.DataFrame({"timestamp": [t.isoformat() for t in idx], "load_kw": np.full(len(idx), load_kw),
                  "pv_kw": np.full(len(idx), pv_kw)}).to_csv(path, index=False)
    return str(path)


def manual_service(cfg: SiteConfig, start: str, **kw) -> tuple[Service, ManualClock]:
    """A service on a manual clock; the simulator follows the same clock."""
    clock = ManualClock(pd.Timestamp(start))
    return Service(cfg, clock=clock, **kw), clock


def set_load(svc: Service, load_kw: float, pv_kw: float = 0.0) -> None:
    """Replace the simulated building load and PV by constants [kW] (no replay)."""
    import dataclasses
    model = svc.sim.sim.model
    model.p = dataclasses.replace(model.p, replay=None, load_kw=load_kw, pv_kw=pv_kw)
