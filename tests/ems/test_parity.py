"""Parity: the daemon and the study's ``mpc`` run the same rules, so over the same days and data they
bill the same (issue 11, item 3).

Two simulated working days of the office (``configs/office-v2b.yaml``: three driver-owned cars
08:30-18:00, a 30-minute demand charge, 30-minute steps, 48-h horizon), Tuesday 2024-07-09 00:00 to
Thursday 00:00 (JST), on its own 2024 load and PV (``configs/data/office-2024-30min.csv``):

- the daemon: ``ems run``'s :class:`~ems.daemon.Service` (the in-process simulator replaying the file's
  load and PV over loopback Modbus TCP, the SQLite store, the Daemon's job methods) on a
  :class:`~ems.clock.ManualClock`, driven the way the scheduler drives it (:func:`run_daemon`): a
  dispatch tick every ``TICK_S`` simulated seconds, the plan job and then the forecast job at every
  :00/:30 (after that boundary's tick), a re-plan right after any tick that asks for one. A manual
  clock, not ``--speed``, so the result does not depend on how busy the machine is
  (``bench/parity.py`` runs the real scheduler at 2400x for the same comparison). Billed from its
  metered 30-minute windows (the meter's energy counter);
- the study: :func:`ems.study.run.run_scenario` with strategy ``mpc`` over exactly the two days.

Both start alike: no peak in the store or in the study's month state (no peaks history), no car plugged
in at midnight (each arrives with its configured arrival SOC), the same history before every forecast
origin (the study's ``mpc_history``, the config's history before the span plus the span, is the config's
file up to the span's end; the forecaster reads only rows before the origin), the same load and PV
(the simulator replays the very file the span is cut from).

Different by design: the daemon ticks every ``TICK_S`` s within a step and its demand guard works
from the metered window energy, where the study applies one setpoint per step against the step's mean
load; the daemon plans from SOC read over Modbus (0.1 % registers) and carried to the step start,
carries a measured forecast miss into its next plan (``forecast-miss``) and re-plans on plug events,
where the study plans every step from exact state; units ramp (20 %/s) in the simulator. With a flat
energy price the LP is indifferent to when below the peak a car charges, so the two charge in
different half hours; the totals agree.

The bills are ``compute_bill`` of each side's 30-minute import over the two days under the site's
tariff: the month's basic charge at the span's peak plus the span's energy and levy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ems.billing import compute_bill
from ems.clock import ManualClock
from ems.config import SiteConfig, load_site
from ems.daemon import Service
from ems.devices import load_replay
from ems.forecast.site import site_history
from ems.planning import holiday_calendar
from ems.study.run import Scenario, ScenarioResult, mpc_history, run_scenario, site_span
from ems.vehicles import stays
from tests.ems.daemon_helpers import run, site_copy

pytestmark = pytest.mark.timeout(240)

SITE = "office-v2b"
START = pd.Timestamp("2024-07-09T00:00+09:00")   # a Tuesday (no holiday in the week)
END = pd.Timestamp("2024-07-11T00:00+09:00")     # Thursday 00:00: two whole working days
#: Simulated seconds between dispatch ticks (the daemon's default is 5 s; at 2400x ``ems run`` ticks
#: every 120 s). 60 s keeps the daemon's part near 25 s on a 2-core machine.
TICK_S = 60.0
BILL_TOL = 0.01      # issue 11: the two bills within 1 %
#: A departure counts as missed below target by more than this [kWh]: the study's own 0.01 kWh, and
#: for the daemon the SOC register's 0.1 % step (0.07 kWh on the 71.4 kWh bZ4X).
STUDY_TOL_KWH, DAEMON_TOL_KWH = 0.01, 0.1


def span_csv(cfg: SiteConfig, start: pd.Timestamp, end: pd.Timestamp, path: Path) -> Path:
    """The rows of the site's ``load.history_csv`` in [start, end) as a study data file."""
    df = pd.read_csv(cfg.load.history_csv)
    ts = pd.to_datetime(df["timestamp"], format="ISO8601", utc=True)
    df[(ts >= start) & (ts < end)].to_csv(path, index=False)
    return path


