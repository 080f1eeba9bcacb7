"""Bad inputs, as a hostile or unlucky user gives them, to every command and every file kind.

Each case runs ``ems`` in this process (``ems.cli.main``) on a fresh workspace (a small home site, its
tariff, a register map, meter, load history, peaks history, forecast, weather files) with one thing
broken, and asserts: exit status 2, no traceback, the message names the file (and line or row), the
key, column or flag and quotes the bad value, it ends quickly, and nothing was written (no output
file, no database, no file of the workspace changed). The cases that would hang or eat memory before
the fixes (FIFOs, ``/dev/zero``, alias bombs) run in subprocesses with a timeout and a memory limit.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ems.cli import main

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 20.0          # a case must end within this, whatever the input
MEMORY = 1024 * 2**20   # address space of a subprocess case [bytes]

SITE = """\
site:
  name: Bad inputs (Tokyo)
  timezone: Asia/Tokyo
  latitude_deg: 35.68
  longitude_deg: 139.77
grid:
  import_limit_kw: 12
  export_limit_kw: 5
tariff: tariff.yaml
pv:
  - {name: roof, capacity_kwp: 5.0, tilt_deg: 30, azimuth_deg: 180}
load:
  history_csv: history.csv
  critical_circuits:
    - {name: fridge, watts: 300}
chargers:
  - id: v2h1
    max_charge_kw: 6
    max_discharge_kw: 6
    islanded_rating_kw: 6
    adapter: {kind: simulator}
vehicles:
  - id: leaf
    capacity_kwh: 62
    min_soc_pct: 20
    max_soc_pct: 90
    chargers: [v2h1]
    windows:
      - {days: [mon, tue, wed, thu, fri], arrive: "18:30", depart: "07:30", departure_soc_pct: 80}
planner:
  step_minutes: 30
  horizon_hours: 24
daemon:
  dispatch_interval_s: 5
  database: ems.sqlite
"""

TARIFF = """\
name: Test time-of-use
currency: JPY
timezone: Asia/Tokyo
holidays_country: JP
basic:
  kind: per_ampere
  rate_per_ampere_month: 31.175
  contract_amperes: 60
energy:
  - name: night
    start: "01:00"
    end: "06:00"
    rate_per_kwh: 27.86
  - name: day
    rate_per_kwh: 35.76
adders:
  - name: renewable_levy
    default_per_kwh: 3.98
    monthly:
      "2024-05": 3.49
export:
  rate_per_kwh: 16.0
