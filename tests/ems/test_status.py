"""``ems status`` for a person (issue 12): local times to the second, each unit and car in words with
SOC in % and kWh, target and departure, whether the daemon is running (its heartbeat), the overrides
in force; ``--json`` keeps its keys and adds these; ``--database`` and the default database as for
``ems run``. Each test runs a simulated daemon into a temporary database and reads it with the command."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

from ems.cli import main
from ems.clock import SimClock
from ems.commands import status as status_cmd
from ems.daemon import Service
from ems.paths import default_database
from tests.ems.daemon_helpers import site_copy
from tests.ems.http_helpers import TOKEN, RunningDaemon, http_site, request, wait_for

pytestmark = pytest.mark.timeout(180)

START = pd.Timestamp("2024-07-08T19:00+09:00")   # Monday evening: the Leaf is plugged in, leaves 07:30 with 80 %
#: what a person should never read: UTC offsets, sub-second digits, Python reprs of the rows
NOISE = re.compile(r"\+00:00|\d\d:\d\d:\d\d\.\d|plugged=|soc=|None")


def _status(capsys, *args: str) -> str:
    capsys.readouterr()
    assert main(["status", *args]) == 0
    return capsys.readouterr().out


def _ticked(db) -> bool:
    """Whether the daemon has stored a tick with the Leaf plugged in (read with sqlite3: opening the
    store would create its tables, racing the daemon that is creating them)."""
    if not os.path.exists(db):
        return False
    con = sqlite3.connect(db)
    try:
        row = con.execute("select plugged from telemetry where device = 'v2h1' order by id desc limit 1").fetchone()
    except sqlite3.OperationalError:   # tables not created yet
        return False
    finally:
        con.close()
    return bool(row and row[0])


def test_status_reads_as_words_while_the_daemon_runs_and_after_it_stops(tmp_path, capsys):
    cfg = http_site(tmp_path)
    path = str(tmp_path / "home-v2h.yaml")
    svc = Service(cfg, clock=SimClock(START, 60.0), initial_soc_pct=55)
    with RunningDaemon(svc, START + pd.Timedelta(hours=6)) as url:
        wait_for(lambda: _ticked(tmp_path / "ems.sqlite"), timeout_s=60, what="a tick with the Leaf plugged in")
        code, _, body = request(url + "api/overrides", {"kind": "departure", "vehicle": "leaf", "by": "tanaka",
                                                        "depart": "2024-07-09T05:00+09:00", "target_soc_pct": 90},
                                token=TOKEN)
        assert code == 201, body
        out = _status(capsys, "--config", path)
        doc = json.loads(_status(capsys, "--config", path, "--json"))
    assert not NOISE.search(out.split("recent events:")[0]), out    # (an event's message is its own text)
    assert f"daemon: running (pid {os.getpid()}), last write " in out
    assert re.search(r"its simulated clock at 2024-07-08 (19|20):\d\d:\d\d \(60x\)", out), out
    assert "times in Asia/Tokyo" in out
    assert re.search(r"last plan 2024-07-08 (19|20):\d\d:\d\d from (19|20):\d\d:\d\d: ", out), out
    assert re.search(r"v2h1 +leaf plugged in, SOC \d+\.\d % \(\d+\.\d\d kWh\), (idle|charging|discharging)", out), out
    # the override's departure and target, the date shown because it is not the daemon's today
    assert re.search(r"leaf +plugged into v2h1, SOC \d+\.\d % \(\d+\.\d\d of 62 kWh\); "
                     r"target 90 % \(55\.80 kWh\) by 2024-07-09 05:00:00", out), out
    assert re.search(r"overrides in force:\n  leaf leaves at 2024-07-09T05:00:00\+09:00 with 90 % "
                     r"\(set by tanaka via 127\.0\.0\.1 at 2024-07-08 \d\d:\d\d:\d\d, id [0-9a-f]+\)", out), out
    assert re.search(r"\n  2024-07-08 \d\d:\d\d:\d\d info override: leaf leaves at ", out.split("recent events:")[1]), out
    # --json: the keys it had, with their meaning (the store's rows, UTC), and the new ones
    assert {"site", "month", "month_peak_kw", "contract_kw", "last_plan", "devices", "events", "faults"} <= set(doc)
    assert doc["devices"]["v2h1"]["plugged"] is True and doc["devices"]["v2h1"]["ts"].endswith("+00:00")
    assert doc["daemon"]["state"] == "running" and doc["daemon"]["running"] is True and doc["daemon"]["speed"] == 60
    assert doc["daemon"]["pid"] == os.getpid() and doc["daemon"]["last_seen"].endswith("+09:00")
    leaf = doc["vehicles"][0]
    assert (leaf["vehicle"], leaf["unit"], leaf["target_pct"], leaf["departure"]) == \
        ("leaf", "v2h1", 90.0, "2024-07-09T05:00:00+09:00")
    assert 20 <= leaf["soc_pct"] <= 90 and leaf["soc_kwh"] == pytest.approx(leaf["soc_pct"] * 0.62, abs=0.05)
    assert doc["units"][0]["id"] == "v2h1" and doc["units"][0]["vehicle"] == "leaf"
    assert [(o["kind"], o["by"]) for o in doc["overrides"]] == [("departure", "tanaka via 127.0.0.1")]

    # stopped cleanly (SIGTERM's path): not running, when it was last seen
    out = _status(capsys, "--config", path)
    assert re.search(r"daemon: not running, last seen \d\d:\d\d:\d\d \(\d+ s ago\), stopped cleanly; "
                     r"its simulated clock then 2024-07-08 \d\d:\d\d:\d\d \(60x\)", out), out
    assert "leaf leaves at 2024-07-09T05:00:00+09:00" in out      # still in force at the daemon's last time
    doc = json.loads(_status(capsys, "--config", path, "--json"))
    assert doc["daemon"]["state"] == "stopped" and doc["daemon"]["running"] is False


def test_a_killed_daemon_is_not_running_once_its_heartbeat_is_stale(tmp_path, capsys, monkeypatch):
    path = str(site_copy(tmp_path))
    db = tmp_path / "ems.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "ems.cli", "run", "--config", path, "--speed", "60",
                             "--start", "2024-07-09T02:00+09:00", "--solver", "thread"],
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "stderr.txt").open("w"))
    try:
        wait_for(lambda: _ticked(db) or proc.poll() is not None, timeout_s=60, what="a dispatch tick")
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
        assert f"daemon: running (pid {proc.pid})" in _status(capsys, "--config", path)
    finally:
        proc.kill()   # kill -9: no clean stop, no last write
        proc.wait(30)
    monkeypatch.setattr(status_cmd, "ALIVE_MIN_S", 0.5)   # 3 ticks at 60x are 0.25 s: stale after 0.5 s
    time.sleep(1.0)
    out = _status(capsys, "--config", path)
    assert re.search(r"daemon: not running, last seen \d\d:\d\d:\d\d \(\d+ s ago\), without a clean stop "
                     r"\(killed, crashed or hung: no write for over 0\.5 s\)", out), out
    doc = json.loads(_status(capsys, "--config", path, "--json"))
    assert (doc["daemon"]["state"], doc["daemon"]["running"], doc["daemon"]["pid"]) == ("gone", False, proc.pid)


def test_status_finds_the_database_of_ems_run_and_takes_database_like_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    path = str(site_copy(tmp_path, **{r"^  database: .*\n": ""}))   # no daemon.database: the state directory's file
    run = ["run", "--config", path, "--speed", "600", "--start", "2024-07-08T18:00+09:00",
           "--until", "2024-07-08T18:10+09:00", "--solver", "thread"]
    assert main(run) == 0
    assert os.path.exists(default_database("Home V2H (Tokyo)"))
    out = _status(capsys, "--config", path)
    assert "daemon: not running, last seen" in out and "stopped cleanly" in out
    assert re.search(r"v2h1 +not plugged", out) and re.search(r"leaf +not plugged in, SOC unknown", out), out
    con = sqlite3.connect(default_database("Home V2H (Tokyo)"))   # a store from before the heartbeat
    with con:
        con.execute("delete from state where key = 'heartbeat'")
    con.close()
    assert "daemon: unknown (no heartbeat in this database: written by an older ems); its clock last at 2024-07-08 18:" \
        in _status(capsys, "--config", path)

    other = tmp_path / "other.sqlite"
    assert main(["status", "--config", path, "--database", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"--database = '{other}'" in err or str(other) in err
    assert "no database yet" in err and not other.exists()
    assert main(run + ["--database", str(other)]) == 0
    out = _status(capsys, "--config", path, "--database", str(other))
    assert "stopped cleanly" in out and "last plan 2024-07-08 18:" in out
