"""Site configuration: every error path pinned with its message and line; valid files load."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from ems.config import PlugWindow, load_site, parse_clock, summary
from ems.errors import ConfigError
from ems.paths import site_slug

TARIFFS = Path(__file__).parent / "data" / "tariffs"

BASE = """\
site:
  name: Test site
  latitude_deg: 35.0
  longitude_deg: 139.0
grid:
  import_limit_kw: 10
tariff: tariff.yaml
chargers:
  - id: c1
    max_charge_kw: 6
    max_discharge_kw: 6
vehicles:
  - id: car
    capacity_kwh: 60
    max_soc_pct: 90
    chargers: [c1]
    windows:
      - days: [mon, tue, wed, thu]
        arrive: "18:30"
        depart: "07:30"
        departure_soc_pct: 80
"""


def site_file(tmp_path: Path, text: str) -> Path:
    """Write a site file next to a valid tariff file."""
    shutil.copy(TARIFFS / "blocks.yaml", tmp_path / "tariff.yaml")
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


def edited(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def line(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    return next(i for i, row in enumerate(text.splitlines(), 1) if needle in row)


def test_the_base_file_is_valid(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    cfg = load_site(site_file(tmp_path, BASE))
    assert cfg.site.timezone == "Asia/Tokyo" and cfg.grid.export_limit_kw == 0 and not cfg.grid.vehicle_export_allowed
    assert cfg.tariff.name == "test blocks" and cfg.planner.step_minutes == 30 and cfg.planner.horizon_hours == 48
    assert cfg.chargers[0].adapter.kind == "simulator" and cfg.source.endswith("site.yaml")
    # the default: the site's file in the state directory ($STATE_DIRECTORY first), never the working directory
    assert cfg.daemon.database == str(tmp_path / "state" / f"{site_slug(cfg.site.name)}.sqlite")
    given = load_site(site_file(tmp_path, BASE + "daemon:\n  database: data/site.sqlite\n"))
    assert given.daemon.database == str(tmp_path / "data" / "site.sqlite")   # a given path: relative to the file


# (old text, new text, expected message with {line} = the line holding `needle`, needle)
CASES = {
    "unknown key with hint": (
        "  import_limit_kw: 10\n", "  import_limit_kw: 10\n  export_limit_kwh: 3\n",
        "{line}: grid.export_limit_kwh: unknown key; did you mean 'export_limit_kw'? "
        "(allowed: export_limit_kw, import_limit_kw, vehicle_export_allowed)", "export_limit_kwh"),
    "unknown key without a close match": (
        "    capacity_kwh: 60\n", "    capacity_kwh: 60\n    colour: red\n",
        "{line}: vehicles[0].colour: unknown key (allowed: capacity_kwh, chargers, efficiency_km_per_kwh,", "colour"),
    "missing key": (
        "  latitude_deg: 35.0\n", "",
        "{line}: site.latitude_deg: required key is missing", "site:"),
    "missing section": (
        "grid:\n  import_limit_kw: 10\n", "",
        "{line}: grid: required key is missing", "site:"),
    "value above range": (
        "  latitude_deg: 35.0", "  latitude_deg: 95",
        "{line}: site.latitude_deg = 95: Input should be less than or equal to 90", "latitude_deg"),
    "value below range": (
        "capacity_kwh: 60", "capacity_kwh: 0",
        "{line}: vehicles[0].capacity_kwh = 0: Input should be greater than 0", "capacity_kwh"),
    "not a number": (
        "    max_charge_kw: 6", "    max_charge_kw: six",
        "{line}: chargers[0].max_charge_kw = 'six': Input should be a valid number", "max_charge_kw"),
    "bad time zone": (
        "  name: Test site\n", "  name: Test site\n  timezone: Asia/Tokio\n",
        "{line}: site.timezone = 'Asia/Tokio': unknown time zone; use an IANA name such as 'Asia/Tokyo'", "timezone"),
    "clock hour out of range": (
        'depart: "07:30"', 'depart: "25:00"',
        "{line}: vehicles[0].windows[0].depart = '25:00': expected a time 'HH:MM' (24 h), optionally with a "
        "weekday 'mon 07:30'; got '25:00'", "depart"),
    "clock with a dot": (
        'arrive: "18:30"', 'arrive: "18.30"',
        "{line}: vehicles[0].windows[0].arrive = '18.30': expected a time 'HH:MM' (24 h)", "arrive"),
    "weekday on an arrival": (
        'arrive: "18:30"', 'arrive: "mon 18:30"',
        "{line}: vehicles[0].windows[0].arrive = 'mon 18:30': arrive is a time 'HH:MM' on each of the listed days; "
        "put the days in 'days'", "arrive"),
    "unknown weekday": (
        "days: [mon, tue, wed, thu]", "days: [mon, funday]",
        "{line}: vehicles[0].windows[0].days[1] = 'funday': Input should be 'mon', 'tue',", "days"),
    "no days": (
        "days: [mon, tue, wed, thu]", "days: []",
        "{line}: vehicles[0].windows[0].days: List should have at least 1 item", "days"),
    "two departure targets": (
        "        departure_soc_pct: 80\n", "        departure_soc_pct: 80\n        departure_range_km: 100\n",
        "{line}: vehicles[0].windows[0]: give exactly one of departure_soc_pct or departure_range_km", "- days"),
    "no departure target": (
        "        departure_soc_pct: 80\n", "",
        "{line}: vehicles[0].windows[0]: give exactly one of departure_soc_pct or departure_range_km", "- days"),
    "trip and arrival SOC": (
        "        departure_soc_pct: 80\n", "        departure_soc_pct: 80\n        trip_km: 30\n        arrival_soc_pct: 40\n",
        "{line}: vehicles[0].windows[0]: give at most one of trip_km or arrival_soc_pct", "- days"),
    "target above max SOC": (
        "departure_soc_pct: 80", "departure_soc_pct: 95",
        "{line}: vehicles[0]: windows[0]: the departure target (57.0 kWh) is above max_soc_pct 90 % of 60 kWh "
        "(54.0 kWh); the car could never be ready", "- id: car"),
    "range target above max SOC": (
        "departure_soc_pct: 80", "departure_range_km: 300",
        "{line}: vehicles[0]: windows[0]: the departure target (62.0 kWh) is above max_soc_pct", "- id: car"),
    "min SOC not below max SOC": (
        "    max_soc_pct: 90\n", "    max_soc_pct: 90\n    min_soc_pct: 90\n",
        "{line}: vehicles[0]: min_soc_pct (90.0) must be below max_soc_pct (90.0)", "- id: car"),
    "driver's car without a price": (
        "    max_soc_pct: 90\n", "    max_soc_pct: 90\n    owner: driver\n",
        "{line}: vehicles[0]: a driver-owned car (owner: driver) needs energy_price_per_kwh", "- id: car"),
    "price on the site's own car": (
        "    max_soc_pct: 90\n", "    max_soc_pct: 90\n    energy_price_per_kwh: 40\n",
        "{line}: vehicles[0]: energy_price_per_kwh (40) applies to driver-owned cars only", "- id: car"),
    "a bool as kW": (
        "  import_limit_kw: 10", "  import_limit_kw: true",
        "{line}: grid.import_limit_kw = True: Input should be a valid number", "import_limit_kw"),
    "infinite kW": (
        "  import_limit_kw: 10", "  import_limit_kw: .inf",
        "{line}: grid.import_limit_kw = inf: Input should be a finite number", "import_limit_kw"),
    "NaN capacity": (
        "    capacity_kwh: 60", "    capacity_kwh: .nan",
        "{line}: vehicles[0].capacity_kwh = nan: Input should be a finite number", "capacity_kwh"),
    "a number as text": (
        "    capacity_kwh: 60", "    capacity_kwh: '60'",
        "{line}: vehicles[0].capacity_kwh = '60': Input should be a valid number", "capacity_kwh"),
    "unknown owner": (
        "    max_soc_pct: 90\n", "    max_soc_pct: 90\n    owner: employee\n    energy_price_per_kwh: 40\n",
        "vehicles[0].owner = 'employee'", "owner:"),
    "duplicate charger ids": (
        "vehicles:\n", "  - {id: c1, max_charge_kw: 3, max_discharge_kw: 3}\nvehicles:\n",
        "{line}: chargers: ids must be unique: 'c1' at chargers[0] and chargers[1]", "chargers:"),
    "duplicate vehicle ids": (
        "    windows:\n", "    windows: []\n  - id: car\n    capacity_kwh: 40\n    windows:\n",
        "{line}: vehicles: ids must be unique: 'car' at vehicles[0] and vehicles[1]", "vehicles:"),
    "vehicle names an unknown charger": (
        "chargers: [c1]", "chargers: [c1, c9]",
        "{line}: vehicles[0].chargers[1] = 'c9': no charger with this id; defined: ['c1']", "chargers: [c1, c9]"),
    "unknown adapter kind": (
        "    max_discharge_kw: 6\n", "    max_discharge_kw: 6\n    adapter: {kind: modbus, host: x}\n",
        "{line}: chargers[0].adapter: Input tag 'modbus' found using 'kind' does not match any of the expected tags: "
        "'simulator', 'modbus_tcp', 'modbus_rtu'", "adapter"),
    "unknown key in an adapter": (
        "    max_discharge_kw: 6\n", "    max_discharge_kw: 6\n    adapter:\n      kind: modbus_tcp\n      host: h\n      hostname: h\n",
        "{line}: chargers[0].adapter.hostname: unknown key; did you mean 'host'?", "hostname"),
    "planning step": (
        "vehicles:\n", "planner:\n  step_minutes: 20\nvehicles:\n",
        "{line}: planner.step_minutes = 20: Input should be 15 or 30", "step_minutes"),
    "horizon not whole steps": (
        "vehicles:\n", "planner:\n  horizon_hours: 1.2\nvehicles:\n",
        "{line}: planner: horizon_hours (1.2) must be a whole number of 30-minute steps", "planner:"),
    "missing history file": (
        "vehicles:\n", "load:\n  history_csv: nothere.csv\nvehicles:\n",
        "{line}: load.history_csv = 'nothere.csv': no such file ({dir}/nothere.csv); give a path relative to this file",
        "history_csv"),
    "missing tariff file": (
        "tariff: tariff.yaml", "tariff: other.yaml",
        "{line}: tariff = 'other.yaml': the tariff file it names is missing or invalid (its problems are listed below)\n"
        "{dir}/other.yaml: file not found", "tariff:"),
    "inline tariff with an error": (
        "tariff: tariff.yaml\n", "tariff:\n  name: inline\n  basic: {kind: fixed}\n  blocks: [{rate_per_kwh: 30}]\n",
        "{line}: tariff.basic: basic charge of kind 'fixed' needs amount_per_month", "basic:"),
    "duplicate YAML key": (
        "  longitude_deg: 139.0\n", "  longitude_deg: 139.0\n  latitude_deg: 36.0\n",
        "{line}: site.latitude_deg: key appears twice in the same mapping", "latitude_deg: 36"),
    "YAML syntax error": (
        "chargers: [c1]", "chargers: [c1",
        "{line}: YAML syntax error: expected ',' or ']', but got ':'", "windows:"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_error_names_file_line_key_value_and_rule(tmp_path, case):
    old, new, message, needle = CASES[case]
    text = edited(old, new)
    path = site_file(tmp_path, text)
    expected = message.format(line=f"{path}:{line(text, needle)}", dir=tmp_path)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_site(path)


def test_unquoted_clock_times_are_read_as_times_not_base_60_numbers(tmp_path):
    # YAML 1.1 reads an unquoted 18:30 as the integer 1110 (but 07:30 as text)
    cfg = load_site(site_file(tmp_path, edited('arrive: "18:30"', "arrive: 18:30")))
    assert cfg.vehicles[0].windows[0].arrive == "18:30"


def test_an_invalid_tariff_file_is_reported_at_its_own_lines(tmp_path):
    path = site_file(tmp_path, BASE)
    tariff_text = (TARIFFS / "blocks.yaml").read_text().replace("up_to_kwh: 300", "up_to_kwh: 100")
    (tmp_path / "tariff.yaml").write_text(tariff_text)
    with pytest.raises(ConfigError) as info:
        load_site(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:{line(BASE, 'tariff:')}: tariff = 'tariff.yaml': the tariff file it names is missing or invalid "
        "(its problems are listed below)",
        f"{tmp_path / 'tariff.yaml'}:{line(tariff_text, 'blocks:')}: blocks: up_to_kwh must increase; got [120.0, 100.0]",
    ]


def test_several_errors_are_reported_together_in_line_order(tmp_path):
    text = edited("  latitude_deg: 35.0", "  latitude_deg: 95")
    text = edited("capacity_kwh: 60", "capacity_kwh: -1", text)
    text = edited("chargers: [c1]", "chargers: [c7]", text)
    text = edited("    max_charge_kw: 6", "    max_charge_kw: 6\n    max_charge_kwh: 6", text)
    path = site_file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_site(path)
    got = [(p.line, p.path) for p in info.value.problems]
    assert got == [(line(text, "latitude_deg"), "site.latitude_deg"),
                   (line(text, "max_charge_kwh"), "chargers[0].max_charge_kwh"),
                   (line(text, "capacity_kwh"), "vehicles[0].capacity_kwh"),
                   (line(text, "[c7]"), "vehicles[0].chargers[0]")]
    assert str(info.value).count(str(path)) == 4


def test_files_that_are_not_site_mappings(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'nothere.yaml'}: file not found")):
        load_site(tmp_path / "nothere.yaml")
    with pytest.raises(ConfigError, match=r"site\.yaml:1 = \['a', 'b'\]: a site file is a mapping with keys site, grid"):
        load_site(site_file(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError) as info:
        load_site(site_file(tmp_path, ""))
    assert [p.path for p in info.value.problems] == ["site", "grid", "tariff"]


def test_example_configs_load_and_summarise(configs_dir):
    office = load_site(configs_dir / "office-v2b.yaml")
    assert office.tariff.basic.demand_rate() == pytest.approx(1614.86)
    assert [v.windows[0].on_holidays for v in office.vehicles] == [False] * 3
    shelter = load_site(configs_dir / "shelter.yaml")
    assert shelter.load.critical_kw == pytest.approx(1.4)              # the Kobe model's 1,400 W
    text = summary(shelter)
    assert "critical load: 1.4 kW; outage reserve 24 h (hard)" in text
    home = load_site(configs_dir / "home-v2h.yaml")
    assert Path(home.load.history_csv).is_file()


def test_clock_parsing_and_departure_offsets():
    assert parse_clock("07:30")[0] is None and parse_clock("mon 07:30")[0] == 0
    with pytest.raises(ValueError, match="expected a time"):
        parse_clock("7:30")
    overnight = PlugWindow(days=["mon"], arrive="18:30", depart="07:30", departure_soc_pct=80)
    assert overnight.depart_offset(0).total_seconds() == 13 * 3600
    same_time = PlugWindow(days=["mon"], arrive="08:00", depart="08:00", departure_soc_pct=80)
    assert same_time.depart_offset(0).total_seconds() == 24 * 3600      # at or before arrival: next day
    weekend = PlugWindow(days=["fri"], arrive="18:30", depart="mon 07:30", departure_soc_pct=80)
    assert weekend.depart_offset(4).total_seconds() == (2 * 24 + 13) * 3600
    same_day_next_week = PlugWindow(days=["mon"], arrive="18:30", depart="mon 07:30", departure_soc_pct=80)
    assert same_day_next_week.depart_offset(0).total_seconds() == (6 * 24 + 13) * 3600


def test_a_file_named_by_mistake_is_quoted_only_in_an_excerpt(tmp_path, capsys):
    """A tariff key naming some other text file: the error names it and quotes at most a short
    excerpt of what it read, never the file (which could be anything, /etc/passwd included)."""
    secret = "\n".join(f"line {i}: not for the log" for i in range(500))
    (tmp_path / "notes.txt").write_text(secret)
    path = site_file(tmp_path, BASE.replace("tariff: tariff.yaml", "tariff: notes.txt"))
    from ems.cli import main
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr()
    text = err.out + err.err
    assert "notes.txt" in text and "line 40:" not in text and "line 499" not in text
    assert "more problem(s) not shown" in text and len(text) < 6000
