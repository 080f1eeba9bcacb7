"""The daemon drives the ECHONET Lite node end to end (configs/home-echonet.yaml against
``EchonetSimulator`` over loopback UDP, on one manual clock): plug-in, charge, discharge on a demand
peak, a lost link that comes back (standby first), stop -> standby; and the ``echonet_lite`` adapter
sections as ``ems check`` and ``ems sim --protocol echonet`` see them."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from adapters import AdapterError
from adapters.echonet import Mode
from adapters.fake import FakeCharger, FakeMeter
from adapters.sim.echonet import EchonetSimulator
from ems.cli import main
from ems.clock import ManualClock
from ems.config import load_site
from ems.daemon import Daemon, Service
from ems.devices import sim_site
from ems.errors import ConfigError
from ems.store import Store
from tests.ems.daemon_helpers import constant_replay, run, site_copy

pytestmark = pytest.mark.timeout(180)

EVENING = "2024-07-08T18:25+09:00"        # Monday: the Leaf comes home at 18:30


def kinds(svc) -> list[str]:
    return [e["kind"] for e in svc.store.events(limit=500)]


async def node_for(tmp_path, start: str, soc_pct: float, load_kw: float) -> tuple[EchonetSimulator, ManualClock, Service]:
    """The example site's node on a free loopback port, a service for the config pointed at it, one clock."""
    clock = ManualClock(pd.Timestamp(start))
    zero = clock.now()
    cfg = load_site(site_copy(tmp_path, "home-echonet"))
    site = sim_site(cfg, protocol="echonet", start=zero.to_pydatetime(), initial_soc_pct=soc_pct,
                    replay=constant_replay(tmp_path, start, 3, load_kw))
    sim = EchonetSimulator(site, host="127.0.0.1", port=0, clock=lambda: (clock.now() - zero).total_seconds(), zone=cfg.zone)
    await sim.start()
    cfg = load_site(site_copy(tmp_path, "home-echonet", **{"port: 3610": f"port: {sim.port}"}))
    return sim, clock, Service(cfg, clock=clock)


def set_load(sim: EchonetSimulator, load_kw: float) -> None:
    """A constant building load [kW] instead of the replay."""
    with sim._lock:
        sim.model.p = dataclasses.replace(sim.model.p, replay=None, load_kw=load_kw, pv_kw=0.0)


def test_plug_charge_peak_discharge_link_loss_and_stop_over_echonet_lite(tmp_path):
    async def scenario():
        sim, clock, svc = await node_for(tmp_path, EVENING, soc_pct=60, load_kw=0.5)
        try:
            async with svc:
                d = svc.daemon
                assert (await d.dispatch_once())[0].charge_kw == 0.0 and d.units[0].state.plugged is False
                clock.timeleap(6 * 60)                        # 18:31: the Leaf is plugged in
                await d.dispatch_once()
                assert d.replan_reason == "plug-in" and "plug" in kinds(svc)
                await d.plan_once(d.replan_reason)
                set_load(sim, 9.0)                            # a surge the forecast did not see
                clock.timeleap(5)
                sp = (await d.dispatch_once())[0]
                assert sp.reason == "peak-guard" and sp.discharge_kw > 0
                clock.timeleap(10)
                assert sim.settings["v2h1"].mode == Mode.DISCHARGE
                assert sim.snapshot().unit("v2h1").discharge_kw == pytest.approx(sp.discharge_kw, abs=0.08)
                soc = sim.snapshot().unit("v2h1").soc_pct
                for _ in range(12):                           # two minutes of ticks
                    clock.timeleap(10)
                    await d.dispatch_once()
                assert sim.snapshot().unit("v2h1").soc_pct < soc
                # the link is lost: the unit keeps discharging (no watchdog); when it is back: standby, then the plan
                held_at_standby = []
                adapter, standby = d.units[0].adapter, d.units[0].adapter.standby

                async def spy():
                    held_at_standby.append(sim.settings["v2h1"].mode)
                    await standby()
                adapter.standby = spy
                sim.set_fault("v2h1", delay_s=5.0)
                clock.timeleap(5)
                await d.dispatch_once()
                fault = svc.store.events(kind="device-fault")[-1]["message"]
                assert "has no watchdog and keeps its last command" in fault
                assert sim.settings["v2h1"].mode == Mode.DISCHARGE
                sim.clear_faults()
                set_load(sim, 0.5)
                clock.timeleap(5)
                await d.dispatch_once()
                assert "device-recovered" in kinds(svc)
                assert held_at_standby == [Mode.DISCHARGE]          # standby was commanded while it still discharged
            assert sim.settings["v2h1"].mode == Mode.STANDBY     # the daemon stopped: standby
        finally:
            await sim.stop()
    run(scenario())


