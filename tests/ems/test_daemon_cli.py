"""``ems run`` and ``ems status`` from the command line: a bounded run, real signals to a daemon
process (SIGHUP with a broken config file, SIGTERM for a clean stop), and input errors."""

from __future__ import annotations

import signal
import re
import sqlite3
import subprocess
import sys
import time

import pytest

from ems.cli import main
from tests.ems.daemon_helpers import site_copy

pytestmark = pytest.mark.timeout(120)


def test_bounded_run_then_status(tmp_path, capsys):
    path = site_copy(tmp_path)
    assert main(["run", "--config", str(path), "--speed", "3600", "--start", "2024-07-08T18:00+09:00",
                 "--until", "2024-07-08T20:00+09:00"]) == 0
    err = capsys.readouterr().err
    # the stop line in the site's time to the second, no sub-second noise
    assert re.search(r"daemon stopped at 2024-07-08T\d\d:\d\d:\d\d\+09:00: \d+ plans", err), err
    assert main(["status", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "month 2024-07" in out and "last plan 2024-07-08 " in out and "units at 2024-07-08 " in out
    assert "v2h1     leaf plugged in, SOC " in out and "daemon: not running, last seen " in out
    assert "plug: v2h1: leaf plugged in" in out and "stop: daemon stopped" in out


def _events(db) -> list[tuple[str, str]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("select kind, message from events order by id").fetchall()
    except sqlite3.OperationalError:   # tables not created yet
        return []
    finally:
        con.close()


def _wait_for_ticks(db, timeout_s: float = 60.0) -> None:
    """Until the daemon serves (its signal handlers are installed before the first dispatch tick)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        con = sqlite3.connect(db)
        try:
            if con.execute("select count(*) from telemetry").fetchone()[0]:
                return
        except sqlite3.OperationalError:
            pass
        finally:
            con.close()
        time.sleep(0.2)
    raise AssertionError("no dispatch tick")


def _wait_for(db, kind: str, timeout_s: float = 60.0) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ev = _events(db)
        if any(k == kind for k, _ in ev):
            return ev
        time.sleep(0.2)
    raise AssertionError(f"no {kind} event within {timeout_s} s: {_events(db)}")


def test_signals_reload_rejects_a_typo_and_sigterm_stops_cleanly(tmp_path):
    path = site_copy(tmp_path)
    db = tmp_path / "ems.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "ems.cli", "run", "--config", str(path), "--speed", "60",
                             "--start", "2024-07-09T02:00+09:00"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_ticks(db)
        text = path.read_text()
        path.write_text(text.replace("max_charge_kw: 6", "max_charge_kw: -6", 1))
        proc.send_signal(signal.SIGHUP)
        ev = _wait_for(db, "config-rejected")
        msg = next(m for k, m in ev if k == "config-rejected")
        assert "chargers[0].max_charge_kw" in msg and "home-v2h.yaml:" in msg
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    kinds = [k for k, _ in _events(db)]
    assert kinds[0] == "start" and kinds[-1] == "stop"      # the daemon kept running on the old config until SIGTERM
    con = sqlite3.connect(db)
    try:
        reasons = {r for (r,) in con.execute("select reason from telemetry")}
    finally:
        con.close()
    assert reasons <= {"plan", "peak-guard"}       # following its plan all along


def test_speed_needs_simulated_chargers_and_until_after_start(tmp_path, capsys):
    path = site_copy(tmp_path, **{r"adapter: \{kind: simulator\}": "adapter: {kind: modbus_tcp, host: 192.0.2.1}"})
    assert main(["run", "--config", str(path), "--speed", "10"]) == 2
    assert "every charger must use the simulator adapter" in capsys.readouterr().err
    ok = site_copy(tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path)
    assert main(["run", "--config", str(ok), "--speed", "10", "--start", "2024-07-08T18:00+09:00",
                 "--until", "2024-07-08T17:00+09:00"]) == 2
    assert "--until" in capsys.readouterr().err


def test_the_solver_process_dies_with_a_killed_daemon(tmp_path):
    """kill -9 of the daemon: its solver worker (and the multiprocessing helpers) end within seconds
    instead of running on for ever; a supervisor restarting the daemon does not pile them up."""
    psutil = pytest.importorskip("psutil")
    path = site_copy(tmp_path)
    db = tmp_path / "ems.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "ems.cli", "run", "--config", str(path), "--speed", "60",
                             "--start", "2024-07-09T02:00+09:00", "--solver", "process"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_ticks(db)
        deadline = time.monotonic() + 60
        children: list = []
        while time.monotonic() < deadline and not children:
            children = psutil.Process(proc.pid).children(recursive=True)
            time.sleep(0.2)
        assert children, "no solver process started"
        proc.kill()
        proc.wait(timeout=10)
        gone, alive = psutil.wait_procs(children, timeout=15)
        assert alive == [], [p.cmdline()[:3] for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
