"""The contract from past bills: ``ems plan --peaks-history/--month-peak-kw``, the site key
``peaks_history_csv`` (``ems check``), ``ems run --peaks-history`` seeding the store (bill and metered
peaks kept apart, idempotent, in one transaction, migrating an older database), and ``ems status``
saying where each contract month came from."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ems.cli import main
from ems.commands.status import collect
from ems.config import load_site
from ems.store import Store
from tests.ems.daemon_helpers import manual_service, run, set_load, site_copy

pytestmark = pytest.mark.timeout(120)

TOKYO = "Asia/Tokyo"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
OFFICE = CONFIGS / "office-v2b.yaml"
PLAN_START = pd.Timestamp("2024-06-10 00:00", tz=TOKYO)
# 2023-09 holds June to August 2024, 2024-05 holds up to April 2025: only May 2025 is not held
HISTORY = "month,peak_kw\n2023-08,150\n2023-09,172\n2024-05,120\n"


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture
def plan_inputs(tmp_path):
    """Two days of office load, 20 kW with a 50 kW hour each afternoon (the cars can shave it), no PV."""
    idx = pd.date_range(PLAN_START, periods=96, freq="30min")
    hour = (np.arange(96) % 48) / 2
    load = np.where((hour >= 13) & (hour < 14), 50.0, 20.0)
    for name, kw in (("pv", np.zeros(96)), ("load", load)):
        pd.DataFrame({"timestamp": [t.isoformat() for t in idx], "kw": kw}).to_csv(tmp_path / f"{name}.csv", index=False)
    return ["plan", "--config", str(OFFICE), "--start", PLAN_START.isoformat(), "--pv", str(tmp_path / "pv.csv"),
            "--load", str(tmp_path / "load.csv"), "--soc", "leaf=80", "bz4x=80", "leaf40=80", "--json"]


def plan_json(args: list[str], capfd) -> dict:
    assert main(args) == 0
    return json.loads(capfd.readouterr().out)


def test_plan_prices_the_ratchet_against_the_contract_held_by_past_bills(plan_inputs, tmp_path, capfd):
    basic = load_site(OFFICE).tariff.basic
    rate = basic.rate_per_kw_month * basic.pf_factor
    bare = plan_json(plan_inputs, capfd)
    # no history: June's own peak is its contract, and a new record in each of the 11 later months
    assert bare["demand_cost"] == pytest.approx(rate * bare["peak_kw"], rel=1e-6)
    assert bare["ratchet_cost"] == pytest.approx(11 * rate * bare["peak_kw"], rel=1e-6) and bare["ratchet_cost"] > 0
    assert any("no peaks history" in m for m in bare["messages"])

    held = plan_json(plan_inputs + ["--peaks-history", write(tmp_path / "h.csv", HISTORY)], capfd)
    assert held["peak_kw"] < 172.0
    # June's bill: rate x the held 172 kW x PF factor, whatever the plan does below it
    assert held["demand_cost"] == pytest.approx(basic.rate_per_kw_month * 172.0 * basic.pf_factor, rel=1e-9)
    assert held["month_peaks_kw"]["2024-06"] == pytest.approx(held["peak_kw"])
    # later months held by 2023-09 and 2024-05 cost nothing; only May 2025 (no older peak) is priced
    assert held["ratchet_cost"] == pytest.approx(rate * held["peak_kw"], rel=1e-6)
    assert held["ratchet_cost"] < bare["ratchet_cost"] / 10
    assert any("contract for 2024-06 already 172.00 kW, set by the peak of 2023-09" in m for m in held["messages"])
    # the bills so far this month (a June row: the month's metered peak so far) above the horizon's load:
    # every later month is held too, the plan adds nothing to them and does not drain the cars for the peak
    june = plan_json(plan_inputs + ["--peaks-history", write(tmp_path / "j.csv", HISTORY + "2024-06,60\n")], capfd)
    assert june["ratchet_cost"] == pytest.approx(0.0, abs=1e-6)
    assert june["demand_cost"] == pytest.approx(held["demand_cost"], rel=1e-9)
    assert june["wear_cost"] < held["wear_cost"]


def test_month_peak_so_far_is_a_floor_the_cars_are_not_drained_below(plan_inputs, capfd):
    """A metered June peak of 60 kW above the horizon's 50 kW load: June's bill and the later months'
    contracts are 60 kW whatever the plan does, so shaving the 50 kW hour is worth nothing and the cars
    discharge less (only what they would anyway) than when it pays."""
    basic = load_site(OFFICE).tariff.basic
    rate = basic.rate_per_kw_month * basic.pf_factor
    shaved = plan_json(plan_inputs, capfd)
    floor = plan_json(plan_inputs + ["--month-peak-kw", "60"], capfd)
    assert floor["demand_cost"] == pytest.approx(rate * 60.0, rel=1e-9)
    assert floor["month_peaks_kw"]["2024-06"] == pytest.approx(60.0)
    assert floor["ratchet_cost"] == pytest.approx(0.0, abs=1e-6)   # the later months are held by the metered 60 kW
    assert shaved["peak_kw"] < 50.0 - 1.0                       # without it the cars shave the 50 kW hour
    assert floor["wear_cost"] < shaved["wear_cost"]            # with it they discharge less


def test_plan_history_errors_name_file_row_column_and_value(plan_inputs, tmp_path, capfd):
    cases = {
        "bad_month.csv": ("month,peak_kw\n2024-05,120\n2024-5,90\n", "bad_month.csv:3: month = '2024-5': expected a month"),
        "negative.csv": ("month,peak_kw\n2024-05,-3\n", "negative.csv:2: peak_kw = -3.0"),
        "duplicate.csv": ("month,peak_kw\n2024-05,1\n2024-04,2\n2024-05,3\n", "duplicate.csv:4: month = '2024-05': duplicate of row 2"),
        "future.csv": ("month,peak_kw\n2024-05,1\n2024-07,2\n", "future.csv:3: month = '2024-07': is after the plan's start month 2024-06"),
        "header.csv": ("month,kw\n2024-05,1\n", "header.csv:1: peak_kw"),
    }
    for name, (text, expected) in cases.items():
        assert main(plan_inputs + ["--peaks-history", write(tmp_path / name, text)]) == 2, name
        captured = capfd.readouterr()
        assert captured.out == "" and expected in captured.err, (name, captured.err)
    assert main(plan_inputs + ["--peaks-history", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: file not found" in capfd.readouterr().err
    assert main(plan_inputs + ["--month-peak-kw", "-5"]) == 2
    assert "--month-peak-kw: month_peak_kw = '-5'" in capfd.readouterr().err


def office_copy(tmp_path: Path, history: str | None = HISTORY, key: str = "peaks.csv") -> Path:
    """The office site in ``tmp_path`` with ``peaks_history_csv: <key>`` (relative to the site file)."""
    path = site_copy(tmp_path, "office-v2b")
    if history is not None:
        write(tmp_path / "peaks.csv", history)
    path.write_text(path.read_text() + f"peaks_history_csv: {key}\n")
    return path


def test_site_key_is_relative_checked_and_used_by_ems_plan(plan_inputs, tmp_path, capfd):
    path = office_copy(tmp_path)
    assert load_site(path).peaks_history_csv == str(tmp_path / "peaks.csv")
    assert main(["check", str(path)]) == 0
    assert "peaks history: 3 month(s) 2023-08..2024-05" in capfd.readouterr().out
    args = plan_inputs[:]
    args[args.index("--config") + 1] = str(path)
    assert plan_json(args, capfd)["demand_cost"] == pytest.approx(1614.86 * 172.0)
    # the option overrides the key
    over = plan_json(args + ["--peaks-history", write(tmp_path / "other.csv", "month,peak_kw\n2024-05,99\n")], capfd)
    assert over["demand_cost"] == pytest.approx(1614.86 * 99.0)

    line = len(path.read_text().splitlines())
    write(tmp_path / "peaks.csv", "month,peak_kw\n2024-05,120\n2024-13,1\n")
    assert main(["check", str(path)]) == 2
    err = capfd.readouterr().err
    assert f"office-v2b.yaml:{line}: peaks_history_csv = 'peaks.csv': the peaks history it names is invalid" in err
    assert f"{tmp_path / 'peaks.csv'}:3: month = '2024-13'" in err
    (tmp_path / "peaks.csv").unlink()
    assert main(["check", str(path)]) == 2
    assert f"office-v2b.yaml:{line}: peaks_history_csv = 'peaks.csv': no such file" in capfd.readouterr().err


# ----- the store ------------------------------------------------------------------------------

T0 = pd.Timestamp("2024-07-08T10:00+09:00")


def test_store_keeps_bill_and_metered_peaks_apart_and_the_higher_wins(tmp_path):
    with Store(str(tmp_path / "s.sqlite")) as s:
        assert s.seed_bill_peaks({"2024-05": 120.0, "2024-06": 30.0, "2024-07": 40.0}, "h.csv", T0)["added"] == \
            ["2024-05", "2024-06", "2024-07"]
        s.raise_month_peak("2024-06", 35.0, T0 - pd.Timedelta(days=20), T0)     # metered above the bill: metered
        s.raise_month_peak("2024-07", 25.0, T0, T0)                             # below the bill: the bill's
        src = s.month_peak_sources()
        assert s.month_peaks() == {"2024-05": 120.0, "2024-06": 35.0, "2024-07": 40.0}
        assert [src[m]["source"] for m in ("2024-05", "2024-06", "2024-07")] == ["bill", "metered", "bill"]
        assert (src["2024-07"]["bill_kw"], src["2024-07"]["metered_kw"]) == (40.0, 25.0)
        assert src["2024-05"]["source_file"] == "h.csv" and src["2024-05"]["metered_kw"] is None
        # the same file again changes nothing; a corrected value replaces the seeded one
        again = s.seed_bill_peaks({"2024-05": 120.0, "2024-06": 30.0, "2024-07": 40.0}, "h.csv", T0)
        assert again == {"added": [], "changed": [], "unchanged": ["2024-05", "2024-06", "2024-07"]}
        assert s.count("bill_peaks") == 3 and s.count("monthly_peaks") == 2
        s.seed_bill_peaks({"2024-07": 20.0}, "h2.csv", T0)
        assert s.month_peak_sources()["2024-07"]["source"] == "metered" and s.month_peaks()["2024-07"] == 25.0
        # one transaction: a failure on the second row leaves the first unwritten
        with pytest.raises(Exception):
            s.seed_bill_peaks({"2024-01": 5.0, "2024-02": float("nan")}, "h3.csv", T0)
        assert "2024-01" not in s.month_peaks() and s.count("bill_peaks") == 3


def test_a_database_of_the_previous_version_is_migrated(tmp_path):
    """A store created before bill peaks existed (no bill_peaks table) keeps its metered peaks and
    takes a seeded history when opened."""
    db = tmp_path / "old.sqlite"
    with Store(str(db)) as s:
        s.raise_month_peak("2024-06", 80.0, T0 - pd.Timedelta(days=20), T0)
    con = sqlite3.connect(db)
    con.execute("DROP TABLE bill_peaks")
    con.commit()
    con.close()
    with Store(str(db)) as s:
        assert s.month_peak_sources()["2024-06"]["source"] == "metered"
        s.seed_bill_peaks({"2024-05": 120.0, "2024-06": 70.0}, "h.csv", T0)
        assert s.month_peaks() == {"2024-05": 120.0, "2024-06": 80.0}
    con = sqlite3.connect(db)
    try:
        assert con.execute("select month, peak_kw from bill_peaks order by month").fetchall() == \
            [("2024-05", 120.0), ("2024-06", 70.0)]
    finally:
        con.close()


# ----- the daemon -----------------------------------------------------------------------------

DAEMON_START = "2024-07-08T09:00+09:00"      # Monday: the three cars are plugged in from 08:30


def test_daemon_seeds_the_store_plans_with_it_and_a_restart_does_not_duplicate(tmp_path):
    history = HISTORY + "2024-07,5\n"        # this month's peak before the daemon: 5 kW on the bill
    cfg = load_site(office_copy(tmp_path, history))
    rate = cfg.tariff.basic.demand_rate()

    async def first():
        svc, clock = manual_service(cfg, DAEMON_START, initial_soc_pct=70)
        async with svc:
            d, store = svc.daemon, svc.store
            assert store.count("bill_peaks") == 4
            ev = store.events(kind="peaks-seeded")[0]
            assert "4 new, 0 changed, 0 unchanged" in ev["message"] and "now 172.00 kW" in ev["message"]
            inputs = store.last_plan()["inputs"]
            assert inputs["peak_history_kw"] == {"2023-08": 150.0, "2023-09": 172.0, "2024-05": 120.0}
            assert inputs["month_peak_kw"] == 5.0
            summary = store.last_plan()["summary"]
            assert summary["demand_cost"] == pytest.approx(rate * 172.0, rel=1e-9)   # July holds 2023-09's 172 kW
            assert d._guard_target_kw(clock.now()) >= 5.0 - cfg.daemon.peak_guard_margin_kw
            status = collect(store, cfg, clock.now())
            assert (status["contract_kw"], status["contract_set_by"], status["contract_source"]) == (172.0, "2023-09", "bill")
            assert (status["month_peak_kw"], status["month_peak_source"]) == (5.0, "bill")
            assert [r["month"] for r in status["contract_months"]] == ["2023-08", "2023-09", "2024-05", "2024-07"]
            # a metered window above the bill's 5 kW: the month's peak is then the metered one
            set_load(svc, 30.0)
            for _ in range(40):
                clock.timeleap(60)
                await d.dispatch_once()
            metered = store.month_peak_sources()["2024-07"]
            assert metered["source"] == "metered" and metered["metered_kw"] > 5.0 and metered["bill_kw"] == 5.0
            return metered["metered_kw"]

    async def second(peak):
        svc, clock = manual_service(cfg, "2024-07-08T10:00+09:00", initial_soc_pct=70)
        async with svc:
            store = svc.store
            assert store.count("bill_peaks") == 4 and store.count("monthly_peaks") == 1
            assert "0 new, 0 changed, 4 unchanged" in store.events(kind="peaks-seeded")[0]["message"]
            status = collect(store, cfg, clock.now())
            assert (status["month_peak_kw"], status["month_peak_source"]) == (peak, "metered")
            assert store.last_plan()["inputs"]["month_peak_kw"] == peak

    run(second(run(first())))


def test_config_reload_seeds_a_corrected_history_and_rejects_a_future_month(tmp_path):
    path = office_copy(tmp_path)
    cfg = load_site(path)
    svc, clock = manual_service(cfg, DAEMON_START, initial_soc_pct=70, config_path=str(path))

    async def scenario():
        async with svc:
            store = svc.store
            write(tmp_path / "peaks.csv", HISTORY.replace("2023-09,172", "2023-09,180"))
            assert svc.reload()
            assert "0 new, 1 changed, 2 unchanged" in store.events(kind="peaks-seeded")[0]["message"]
            assert store.month_peaks()["2023-09"] == 180.0
            write(tmp_path / "peaks.csv", HISTORY + "2024-08,300\n")
            assert not svc.reload()
            ev = store.events(kind="config-rejected")[0]
            assert "peaks.csv:5: month = '2024-08': is after the daemon's current month 2024-07" in ev["message"]
            assert "2024-08" not in store.month_peaks() and store.count("bill_peaks") == 3

    run(scenario())


def test_ems_run_seeds_from_the_option_and_status_says_where_each_month_came_from(tmp_path, capsys):
    path = office_copy(tmp_path, "month,peak_kw\n2024-05,99\n")         # the option overrides this key
    opt = write(tmp_path / "bills.csv", HISTORY)
    run_args = ["run", "--config", str(path), "--speed", "3600", "--start", DAEMON_START,
                "--until", "2024-07-08T10:00+09:00", "--solver", "thread", "--peaks-history", opt]
    assert main(run_args) == 0
    capsys.readouterr()
    assert main(["status", "--config", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert {"month_peak_kw", "contract_kw", "contract_set_by", "last_plan", "devices", "events"} <= set(status)
    assert (status["contract_kw"], status["contract_set_by"], status["contract_source"]) == (172.0, "2023-09", "bill")
    assert [(r["month"], r["source"]) for r in status["contract_months"]] == \
        [("2023-08", "bill"), ("2023-09", "bill"), ("2024-05", "bill"), ("2024-07", "metered")]
    assert status["contract_months"][2] == {"month": "2024-05", "peak_kw": 120.0, "source": "bill",
                                            "bill_kw": 120.0, "metered_kw": None}
    assert main(["status", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "contract 172.00 kW (set in 2023-09, bill history)" in out
    assert "2023-09     172.00 kW  bill history  <- sets the contract" in out and "metered" in out
    # the same file again: the store is unchanged
    assert main(run_args[:7] + ["--until", "2024-07-08T10:10+09:00"] + run_args[9:]) == 0
    with Store(str(tmp_path / "ems.sqlite")) as s:
        assert s.count("bill_peaks") == 3
        assert "0 new, 0 changed, 3 unchanged" in s.events(kind="peaks-seeded")[0]["message"]


def test_ems_run_rejects_a_bad_history_before_anything_is_written(tmp_path, capsys):
    path = office_copy(tmp_path)
    db = tmp_path / "ems.sqlite"
    args = ["run", "--config", str(path), "--speed", "3600", "--start", DAEMON_START, "--until", "2024-07-08T09:30+09:00"]
    bad = write(tmp_path / "bad.csv", "month,peak_kw\n2024-05,120\n2024-06,lots\n")
    assert main(args + ["--peaks-history", bad]) == 2
    assert "bad.csv:3: peak_kw = 'lots'" in capsys.readouterr().err
    future = write(tmp_path / "future.csv", "month,peak_kw\n2024-05,120\n2024-08,10\n")
    assert main(args + ["--peaks-history", future]) == 2
    assert "future.csv:3: month = '2024-08': is after the daemon's start month 2024-07" in capsys.readouterr().err
    assert not db.exists()