def departures(cfg: SiteConfig, start: pd.Timestamp, end: pd.Timestamp) -> list[tuple[str, pd.Timestamp, float]]:
    """(vehicle, departure, target kWh) of every configured stay leaving in (start, end]."""
    is_holiday = holiday_calendar(cfg.tariff)
    return [(v.id, s.depart, s.target_kwh) for v in cfg.vehicles for s in stays(v, start, end, cfg.zone, is_holiday)
            if start < s.depart <= end]


def run_daemon(cfg: SiteConfig, start: pd.Timestamp, end: pd.Timestamp, tick_s: float = TICK_S) -> dict:
    """The daemon from ``start`` to ``end`` on a manual clock, as its scheduler drives it (module docstring).

    Returns the closed windows in [start, end), the energy each car left with at each departure, the
    store's peaks at start, the plans' inputs, event kinds, statistics and the wall time."""
    clock = ManualClock(start)
    step = pd.Timedelta(minutes=cfg.planner.step_minutes)
    leaving: dict[pd.Timestamp, list[str]] = {}
    for vid, dep, _ in departures(cfg, start, end):
        leaving.setdefault(dep, []).append(vid)
    out: dict = {"left_kwh": {}}

    async def go():
        # the units' watchdog (real seconds, here the manual clock's) well above a tick
        async with Service(cfg, clock=clock, dispatch_interval_s=tick_s, reversion_timeout_s=10 * tick_s) as svc:
            d, model = svc.daemon, svc.sim.sim.model
            out["peaks_at_start"] = svc.store.month_peak_sources()
            t0 = time.perf_counter()
            while clock.now() <= end:   # the tick at `end` closes the last window
                now = clock.now()
                await d.dispatch_once()
                if now > start and (now - start) % step == pd.Timedelta(0):
                    await d.plan_once(d.replan_reason or "scheduled")   # the plan job, then the forecast job
                    await d.refresh_forecast()
                elif d.replan_reason is not None:
                    await d.plan_once(d.replan_reason)
                await d.heartbeat_once()
                for vid in leaving.get(now, []):   # the simulator has just unplugged it: what it left with
                    out["left_kwh"][(vid, now)] = model.energy_kwh[vid]
                clock.timeleap(tick_s)
            out["wall_s"] = time.perf_counter() - t0
            out.update(windows=[w for w in d.windows if start <= w.start < end], stats=d.stats,
                       sim_import_kwh=model.import_kwh,
                       plans=pd.read_sql("select start, inputs_json from plans", svc.store.engine),
                       events=[e["kind"] for e in svc.store.events(limit=100000)])
    run(go())
    return out


def daemon_meter(windows) -> pd.DataFrame:
    """The daemon's metered 30-minute windows as a meter series [kW] (no export at this site)."""
    idx = pd.DatetimeIndex([w.start for w in windows])
    return pd.DataFrame({"import_kw": [w.average_kw for w in windows], "export_kw": 0.0}, index=idx)


def study_left_kwh(res: ScenarioResult, deps) -> dict:
    """What each car left the study with at each departure [kWh] (SOC at the boundary)."""
    pos = {vid: i for i, vid in enumerate(res.vehicles)}
    k = {dep: res.index.get_loc(dep) if dep in res.index else len(res.index) for _, dep, _ in deps}
    return {(vid, dep): float(res.soc_kwh[pos[vid], k[dep]]) for vid, dep, _ in deps}


