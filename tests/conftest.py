"""Shared fixtures. Every test is checked for leftovers: a test that leaves threads or listening/
connected sockets behind fails (as pymodbus's own suite does with ``_check_system_health``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


def _sockets() -> set[tuple]:
    proc = psutil.Process()
    return {(c.fd, c.laddr, c.raddr, c.status) for c in proc.net_connections(kind="inet")}


@pytest.fixture(autouse=True)
def no_leftovers():
    """Fail a test that leaves new threads or sockets behind (waiting up to 3 s for them to end)."""
    threads_before, sockets_before = _threads(), _sockets()
    yield
    deadline = time.monotonic() + 3.0
    while True:
        new_threads = {t for t in _threads() - threads_before if not t.daemon or t.name.startswith("ems")}
        new_sockets = _sockets() - sockets_before
        new_sockets = {s for s in new_sockets if s[3] not in ("TIME_WAIT", "CLOSE_WAIT", "FIN_WAIT1", "FIN_WAIT2", "NONE")}
        if not new_threads and not new_sockets:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    pytest.fail(f"test left behind threads {sorted(t.name for t in new_threads)} and sockets {sorted(map(str, new_sockets))}")


@pytest.fixture(autouse=True, scope="session")
def state_directory(tmp_path_factory):
    """A daemon run on a site file that names no database writes to a temporary state directory, never
    the user's (``ems.paths.state_dir``: ``$STATE_DIRECTORY`` first), and takes its device locks in a
    temporary folder; subprocesses inherit both."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STATE_DIRECTORY", str(tmp_path_factory.mktemp("state")))
        mp.setenv("EMS_LOCK_DIR", str(tmp_path_factory.mktemp("locks")))   # device locks (ems.locks)
        yield


@pytest.fixture
def configs_dir() -> Path:
    """The example configs shipped in the repository."""
    return CONFIGS
