"""The daemon cycle by cycle on a manual clock, against the simulated site over real loopback Modbus:
feed measurements (load, SOC, grid, faults in the simulator), run one job, expect setpoints,
events and store rows. The simulator follows the same manual clock, so nothing depends on timing."""

from __future__ import annotations

import pandas as pd
import pytest

from ems.config import load_site
from ems.daemon import SimTimeTrigger, WindowAccount
from ems.clock import ManualClock, SimClock
from ems.commands.status import collect
from tests.ems.daemon_helpers import constant_replay, manual_service, run, set_load, site_copy

pytestmark = pytest.mark.timeout(120)

EVENING = "2024-07-08T19:00+09:00"        # Monday: the Leaf has been plugged in since 18:30
NIGHT = "2024-07-09T02:00+09:00"          # 30 % needs 5.4 h at 6 kW to reach 80 % by 07:30: charging now


def kinds(svc) -> list[str]:
    return [e["kind"] for e in svc.store.events(limit=500)]


@pytest.fixture
def home(tmp_path):
    return load_site(site_copy(tmp_path))


def test_ticks_follow_the_plan_then_the_guard_holds_the_window(home, tmp_path):
    svc, clock = manual_service(home, EVENING, initial_soc_pct=60, replay=constant_replay(tmp_path, EVENING, 3, 0.5))

    async def scenario():
        async with svc:
            d = svc.daemon
            assert d.plan is not None and d.plan.unusable is None and kinds(svc)[-1] == "start"
            row = d.plan.row(clock.now())
            sp = (await d.dispatch_once())[0]
            assert sp.reason == "plan"
            assert (sp.charge_kw, sp.discharge_kw) == pytest.approx((row["v2h1_charge_kw"], row["v2h1_discharge_kw"]), abs=0.05)
            clock.timeleap(5)
            # a 9 kW kettle-and-oven surge the forecast did not see: the guard discharges the car
            set_load(svc, 9.0)
            clock.timeleap(5)
            sp = (await d.dispatch_once())[0]
            target = d._guard_target_kw(clock.now())
            assert sp.reason == "peak-guard" and sp.discharge_kw > 0
            clock.timeleap(10)  # the unit ramps (20 %/s)
            snap = svc.sim.sim.snapshot()
            assert snap.unit("v2h1").discharge_kw == pytest.approx(sp.discharge_kw, abs=0.08)
            for _ in range(30):
                clock.timeleap(20)
                await d.dispatch_once()
            assert d.window.current.import_kwh / 0.5 <= target + 0.1   # the window average holds so far
            rows = svc.store.telemetry()
            assert len(rows) == d.stats.ticks and set(rows["device"]) == {"v2h1"}
            assert "forecast-miss" in kinds(svc) and d.replan_reason == "forecast-miss"
    run(scenario())


def test_plug_in_asks_for_a_replan_and_the_new_plan_knows_the_soc(home, tmp_path):
    svc, clock = manual_service(home, "2024-07-08T18:20+09:00", initial_soc_pct=50)

    async def scenario():
        async with svc:
            d = svc.daemon
            assert "SOC of leaf unknown" in " ".join(d.plan.result.summary["messages"])
            sp = (await d.dispatch_once())[0]
            assert (sp.charge_kw, sp.discharge_kw) == (0.0, 0.0)
            clock.timeleap(11 * 60)
            await d.dispatch_once()
            assert d.replan_reason == "plug-in" and "plug" in kinds(svc)
            plan = await d.plan_once(d.replan_reason)
            assert plan.start == pd.Timestamp("2024-07-08T18:30+09:00")
            arrived = svc.sim.sim.snapshot().unit("v2h1").soc_pct / 100 * 62
            assert svc.store.last_plan()["inputs"]["soc_kwh"]["leaf"] == pytest.approx(arrived, abs=0.05)
            assert svc.store.last_plan()["inputs"]["reason"] == "plug-in"
    run(scenario())


def test_unplug_at_departure_asks_for_a_replan(home):
    svc, clock = manual_service(home, "2024-07-09T07:20+09:00", initial_soc_pct=85)

    async def scenario():
        async with svc:
            d = svc.daemon
            await d.dispatch_once()
            clock.timeleap(11 * 60)
            sp = (await d.dispatch_once())[0]
            assert d.replan_reason == "unplug" and (sp.charge_kw, sp.discharge_kw) == (0.0, 0.0)
            assert d.departures["leaf"]["depart"].startswith("2024-07-09T07:30")   # stored for restarts
    run(scenario())