def compare(cfg: SiteConfig, study: ScenarioResult, daemon: dict) -> dict:
    """The figures of both sides: bill (total and parts), peak, import, the cars' energy."""
    bills = {"study": compute_bill(study.meter(), cfg.tariff),
             "daemon": compute_bill(daemon_meter(daemon["windows"]), cfg.tariff)}
    dt_h = 0.5
    figures = {}
    for side, bill in bills.items():
        m = bill.months[0]
        figures[side] = {"bill": bill.total, "basic": m.basic, "energy_and_levy": m.total - m.basic,
                         "peak_kw": m.peak_kw, "import_kwh": m.import_kwh}
    figures["study"].update(discharged_kwh=study.figures["vehicle_discharged_kwh"],
                            charged_kwh=study.figures["vehicle_charged_kwh"])
    figures["daemon"].update(discharged_kwh=daemon["stats"].discharged_kwh, charged_kwh=daemon["stats"].charged_kwh)
    figures["bill_difference_pct"] = 100 * (figures["daemon"]["bill"] / figures["study"]["bill"] - 1)
    per_step = pd.DataFrame({"base_kw": study.load_kw - study.pv_kw, "study_kw": study.import_kw,
                             "daemon_kw": daemon_meter(daemon["windows"])["import_kw"].to_numpy()},
                            index=study.index)
    figures["per_step"] = per_step.assign(diff_kw=per_step["daemon_kw"] - per_step["study_kw"])
    assert abs(per_step["study_kw"].sum() * dt_h - figures["study"]["import_kwh"]) < 1e-6
    return figures


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity")
    config = site_copy(tmp, SITE)
    cfg = load_site(config)
    data = span_csv(cfg, START, END, tmp / "office-two-days.csv")
    t0 = time.perf_counter()
    study = run_scenario(Scenario(str(config), str(data), None, "mpc"))
    study_s = time.perf_counter() - t0
    daemon = run_daemon(cfg, START, END)
    figures = compare(cfg, study, daemon)
    deps = departures(cfg, START, END)
    shown = {side: {k: round(v, 2) for k, v in figures[side].items()} for side in ("study", "daemon")}
    print(f"\nparity {START:%Y-%m-%d} - {END - pd.Timedelta(days=1):%Y-%m-%d}: study {study_s:.1f} s, daemon "
          f"{daemon['wall_s']:.1f} s; bill difference {figures['bill_difference_pct']:+.3f} %\n"
          f"{json.dumps(shown, indent=1)}")
    return {"cfg": cfg, "config": str(config), "data": str(data), "study": study, "daemon": daemon, "figures": figures,
            "deps": deps, "study_left": study_left_kwh(study, deps)}


def test_both_start_alike_on_the_same_data(parity):
    cfg, study, daemon = parity["cfg"], parity["study"], parity["daemon"]
    assert daemon["peaks_at_start"] == {}                      # nothing seeded, nothing metered: like the study
    assert cfg.peaks_history_csv is None
    span = site_span(parity["config"], None, parity["data"])
    assert span.index[0] == START and span.end == END
    seen_by_study = mpc_history(cfg, span)
    seen_by_daemon = site_history(cfg)                        # the daemon's forecaster history
    seen_by_daemon = seen_by_daemon[seen_by_daemon.index < END]
    pd.testing.assert_frame_equal(seen_by_study[["load_kw", "pv_kw"]], seen_by_daemon[["load_kw", "pv_kw"]],
                                  check_freq=False)
    replay = load_replay(cfg.load.history_csv)                # what the simulator's building draws
    drawn = np.array([replay.at(t.to_pydatetime()) for t in study.index])
    np.testing.assert_allclose(drawn[:, 0], study.load_kw, atol=1e-9)
    np.testing.assert_allclose(drawn[:, 1], study.pv_kw, atol=1e-9)


def test_the_daemon_metered_every_window(parity):
    windows = parity["daemon"]["windows"]
    assert len(windows) == len(parity["study"].index) == 96
    assert all(abs(w.observed_h - 0.5) < 1e-9 and w.estimated_kwh == 0 for w in windows)
    metered = sum(w.import_kwh for w in windows)               # the meter's counter agrees with the simulator's truth
    assert metered == pytest.approx(parity["daemon"]["sim_import_kwh"], abs=0.05)


