"""The SQLite store: real files, WAL mode, peaks that only rise, retention that keeps peaks."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from ems.store import Store

T0 = pd.Timestamp("2024-07-01T10:00:00+09:00")


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "ems.sqlite"))
    yield s
    s.close()


def test_wal_mode_and_tables(store, tmp_path):
    store.record_event(T0, "start", "daemon started")
    con = sqlite3.connect(tmp_path / "ems.sqlite")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    finally:
        con.close()
    assert {"telemetry", "plans", "events", "monthly_peaks", "state"} <= names


def test_month_peak_only_rises_and_survives_reopen(tmp_path):
    path = str(tmp_path / "p.sqlite")
    with Store(path) as s:
        assert s.raise_month_peak("2024-07", 42.0, T0, T0)
        assert not s.raise_month_peak("2024-07", 41.0, T0, T0)
        assert s.raise_month_peak("2024-07", 44.5, T0 + pd.Timedelta("30min"), T0)
        s.raise_month_peak("2024-06", 39.0, T0 - pd.Timedelta(days=20), T0)
    with Store(path) as s:
        assert s.month_peaks() == {"2024-07": 44.5, "2024-06": 39.0}


def test_plan_roundtrip(store):
    idx = pd.date_range(T0, periods=4, freq="30min")
    sched = pd.DataFrame({"import_kw": [1.0, 2.0, 3.0, 4.5], "v2h1_charge_kw": [0, 6.0, 0, 0]}, index=idx)
    pid = store.record_plan(T0, T0, {"status": "optimal", "peak_kw": 4.5, "objective": 123.0}, sched, {"pv_kwh": 3.2})
    last = store.last_plan()
    assert last["id"] == pid and last["summary"]["status"] == "optimal" and last["peak_kw"] == 4.5
    assert last["inputs"] == {"pv_kwh": 3.2}
    pd.testing.assert_frame_equal(last["schedule"], sched.tz_convert("UTC"), check_freq=False, check_dtype=False)


def test_telemetry_latest_and_retention(store):
    for k in range(3):
        ts = T0 + pd.Timedelta(days=10 * k)
        store.record_telemetry(ts, [{"device": "v2h1", "soc_kwh": 30.0 + k, "charge_kw": 1.0, "discharge_kw": 0.0}])
        store.record_event(ts, "tick", f"tick {k}")
    store.raise_month_peak("2023-01", 50.0, T0 - pd.Timedelta(days=500), T0)
    assert store.latest_telemetry()["v2h1"]["soc_kwh"] == 31.0 + 1
    removed = store.apply_retention(T0 + pd.Timedelta(days=25), days=10)
    assert removed["telemetry"] == 2 and removed["events"] == 2
    assert store.count("telemetry") == 1
    assert store.month_peaks() == {"2023-01": 50.0}


def test_state_and_bad_inputs(store):
    store.set_state("soc", {"leaf": 31.5})
    store.set_state("soc", {"leaf": 32.0})
    assert store.get_state("soc") == {"leaf": 32.0}
    assert store.get_state("missing", 7) == 7
    with pytest.raises(ValueError, match="severity must be one of"):
        store.record_event(T0, "x", "y", severity="fatal")
    with pytest.raises(ValueError, match="time-zone aware"):
        store.record_event(pd.Timestamp("2024-07-01 10:00"), "x", "y")