"""

START = "2024-07-01T00:00+09:00"
OPEN_METEO = ('{"utc_offset_seconds": 32400, "hourly_units": {"shortwave_radiation": "W/m\\u00b2", '
              '"temperature_2m": "\\u00b0C"}, "hourly": {"time": ["2024-07-01T00:00", "2024-07-01T01:00"], '
              '"shortwave_radiation": [0, 10], "temperature_2m": [20, 21]}}')


def _csv(path: Path, periods: int, **columns: float) -> None:
    idx = pd.date_range(START, periods=periods, freq="30min")
    pd.DataFrame({"timestamp": [t.isoformat() for t in idx], **columns}).to_csv(path, index=False)


def workspace(d: Path) -> dict[str, str]:
    """The valid inputs every case breaks one thing of; returns the names the case tables use."""
    (d / "site.yaml").write_text(SITE)
    (d / "tariff.yaml").write_text(TARIFF)
    shutil.copy(ROOT / "adapters" / "registers" / "sunspec.yaml", d / "map.yaml")
    _csv(d / "history.csv", 48 * 14, load_kw=0.5, pv_kw=0.0)
    _csv(d / "meter.csv", 96, import_kw=0.5, export_kw=0.0)
    _csv(d / "kw.csv", 96, kw=0.5)
    _csv(d / "weather.csv", 96, ghi_wm2=100.0, temp_air_c=20.0)
    (d / "peaks.csv").write_text("month,peak_kw\n2024-05,4.0\n2024-06,5.0\n")
    (d / "weather.json").write_text(OPEN_METEO)
    (d / "weather.tm2").write_text("not a TMY2 file\n")
    names = {k: str(d / f) for k, f in (("site", "site.yaml"), ("tariff", "tariff.yaml"), ("map", "map.yaml"),
                                         ("history", "history.csv"), ("meter", "meter.csv"), ("kw", "kw.csv"),
                                         ("weather", "weather.csv"), ("peaks", "peaks.csv"), ("json", "weather.json"),
                                         ("tm2", "weather.tm2"))}
    return {**names, "dir": str(d), "out": str(d / "out.csv"), "db": str(d / "ems.sqlite"), "sub": str(d / "nope")}


# ----------------------------------------------------------------------------------- the case tables
# (id, argv, file to break, edit, what the message must name). ``edit``: ("sub", old, new) replaces
# text in the file, ("put", text) writes it. Placeholders {site}, {meter}, ... are the workspace's.
CHECK = ["check", "{site}"]
BILL = ["bill", "--tariff", "{tariff}", "--meter", "{meter}"]
BILL_P = BILL + ["--peaks-history", "{peaks}"]
PLAN = ["plan", "--config", "{site}", "--start", START, "--hours", "4", "--pv", "{kw}", "--load", "{kw}",
        "--out", "{out}"]
PLAN_P = PLAN + ["--peaks-history", "{peaks}"]
RUN = ["run", "--config", "{site}", "--speed", "100", "--start", "2024-07-08T19:00+09:00",
       "--until", "2024-07-08T19:05+09:00", "--solver", "thread"]
SIM = ["sim", "--config", "{site}", "--port", "0", "--duration", "0.1"]
STATUS = ["status", "--config", "{site}"]
FORECAST = ["forecast", "--config", "{site}", "--start", "2024-07-12T00:00+09:00", "--hours", "4"]
FORECAST_W = FORECAST + ["--weather", "{weather}"]
FORECAST_H = FORECAST + ["--history", "{history}"]
BACKTEST = ["forecast", "backtest", "--config", "{site}", "--history", "{history}"]
STUDY = ["study", "--config", "{site}", "--strategy", "none", "--workers", "1", "--no-report", "--out", "{dir}/study"]
STUDY_D = STUDY + ["--data", "{history}"]
DEMO = ["demo", "--configs", "{dir}/configs", "--site", "home"]

BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))
MERGE_BOMB = "a: &a {x: 1, y: 2}\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} {{<<: [*{chr(97 + i)}, *{chr(97 + i)}], z{i}: 1}}\n" for i in range(20))
DEEP = "a: " + "[" * 3000 + "]" * 3000 + "\n"
NAME = "  name: Bad inputs (Tokyo)"
LIMIT = "import_limit_kw: 12"
SIM_ADAPTER = "adapter: {kind: simulator}"
TCP = "adapter: {kind: modbus_tcp, host: 192.0.2.7, unit_id: 3}"
PROFILE = "adapter: {kind: simulator, profile: map.yaml}"

# the site file (every command reads it)
SITE_CASES = [
    ("site-alias-bomb", CHECK, "site", ("put", BOMB), ["{site}:6", "alias bomb"]),
    ("site-merge-bomb", STATUS, "site", ("put", MERGE_BOMB), ["{site}:", "more than 100,000 values"]),
    ("site-recursive-alias", CHECK, "site", ("sub", "grid:\n", "grid: &g\n  loop: *g\n"), ["{site}:6", "recursive alias"]),
    ("site-deep-nesting", PLAN, "site", ("put", DEEP), ["{site}:1", "deeper than 64 levels"]),
    ("site-deep-block", CHECK, "site", ("put", "".join("  " * i + f"k{i}:\n" for i in range(100)) + "  " * 100 + "v\n"),
     ["{site}:64", "deeper than 64"]),
    ("site-python-tag", CHECK, "site", ("sub", NAME, "  name: !!python/object/apply:os.system ['touch {dir}/pwned']"),
     ["{site}:2", "python/object/apply", "not allowed"]),
    ("site-python-name-tag", RUN, "site", ("sub", NAME, "  name: !!python/name:os.system"), ["{site}:2", "not allowed"]),
    ("site-custom-tag", SIM, "site", ("sub", NAME, "  name: !vault secret"), ["{site}:2", "'!vault'", "except !!str"]),
    ("site-binary-tag", FORECAST, "site", ("sub", NAME, "  name: !!binary aGVsbG8="), ["{site}:2", "binary"]),
    ("site-set-tag", STUDY, "site", ("sub", NAME, "  name: !!set {a, b}"), ["{site}:2", "set"]),
    ("site-seq-key", CHECK, "site", ("sub", "grid:\n", "? [a, b]\n: 1\ngrid:\n"), ["{site}:6", "a key must be a plain value"]),
    ("site-map-key", CHECK, "site", ("sub", "grid:\n", "{a: 1}: 2\ngrid:\n"), ["{site}:6", "a key must be a plain value"]),
    ("site-bad-date", CHECK, "site", ("sub", NAME, "  name: 2024-13-45"), ["{site}:2", "'2024-13-45'", "month must be"]),
    ("site-huge-int", CHECK, "site", ("sub", LIMIT, "import_limit_kw: " + "9" * 5000), ["{site}:7", "4300 digits"]),
    ("site-nul", CHECK, "site", ("sub", "grid:", "gr\x00id:"), ["{site}:6", "U+0000"]),
    ("site-not-utf8", CHECK, "site", ("sub", NAME, "  name: caf\udce9"), ["{site}:2", "not UTF-8", "0xe9"]),
    ("site-two-docs", CHECK, "site", ("sub", "grid:\n", "---\ngrid:\n"), ["{site}:6", "YAML syntax error"]),
    ("site-syntax", PLAN, "site", ("sub", "grid:\n", "grid: [\n"), ["{site}:", "YAML syntax error"]),
    ("site-list", CHECK, "site", ("put", "- 1\n- 2\n"), ["{site}:1", "a site file is a mapping"]),
    ("site-empty", STATUS, "site", ("put", ""), ["{site}", "site: required key is missing"]),
    ("site-duplicate-key", CHECK, "site", ("sub", LIMIT, LIMIT + "\n  import_limit_kw: 13"), ["{site}:8", "appears twice"]),
    ("site-unknown-key", RUN, "site", ("sub", LIMIT, "import_limit_kwh: 12"), ["{site}:7", "import_limit_kwh",
                                                                                "did you mean 'import_limit_kw'"]),
    ("site-limit-inf", PLAN, "site", ("sub", LIMIT, "import_limit_kw: .inf"), ["{site}:7", "grid.import_limit_kw", "inf"]),
    ("site-limit-nan", SIM, "site", ("sub", LIMIT, "import_limit_kw: .nan"), ["{site}:7", "grid.import_limit_kw", "nan"]),
    ("site-limit-bool", STATUS, "site", ("sub", LIMIT, "import_limit_kw: true"), ["{site}:7", "grid.import_limit_kw", "True"]),
    ("site-limit-1e308", CHECK, "site", ("sub", LIMIT, "import_limit_kw: 1e308"), ["{site}:7", "grid.import_limit_kw", "1e308"]),
    ("site-limit-text", FORECAST, "site", ("sub", LIMIT, "import_limit_kw: twelve"), ["{site}:7", "'twelve'"]),
    ("site-limit-negative", STUDY, "site", ("sub", LIMIT, "import_limit_kw: -12"), ["{site}:7", "-12", "greater than 0"]),
    ("site-latitude", CHECK, "site", ("sub", "latitude_deg: 35.68", "latitude_deg: 135.68"), ["{site}:4", "135.68"]),
    ("site-timezone", CHECK, "site", ("sub", "timezone: Asia/Tokyo", "timezone: ../../etc/passwd"),
     ["{site}:3", "'../../etc/passwd'", "unknown time zone"]),
    ("site-soc-500", CHECK, "site", ("sub", "max_soc_pct: 90", "max_soc_pct: 500"), ["{site}:26", "vehicles[0].max_soc_pct", "500"]),
    ("site-charger-1e9", CHECK, "site", ("sub", "max_charge_kw: 6", "max_charge_kw: 1e9"), ["{site}:", "chargers[0].max_charge_kw"]),
    ("site-arrive", CHECK, "site", ("sub", '"18:30"', '"25:30"'), ["{site}:29", "'25:30'", "HH:MM"]),
    ("site-vehicle-charger", CHECK, "site", ("sub", "chargers: [v2h1]", "chargers: [v2h9]"), ["{site}:27", "'v2h9'",
                                                                                             "no charger with this id"]),
    ("site-tariff-passwd", CHECK, "site", ("sub", "tariff: tariff.yaml", "tariff: /etc/passwd"), ["{site}:9", "'/etc/passwd'",
                                                                                                 "/etc/passwd"]),
    ("site-tariff-dir", CHECK, "site", ("sub", "tariff: tariff.yaml", "tariff: {dir}"), ["{site}:9", "a directory"]),
    ("site-tariff-devzero", CHECK, "site", ("sub", "tariff: tariff.yaml", "tariff: /dev/zero"),
     ["{site}:9", "/dev/zero", "not a regular file"]),
    ("site-tariff-missing", PLAN, "site", ("sub", "tariff: tariff.yaml", "tariff: nope.yaml"), ["{site}:9", "file not found"]),
    ("site-history-missing", CHECK, "site", ("sub", "history_csv: history.csv", "history_csv: nope.csv"),
     ["{site}:13", "load.history_csv", "'nope.csv'", "no such file"]),
    ("site-history-dir", CHECK, "site", ("sub", "history_csv: history.csv", "history_csv: {dir}"),
     ["{site}:13", "load.history_csv", "no such file"]),
    ("site-peaks-missing", CHECK, "site", ("sub", "daemon:\n", "peaks_history_csv: nope.csv\ndaemon:\n"),
     ["{site}:", "peaks_history_csv", "'nope.csv'"]),
    ("site-peaks-bad", CHECK, "site", ("sub", "daemon:\n", "peaks_history_csv: meter.csv\ndaemon:\n"),
     ["{site}:", "peaks_history_csv", "'meter.csv'", "{meter}:1"]),
    ("site-db-dir", STATUS, "site", ("sub", "database: ems.sqlite", "database: {dir}"), ["{dir}", "is a directory"]),
    ("site-db-not-sqlite", STATUS, "site", ("sub", "database: ems.sqlite", "database: peaks.csv"),
     ["{peaks}", "is not a SQLite database", "b'month,pe'"]),
    ("site-db-url", RUN, "site", ("sub", "database: ems.sqlite", "database: 'postgresql://me:s3cret@db.invalid/ems'"),
     ["postgresql://me:***@db.invalid/ems", "cannot be opened"]),
    ("site-db-url-garbage", RUN, "site", ("sub", "database: ems.sqlite", "database: '://nothing'"), ["://nothing",
                                                                                                  "cannot be opened"]),
    ("site-speed-real-charger", RUN, "site", ("sub", SIM_ADAPTER, TCP), ["{site}", "chargers[].adapter.kind",
                                                                          "every charger must use the simulator"]),
    ("site-tcp-unit-0", CHECK, "site", ("sub", SIM_ADAPTER, "adapter: {kind: modbus_tcp, host: 192.0.2.7, unit_id: 0}"),
     ["{site}:21", "chargers[0].adapter.unit_id = 0", "broadcast"]),
    ("site-meter-unit-0", CHECK, "site", ("sub", "vehicles:", "meter:\n  adapter: {kind: modbus_tcp, host: 192.0.2.8, "
                                           "unit_id: 0}\nvehicles:"), ["{site}:23", "meter.adapter.unit_id = 0", "broadcast"]),
    ("site-same-address-charger-meter", CHECK, "site", ("sub", f"{SIM_ADAPTER}\nvehicles:", f"{TCP}\nmeter:\n  {TCP}\nvehicles:"),
     ["{site}:23", "meter.adapter.unit_id", "'192.0.2.7:502 unit 3'", "the same device address as chargers[0]"]),
    ("site-same-address-chargers", CHECK, "site",
     ("sub", f"{SIM_ADAPTER}\nvehicles:", f"{TCP}\n  - {{id: v2h2, max_charge_kw: 6, max_discharge_kw: 6, {TCP}}}\nvehicles:"),
     ["{site}:", "chargers[1].adapter.unit_id", "the same device address as chargers[0]"]),
    ("site-same-address-localhost", CHECK, "site",
     ("sub", "vehicles:", "  - {id: v2h2, max_charge_kw: 6, max_discharge_kw: 6, adapter: {kind: modbus_tcp, host: "
             "LOCALHOST, unit_id: 3}}\n  - {id: v2h3, max_charge_kw: 6, max_discharge_kw: 6, adapter: {kind: modbus_tcp, "
             "host: 127.0.0.1, unit_id: 3}}\nvehicles:"), ["{site}:", "chargers[2].adapter.unit_id", "chargers[1]"]),
    ("site-same-serial-unit", CHECK, "site",
     ("sub", SIM_ADAPTER, "adapter: {kind: modbus_rtu, serial_port: /dev/ttyUSB0, unit_id: 2}\nmeter:\n  adapter: "
             "{kind: modbus_rtu, serial_port: /dev/ttyUSB0, unit_id: 2}"),
     ["{site}:", "meter.adapter.unit_id", "'/dev/ttyUSB0 unit 2'", "chargers[0]"]),
    ("site-sim-unit-ids", CHECK, "site",
     ("sub", SIM_ADAPTER, "adapter: {kind: simulator, unit_id: 4}\n  - {id: v2h2, max_charge_kw: 6, max_discharge_kw: 6, "
             "adapter: {kind: simulator, unit_id: 4}}"), ["{site}:", "chargers[1].adapter.unit_id = 4", "already used"]),
]

TARIFF_CASES = [
    ("tariff-alias-bomb", BILL, "tariff", ("put", BOMB), ["{tariff}:6", "alias bomb"]),
    ("tariff-python-tag", BILL, "tariff", ("sub", "name: Test time-of-use", "name: !!python/object/new:os.system [ls]"),
     ["{tariff}:1", "not allowed"]),
    ("tariff-deep", CHECK, "tariff", ("put", DEEP), ["{tariff}:1", "deeper than 64"]),
    ("tariff-recursive", BILL, "tariff", ("sub", "energy:\n", "energy: &e\n  - *e\n"), ["{tariff}:9", "recursive alias"]),
    ("tariff-rate-inf", BILL, "tariff", ("sub", "rate_per_kwh: 27.86", "rate_per_kwh: .inf"),
     ["{tariff}:13", "energy[0].rate_per_kwh", "inf", "finite"]),
    ("tariff-rate-1e300", BILL, "tariff", ("sub", "rate_per_kwh: 27.86", "rate_per_kwh: 1e300"),
     ["{tariff}:13", "energy[0].rate_per_kwh", "1e300"]),
    ("tariff-rate-bool", PLAN, "tariff", ("sub", "rate_per_kwh: 27.86", "rate_per_kwh: yes"),
     ["{tariff}:13", "energy[0].rate_per_kwh", "True"]),
    ("tariff-adder-nan", BILL, "tariff", ("sub", "default_per_kwh: 3.98", "default_per_kwh: .nan"),
     ["{tariff}:18", "adders[0].default_per_kwh", "nan"]),
    ("tariff-month-13", BILL, "tariff", ("sub", '"2024-05": 3.49', '"2024-13": 3.49'), ["{tariff}:", "'2024-13'"]),
    ("tariff-month-int", STUDY, "tariff", ("sub", '"2024-05": 3.49', "2024: 3.49"), ["{tariff}:", "2024"]),
    ("tariff-start-25h", BILL, "tariff", ("sub", 'start: "01:00"', 'start: "25:00"'), ["{tariff}:11", "'25:00'"]),
    ("tariff-start-int", BILL, "tariff", ("sub", 'start: "01:00"', "start: 100"), ["{tariff}:11", "energy[0].start", "100"]),
    ("tariff-timezone", BILL, "tariff", ("sub", "timezone: Asia/Tokyo", "timezone: Mars/Olympus"),
     ["{tariff}:3", "'Mars/Olympus'", "unknown time zone"]),
    ("tariff-holidays", BILL, "tariff", ("sub", "holidays_country: JP", "holidays_country: XX"), ["{tariff}:4", "'XX'"]),
    ("tariff-amperes-neg", BILL, "tariff", ("sub", "contract_amperes: 60", "contract_amperes: -60"),
     ["{tariff}:8", "basic.contract_amperes", "-60"]),
    ("tariff-kind", BILL, "tariff", ("sub", "kind: per_ampere", "kind: per_vibe"), ["{tariff}:6", "per_vibe"]),
    ("tariff-unknown-key", CHECK, "tariff", ("sub", "currency: JPY", "currency: JPY\ncurency: JPY"),
     ["{tariff}:3", "curency", "did you mean 'currency'"]),
    ("tariff-not-utf8", BILL, "tariff", ("sub", "Test", "T\udcffest"), ["{tariff}:1", "not UTF-8"]),
    ("tariff-missing", BILL, "tariff", ("delete",), ["{tariff}", "file not found"]),
    ("tariff-list", BILL, "tariff", ("put", "[1, 2]\n"), ["{tariff}:1", "valid dictionary"]),
    ("tariff-study-flag-dir", STUDY + ["--tariff", "{dir}"], None, None, ["--tariff", "{dir}", "no such tariff file"]),
]

MAP_CASES = [   # the site's charger names map.yaml as its register map
    ("map-alias-bomb", CHECK, "map", ("put", BOMB), ["{site}:21", "chargers[0].adapter.profile", "{map}:6", "alias bomb"]),
    ("map-python-tag", SIM, "map", ("sub", "name: sunspec", "name: !!python/name:os.system"), ["{map}:", "not allowed"]),
    ("map-deep", RUN, "map", ("put", DEEP), ["{map}:1", "deeper than 64"]),
    ("map-seq-key", CHECK, "map", ("sub", "  1: 66", "  [1]: 66"), ["{map}:", "a key must be a plain value"]),
    ("map-list", CHECK, "map", ("put", "- 1\n"), ["{map}:1", "a register map is a mapping"]),
    ("map-offset-text", CHECK, "map", ("sub", "offset: 2, type: string", "offset: two, type: string"),
     ["{map}:", "points.manufacturer.offset", "'two'"]),
    ("map-offset-huge", CHECK, "map", ("sub", "offset: 2, type: string", "offset: 99999999999, type: string"),
     ["{map}:", "points.manufacturer.offset", "99999999999"]),
    ("map-type", CHECK, "map", ("sub", "type: s16, sf: w_sf", "type: s99, sf: w_sf"), ["{map}:", "points.power_w.type", "'s99'"]),
    ("map-scale-inf", CHECK, "map", ("sub", "type: s16, sf: w_sf", "type: s16, scale: .inf"),
     ["{map}:", "points.power_w.scale", "inf", "finite"]),
    ("map-scale-bool", CHECK, "map", ("sub", "type: s16, sf: w_sf", "type: s16, scale: true"), ["{map}:", "points.power_w.scale"]),
    ("map-model-length", CHECK, "map", ("sub", "  1: 66", "  1: 99999999"), ["{map}:", "models.1", "99999999"]),
    ("map-range", CHECK, "map", ("sub", "range: [0, 86400]", "range: [86400, 0]"),
     ["{map}:", "points.reversion_timeout_s.range", "86400"]),
    ("map-points-list", CHECK, "map", ("sub", "points:\n", "points: [1, 2]\nunused:\n"), ["{map}:", "points"]),
    ("map-tag-in-enum", CHECK, "map", ("sub", "{0: DISCONNECTED, 1: CONNECTED}", "{0: !!binary AA==, 1: CONNECTED}"),
     ["{map}:", "binary", "not allowed"]),
    ("map-missing", CHECK, "map", ("delete",), ["{site}:21", "{map}", "file not found"]),
    ("map-dir", CHECK, "site", ("sub", SIM_ADAPTER, "adapter: {kind: simulator, profile: /etc/.yaml}"),
     ["chargers[0].adapter.profile", "/etc/.yaml"]),
]

METER_CASES = [
    ("meter-1e30", BILL, "meter", ("sub", "0.5,0.0\n", "1e30,0.0\n"), ["{meter}:2", "import_kw", "'1e30'", "100,000"]),
    ("meter-export-1e9", BILL, "meter", ("sub", "0.5,0.0\n", "0.5,1e9\n"), ["{meter}:2", "export_kw", "'1e9'"]),
    ("meter-nan", BILL, "meter", ("sub", "0.5,0.0\n", "nan,0.0\n"), ["{meter}:2", "import_kw", "'nan'", "not a number"]),
    ("meter-inf", BILL, "meter", ("sub", "0.5,0.0\n", "inf,0.0\n"), ["{meter}:2", "import_kw", "'inf'", "finite"]),
    ("meter-true", BILL, "meter", ("sub", "0.5,0.0\n", "true,0.0\n"), ["{meter}:2", "import_kw", "'true'"]),
    ("meter-negative", BILL, "meter", ("sub", "0.5,0.0\n", "-1,0.0\n"), ["{meter}:2", "import_kw", "-1", "negative"]),
    ("meter-text", BILL, "meter", ("sub", "0.5,0.0\n", "lots,0.0\n"), ["{meter}:2", "'lots'"]),
    ("meter-empty-cell", BILL, "meter", ("sub", "0.5,0.0\n", ",0.0\n"), ["{meter}:2", "import_kw", "empty cell"]),
    ("meter-header-only", BILL, "meter", ("put", "timestamp,import_kw\n"), ["{meter}", "no data rows"]),
    ("meter-empty-file", BILL, "meter", ("put", ""), ["{meter}", "cannot read as CSV"]),
    ("meter-binary", BILL, "meter", ("put", "\x00\x01\x02"), ["{meter}:1", "no 'timestamp' column"]),
    ("meter-one-row", BILL, "meter", ("put", f"timestamp,import_kw\n{START},1\n"), ["{meter}", "at least two rows"]),
    ("meter-no-offset", BILL, "meter", ("sub", "2024-07-01T00:30:00+09:00", "2024-07-01T00:30:00"),
     ["{meter}:3", "'2024-07-01T00:30:00'", "UTC offset"]),
    ("meter-offset-25h", BILL, "meter", ("sub", "2024-07-01T00:30:00+09:00", "2024-07-01T00:30:00+25:00"),
     ["{meter}:3", "+25:00", "not an ISO 8601"]),
    ("meter-year-1900", BILL, "meter", ("sub", "2024-07-01T00:00:00+09:00", "1900-07-01T00:00:00+09:00"),
     ["{meter}:2", "'1900-07-01T00:00:00+09:00'", "2000-2099"]),
    ("meter-year-2300", BILL, "meter", ("sub", "2024-07-01T00:00:00+09:00", "2300-07-01T00:00:00+09:00"),
     ["{meter}:2", "2300-07-01", "2000-2099"]),
    ("meter-unsorted", BILL, "meter", ("sub", "2024-07-01T00:30:00+09:00", "2024-06-30T00:30:00+09:00"),
     ["{meter}:3", "rows must be sorted"]),
    ("meter-duplicate-row", BILL, "meter", ("sub", "2024-07-01T00:30:00+09:00", "2024-07-01T00:00:00+09:00"),
     ["{meter}:3", "duplicate of row 2"]),
    ("meter-gap", BILL, "meter", ("sub", "2024-07-01T01:00:00+09:00,0.5,0.0\n", ""), ["{meter}:", "gap"]),
    ("meter-7-minute-step", BILL, "meter", ("put", f"timestamp,import_kw\n{START},1\n2024-07-01T00:07+09:00,1\n"),
     ["{meter}:3", "does not divide 30 minutes"]),
    ("meter-nanosecond-step", BILL, "meter", ("put", "timestamp,import_kw\n2024-07-01T00:00:00.000000001+09:00,1\n"
                                                      "2024-07-01T00:00:00.000000002+09:00,1\n"),
     ["{meter}:3", "not a whole number of minutes"]),
    ("meter-column-twice", BILL, "meter", ("put", f"timestamp,import_kw,import_kw\n{START},1,1\n2024-07-01T00:30+09:00,1,1\n"),
     ["{meter}:1", "import_kw", "named twice"]),
    ("meter-extra-values", BILL, "meter", ("put", f"timestamp,import_kw\n{START},1,2,3\n2024-07-01T00:30+09:00,1\n"),
     ["{meter}:2", "more values than the header"]),
    ("meter-unclosed-quote", BILL, "meter", ("put", f'timestamp,import_kw\n"{START},1\n'), ["{meter}", "cannot read as CSV"]),
    ("meter-blank-line", BILL, "meter", ("sub", "2024-07-01T00:30:00+09:00,0.5,0.0\n", "\n2024-07-01T00:30:00+09:00,0.5,0.0\n"),
     ["{meter}:3", "blank line"]),
    ("meter-no-import-column", BILL, "meter", ("put", f"timestamp,kw\n{START},1\n2024-07-01T00:30+09:00,1\n"),
     ["{meter}:1", "import_kw", "missing column"]),
    ("meter-directory", ["bill", "--tariff", "{tariff}", "--meter", "{dir}"], None, None, ["{dir}", "a directory"]),
    ("meter-devzero", ["bill", "--tariff", "{tariff}", "--meter", "/dev/zero"], None, None, ["/dev/zero", "not a regular file"]),
    ("meter-missing", BILL, "meter", ("delete",), ["{meter}", "file not found"]),
]

HISTORY_CASES = [   # the load history: forecast --history, backtest, study --data, sim --replay, the site's history_csv
    ("history-1e30", FORECAST_H, "history", ("sub", "0.5,0.0\n", "1e30,0.0\n"), ["{history}:2", "load_kw", "'1e30'"]),
    ("history-pv-1e30", STUDY_D, "history", ("sub", "0.5,0.0\n", "0.5,1e30\n"), ["{history}:2", "pv_kw", "'1e30'"]),
    ("history-no-load", FORECAST_H, "history", ("put", f"timestamp,foo\n{START},1\n2024-07-01T00:30+09:00,1\n"),
     ["{history}:1", "load_kw", "missing column"]),
    ("history-text", STUDY_D, "history", ("sub", "0.5,0.0\n", "half,0.0\n"), ["{history}:2", "load_kw", "'half'"]),
    ("history-negative", FORECAST_H, "history", ("sub", "0.5,0.0\n", "-3,0.0\n"), ["{history}:2", "load_kw", "-3"]),
    ("history-no-offset", BACKTEST, "history", ("sub", "2024-07-01T00:30:00+09:00", "2024-07-01T00:30:00"),
     ["{history}:3", "UTC offset"]),
    ("history-too-short", BACKTEST, "history", ("put", f"timestamp,load_kw\n{START},1\n2024-07-01T00:30+09:00,1\n"),
     ["history", "too short to backtest"]),
    ("history-all-empty", FORECAST_H, "history", ("put", f"timestamp,load_kw\n{START},\n2024-07-01T00:30+09:00,\n"),
     ["{history}", "load_kw", "no load measurements"]),
    ("history-7-minute", STUDY_D, "history", ("put", f"timestamp,load_kw,pv_kw\n{START},1,0\n2024-07-01T00:07+09:00,1,0\n"),
     ["{history}:3", "does not divide 30 minutes"]),
    ("history-replay-1e30", SIM + ["--replay", "{history}"], "history", ("sub", "0.5,0.0\n", "1e30,0.0\n"),
     ["{history}:2", "load_kw", "'1e30'"]),
    ("history-replay-no-load", SIM + ["--replay", "{history}"], "history",
     ("put", f"timestamp,pv_kw\n{START},1\n2024-07-01T00:30+09:00,1\n"), ["{history}:1", "load_kw"]),
    ("history-site-file-bad", RUN, "history", ("sub", "0.5,0.0\n", "1e30,0.0\n"), ["{history}:2", "'1e30'"]),
    ("history-study-data-missing", STUDY + ["--data", "{dir}/nope.csv"], None, None, ["{dir}/nope.csv", "no such file"]),
    ("history-devzero", FORECAST + ["--history", "/dev/zero"], None, None, ["/dev/zero", "not a regular file"]),
]

PEAKS_CASES = [
    ("peaks-1e30", BILL_P, "peaks", ("sub", "2024-05,4.0", "2024-05,1e30"), ["{peaks}:2", "peak_kw", "'1e30'"]),
    ("peaks-nan", BILL_P, "peaks", ("sub", "2024-05,4.0", "2024-05,nan"), ["{peaks}:2", "peak_kw", "'nan'"]),
    ("peaks-negative", BILL_P, "peaks", ("sub", "2024-05,4.0", "2024-05,-4"), ["{peaks}:2", "peak_kw", "-4"]),
    ("peaks-month-13", BILL_P, "peaks", ("sub", "2024-05,4.0", "2024-13,4.0"), ["{peaks}:2", "month", "'2024-13'"]),
    ("peaks-month-0000", BILL_P, "peaks", ("sub", "2024-05,4.0", "0000-01,4.0"), ["{peaks}:2", "month", "'0000-01'", "2000-2099"]),
    ("peaks-duplicate-month", BILL_P, "peaks", ("sub", "2024-06,5.0", "2024-05,5.0"), ["{peaks}:3", "duplicate of row 2"]),
    ("peaks-after-the-data", BILL_P, "peaks", ("sub", "2024-06,5.0", "2030-01,5.0"), ["{peaks}:3", "'2030-01'",
                                                                                      "after the meter data's last month"]),
    ("peaks-no-header", BILL_P, "peaks", ("put", "2024-05,4\n"), ["{peaks}:1", "no 'month' column"]),
    ("peaks-no-peak-column", PLAN_P, "peaks", ("put", "month,kw\n2024-05,4\n"), ["{peaks}:1", "peak_kw", "missing column"]),
    ("peaks-plan-future", PLAN_P, "peaks", ("sub", "2024-06,5.0", "2024-09,5.0"), ["{peaks}:3", "'2024-09'",
                                                                                   "after the plan's start month"]),
    ("peaks-run-future", RUN + ["--peaks-history", "{peaks}"], "peaks", ("sub", "2024-06,5.0", "2030-01,5.0"),
     ["{peaks}:3", "'2030-01'", "after the daemon's start month"]),
    ("peaks-run-text", RUN + ["--peaks-history", "{peaks}"], "peaks", ("sub", "2024-06,5.0", "2024-06,five"),
     ["{peaks}:3", "peak_kw", "'five'"]),
    ("peaks-devzero", BILL + ["--peaks-history", "/dev/zero"], None, None, ["/dev/zero", "not a regular file"]),
]

INPUT_CASES = [   # plan --pv/--load
    ("kw-1e30", PLAN, "kw", ("sub", "0.5\n", "1e30\n"), ["{kw}:2", "kw", "'1e30'"]),
    ("kw-negative", PLAN, "kw", ("sub", "0.5\n", "-5\n"), ["{kw}:2", "kw", "-5"]),
    ("kw-short", PLAN, "kw", ("put", f"timestamp,kw\n{START},1\n2024-07-01T00:30+09:00,1\n"),
     ["pv_kw", "no value for this and 5 more of the 8 planning steps"]),
    ("kw-other-year", PLAN, "kw", ("put", "timestamp,kw\n2023-07-01T00:00+09:00,1\n2023-07-01T00:30+09:00,1\n"),
     ["pv_kw", "'2024-07-01T00:00:00+09:00'", "no value"]),
    ("kw-no-column", PLAN, "kw", ("put", f"timestamp,watts\n{START},1\n2024-07-01T00:30+09:00,1\n"), ["{kw}:1", "kw",
                                                                                                    "missing column"]),
]

WEATHER_CASES = [
    ("weather-ghi-1e30", FORECAST_W, "weather", ("sub", "100.0,20.0\n", "1e30,20.0\n"), ["{weather}:2", "ghi_wm2", "'1e30'"]),
    ("weather-temp-1e30", FORECAST_W, "weather", ("sub", "100.0,20.0\n", "100.0,1e30\n"), ["{weather}:2", "temp_air_c"]),
    ("weather-ghi-negative", FORECAST_W, "weather", ("sub", "100.0,20.0\n", "-500,20.0\n"), ["{weather}", "ghi", "-500"]),
    ("weather-7-minute", FORECAST_W, "weather", ("put", f"timestamp,ghi_wm2,temp_air_c\n{START},1,1\n"
                                                        "2024-07-01T00:07+09:00,1,1\n"), ["{weather}", "must divide a day"]),
    ("weather-dni-alone", FORECAST_W, "weather", ("put", f"timestamp,ghi_wm2,temp_air_c,dni_wm2\n{START},1,1,1\n"
                                                         "2024-07-01T00:30+09:00,1,1,1\n"), ["{weather}:1", "dni_wm2/dhi_wm2"]),
    ("weather-no-ghi", FORECAST_W, "weather", ("put", f"timestamp,temp_air_c\n{START},1\n2024-07-01T00:30+09:00,1\n"),
     ["{weather}:1", "ghi_wm2"]),
    ("weather-json-list", FORECAST + ["--weather", "{json}"], "json", ("put", "[1, 2]"), ["{json}", "JSON object"]),
    ("weather-json-values", FORECAST + ["--weather", "{json}"], "json", ("sub", "[0, 10]", '["dark", 10]'),
     ["{json}", "hourly.shortwave_radiation", "'dark'"]),
    ("weather-json-offset", FORECAST + ["--weather", "{json}"], "json", ("sub", "32400", '"nine hours"'),
     ["{json}", "utc_offset_seconds", "'nine hours'"]),
    ("weather-json-nan", FORECAST + ["--weather", "{json}"], "json", ("sub", "[0, 10]", "[NaN, 10]"), ["{json}", "NaN"]),
    ("weather-json-infinity", FORECAST + ["--weather", "{json}"], "json", ("sub", "[20, 21]", "[20, Infinity]"),
     ["{json}", "Infinity"]),
    ("weather-json-deep", FORECAST + ["--weather", "{json}"], "json", ("put", "[" * 100000 + "]" * 100000),
     ["{json}", "cannot read as JSON"]),
    ("weather-json-syntax", FORECAST + ["--weather", "{json}"], "json", ("put", "{"), ["{json}", "cannot read as JSON"]),
    ("weather-json-time", FORECAST + ["--weather", "{json}"], "json", ("sub", '"2024-07-01T01:00"', '"tomorrow"'),
     ["{json}", "hourly.time[1]", "'tomorrow'"]),
    ("weather-json-unit", FORECAST + ["--weather", "{json}"], "json", ("sub", '"\\u00b0C"', '"K"'),
     ["{json}", "hourly_units.temperature_2m", "'K'"]),
    ("weather-tm2-garbage", FORECAST + ["--weather", "{tm2}"], None, None, ["{tm2}", "not a TMY2 file"]),
    ("weather-tmy3-garbage", FORECAST_W + ["--weather-format", "tmy"], None, None, ["{weather}", "not a TMY3 file"]),
    ("weather-devzero", FORECAST + ["--weather", "/dev/zero"], None, None, ["/dev/zero", "not a regular file"]),
    ("weather-dir", FORECAST + ["--weather", "{dir}"], None, None, ["{dir}", "a directory"]),
    ("weather-study-actual", STUDY + ["--strategy", "mpc", "--weather-forecast", "noisy", "--seed", "1",
                                      "--weather-actual", "{peaks}"], None, None, ["{peaks}:1", "no 'timestamp' column"]),
    ("weather-study-forecast", STUDY + ["--strategy", "mpc", "--weather-forecast", "{weather}"], None, None,
     ["{weather}:1", "issued_at/lead_h"]),
]

FLAG_CASES = [
    ("plan-start-garbage", PLAN[:3] + ["--start", "garbage"], None, None, ["--start", "'garbage'", "not an ISO 8601"]),
    ("plan-start-1900", PLAN[:3] + ["--start", "1900-01-01T00:00+09:00"], None, None, ["--start", "'1900-01-01T00:00+09:00'",
                                                                                      "2000-2099"]),
    ("plan-start-2300", PLAN[:3] + ["--start", "2300-01-01T00:00+09:00"], None, None, ["--start", "2300", "2000-2099"]),
    ("plan-start-naive", PLAN[:3] + ["--start", "2024-07-01T00:00"], None, None, ["--start", "needs a UTC offset"]),
    ("plan-hours-nan", PLAN[:3] + ["--hours", "nan"], None, None, ["argument --hours", "'nan'"]),
    ("plan-hours-zero", PLAN[:3] + ["--hours", "0"], None, None, ["argument --hours", "> 0"]),
    ("plan-soc-text", PLAN + ["--soc", "leaf=full"], None, None, ["--soc", "leaf", "'full'"]),
    ("plan-soc-500", PLAN + ["--soc", "leaf=500"], None, None, ["--soc", "'500'", "0 to 100"]),
    ("plan-soc-unknown-car", PLAN + ["--soc", "tesla=50"], None, None, ["--soc", "'tesla=50'", "['leaf']"]),
    ("plan-month-peak-nan", PLAN + ["--month-peak-kw", "nan"], None, None, ["--month-peak-kw", "'nan'"]),
    ("plan-out-dir", PLAN[:-2] + ["--out", "{dir}"], None, None, ["argument --out", "is a folder"]),
    ("plan-out-no-parent", PLAN[:-2] + ["--out", "{sub}/plan.csv"], None, None, ["argument --out", "{sub}", "does not exist"]),
    ("plan-out-devnull", PLAN[:-2] + ["--out", "/dev/null"], None, None, ["argument --out", "/dev/null", "not a regular file"]),
    ("plan-out-under-file", PLAN[:-2] + ["--out", "{peaks}/plan.csv"], None, None, ["argument --out", "is not a folder"]),
    ("forecast-start-garbage", FORECAST[:3] + ["--start", "garbage"], None, None, ["--start", "'garbage'"]),
    ("forecast-start-naive", FORECAST[:3] + ["--start", "2024-07-01T00:00"], None, None, ["--start", "needs a UTC offset"]),
    ("forecast-hours-inf", FORECAST[:3] + ["--hours", "inf"], None, None, ["argument --hours", "'inf'"]),
    ("forecast-weather-format", FORECAST_W + ["--weather-format", "grib"], None, None, ["--weather-format", "'grib'"]),
    ("backtest-stride-zero", BACKTEST + ["--stride-hours", "0"], None, None, ["argument --stride-hours", "> 0"]),
    ("backtest-stride-nan", BACKTEST + ["--stride-hours", "nan"], None, None, ["argument --stride-hours", "'nan'"]),
    ("run-start-garbage", RUN[:3] + ["--start", "garbage"], None, None, ["--start", "'garbage'"]),
    ("run-start-1900", RUN[:5] + ["--start", "1900-07-01T00:00+09:00"], None, None, ["--start", "1900", "2000-2099"]),
    ("run-until-before-start", RUN[:7] + ["--until", "2024-07-01T00:00+09:00"], None, None, ["--until",
                                                                                          "must be after the start"]),
    ("run-speed-inf", RUN[:3] + ["--speed", "inf"], None, None, ["argument --speed", "'inf'"]),
    ("run-speed-1e9", RUN[:3] + ["--speed", "1e9"], None, None, ["argument --speed", "<= 100000"]),
    ("run-dispatch-zero", RUN + ["--dispatch-interval", "0"], None, None, ["argument --dispatch-interval", "> 0"]),
    ("run-solver", RUN[:3] + ["--solver", "gpu"], None, None, ["argument --solver", "'gpu'"]),
    ("run-database-dir", RUN + ["--database", "{dir}"], None, None, ["{dir}", "is a directory"]),
    ("run-database-not-sqlite", RUN + ["--database", "{meter}"], None, None, ["{meter}", "is not a SQLite database"]),
    ("sim-port-70000", SIM[:3] + ["--port", "70000"], None, None, ["argument --port", "<= 65535"]),
    ("sim-speed-inf", SIM[:3] + ["--speed", "inf"], None, None, ["argument --speed", "'inf'"]),
    ("sim-speed-nan", SIM[:3] + ["--speed", "nan"], None, None, ["argument --speed", "'nan'"]),
    ("sim-initial-soc-500", SIM[:3] + ["--initial-soc", "500"], None, None, ["argument --initial-soc", "<= 100"]),
    ("sim-duration-negative", SIM[:3] + ["--duration", "-1"], None, None, ["argument --duration", "'-1'"]),
    ("sim-start-garbage", SIM[:3] + ["--start", "garbage"], None, None, ["argument --start", "'garbage'"]),
    ("sim-start-2300", SIM[:3] + ["--start", "2300-01-01T00:00+09:00"], None, None, ["argument --start", "2000-2099"]),
    ("sim-baudrate", SIM[:3] + ["--serial", "/dev/ttyUSB9", "--baudrate", "1e3"], None, None, ["argument --baudrate", "'1e3'"]),
    ("sim-parity", SIM[:3] + ["--parity", "X"], None, None, ["argument --parity", "'X'"]),
    ("status-events-1e20", STATUS + ["--events", "1e20"], None, None, ["argument --events", "'1e20'"]),
    ("status-events-negative", STATUS + ["--events", "-1"], None, None, ["argument --events", ">= 0"]),
    ("status-no-database", STATUS, None, None, ["{site}", "daemon.database", "no database yet"]),
    ("study-scheduler-not-url", STUDY + ["--scheduler", "notaurl"], None, None, ["argument --scheduler", "'notaurl'"]),
    ("study-scheduler-port", STUDY + ["--scheduler", "tcp://127.0.0.1:99999"], None, None, ["argument --scheduler", "99999"]),
    ("study-scheduler-remote", STUDY + ["--scheduler", "tcp://203.0.113.9:8786"], None, None,
     ["--scheduler", "'tcp://203.0.113.9:8786'", "unauthenticated", "--scheduler-insecure"]),
    ("study-scheduler-remote-name", STUDY + ["--scheduler", "cluster.example.org:8786"], None, None,
     ["--scheduler", "cluster.example.org", "tls://"]),
    ("study-out-file", STUDY[:-2] + ["--out", "{peaks}"], None, None, ["argument --out", "{peaks}", "is not a folder"]),
    ("study-out-no-parent", STUDY[:-2] + ["--out", "{sub}/deeper/out"], None, None, ["argument --out", "does not exist"]),
    ("study-workers-zero", STUDY + ["--workers", "0"], None, None, ["argument --workers", ">= 1"]),
    ("study-seed-negative", STUDY + ["--seed", "-1", "--stochastic"], None, None, ["argument --seed", ">= 0"]),
    ("study-seed-huge", STUDY + ["--seed", "99999999999999999999999", "--stochastic"], None, None, ["argument --seed"]),
    ("study-stochastic-no-seed", STUDY + ["--stochastic"], None, None, ["--seed", "--stochastic needs --seed"]),
    ("study-strategy-unknown", STUDY + ["--strategy", "magic"], None, None, ["--strategy", "'magic'"]),
    ("study-strategy-empty", STUDY + ["--strategy", ","], None, None, ["--strategy", "unknown strategy"]),
    ("study-sites-and-config", STUDY + ["--sites", "{dir}"], None, None, ["--config/--sites", "exactly one"]),
    ("study-sites-empty", ["study", "--sites", "{sub}", "--out", "{dir}/study"], None, None, ["--sites", "{sub}"]),
    ("study-weather-forecast-bogus", STUDY + ["--strategy", "mpc", "--weather-forecast", "bogus"], None, None,
     ["--weather-forecast", "'bogus'"]),
    ("study-noisy-no-seed", STUDY + ["--strategy", "mpc", "--weather-forecast", "noisy"], None, None,
     ["--seed", "noisy needs --seed"]),
    ("demo-speed-negative", ["demo", "--speed", "-1"], None, None, ["argument --speed", "> 0"]),
    ("demo-site-unknown", ["demo", "--site", "moon"], None, None, ["argument --site", "'moon'"]),
    ("demo-bad-config", DEMO, "site", ("sub", LIMIT, "import_limit_kw: .inf"), ["home-v2h.yaml:7", "grid.import_limit_kw"]),
    ("demo-configs-empty", ["demo", "--configs", "{sub}"], None, None, ["{sub}", "no *.yaml site files"]),
    ("check-directory", ["check", "{dir}"], None, None, ["{dir}", "a directory"]),
    ("check-devzero", ["check", "/dev/zero"], None, None, ["/dev/zero", "not a regular file"]),
    ("check-missing", ["check", "{sub}.yaml"], None, None, ["{sub}.yaml", "file not found"]),
    ("unknown-command", ["frobnicate"], None, None, ["invalid choice", "'frobnicate'"]),
]

CASES = SITE_CASES + TARIFF_CASES + MAP_CASES + METER_CASES + HISTORY_CASES + PEAKS_CASES + INPUT_CASES + WEATHER_CASES \
    + FLAG_CASES


def prepare(d: Path, file: str | None, edit: tuple | None) -> dict[str, str]:
    """The workspace in ``d`` with the case's file broken."""
    names = workspace(d)
    if file == "map":
        site = d / "site.yaml"
        site.write_text(site.read_text().replace(SIM_ADAPTER, PROFILE))
    if file is None:
        return names
    path = Path(names[file])
    if edit[0] == "delete":
        path.unlink()
    elif edit[0] == "put":
        path.write_text(edit[1], errors="surrogateescape")
    else:
        _, old, new = edit
        text = path.read_text()
        assert old in text, f"{old!r} not in {path.name}"
        path.write_text(text.replace(old, new.replace("{dir}", names["dir"]), 1), errors="surrogateescape")
    return names