def test_windows_without_a_car_are_metered_alike(parity):
    """No car plugged in (nights): both meter the building alone, the same load - PV to 0.01 kW."""
    steps = parity["figures"]["per_step"]
    alone = ~parity["study"].plugged.any(axis=0)
    assert alone.sum() > 40
    off = steps[alone & (steps["diff_kw"].abs().to_numpy() > 0.01)]
    assert off.empty, off


def test_every_plan_forecasts_from_its_own_step(parity):
    """Like the study's mpc, which forecasts at every step: no plan uses the previous step's forecast
    (the plan job used to run first at a boundary and take the forecast of one refresh period ago)."""
    plans = parity["daemon"]["plans"]
    origins = pd.to_datetime([json.loads(x)["forecast_origin"] for x in plans["inputs_json"]], utc=True,
                             format="ISO8601")
    starts = pd.to_datetime(plans["start"], utc=True, format="ISO8601")
    assert len(plans) >= len(parity["study"].index)
    assert list(origins) == list(starts)


def test_both_follow_their_plans_and_both_discharge(parity):
    study, daemon = parity["study"], parity["daemon"]
    assert study.figures["plan_fallbacks"] == 0 and study.figures["steps_without_forecast"] == 0
    assert "fallback" not in daemon["events"] and "infeasible" not in daemon["events"]
    for side in ("study", "daemon"):   # the cars shaved the peak on both sides (the bill test has teeth)
        assert parity["figures"][side]["discharged_kwh"] > 1.0, side


def test_no_departure_missed_on_either_side(parity):
    deps, study, daemon = parity["deps"], parity["study"], parity["daemon"]
    assert len(deps) == 6
    assert study.figures["departure_targets_missed"] == 0, study.figures["missed"]
    short = [(vid, str(dep), round(target - parity["study_left"][(vid, dep)], 3)) for vid, dep, target in deps
             if parity["study_left"][(vid, dep)] < target - STUDY_TOL_KWH]
    short += [(vid, str(dep), round(target - daemon["left_kwh"][(vid, dep)], 3)) for vid, dep, target in deps
              if daemon["left_kwh"][(vid, dep)] < target - DAEMON_TOL_KWH]
    assert short == []


def test_a_replan_asked_for_during_a_plan_runs_after_it(tmp_path):
    """Found by the real scheduler (bench/parity.py): at 08:30 the plan job solved while the tick at
    the same boundary saw the cars plug in; the scheduler skipped the plug-in re-plan (the job was
    running) and the plan made without the cars' SOC held the guard at 26 kW for half an hour (bill
    +15 % against the study). The plan job now runs such a re-plan right after."""
    cfg = load_site(site_copy(tmp_path, SITE))
    reasons = []

    async def go():
        async with Service(cfg, clock=ManualClock(START + pd.Timedelta(hours=8, minutes=30))) as svc:
            d = svc.daemon
            solve = d.plan_once

            async def plan_once(reason="scheduled"):
                reasons.append(reason)
                plan = await solve(reason)
                if len(reasons) == 1:
                    d.request_replan("plug-in")   # as a dispatch tick would while the solver runs
                return plan
            d.plan_once = plan_once
            sched = svc._schedule()                # not started: its plan job is called as the scheduler would
            await sched.get_job("plan").func()
            assert d.replan_reason is None
    run(go())
    assert reasons == ["scheduled", "plug-in"]


def test_bills_within_one_percent(parity):
    f = parity["figures"]
    steps = f["per_step"]
    differ = steps[steps["diff_kw"].abs() > 0.5].round(2)
    assert abs(f["bill_difference_pct"]) <= 100 * BILL_TOL, (
        f"daemon {f['daemon']} vs study {f['study']}; half hours that differ by more than 0.5 kW:\n{differ}")
