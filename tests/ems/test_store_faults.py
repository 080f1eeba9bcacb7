"""Store faults on real SQLite files: not a database, damaged, held by another daemon, disk full,
read-only, deleted or replaced under a running store. Nothing that matters is lost."""

from __future__ import annotations

import os
import sqlite3

import pandas as pd
import pytest
from sqlalchemy import event

import ems.store
from ems.cli import main
from ems.store import Store, StoreError
from ems.config import load_site
from tests.ems.daemon_helpers import constant_replay, manual_service, run, site_copy

T0 = pd.Timestamp("2024-07-01T10:00:00+09:00")


def fill(store: Store, n: int = 50, t0: pd.Timestamp = T0) -> None:
    for k in range(n):
        store.record_telemetry(t0 + pd.Timedelta(seconds=5 * k), [{"device": "v2h1", "soc_kwh": 30.0, "reason": "plan"}])


def rows(path, sql: str) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def with_pragma(store: Store, pragma: str):
    """Every new connection of the store runs ``pragma`` (a full disk, a read-only database); returns the undo."""
    def on_connect(dbapi_con, _record):
        dbapi_con.execute(pragma)
    event.listen(store.engine, "connect", on_connect)
    store.engine.dispose()

    def undo():
        event.remove(store.engine, "connect", on_connect)
        store.engine.dispose()
    return undo


def test_a_file_that_is_not_sqlite_is_refused_with_its_name(tmp_path):
    bad = tmp_path / "notes.sqlite"
    bad.write_text("month,peak_kw\n2024-07,40\n")
    with pytest.raises(StoreError) as err:
        Store(str(bad))
    assert str(bad) in str(err.value) and "is not a SQLite database" in str(err.value) and "'month,pe'" in str(err.value)
    assert bad.read_text().startswith("month,peak_kw")          # untouched


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(StoreError, match="is a directory"):
        Store(str(tmp_path))


