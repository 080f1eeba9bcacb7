"""ems.devices: site configs translated into simulator and adapter parameters."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from adapters import RtuLink, TcpLink
from adapters.sim import SiteModel
from ems.config import load_site
from ems.devices import (METER_UNIT_ID, charger_params, check_profiles, load_replay, meter_params, sim_address, sim_site,
                         sim_unit_ids, stay_source, vehicle_homes)
from ems.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TOKYO = dt.timezone(dt.timedelta(hours=9))


def site_file(tmp_path: Path, chargers: str, vehicles: str = "vehicles: []\n") -> Path:
    """A minimal site file with the given chargers section (tariff from the shipped examples)."""
    tariff = ROOT / "configs" / "tariffs" / "home-time-of-use.yaml"
    path = tmp_path / "site.yaml"
    path.write_text(f"site: {{name: t, latitude_deg: 35.7, longitude_deg: 139.8}}\n"
                    f"grid: {{import_limit_kw: 12}}\ntariff: {tariff}\n{chargers}{vehicles}")
    return path


def test_simulated_unit_ids_default_to_config_order(configs_dir):
    office = load_site(configs_dir / "office-v2b.yaml")
    assert sim_unit_ids(office) == {"v2b1": 1, "v2b2": 2, "v2b3": 3}
    site = sim_site(office)
    assert [(u.name, u.unit_id, [v.id for v in u.vehicles]) for u in site.units] == [
        ("v2b1", 1, ["leaf"]), ("v2b2", 2, ["bz4x"]), ("v2b3", 3, ["leaf40"])]
    assert site.meter_unit_id == METER_UNIT_ID and site.critical_load_kw == pytest.approx(2.0)


def test_explicit_unit_ids_are_kept_and_others_fill_the_gaps(tmp_path):
    cfg = load_site(site_file(tmp_path, "chargers:\n"
                              "  - {id: a, max_charge_kw: 6, max_discharge_kw: 6, adapter: {kind: simulator, unit_id: 1}}\n"
                              "  - {id: b, max_charge_kw: 6, max_discharge_kw: 6}\n"
                              "  - {id: c, max_charge_kw: 6, max_discharge_kw: 6, adapter: {kind: simulator, unit_id: 2}}\n"))
    assert sim_unit_ids(cfg) == {"a": 1, "b": 3, "c": 2}


def test_duplicate_or_meter_unit_ids_name_file_and_line(tmp_path):
    path = site_file(tmp_path, "chargers:\n"
                     "  - {id: a, max_charge_kw: 6, max_discharge_kw: 6, adapter: {kind: simulator, unit_id: 2}}\n"
                     "  - {id: b, max_charge_kw: 6, max_discharge_kw: 6, adapter: {kind: simulator, unit_id: 2}}\n"
                     "  - {id: c, max_charge_kw: 6, max_discharge_kw: 6,\n"
                     "     adapter: {kind: simulator, unit_id: 240}}\n")
    with pytest.raises(ConfigError) as err:
        sim_site(load_site(path))
    assert str(err.value).splitlines() == [
        f"{path}:6: chargers[1].adapter.unit_id = 2: already used by a; simulated units need distinct unit ids",
        f"{path}:8: chargers[2].adapter.unit_id = 240: already used by the simulated meter; simulated units need "
        "distinct unit ids"]


def test_unknown_profile_names_the_key_with_a_hint(tmp_path):
    path = site_file(tmp_path, "chargers:\n"
                     "  - id: a\n    max_charge_kw: 6\n    max_discharge_kw: 6\n"
                     "    adapter: {kind: modbus_tcp, host: 10.0.0.5, profile: sunspek}\n")
    with pytest.raises(ConfigError, match=rf"{path}:8: chargers\[0\].adapter.profile = 'sunspek': .*no such "
                                          r"register map; shipped: .*did you mean 'sunspec'\?"):
        charger_params(load_site(path))


def test_a_meter_map_is_not_a_charger_map(tmp_path):
    path = site_file(tmp_path, "chargers:\n  - {id: a, max_charge_kw: 6, max_discharge_kw: 6, "
                     "adapter: {kind: simulator, profile: sunspec-meter}}\n")
    with pytest.raises(ConfigError, match="is a meter map; a charger needs a charger map"):
        sim_site(load_site(path))


def test_real_device_links(tmp_path):
    cfg = load_site(site_file(tmp_path, "chargers:\n"
                              "  - {id: a, max_charge_kw: 6, max_discharge_kw: 5, adapter: {kind: modbus_tcp, "
                              "host: 192.168.1.20, unit_id: 3, reversion_timeout_s: 30, profile: flat-v2h}}\n"
                              "  - {id: b, max_charge_kw: 3, max_discharge_kw: 3, adapter: {kind: modbus_rtu, "
                              "serial_port: /dev/ttyUSB0, parity: N, unit_id: 4}}\n"
                              "  - {id: c, max_charge_kw: 6, max_discharge_kw: 6}\n"))
    a, b, c = charger_params(cfg, sim_port=5020)
    assert (a.link, a.profile, a.reversion_timeout_s, a.max_discharge_kw) == (
        TcpLink("192.168.1.20", 502, 3, 1.0), "flat-v2h", 30.0, 5.0)
    assert b.link == RtuLink("/dev/ttyUSB0", 19200, "N", 4, 1.0)
    assert c.link == TcpLink("127.0.0.1", 5020, 1, 1.0)
    assert meter_params(cfg, sim_port=5020).link == TcpLink("127.0.0.1", 5020, METER_UNIT_ID)
    with pytest.raises(ValueError, match="give the simulator's port"):
        charger_params(cfg)


def test_vehicles_go_to_their_first_charger_or_take_turns(tmp_path):
    cfg = load_site(site_file(
        tmp_path, "chargers:\n  - {id: a, max_charge_kw: 6, max_discharge_kw: 6}\n"
                  "  - {id: b, max_charge_kw: 6, max_discharge_kw: 6}\n",
        "vehicles:\n  - {id: v1, capacity_kwh: 40, chargers: [b, a]}\n  - {id: v2, capacity_kwh: 40}\n"
        "  - {id: v3, capacity_kwh: 40}\n"))
    assert {k: [v.id for v in vs] for k, vs in vehicle_homes(cfg).items()} == {"a": ["v2"], "b": ["v1", "v3"]}


def test_the_simulated_car_follows_its_windows(configs_dir):
    home = load_site(configs_dir / "home-v2h.yaml")
    start = dt.datetime(2025, 1, 6, 18, 0, tzinfo=TOKYO)  # a Monday
    site = sim_site(home, start=start)
    m = SiteModel(site, start=start)
    u = m.unit("v2h1")
    assert u.stay is None  # the weekend stay ended Monday 07:30
    m.advance(1800.0)  # 18:30: home, having driven 30 km at 6 km/kWh
    assert u.stay is not None and u.stay.vehicle == "leaf"
    assert m.energy_kwh["leaf"] == pytest.approx(62 * 0.55 - 5.0)  # mid-window start (20..90 %) minus 5 kWh
    m.advance(1800.0 + 13 * 3600.0 - 1.0)  # Tuesday 07:29:59
    assert u.stay is not None
    m.advance(1800.0 + 13 * 3600.0)  # 07:30: gone
    assert u.stay is None and m.soc_pct(u) is None


def test_workplace_windows_skip_public_holidays(configs_dir):
    office = load_site(configs_dir / "office-v2b.yaml")
    source = stay_source(office, [office.vehicles[0]])
    week = source(dt.datetime(2025, 1, 13, tzinfo=TOKYO), dt.datetime(2025, 1, 15, tzinfo=TOKYO))
    # 13 January 2025 is Coming of Age Day: no stay; the 14th is a working day
    assert [(s.arrive.date().isoformat(), s.arrive.hour, s.arrival_kwh) for s in week] == [("2025-01-14", 8, 43.4)]


def test_replay_fills_gaps_as_documented():
    r = load_replay(ROOT / "ems" / "data" / "household-2024-30min.csv")
    assert len(r.load_kw) == 17524 and r.step_s == 1800.0
    assert r.start == dt.datetime(2024, 2, 28, 21, 0, tzinfo=dt.timezone.utc)
    t = dt.datetime(2024, 3, 12, 4, 30, tzinfo=dt.timezone.utc)
    assert r.at(t) == (0.6422, 0.0)  # PV empty at this row: 0 kW
    assert r.at(t + dt.timedelta(minutes=30)) == (0.6422, 0.0)  # load missing: the last reading repeats
    assert r.at(dt.datetime(2024, 3, 6, 6, 30, tzinfo=dt.timezone.utc)) == (1.1923, 0.0799)


def test_home_site_replays_its_history(configs_dir):
    site = sim_site(load_site(configs_dir / "home-v2h.yaml"), speed=60.0)
    (u,) = site.units
    assert (u.max_charge_kw, u.max_discharge_kw, u.charge_efficiency, u.islanded_rating_kw) == (6.0, 6.0, 0.95, 6.0)
    assert site.replay is not None and len(site.replay.load_kw) == 17524
    assert site.critical_load_kw == pytest.approx(0.55) and site.speed == 60.0


def test_simulator_address_is_shared_by_the_simulated_chargers(tmp_path, configs_dir):
    assert sim_address(load_site(configs_dir / "office-v2b.yaml")) == ("127.0.0.1", 0)
    path = site_file(tmp_path, "chargers:\n"
                     "  - {id: a, max_charge_kw: 6, max_discharge_kw: 6, adapter: {kind: simulator, port: 5020}}\n"
                     "  - {id: b, max_charge_kw: 6, max_discharge_kw: 6, adapter: {kind: simulator, port: 5021}}\n")
    with pytest.raises(ConfigError, match=rf"{path}:6: chargers\[1\].adapter = '127.0.0.1:5021': differs from "
                                          r"127.0.0.1:5020 \(chargers\[0\]\)"):
        sim_address(load_site(path))


def test_meter_section_real_meter_links_and_map_check(tmp_path):
    chargers = "chargers:\n  - {id: a, max_charge_kw: 6, max_discharge_kw: 6, adapter: {kind: modbus_tcp, host: 10.0.0.5}}\n"
    path = site_file(tmp_path, chargers + "meter:\n  adapter: {kind: modbus_tcp, host: 10.0.0.6, unit_id: 3, "
                                          "profile: flat-meter}\n")
    mp = meter_params(load_site(path))
    assert (mp.link, mp.profile) == (TcpLink("10.0.0.6", 502, 3, 1.0), "flat-meter")
    rtu = site_file(tmp_path, chargers + "meter:\n  adapter: {kind: modbus_rtu, serial_port: /dev/ttyUSB1, unit_id: 9}\n")
    assert meter_params(load_site(rtu)).link == RtuLink("/dev/ttyUSB1", 19200, "E", 9, 1.0)
    assert meter_params(load_site(site_file(tmp_path, chargers))) is None  # real chargers, no meter: none
    bad = site_file(tmp_path, chargers + "meter:\n  adapter: {kind: modbus_tcp, host: 10.0.0.6, profile: sunspec}\n")
    with pytest.raises(ConfigError, match=rf"{bad}:7: meter.adapter.profile = 'sunspec': is a charger map; a meter needs a meter map"):
        check_profiles(load_site(bad))
    sim = site_file(tmp_path, chargers + "meter:\n  adapter: {kind: simulator}\n")
    with pytest.raises(ConfigError, match=r"meter: adapter kind 'simulator' needs at least one charger with adapter kind 'simulator'"):
        load_site(sim)


def test_configured_meter_reads_over_tcp(tmp_path, configs_dir):
    """A meter section pointing at a Modbus TCP server is read by the meter adapter (the simulator's
    SunSpec meter at its unit id stands in for a real meter)."""
    import asyncio

    from adapters import MeterAdapter
    from adapters.sim import SimulatorThread

    sim = SimulatorThread(sim_site(load_site(configs_dir / "home-v2h.yaml")), port=0)
    port = sim.start()
    try:
        path = site_file(tmp_path, "chargers:\n  - {id: a, max_charge_kw: 6, max_discharge_kw: 6, adapter: "
                                   f"{{kind: modbus_tcp, host: 127.0.0.1, port: {port}}}}}\n"
                                   f"meter:\n  adapter: {{kind: modbus_tcp, host: 127.0.0.1, port: {port}, unit_id: {METER_UNIT_ID}}}\n")

        async def read():
            async with MeterAdapter(meter_params(load_site(path))) as meter:
                return await meter.read()

        reading = asyncio.run(read())
    finally:
        sim.stop()
    snap_grid = reading.grid_available
    assert snap_grid is True and reading.import_kw >= 0 and reading.export_kw >= 0
    assert reading.import_kwh is not None