def test_restart_mid_month_keeps_the_month_peak_soc_and_window(home, tmp_path):
    replay = constant_replay(tmp_path, "2024-07-08T07:00+09:00", 3, 7.0)

    async def first():
        svc, clock = manual_service(home, "2024-07-08T07:20+09:00", initial_soc_pct=85, replay=replay)
        async with svc:   # the car leaves at 07:30; then 7 kW for whole windows set the month's peak
            for _ in range(80):
                await svc.daemon.dispatch_once()
                clock.timeleap(60)
            peak = svc.store.month_peaks()["2024-07"]
            assert peak >= 7.0 - 0.05
            return peak, svc.daemon.soc_kwh["leaf"], svc.daemon.window.current.import_kwh

    async def second(peak, soc):
        svc, clock = manual_service(home, "2024-07-08T08:45+09:00", initial_soc_pct=50, replay=replay)
        async with svc:
            d = svc.daemon
            assert svc.store.month_peaks()["2024-07"] == peak
            inputs = svc.store.last_plan()["inputs"]
            assert inputs["month_peak_kw"] == peak and inputs["reason"] == "start"
            assert inputs["soc_kwh"]["leaf"] == soc == d.soc_kwh["leaf"]     # the away car's last SOC, not assumed
            assert d._guard_target_kw(clock.now()) >= peak - home.daemon.peak_guard_margin_kw - 1e-6
            assert "resume" in kinds(svc)
            assert d.window.current.start == pd.Timestamp("2024-07-08T08:30+09:00")
            return d.window.current.import_kwh

    peak, soc, before = run(first())
    after = run(second(peak, soc))
    assert after >= before > 0   # the open window's energy survived the restart


def test_solver_failure_and_failed_solve_fall_back_with_events(home, monkeypatch):
    svc, clock = manual_service(home, EVENING, initial_soc_pct=40)

    async def scenario():
        async with svc:
            d = svc.daemon

            def broken(*a, **k):
                raise RuntimeError("HiGHS crashed")
            monkeypatch.setattr(d.planner, "plan", broken)
            assert await d.plan_once() is None and d.plan is None
            assert {"plan-failed", "fallback"} <= set(kinds(svc))
            sp = (await d.dispatch_once())[0]
            assert sp.reason == "fallback" and sp.discharge_kw == 0 and sp.charge_kw > 0   # toward the 80 % target
            monkeypatch.undo()
            from models.solve import Solution
            monkeypatch.setattr(d.planner.session, "solve", lambda *a, **k: Solution("failed", messages=["no solver"]))
            plan = await d.plan_once()
            assert plan.result.summary["fallback"] and plan.unusable and "plan-fallback" in kinds(svc)
            assert (await d.dispatch_once())[0].reason == "fallback"
            assert svc.store.last_plan()["fallback"]
    run(scenario())


def test_infeasible_departure_target_falls_back_with_an_event(home):
    svc, clock = manual_service(home, "2024-07-09T07:00+09:00", initial_soc_pct=25)

    async def scenario():
        async with svc:   # 25 % at 07:00 cannot reach 80 % by 07:30 on a 6 kW unit
            d = svc.daemon
            assert d.plan.unusable and "infeasible" in kinds(svc)
            sp = (await d.dispatch_once())[0]
            assert sp.reason == "fallback" and sp.charge_kw == pytest.approx(6.0)
            stored = svc.store.last_plan()["summary"]["shortfalls"]
            assert any(s["kind"] == "target" and s["subject"] == "leaf" and s["planned"] for s in stored)
    run(scenario())


def test_stale_plan_falls_back(home):
    svc, clock = manual_service(home, EVENING, initial_soc_pct=60)

    async def scenario():
        async with svc:
            d = svc.daemon
            clock.timeleap(2 * 3600)      # no plan job ran for two hours
            sp = (await d.dispatch_once())[0]
            assert sp.reason == "fallback" and "stale" in d.plan.unusable
            await d.plan_once()
            assert (await d.dispatch_once())[0].reason in ("plan", "peak-guard") and "plan-restored" in kinds(svc)
    run(scenario())


