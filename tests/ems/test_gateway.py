"""Running on a gateway: the daemon's database in a state directory (never the working directory),
whose data it holds (a simulated run never feeds a real site's ratchet), systemd's notifications, the
unit in deploy/, and the example sites found in an installed package (what a wheel carries)."""

from __future__ import annotations

import ast
import configparser
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ems.cli import main
from ems.clock import SimClock, WallClock
from ems.commands.demo import check_configs
from ems.commands.run import ORIGIN, REAL, SIMULATED, claim_database, simulated_run
from ems.config import load_site
from ems.errors import DataError
from ems.paths import default_database, example_configs, state_dir
from ems.sdnotify import notify
from ems.store import Store

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
HOME = str(CONFIGS / "home-v2h.yaml")
#: a short simulated run of the home site (a thread solver: no worker process to start)
SHORT = ["--speed", "2400", "--start", "2024-07-08T17:00+09:00", "--until", "2024-07-08T17:30+09:00", "--solver", "thread"]


def test_the_state_directory_is_systemds_else_xdgs_else_in_the_home():
    assert state_dir({"STATE_DIRECTORY": "/var/lib/ems:/var/lib/other", "XDG_STATE_HOME": "/x"}) == Path("/var/lib/ems")
    assert state_dir({"XDG_STATE_HOME": "/x/state"}) == Path("/x/state/ems")
    assert state_dir({"XDG_STATE_HOME": "relative"}) == Path.home() / ".local" / "state" / "ems"   # ignored (XDG spec)
    assert state_dir({}) == Path.home() / ".local" / "state" / "ems"
    assert default_database("Office V2B (Nagoya)", {"STATE_DIRECTORY": "/s"}) == "/s/office-v2b-nagoya.sqlite"
    assert default_database("名古屋 本社", {"STATE_DIRECTORY": "/s"}) == "/s/名古屋-本社.sqlite"


def test_a_site_file_naming_no_database_gets_the_sites_file_in_the_state_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    for name, file in (("office-v2b", "office-v2b-nagoya.sqlite"), ("home-v2h", "home-v2h-tokyo.sqlite")):
        assert load_site(CONFIGS / f"{name}.yaml").daemon.database == str(tmp_path / file)


def test_ems_run_creates_the_state_directory_says_where_the_store_is_and_notifies_systemd(tmp_path):
    state = tmp_path / "state" / "ems"   # missing: created by the run
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sd:
        sd.bind(str(tmp_path / "notify"))
        sd.settimeout(0)
        env = {**os.environ, "STATE_DIRECTORY": str(state), "NOTIFY_SOCKET": str(tmp_path / "notify")}
        out = subprocess.run([sys.executable, "-m", "ems.cli", "run", "--config", HOME, *SHORT], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=180)
        messages = []
        while True:
            try:
                messages.append(sd.recv(256).decode())
            except BlockingIOError:
                break
    assert out.returncode == 0, out.stderr
    db = state / "home-v2h-tokyo.sqlite"
    assert out.stderr.splitlines()[0] == f"ems run: store sqlite:///{db} (simulated data)"
    assert db.is_file() and list(tmp_path.glob("*.sqlite")) == []   # nothing in the working directory
    with Store(str(db)) as store:
        assert store.get_state(ORIGIN) == SIMULATED and store.count("telemetry") > 0
    assert messages[0] == "READY=1" and messages[-1] == "STOPPING=1" and "WATCHDOG=1" in messages


def test_a_simulated_run_refuses_a_real_sites_database_unless_told(tmp_path, capsys):
    db = str(tmp_path / "site.sqlite")
    with Store(db) as store:
        store.set_state(ORIGIN, REAL)
    assert main(["run", "--config", HOME, "--database", db, *SHORT]) == 2
    err = capsys.readouterr().err
    assert f"{db}: holds a real site's data" in err and "--allow-real-db" in err
    with Store(db) as store:
        assert store.count("telemetry") == 0   # refused before the daemon started
    assert main(["run", "--config", HOME, "--database", db, "--allow-real-db", *SHORT]) == 0
    assert "(real data, simulated data added: --allow-real-db)" in capsys.readouterr().err
    with Store(db) as store:
        assert store.get_state(ORIGIN) == REAL and store.count("telemetry") > 0