def test_a_damaged_database_is_refused_with_the_recovery_command(tmp_path):
    path = tmp_path / "ems.sqlite"
    with Store(str(path)) as s:
        fill(s, 3000)
    size = path.stat().st_size
    assert size > 40_000
    with open(path, "r+b") as fh:          # 8 KiB of garbage over pages in the middle
        fh.seek(size // 2 // 4096 * 4096)
        fh.write(os.urandom(8192))
    with pytest.raises(StoreError) as err:
        Store(str(path))
    text = str(err.value)
    assert str(path) in text and ".recover" in text and f"{path}.recovered" in text


def test_status_on_a_damaged_store_is_exit_2_without_traceback(tmp_path, capsys):
    site = site_copy(tmp_path)
    db = tmp_path / "ems.sqlite"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    assert main(["status", "--config", str(site)]) == 2
    err = capsys.readouterr().err
    assert str(db) in err and ".recover" in err and "Traceback" not in err


def test_a_second_daemon_on_the_same_database_is_refused_with_the_holders_pid(tmp_path):
    path = tmp_path / "ems.sqlite"
    first = Store(str(path), exclusive=True)
    try:
        with pytest.raises(StoreError) as err:
            Store(str(path), exclusive=True)
        assert f"pid {os.getpid()}" in str(err.value) and "in use by another ems daemon" in str(err.value)
        with Store(str(path)) as reader:          # readers (ems status) need no lock
            assert reader.month_peaks() == {}
    finally:
        first.close()
    Store(str(path), exclusive=True).close()      # released with the store


@pytest.mark.parametrize("pragma, reason", [("PRAGMA max_page_count=1", "database or disk is full"),
                                            ("PRAGMA query_only=1", "readonly")])
def test_write_errors_raise_an_alarm_keep_the_writes_and_lose_nothing(tmp_path, monkeypatch, pragma, reason):
    path = tmp_path / "ems.sqlite"
    store = Store(str(path))
    try:
        fill(store, 5)
        undo = with_pragma(store, pragma if "query" in pragma else
                           f"PRAGMA max_page_count={rows(path, 'PRAGMA page_count')[0][0]}")
        fill(store, 400, T0 + pd.Timedelta(hours=1))           # grows the file: refused
        assert store.alarm is not None and reason in store.alarm
        assert store.raise_month_peak("2024-07", 42.5, T0, T0)  # the ratchet holds in memory
        assert not store.raise_month_peak("2024-07", 41.0, T0, T0)
        store.set_states({"soc_kwh": {"leaf": 30.5}})
        store.record_event(T0, "window-closed", "a window closed")
        assert store.month_peaks() == {"2024-07": 42.5} and store.get_state("soc_kwh") == {"leaf": 30.5}
        assert store.apply_retention(T0 + pd.Timedelta(days=900), 1) == {"telemetry": 0, "plans": 0, "events": 0}
        assert rows(path, "select count(*) from monthly_peaks") == [(0,)]   # not on disk yet
        undo()                                                   # space again
        monkeypatch.setattr(ems.store, "RETRY_S", 0.0)
        store._retry_at = 0.0
        store.record_event(T0, "tick", "next write")
        assert store.alarm is None
    finally:
        store.close()
    assert rows(path, "select count(*) from telemetry") == [(405,)]
    assert rows(path, "select month, peak_kw from monthly_peaks") == [("2024-07", 42.5)]
    kinds = [k for (k,) in rows(path, "select kind from events order by id")]
    assert kinds == ["store-error", "window-closed", "store-recovered", "tick"]
    with Store(str(path)) as again:
        assert again.get_state("soc_kwh") == {"leaf": 30.5}


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_deleted_or_replaced_under_the_store_is_recreated_from_memory(tmp_path, how):
    path = tmp_path / "ems.sqlite"
    store = Store(str(path), exclusive=True)
    try:
        store.seed_bill_peaks({"2024-06": 50.0}, "h.csv", T0)
        store.raise_month_peak("2024-07", 44.0, T0, T0)
        store.set_states({"window": {"start": "x", "kwh": 3.5}})
        fill(store, 20)
        if how == "deleted":
            path.unlink()
        else:
            other = tmp_path / "other.sqlite"
            con = sqlite3.connect(other)
            con.execute("create table junk(a)")
            con.commit()
            con.close()
            os.replace(other, path)
        fill(store, 3, T0 + pd.Timedelta(hours=1))               # the next write notices
        assert store.alarm is None
    finally:
        store.close()
    assert rows(path, "select month, peak_kw from monthly_peaks") == [("2024-07", 44.0)]
    assert rows(path, "select month, peak_kw from bill_peaks") == [("2024-06", 50.0)]
    assert rows(path, "select count(*) from telemetry") == [(3,)]
    lost = rows(path, "select severity, message from events where kind='store-file-lost'")
    assert len(lost) == 1 and lost[0][0] == "error" and how in lost[0][1]
    with Store(str(path)) as again:
        assert again.get_state("window") == {"start": "x", "kwh": 3.5}
        assert again.month_peaks() == {"2024-06": 50.0, "2024-07": 44.0}


EVENING = "2024-07-08T19:00+09:00"


def test_the_daemon_survives_its_database_deleted_and_a_second_daemon_is_refused(tmp_path):
    cfg = load_site(site_copy(tmp_path))
    svc, clock = manual_service(cfg, EVENING, initial_soc_pct=60, replay=constant_replay(tmp_path, EVENING, 2, 3.0))
    other, _ = manual_service(cfg, EVENING, initial_soc_pct=60)
    db = tmp_path / "ems.sqlite"

    async def scenario():
        async with svc:
            with pytest.raises(StoreError, match=f"pid {os.getpid()}"):
                async with other:
                    pass
            d = svc.daemon
            await d.dispatch_once()
            db.unlink()                                   # rm under the running daemon
            for _ in range(40):                           # past 19:30: the window closes, a month peak is raised
                clock.timeleap(60)
                await d.dispatch_once()
            return d.store.month_peaks()

    peaks = run(scenario())
    assert peaks.get("2024-07", 0) > 0
    with Store(str(db)) as s:
        assert s.month_peaks() == peaks                  # the new file holds the month peak
        assert [e["kind"] for e in s.events(kind="store-file-lost")] == ["store-file-lost"]
        assert s.count("telemetry") >= 40 and s.get_state("soc_kwh")