def test_outage_switches_to_the_backup_plan_and_back(home):
    svc, clock = manual_service(home, EVENING, initial_soc_pct=60)

    async def scenario():
        async with svc:
            d = svc.daemon
            await d.dispatch_once()
            svc.sim.sim.set_grid(False)
            clock.timeleap(5)
            sp = (await d.dispatch_once())[0]
            assert not d.grid_up and d.replan_reason == "outage" and (sp.charge_kw, sp.discharge_kw, sp.reason) == (0, 0, "grid-down")
            plan = await d.plan_once("outage")
            assert plan.mode == "outage" and "unserved_kw" in plan.result.schedule
            ev = svc.store.events(kind="backup-plan")[0]
            assert ev["data"]["survival_hours"] >= 12     # 60 % of 62 kWh carries 0.55 kW through the horizon
            clock.timeleap(60)
            assert svc.sim.sim.snapshot().unit("v2h1").discharge_kw == pytest.approx(home.load.critical_kw, abs=0.01)
            svc.sim.sim.set_grid(True)
            clock.timeleap(5)
            await d.dispatch_once()
            assert d.grid_up and d.replan_reason == "grid-restored" and "grid-restored" in kinds(svc)
            assert (await d.plan_once("grid-restored")).mode == "normal"
            assert svc.store.last_plan()["inputs"]["mode"] == "normal"
    run(scenario())


def test_simulator_killed_daemon_retries_unit_reverts_then_recovers(home):
    svc, clock = manual_service(home, NIGHT, initial_soc_pct=30, reversion_timeout_s=6)

    async def scenario():
        async with svc:
            d, st = svc.daemon, svc.sim
            sp = (await d.dispatch_once())[0]
            assert sp.charge_kw > 0 and st.sim.snapshot().unit("v2h1").remote_enabled
            await asyncio_to_thread(st.call, st.sim.stop)
            for _ in range(3):
                clock.timeleap(5)
                sps = await d.dispatch_once()            # no exception: the daemon keeps running
                await d.heartbeat_once()
            assert [e["kind"] for e in svc.store.events(kind="device-fault")] == ["device-fault", "device-fault"]
            assert svc.store.latest_telemetry()["v2h1"]["reason"] == "unreachable" and sps == []
            snap = st.sim.snapshot().unit("v2h1")        # the unit's own watchdog took it to 0 W
            assert snap.reverted and snap.setpoint_kw == 0.0
            await asyncio_to_thread(st.call, st.sim.start)
            for _ in range(2):      # reconnect (read first, watchdog re-armed), then the setpoint again
                clock.timeleap(5)
                await d.dispatch_once()
            assert "device-recovered" in kinds(svc)
            clock.timeleap(5)
            snap = st.sim.snapshot().unit("v2h1")
            assert snap.remote_enabled and not snap.reverted and snap.charge_kw > 0
    run(scenario())


async def asyncio_to_thread(fn, *args):
    import asyncio
    return await asyncio.to_thread(fn, *args)


def test_config_typo_is_rejected_and_the_old_config_keeps_running(tmp_path):
    path = site_copy(tmp_path)
    cfg = load_site(path)
    svc, clock = manual_service(cfg, EVENING, initial_soc_pct=60, config_path=str(path))

    async def scenario():
        async with svc:
            d = svc.daemon
            text = path.read_text()
            path.write_text(text.replace("peak_guard_margin_kw", "x").replace("dispatch_interval_s: 5",
                                                                                 "dispatch_interval_s: 5\n  peak_guard_margin_kw: fast"))
            assert not svc.reload() and d.cfg is cfg
            ev = svc.store.events(kind="config-rejected")[0]
            line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "peak_guard_margin_kw: fast" in t)
            assert ev["severity"] == "error" and f"home-v2h.yaml:{line}" in ev["message"] and "peak_guard_margin_kw" in ev["message"]
            assert (await d.dispatch_once())[0].reason in ("plan", "peak-guard")      # still running on the old config
            path.write_text(text.replace("dispatch_interval_s: 5", "dispatch_interval_s: 10\n  peak_guard_margin_kw: 1.5"))
            await svc._watch_config()                    # the file changed: picked up by the watcher
            assert d.cfg.daemon.peak_guard_margin_kw == 1.5 and d.replan_reason == "config"
            assert d.dispatch_interval_s == 10
            assert "config-reloaded" in kinds(svc)
            path.write_text(text.replace("id: v2h1", "id: v2h9").replace("chargers: [v2h1]", "chargers: [v2h9]"))
            assert not svc.reload() and "needs a restart" in svc.store.events(kind="config-rejected")[0]["message"]
    run(scenario())