def test_a_real_run_refuses_a_simulated_database_and_an_old_database_with_data_counts_as_real(tmp_path):
    sim, fresh, old = (str(tmp_path / f"{n}.sqlite") for n in ("sim", "fresh", "old"))
    assert claim_database(sim, simulated=True) == SIMULATED
    with pytest.raises(DataError) as err:
        claim_database(sim, simulated=False)
    assert "holds simulated data" in str(err.value) and "demand ratchet" in str(err.value)
    assert claim_database(fresh, simulated=False) == REAL and claim_database(fresh, simulated=False) == REAL
    with Store(old) as store:   # a database from before the mark, with the daemon's data
        store.raise_month_peak("2024-07", 30.0, pd.Timestamp("2024-07-01T09:00+09:00"),
                               pd.Timestamp("2024-07-01T09:30+09:00"))
    with pytest.raises(DataError):
        claim_database(old, simulated=True)
    with Store(old) as store:
        assert store.get_state(ORIGIN) is None   # a refused run marks nothing


def test_a_run_is_simulated_on_a_simulated_clock_or_with_the_simulators_meter():
    cfg = load_site(HOME)   # chargers and meter: the in-process simulator
    assert simulated_run(cfg, WallClock())
    real = cfg.model_copy(update={"meter": None, "chargers": [], "vehicles": []})
    assert not simulated_run(real, WallClock())
    assert simulated_run(real, SimClock(pd.Timestamp("2024-07-01T00:00+09:00"), 1.0))


def test_notify_sends_one_datagram_to_systemds_socket_and_never_raises(tmp_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sd:
        sd.bind(str(tmp_path / "s"))
        assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "s")})
        assert sd.recv(64) == b"READY=1"
    name = f"ems-test-{tmp_path.name}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sd:
        sd.bind("\0" + name)   # an abstract socket: systemd passes it as @name
        assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert sd.recv(64) == b"WATCHDOG=1"
    assert not notify("READY=1", {})   # not under systemd
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody")})


def test_an_installed_package_finds_the_examples_it_carries(tmp_path):
    """The files setup.py puts in the wheel (ems/examples) are all the example sites need: copied into
    a package laid out as installed, every site loads from there with its tariff and data."""
    setup = ast.parse((ROOT / "setup.py").read_text())
    files = next(ast.literal_eval(n.value) for n in setup.body if isinstance(n, ast.Assign) and n.targets[0].id == "EXAMPLES")
    package = tmp_path / "site-packages" / "ems"
    for name, patterns in files.items():
        sub = Path(*name.split(".")[2:])
        for pattern in patterns:
            for f in (CONFIGS / sub).glob(pattern):
                (package / "examples" / sub).mkdir(parents=True, exist_ok=True)
                shutil.copy(f, package / "examples" / sub / f.name)
    examples = example_configs(package)
    assert examples == package / "examples"
    ok, report = check_configs(examples)
    assert ok, report
    for site in examples.glob("*.yaml"):
        cfg = load_site(site)
        assert cfg.load.history_csv is None or Path(cfg.load.history_csv).is_relative_to(examples)
    assert not list((package / "examples").rglob("*.py"))   # the data scripts stay in the repository
    # a source checkout (no ems/examples: the files are not duplicated) uses configs/
    assert not (ROOT / "ems" / "examples").exists() and example_configs() == CONFIGS


def test_the_systemd_unit_runs_the_daemon_as_its_own_user_with_a_state_directory_and_the_watchdog():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(ROOT / "deploy" / "ems.service")
    s = unit["Service"]
    assert s["Type"] == "notify" and int(s["WatchdogSec"]) >= 10 and s["Restart"] == "on-failure"
    assert s["StateDirectory"] == "ems" and s["User"] == "ems" and s["ExecStart"].split()[1:3] == ["run", "--config"]
    assert s["ProtectSystem"] == "strict" and s["NoNewPrivileges"] == "yes" and s["RestartPreventExitStatus"] == "2"