def test_charging_at_night_over_echonet_lite(tmp_path):
    async def scenario():
        sim, clock, svc = await node_for(tmp_path, "2024-07-09T02:00+09:00", soc_pct=30, load_kw=0.5)
        try:
            async with svc:
                d = svc.daemon
                sp = (await d.dispatch_once())[0]
                assert sp.charge_kw > 0 and sim.settings["v2h1"].mode == Mode.CHARGE
                assert sim.settings["v2h1"].charge_w == round(sp.charge_kw * 1000)
                soc = sim.snapshot().unit("v2h1").soc_pct
                for _ in range(18):                           # three minutes
                    clock.timeleap(10)
                    await d.dispatch_once()
                assert sim.snapshot().unit("v2h1").soc_pct > soc
                assert d.last_reading is not None and d.last_reading.import_kw > 5   # the ECHONET meter sees it
        finally:
            await sim.stop()
    run(scenario())


def test_echonet_adapter_sections_are_checked(tmp_path, capsys):
    path = site_copy(tmp_path, "home-echonet", **{"instance: 1, timeout_s": "instance: 0, timeout_s",
                                                  "meter_class: low_voltage": "meter_class: medium"})
    with pytest.raises(ConfigError) as err:
        load_site(path)
    text = "\n".join(err.value.lines())
    assert "chargers[0].adapter.instance" in text and "meter.adapter.meter_class" in text
    assert main(["check", str(path)]) == 2
    (tmp_path / "ok").mkdir()
    assert main(["check", str(site_copy(tmp_path / "ok", "home-echonet"))]) == 0   # unit and meter: instance 1 of two classes
    assert "echonet_lite 127.0.0.1:3610 low-voltage meter instance 1" in capsys.readouterr().out


def test_ems_sim_serves_the_echonet_node(tmp_path, capsys):
    path = site_copy(tmp_path, "home-echonet")
    assert main(["sim", "--config", str(path), "--protocol", "echonet", "--port", "0", "--duration", "0.3",
                 "--status-every", "0"]) == 0
    out = capsys.readouterr().out
    assert "ECHONET Lite node on UDP 127.0.0.1:" in out and "instance 1 = v2h1" in out
    assert main(["sim", "--config", str(site_copy(tmp_path, "home-v2h")), "--protocol", "echonet"]) == 2
    assert "no charger uses the echonet_lite adapter" in capsys.readouterr().err


def test_the_daemon_runs_on_in_memory_fakes(tmp_path):
    """The device interface lets the daemon run without sockets: a fake unit and meter (fast tests)."""
    async def scenario():
        cfg = load_site(site_copy(tmp_path, "home-v2h"))
        clock = ManualClock(pd.Timestamp("2024-07-09T02:00+09:00"))
        unit, meter = FakeCharger(soc_pct=30.0), FakeMeter(import_kw=0.5)
        store = Store(str(tmp_path / "fake.sqlite"))
        d = Daemon(cfg, clock, store, [unit], meter, real_clock=lambda: (clock.now() - pd.Timestamp(0, tz="UTC")).total_seconds())
        try:
            await d.start()
            sp = (await d.dispatch_once())[0]
            assert sp.charge_kw > 0 and unit.held == (sp.charge_kw, 0.0) and meter.reads >= 1
            unit.fail = AdapterError("v2h1", "", None, "no answer", retryable=True)
            clock.timeleap(5)
            await d.dispatch_once()
            unit.fail = None
            clock.timeleap(5)
            await d.dispatch_once()
            assert unit.calls.count("standby") == 1       # the link came back: standby first
        finally:
            await d.stop()
            store.close()
        assert unit.calls[-2:] == ["standby", "stop"]
    run(scenario())
