"""Garbage device readings through the whole daemon, on the simulated site over real loopback Modbus
(manual clock): a 60-s burst of 327.67 kW at the meter of the 12-kW home, a +inf and a NaN float32
meter reading, SunSpec's "not implemented" 0x8000 for the meter's W, a unit reporting a SOC of 500 %
and one whose SOC jumps. Each must give one fault event and one recovery event, never a false month
peak, never a NaN or inf in what the planner sees, no discharge while the SOC is not believed, and
the car still charged toward its departure. And the controller heartbeat (SunSpec CtrlHb) advances
while the daemon writes setpoints at every tick."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest

import ems.daemon.service as service_module
from adapters.sim import SimulatorThread
from ems.commands.status import collect
from ems.config import load_site
from ems.daemon.readings import HOLD_S, JUMP_CONFIRM_S, MeterQuality
from tests.ems.daemon_helpers import constant_replay, manual_service, run, set_load, site_copy

pytestmark = pytest.mark.timeout(180)

MORNING = "2024-07-08T10:00+09:00"   # Monday: the Leaf is away (07:30-18:30), the house alone
EVENING = "2024-07-08T19:00+09:00"   # the Leaf plugged in since 18:30
NIGHT = "2024-07-09T02:00+09:00"     # 30 % must reach 80 % by 07:30: charging now
TRUE_KW = 6.4


@pytest.fixture
def home(tmp_path):
    return load_site(site_copy(tmp_path))


def evening(home, tmp_path, **kw):
    """The home site at 19:00, the Leaf plugged in at 60 %, 0.5 kW of load: (service, clock)."""
    return manual_service(home, EVENING, initial_soc_pct=60, replay=constant_replay(tmp_path, EVENING, 2, 0.5), **kw)


def morning(home, tmp_path):
    """The home site at 10:00, the Leaf away, the house importing TRUE_KW: (service, clock)."""
    return manual_service(home, MORNING, replay=constant_replay(tmp_path, MORNING, 2, TRUE_KW))


def drive(made: tuple, scenario) -> None:
    """Run ``scenario(svc, clock, daemon, simulator)`` inside the service ``made`` = (service, clock)."""
    svc, clock = made

    async def main():
        async with svc:
            await scenario(svc, clock, svc.daemon, svc.sim.sim)
    run(main())


def events(svc, kind: str) -> list[dict]:
    return svc.store.events(limit=1000, kind=kind)[::-1]


async def ticks(svc, clock, n: int, step_s: float = 20.0) -> list:
    """``n`` dispatch ticks ``step_s`` simulated seconds apart, the heartbeat job after each; the setpoints."""
    out = []
    for _ in range(n):
        clock.timeleap(step_s)
        out += await svc.daemon.dispatch_once()
        await svc.daemon.heartbeat_once()
    return out


def assert_plans_work(svc) -> None:
    """What the planner saw is finite and the plan is followed."""
    d = svc.daemon
    assert math.isfinite(d.miss_kw)
    plan = d.plan
    assert plan is not None and plan.unusable is None, None if plan is None else plan.unusable
    inputs = svc.store.last_plan()["inputs"]
    assert math.isfinite(inputs["forecast_miss_kw"]) and math.isfinite(inputs["window_import_kwh"])
    assert all(math.isfinite(v) for v in svc.store.month_peaks().values())


def test_garbage_meter_burst_is_no_peak(home, tmp_path):
    """327.67 kW (0x7FFF x 10 W) for 60 s on a 12-kW site whose true import is 6.4 kW."""
    async def scenario(svc, clock, d, sim):
        await ticks(svc, clock, 90)                    # 10:00-10:30: a clean window sets the peak
        peak = svc.store.month_peaks()["2024-07"]
        assert peak == pytest.approx(TRUE_KW, abs=0.05)
        await ticks(svc, clock, 30)                    # 10:40
        sim.set_fault("meter", values={"power_w": 327670.0})
        await ticks(svc, clock, 3)                     # 60 s of garbage: the last good value stands in
        assert d.links.meter_quality is MeterQuality.HELD
        assert svc.store.latest_telemetry()["v2h1"]["site_import_kw"] == pytest.approx(TRUE_KW, abs=0.05)
        sim.set_fault("meter", values={})
        await ticks(svc, clock, 58)                    # past 11:00: the window closes
        assert d.links.meter_quality is MeterQuality.GOOD
        assert svc.store.month_peaks()["2024-07"] == pytest.approx(peak, abs=1e-9)   # no false peak
        (fault,) = events(svc, "reading-fault")
        assert (fault["data"]["device"], fault["data"]["point"], fault["data"]["fault"]) == ("meter", "power_w", "site-limit")
        assert fault["data"]["value"] == pytest.approx(327.67) and fault["data"]["high"] == pytest.approx(18.0)
        (back,) = events(svc, "reading-recovered")
        assert back["data"]["seconds"] == pytest.approx(60.0)
        flagged = svc.store.windows("2024-07", flagged=True)
        assert [(w["start"], w["flags"]) for w in flagged] == [("2024-07-08T01:30:00+00:00", ["samples-implausible"])]
        assert collect(svc.store, home, clock.now())["flagged_windows"][0]["flags"] == ["samples-implausible"]
        good = [w for w in svc.store.windows("2024-07") if not w["flags"]]
        assert good and all(w["counter_kwh"] is not None for w in good[1:])   # counter and samples agree
        await d.plan_once("test")
        assert_plans_work(svc)
    drive(morning(home, tmp_path), scenario)


def flat_meter(svc, monkeypatch) -> None:
    """Serve the site meter with the float32 flat map (the simulator and the daemon's meter adapter)."""
    site = dataclasses.replace(svc.sim.sim.site, meter_profile="flat-meter")
    svc.sim = SimulatorThread(site, host="127.0.0.1", port=0, clock=svc.real)
    original = service_module.meter_params
    monkeypatch.setattr(service_module, "meter_params",
                        lambda cfg, **kw: dataclasses.replace(original(cfg, **kw), profile="flat-meter"))


def test_one_inf_and_one_nan_float32_reading_never_poison_the_planner(home, tmp_path, monkeypatch):
    svc, clock = evening(home, tmp_path)
    flat_meter(svc, monkeypatch)

    async def scenario(svc, clock, d, sim):
        await ticks(svc, clock, 3, 5.0)
        for value, kind in ((math.inf, "not-finite"), (math.nan, "unknown")):
            sim.set_fault("meter", values={"power_w": value})
            await ticks(svc, clock, 1, 5.0)            # one bad reading (6 s in the tester's run)
            assert d.links.meter_quality is MeterQuality.HELD and math.isfinite(d.last_reading.import_kw)
            sim.clear_faults()
            await ticks(svc, clock, 3, 5.0)
            assert events(svc, "reading-fault")[-1]["data"]["fault"] == kind
        assert len(events(svc, "reading-fault")) == len(events(svc, "reading-recovered")) == 2
        assert math.isfinite(d.miss_kw) and math.isfinite(d.window.current.import_kwh)
        await d.plan_once("test")
        assert_plans_work(svc)
        sp = await ticks(svc, clock, 1, 5.0)
        assert sp[0].reason in ("plan", "peak-guard")  # the plan is followed again, not the safe rule
    drive((svc, clock), scenario)


def test_sentinel_meter_w_is_unknown_never_zero_then_the_meter_counts_as_lost(home, tmp_path):
    async def scenario(svc, clock, d, sim):
        await ticks(svc, clock, 3)
        sim.set_fault("meter", raw={"power_w": (0x8000,)})   # SunSpec int16 "not implemented"
        seen = []
        for _ in range(6):                                    # 120 s: 60 s held, then dropped
            await ticks(svc, clock, 1)
            seen.append((d.links.meter_quality, svc.store.latest_telemetry()["v2h1"]["site_import_kw"]))
        assert [q for q, _ in seen] == [MeterQuality.HELD] * 3 + [MeterQuality.DROPPED] * 3
        assert all(kw == pytest.approx(TRUE_KW, abs=0.05) for _, kw in seen[:3])   # never 0 kW import
        assert d.last_reading is None and HOLD_S == 60.0
        (fault,) = events(svc, "reading-fault")
        assert (fault["data"]["point"], fault["data"]["fault"], fault["data"]["value"]) == ("power_w", "unknown", None)
        sim.clear_faults()
        await ticks(svc, clock, 2)
        assert d.links.meter_quality is MeterQuality.GOOD and len(events(svc, "reading-recovered")) == 1
        await ticks(svc, clock, 90)                           # the window closes: flagged, not a peak
        assert [w["flags"] for w in svc.store.windows("2024-07")] == [["samples-implausible"]]
        assert "2024-07" not in svc.store.month_peaks()
        await d.plan_once("test")
        assert_plans_work(svc)
    drive(morning(home, tmp_path), scenario)


def test_soc_of_500_pct_no_discharge_under_a_surge_and_the_last_good_soc_kept(home, tmp_path):
    async def scenario(svc, clock, d, sim):
        await ticks(svc, clock, 1, 5.0)
        good = d.soc_kwh["leaf"]
        assert good == pytest.approx(0.6 * 62, abs=0.3)
        set_load(svc, 9.0)                                    # a surge the guard would meet with the car
        sim.set_fault("v2h1", values={"soc_pct": 500.0})
        sps = await ticks(svc, clock, 30, 5.0)
        assert all(sp.discharge_kw == 0.0 for sp in sps)
        assert sim.snapshot().unit("v2h1").discharge_kw == 0.0
        assert d.soc_kwh["leaf"] == pytest.approx(good, abs=0.5)   # not 310 kWh
        assert svc.store.latest_telemetry()["v2h1"]["soc_kwh"] is None
        (fault,) = events(svc, "reading-fault")
        assert (fault["data"]["point"], fault["data"]["fault"], fault["data"]["value"]) == ("soc_pct", "map-range", 500.0)
        await d.plan_once("test")
        assert svc.store.last_plan()["inputs"]["soc_kwh"]["leaf"] == pytest.approx(good, abs=0.5)
        sim.clear_faults()
        sps = await ticks(svc, clock, 4, 5.0)
        assert any(sp.discharge_kw > 0 for sp in sps)        # believed again: the guard may use the car
        assert len(events(svc, "reading-recovered")) == 1
        assert d.soc_kwh["leaf"] == pytest.approx(sim.snapshot().unit("v2h1").soc_pct / 100 * 62, abs=0.1)
    drive(evening(home, tmp_path), scenario)


def test_soc_unknown_at_night_the_car_still_charges_toward_its_departure(home):
    async def scenario(svc, clock, d, sim):
        await ticks(svc, clock, 2)
        before_sim = sim.snapshot().unit("v2h1").soc_pct
        before = d.soc_kwh["leaf"]
        sim.set_fault("v2h1", values={"soc_pct": 500.0})
        sps = await ticks(svc, clock, 45)                     # 15 minutes without a believable SOC
        assert all(sp.charge_kw > 5.0 and sp.discharge_kw == 0.0 for sp in sps[2:])
        gained_sim = (sim.snapshot().unit("v2h1").soc_pct - before_sim) / 100 * 62
        assert gained_sim > 1.2                               # the car really charged
        assert d.soc_kwh["leaf"] - before == pytest.approx(gained_sim, abs=0.15)   # carried forward by power
        sim.clear_faults()
        await ticks(svc, clock, 1)
        assert d.soc_kwh["leaf"] == pytest.approx(sim.snapshot().unit("v2h1").soc_pct / 100 * 62, abs=0.05)
    drive(manual_service(home, NIGHT, initial_soc_pct=30), scenario)


def test_soc_jump_is_a_fault_until_the_new_level_holds(home, tmp_path):
    async def scenario(svc, clock, d, sim):
        await ticks(svc, clock, 2)
        sim.set_fault("v2h1", values={"soc_pct": 5.0})        # in range, but 55 points in 20 s at 6 kW
        set_load(svc, 9.0)
        sps = await ticks(svc, clock, 3)
        assert all(sp.discharge_kw == 0.0 for sp in sps)
        (fault,) = events(svc, "reading-fault")
        assert (fault["data"]["fault"], fault["data"]["value"]) == ("soc-jump", 5.0)
        assert d.soc_kwh["leaf"] == pytest.approx(0.6 * 62, abs=0.5)
        await ticks(svc, clock, int(JUMP_CONFIRM_S / 20) + 1)   # the unit keeps saying 5 %: accepted
        assert len(events(svc, "reading-recovered")) == 1
        assert d.soc_kwh["leaf"] == pytest.approx(0.05 * 62)
    drive(evening(home, tmp_path), scenario)


def test_unit_power_garbage_is_held_then_the_safe_rule(home, tmp_path):
    async def scenario(svc, clock, d, sim):
        set_load(svc, 9.0)                                    # a surge: the guard discharges the car
        sps = await ticks(svc, clock, 3)
        assert sps[-1].discharge_kw > 0
        held = d.units[0].state.discharge_kw
        sim.set_fault("v2h1", values={"power_w": 60000.0})    # 60 kW from a 6 kW unit
        seen = []
        for _ in range(6):                                    # 120 s: 60 s held, then the safe rule
            sp = (await ticks(svc, clock, 1))[0]
            seen.append((d.units[0].state.discharge_kw, d.units[0].state.soc_pct, sp.discharge_kw))
        assert all(kw == held and soc is not None for kw, soc, _ in seen[:3])
        assert all(soc is None and out == 0.0 for _, soc, out in seen[3:])   # no discharge on a unit not believed
        (fault,) = events(svc, "reading-fault")
        assert (fault["data"]["point"], fault["data"]["fault"]) == ("power_w", "physical")
        sim.clear_faults()
        sps = await ticks(svc, clock, 3)
        assert len(events(svc, "reading-recovered")) == 1 and sps[-1].discharge_kw > 0
    drive(evening(home, tmp_path), scenario)


def test_ctrlhb_advances_while_the_daemon_writes_setpoints_every_tick(home, tmp_path):
    """Each tick's setpoint write used to put the heartbeat off for ever: CtrlHb was never written."""
    async def scenario(svc, clock, d, sim):
        adapter = d.units[0].adapter
        hb_address = adapter.dev.located["controller_heartbeat"].address
        start = sim.model.unit("v2h1").controller_hb
        written = 0
        for i in range(24):                                   # 2 minutes, a tick every 5 s
            set_load(svc, 6.0 + 3.0 * (i % 2))                # the guard moves the setpoint at every tick
            n = len(sim.writes)
            await ticks(svc, clock, 1, 5.0)
            written += any(w[2] != hb_address for w in list(sim.writes)[n:])
        assert written >= 20                                  # setpoints went out at (nearly) every tick
        assert sim.model.unit("v2h1").controller_hb - start == 120 // 10   # every 10 s, whatever the traffic
    drive(evening(home, tmp_path, reversion_timeout_s=30), scenario)


def test_window_counter_and_samples_cross_checked():
    from ems.daemon.metering import WindowAccount, WindowFlag
    t0 = pd.Timestamp("2024-07-08T10:00+09:00")
    acc = WindowAccount("Asia/Tokyo")
    acc.update(t0, 4.0, 100.0)
    closed = []
    for k in range(1, 31):   # 4 kW on the power, but the counter says 8 kW
        closed += acc.update(t0 + pd.Timedelta(minutes=k), 4.0, 100.0 + 8.0 * k / 60)
    (w,) = closed
    assert w.counter_kwh == pytest.approx(4.0) and w.samples_kwh == pytest.approx(2.0)
    assert w.flags == WindowFlag.COUNTER_MISMATCH and w.flags.names == ["counter-mismatch"]
    acc.update(t0 + pd.Timedelta(minutes=31), 4.0, 500.0)       # 396 kWh in a minute at 4 kW
    assert acc.current.flags == WindowFlag.COUNTER_IMPLAUSIBLE
    assert acc.current.import_kwh == pytest.approx(4.0 / 60)    # the samples' energy instead
    acc.update(t0 + pd.Timedelta(minutes=32), 4.0, 10.0)        # backwards: a reset, not garbage
    assert acc.current.flags == WindowFlag.COUNTER_IMPLAUSIBLE and WindowFlag.from_names("counter-implausible,x") \
        == WindowFlag.COUNTER_IMPLAUSIBLE


def test_a_plug_state_that_is_neither_is_no_unplug_and_no_discharge(home, tmp_path):
    """SunSpec 802 State INITIALIZING (2) while the Leaf is plugged in: nothing is commanded, and it
    is not logged as an unplug followed by a plug-in (no re-plan for a car that never left)."""
    async def scenario(svc, clock, d, sim):
        await ticks(svc, clock, 2)
        before = len(events(svc, "plug"))
        set_load(svc, 9.0)                                    # a surge the car would otherwise cover
        sim.set_fault("v2h1", raw={"plug_state": (2,)})
        sps = await ticks(svc, clock, 3)
        assert all(sp.charge_kw == 0.0 and sp.discharge_kw == 0.0 for sp in sps)
        assert d.units[0].state.plug_unknown == "INITIALIZING"
        sim.clear_faults()
        sps = await ticks(svc, clock, 2)
        assert sps[-1].discharge_kw > 0                       # plugged again: the guard uses the car
        assert len(events(svc, "plug")) == before             # no unplug, no plug-in
    drive(evening(home, tmp_path), scenario)