def test_status_shows_what_the_daemon_wrote(home, tmp_path):
    svc, clock = manual_service(home, EVENING, initial_soc_pct=60)

    async def scenario():
        async with svc:
            await svc.daemon.dispatch_once()
            status = collect(svc.store, home, clock.now())
            assert status["month"] == "2024-07" and status["last_plan"]["status"] in ("optimal", "feasible")
            dev = status["devices"]["v2h1"]
            assert dev["plugged"] and dev["soc_kwh"] == pytest.approx(0.6 * 62, abs=0.2)
            assert status["events"][0]["kind"] in ("start", "resume")
    run(scenario())


def test_shutdown_leaves_the_unit_at_zero_with_control_released(home):
    svc, clock = manual_service(home, NIGHT, initial_soc_pct=30)

    async def scenario():
        async with svc:
            sp = (await svc.daemon.dispatch_once())[0]
            assert sp.charge_kw > 0
            st = svc.sim
            # stop() runs on leaving the block; look at the unit right after
        snap = st.sim.model.unit("v2h1")
        assert snap.setpoint_kw == 0.0 and not snap.remote_enabled
        assert svc.store is not None
    run(scenario())


def test_trigger_fires_on_the_simulated_half_hours():
    import datetime as dt
    clock = SimClock(pd.Timestamp("2024-07-08T18:29:00+09:00"), speed=60)
    trig = SimTimeTrigger(clock, 1800, "Asia/Tokyo")
    now = dt.datetime.now(dt.timezone.utc)
    first = trig.get_next_fire_time(None, now)
    assert (first - now).total_seconds() == pytest.approx(1.0, abs=0.05)     # 60 simulated seconds to 18:30
    second = trig.get_next_fire_time(first - dt.timedelta(milliseconds=3), now)
    assert (second - first).total_seconds() == pytest.approx(30.0, abs=0.05)  # never the same boundary twice
    replan = now + dt.timedelta(seconds=0.5)    # a re-plan ran off the grid at 18:29:30: the 18:30 plan still comes
    assert (trig.get_next_fire_time(replan, now) - now).total_seconds() == pytest.approx(1.0, abs=0.05)
    manual = SimTimeTrigger(ManualClock(pd.Timestamp("2024-07-08T18:29:58+09:00")), 5)
    assert (manual.get_next_fire_time(None, now) - now).total_seconds() == pytest.approx(2.0)


def test_window_account_splits_energy_at_the_boundary_and_trusts_the_counter():
    acc = WindowAccount("Asia/Tokyo")
    t = pd.Timestamp("2024-07-08T18:20+09:00")
    assert acc.update(t, 4.0, 100.0) == []
    assert acc.current.estimated_kwh == pytest.approx(4.0 * 20 / 60)      # before the first reading: estimated
    closed = acc.update(t + pd.Timedelta(minutes=20), 2.0, 101.0)        # 1 kWh over 18:20-18:40
    assert len(closed) == 1 and closed[0].import_kwh == pytest.approx(4.0 * 20 / 60 + 0.5)
    assert acc.current.import_kwh == pytest.approx(0.5) and acc.current.observed_h == pytest.approx(10 / 60)
    acc.update(t + pd.Timedelta(minutes=25), 2.0, 50.0)                  # counter reset: trapezoid instead
    assert acc.current.import_kwh == pytest.approx(0.5 + 2.0 * 5 / 60)


def test_new_month_replans_with_last_month_in_the_ratchet_history(home, tmp_path):
    replay = constant_replay(tmp_path, "2024-07-31T23:00+09:00", 2, 3.0)
    svc, clock = manual_service(home, "2024-07-31T23:20+09:00", initial_soc_pct=85, replay=replay)

    async def scenario():
        async with svc:
            d = svc.daemon
            for _ in range(8):
                clock.timeleap(300)
                await d.dispatch_once()
            assert d.replan_reason == "new-month" and "new-month" in kinds(svc)
            july = svc.store.month_peaks()["2024-07"]
            assert july > 0
            await d.plan_once(d.replan_reason)
            inputs = svc.store.last_plan()["inputs"]
            assert inputs["peak_history_kw"]["2024-07"] == july and inputs["month_peak_kw"] == 0.0
    run(scenario())