def snapshot(d: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``d`` with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in d.rglob("*") if p.is_file()}


def run_ems(argv: list[str], capsys) -> tuple[int | str | None, str]:
    """``ems ARGV`` in this process: the exit status and everything printed."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_refused_clearly_and_nothing_is_written(case, tmp_path, capsys, monkeypatch):
    name, argv, file, edit, wanted = case
    monkeypatch.chdir(tmp_path)
    names = prepare(tmp_path, file, edit)
    if argv is DEMO or argv[:2] == DEMO[:2]:   # demo checks a folder of site files
        (tmp_path / "configs").mkdir()
        shutil.copy(tmp_path / "site.yaml", tmp_path / "configs" / "home-v2h.yaml")
        shutil.copy(tmp_path / "tariff.yaml", tmp_path / "configs" / "tariff.yaml")
        shutil.copy(tmp_path / "history.csv", tmp_path / "configs" / "history.csv")
    before = snapshot(tmp_path)
    t0 = time.perf_counter()
    code, text = run_ems([a.format(**names) for a in argv], capsys)
    took = time.perf_counter() - t0
    assert code == 2, f"exit {code}:\n{text[-2000:]}"
    assert "Traceback" not in text
    missing = [w.format(**names) for w in wanted if w.format(**names) not in text]
    assert not missing, f"the message does not name {missing}:\n{text[-2000:]}"
    assert took < SECONDS
    assert snapshot(tmp_path) == before, "a refused command wrote or changed a file"
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("argv", [PLAN, STUDY], ids=["plan", "study"])
def test_an_unwritable_output_folder_is_refused_before_any_work(argv, tmp_path, capsys, monkeypatch):
    """(As root every folder is writable: the permission is taken away in the check itself.)"""
    import ems.commands.argtypes as argtypes
    names = workspace(tmp_path)
    monkeypatch.setattr(argtypes.os, "access", lambda path, mode: False)
    before = snapshot(tmp_path)
    code, text = run_ems([a.format(**names) for a in argv], capsys)
    assert code == 2 and "argument --out" in text and "is not writable" in text and str(tmp_path) in text
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------------- hangs and memory
ENTRY = "import sys; from ems.cli import main; sys.exit(main(sys.argv[1:]))"


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def _fifo(d: Path) -> str:
    path = d / "fifo"
    os.mkfifo(path)
    return str(path)


def _put(path: Path, text: str, argv: list[str]) -> list[str]:
    path.write_text(text)
    return argv


HANG_CASES = [   # each would block for ever or eat gigabytes without its fix
    ("check-fifo", lambda d, n: ["check", _fifo(d)], "not a regular file"),
    ("bill-meter-fifo", lambda d, n: ["bill", "--tariff", n["tariff"], "--meter", _fifo(d)], "not a regular file"),
    ("bill-tariff-devzero", lambda d, n: ["bill", "--tariff", "/dev/zero", "--meter", n["meter"]], "not a regular file"),
    ("forecast-weather-fifo", lambda d, n: ["forecast", "--config", n["site"], "--weather", _fifo(d)], "not a regular file"),
    ("check-alias-bomb", lambda d, n: _put(d / "site.yaml", BOMB, ["check", n["site"]]), "alias bomb"),
    ("check-map-alias-bomb", lambda d, n: _put(d / "map.yaml", BOMB, _put(d / "site.yaml", SITE.replace(SIM_ADAPTER, PROFILE),
                                                                       ["check", n["site"]])), "alias bomb"),
    ("check-deep-flow", lambda d, n: _put(d / "site.yaml", "a: " + "[" * 200_000, ["check", n["site"]]), "deeper than 64"),
]


def test_inputs_that_would_hang_or_eat_memory_end_fast_in_bounded_memory(tmp_path):
    """In subprocesses (a regression must fail, not hang the suite), 1 GiB of address space each, all at once."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = []
    for name, make, wanted in HANG_CASES:
        d = tmp_path / name
        d.mkdir()
        argv = make(d, workspace(d))
        procs.append((name, wanted, time.perf_counter(), subprocess.Popen(
            [sys.executable, "-c", ENTRY, *argv], cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, preexec_fn=_limits)))
    failures = []
    for name, wanted, t0, proc in procs:
        try:
            out, err = proc.communicate(timeout=max(1.0, 60.0 - (time.perf_counter() - t0)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            failures.append(f"{name}: did not end")
            continue
        if proc.returncode != 2 or "Traceback" in err or wanted not in err:
            failures.append(f"{name}: exit {proc.returncode}: {err[-600:]}")
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------------- a running daemon
def test_a_hostile_config_saved_under_the_running_daemon_never_stalls_it(tmp_path, monkeypatch):
    """The reload reads the file in a worker thread, bounded: an alias bomb is rejected at its line in
    well under a second, a reload that takes too long is given up, and dispatch ticks go on meanwhile."""
    import asyncio

    import ems.daemon.service as service
    from ems.config import load_site
    from tests.ems.daemon_helpers import manual_service, run, site_copy

    path = site_copy(tmp_path)
    cfg = load_site(path)
    svc, clock = manual_service(cfg, "2024-07-08T19:00+09:00", initial_soc_pct=60, config_path=str(path))

    async def scenario():
        async with svc:
            d = svc.daemon
            path.write_text(BOMB)
            t0 = time.perf_counter()
            assert not await svc.reload_in_worker()
            assert time.perf_counter() - t0 < 1.0 and d.cfg is cfg
            ev = svc.store.events(kind="config-rejected")[0]
            assert f"{path}:6" in ev["message"] and "alias bomb" in ev["message"]

            def slow(p):                      # a reload that hangs (say, a file system that stalls)
                time.sleep(1.0)
                return load_site(p)
            monkeypatch.setattr(service, "load_site", slow)
            monkeypatch.setattr(service, "RELOAD_TIMEOUT_S", 0.3)
            reload = asyncio.ensure_future(svc.reload_in_worker())
            ticked = 0
            while not reload.done():          # the event loop keeps dispatching while the worker reads
                clock.timeleap(5)
                await d.dispatch_once()
                ticked += 1
                await asyncio.sleep(0.02)
            assert not reload.result() and ticked >= 3
            assert "took more than 0.3 s" in svc.store.events(kind="config-rejected")[0]["message"]
    run(scenario())
