"""End to end: ``ems run``'s service (APScheduler jobs, simulated clock at high speed) against the
in-process simulator over loopback Modbus TCP, for an evening, a night and a departure of the home
site: the departure target is met, every 30-minute window's average import stays within the plan's
peak plus a stated tolerance, the outage reserve is never discharged into, and the store holds what
happened."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pandas as pd
import pytest

from ems.clock import SimClock
from ems.commands.status import collect
from ems.config import load_site
from ems.daemon import Service
from ems.store import Store
from tests.ems.daemon_helpers import run, site_copy

pytestmark = pytest.mark.timeout(180)

#: site, start, end, text replacements in the site file, plans solved in a process (else a thread).
#: Home: Monday; the Leaf arrives 18:30 and leaves 07:30 with 80 %. Office: three cars 08:30-18:00,
#: a demand charge; the reserve made hard.
RUNS = {
    "home": ("home-v2h", "2024-07-08T17:00+09:00", "2024-07-09T08:00+09:00", {}, False),
    "office": ("office-v2b", "2024-07-08T08:00+09:00", "2024-07-08T18:30+09:00", {"mode: soft": "mode: hard"}, True),
}
SPEED = 2400                                       # an hour in 1.5 s
#: Window averages may exceed the guard's target by what one tick of a load change can add before
#: the next tick reacts: at 120 simulated seconds per tick, a 6 kW step for one tick moves a
#: 30-minute average by 6 x 120 / 1800 = 0.4 kW. The guard's own margin (0.5 kW) is below the plan's peak.
WINDOW_TOL_KW = 0.4
#: A floor is checked at the start of a tick; one 120-s tick at 6 kW takes 0.2 kWh more.
RESERVE_TOL_KWH = 0.25


@pytest.fixture(scope="module", params=sorted(RUNS))
def day(request, tmp_path_factory):
    """Run the daemon once per site; collect the simulator's truth and the daemon's records."""
    name, start, until, replace, solver_process = RUNS[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    cfg = load_site(site_copy(tmp, name, **replace))
    out = {}

    async def scenario():
        async with Service(cfg, clock=SimClock(pd.Timestamp(start), SPEED), initial_soc_pct=55,
                           solver_process=solver_process) as svc:
            await svc.serve(pd.Timestamp(until))
            d = svc.daemon
            out.update(energy=dict(svc.sim.sim.model.energy_kwh), windows=list(d.windows), stats=d.stats,
                       interval=d.dispatch_interval_s, now=d.clock.now())
    run(scenario())
    with Store(cfg.daemon.database) as store:
        out.update(telemetry=store.telemetry(), plans=pd.read_sql("select created_at, inputs_json from plans", store.engine),
                   events=store.events(limit=1000), peaks=store.month_peaks(), status=collect(store, cfg, out["now"]))
    out["cfg"] = cfg
    out["hours"] = (pd.Timestamp(until) - pd.Timestamp(start)) / pd.Timedelta(hours=1)
    return out


def test_departure_targets_met(day):
    for v in day["cfg"].vehicles:   # after its departure a car's energy stays as it left
        target = v.target_kwh(v.windows[0])
        # 0.3 kWh: the SOC register's 0.1 % step (0.07 kWh on a 71.4 kWh car) plus the timing of the
        # last ticks before departure at 2400x, where one tick is 120 simulated s of up to 6 kW and a
        # loaded machine delays ticks (seen: 0.11 kWh short once in a full-suite run)
        assert day["energy"][v.id] >= target - 0.3, f"{v.id} left with {day['energy'][v.id]:.2f} kWh, target {target:.2f}"


def test_every_window_within_the_planned_peak(day):
    checked = [w for w in day["windows"] if not math.isnan(w.target_kw) and w.observed_h > 0.45 and not w.grid_down]
    assert len(checked) >= 2 * day["hours"] - 2
    over = [(w.start, round(w.average_kw, 2), round(w.planned_peak_kw, 2)) for w in checked
            if not w.guard_short and w.average_kw > w.target_kw + day["cfg"].daemon.peak_guard_margin_kw + WINDOW_TOL_KW]
    assert over == []
    short = [w for w in checked if w.guard_short]
    assert len(short) <= len(checked) // 4   # only while no car is there to help (before 18:30, after 07:30)


def test_reserve_never_discharged_into(day):
    """Whenever a unit was told to discharge, the plugged cars held the reserve of the plan in force."""
    cfg = day["cfg"]
    t = day["telemetry"].copy()
    plans = day["plans"].assign(created=lambda f: pd.to_datetime(f["created_at"], utc=True, format="ISO8601"))
    mins = {c.id: next(v for v in cfg.vehicles if c.id in v.chargers) for c in cfg.chargers}
    eta = {c.id: c.discharge_efficiency_pct / 100 for c in cfg.chargers}
    t["held"] = [eta[d] * (soc - mins[d].min_soc_pct / 100 * mins[d].capacity_kwh) if p else 0.0
                 for d, soc, p in zip(t["device"], t["soc_kwh"].fillna(0.0), t["plugged"].fillna(False).astype(bool))]
    ticks = t.groupby("ts").agg(held=("held", "sum"), dis=("setpoint_discharge_kw", "sum"))
    checked = 0
    for ts, row in ticks[ticks["dis"] > 0].iterrows():
        plan = plans[plans["created"] <= ts].iloc[-1]
        if json.loads(plan["inputs_json"])["reserve_kwh"] is None:
            continue
        reserve = _reserve_at(plans, plan, ts)
        assert row["held"] >= reserve - RESERVE_TOL_KWH, (ts, row["held"], reserve)
        checked += 1
    if cfg.site.name.startswith("Office"):
        assert checked > 0    # the office discharges against its demand charge: the check did bite
    soc = t.dropna(subset=["soc_kwh"])
    assert all(s >= mins[d].min_soc_pct / 100 * mins[d].capacity_kwh - RESERVE_TOL_KWH for d, s in zip(soc["device"], soc["soc_kwh"]))


def _reserve_at(plans: pd.DataFrame, plan: pd.Series, ts: pd.Timestamp) -> float:
    """The plan's reserve [kWh] for the step holding ``ts`` (plans start on the step holding their creation)."""
    inputs = json.loads(plan["inputs_json"])
    start = plan["created"].floor("30min")
    return float(inputs["reserve_kwh"][int((ts - start) // pd.Timedelta("30min"))])


def test_store_holds_the_run(day):
    t, stats = day["telemetry"], day["stats"]
    units = {c.id for c in day["cfg"].chargers}
    assert len(t) == stats.ticks * len(units) and set(t["device"]) == units
    assert stats.ticks >= 0.5 * day["hours"] * 3600 / day["interval"]    # ticks are skipped while a busy CPU lags
    assert len(day["plans"]) == stats.plans >= 2 * day["hours"] - 1      # every 30 simulated minutes, plus re-plans
    kinds = [e["kind"] for e in day["events"]]
    assert kinds[0] == "stop" and kinds[-1] == "start" and "plug" in kinds
    assert stats.replans.get("plug-in", 0) >= 1 and stats.replans.get("unplug", 0) >= 1
    closed = [w.average_kw for w in day["windows"]]
    assert day["peaks"]["2024-07"] == pytest.approx(max(closed), abs=1e-6)
    st = day["status"]
    assert st["month"] == "2024-07" and st["month_peak_kw"] == day["peaks"]["2024-07"]
    assert set(st["devices"]) == units and not any(r["plugged"] for r in st["devices"].values())   # all left
    gaps = t["ts"].drop_duplicates().diff().dt.total_seconds().dropna() / day["interval"]
    assert np.median(gaps) == pytest.approx(1.0, abs=0.05)    # ticks on the dispatch interval


def test_simulator_down_mid_run_the_daemon_keeps_running_and_takes_control_back(tmp_path):
    cfg = load_site(site_copy(tmp_path))
    seen = {}

    async def scenario():
        # 30 % at 02:00 cannot make 80 % by 07:30: the safe rule charges at full power all along
        clock = SimClock(pd.Timestamp("2024-07-09T02:00+09:00"), 600)
        async with Service(cfg, clock=clock, initial_soc_pct=30, reversion_timeout_s=2) as svc:
            st = svc.sim
            serving = asyncio.create_task(svc.serve(pd.Timestamp("2024-07-09T03:40+09:00")))
            await asyncio.sleep(2.0)
            seen["before"] = st.sim.snapshot().unit("v2h1")
            await asyncio.to_thread(st.call, st.sim.stop)                 # the simulator's server dies
            await asyncio.sleep(3.0)                                      # longer than the unit's 2-s watchdog
            seen["down"] = st.sim.snapshot().unit("v2h1")
            await asyncio.to_thread(st.call, st.sim.start)
            await asyncio.sleep(2.0)
            seen["after"] = st.sim.snapshot().unit("v2h1")
            await serving
            seen["events"] = [e["kind"] for e in svc.store.events(limit=500)]
            seen["reasons"] = svc.store.telemetry()["reason"].tolist()
    run(scenario())
    assert seen["before"].charge_kw > 0 and seen["before"].remote_enabled
    assert seen["down"].reverted and seen["down"].setpoint_kw == 0 and seen["down"].charge_kw == 0
    assert seen["after"].charge_kw > 0 and not seen["after"].reverted
    assert {"device-fault", "device-recovered"} <= set(seen["events"])
    assert "unreachable" in seen["reasons"] and seen["reasons"][-1] in ("plan", "peak-guard", "fallback")
