"""ems.planning on the shipped example sites, the bill check, the ratchet from history, ems plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ems.billing import compute_bill
from ems.cli import main
from ems.config import load_site
from ems.errors import DataError
from ems.plan_summary import PlanStatus, PlanSummary, ShortfallKind
from ems.planning import Planner, SiteState, build_problem, demand_spec, plan_index, plan_site, plan_span

TOKYO = "Asia/Tokyo"


def series(start: str, hours: float, step_min: int, values) -> pd.Series:
    """A kW series on a regular grid from ``start`` (Tokyo time)."""
    idx = pd.date_range(pd.Timestamp(start, tz=TOKYO), periods=int(hours * 60 / step_min), freq=f"{step_min}min")
    return pd.Series(np.broadcast_to(np.asarray(values, dtype=float), (len(idx),)), index=idx)


def full_state(cfg, pct: float = 50.0, **kw) -> SiteState:
    return SiteState({v.id: pct / 100 * v.capacity_kwh for v in cfg.vehicles}, **kw)


CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def configs():
    return {name: load_site(CONFIGS / f"{name}.yaml") for name in ("home-v2h", "office-v2b", "shelter")}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["home-v2h", "office-v2b", "shelter"]), seed=st.integers(0, 2**31 - 1),
       step=st.sampled_from([15, 30]), day=st.integers(1, 20), pct=st.floats(25, 90))
def test_plan_cost_equals_the_bill_of_its_metered_import(configs, name, seed, step, day, pct):
    """The plan's own cost (energy + demand + fixed basic - export credit) equals what the tariff
    engine bills for the import and export it schedules, with the same ratchet history."""
    cfg = configs[name]
    cfg = cfg.model_copy(update={"planner": cfg.planner.model_copy(update={"step_minutes": step})})
    rng = np.random.default_rng(seed)
    start = f"2024-06-{day:02d} 06:00"
    n = int(24 * 60 / step)
    load = series(start, 24, step, rng.uniform(0.3, 50.0 if name == "office-v2b" else 4.0, n))
    pv = series(start, 24, step, np.clip(rng.normal(3, 4, n), 0, None))
    history = {"2024-05": float(rng.uniform(0, 60)), "2023-09": float(rng.uniform(0, 60))}
    res = plan_site(cfg, load.index[0], pv, load, full_state(cfg, pct, peak_history_kw=history), hours=24)
    assert not res.summary["fallback"]
    meter = res.schedule[["import_kw", "export_kw"]]
    bill = compute_bill(meter, cfg.tariff, history)
    assert res.summary["bill_cost"] == pytest.approx(bill.total, rel=1e-7, abs=1e-4)
    if cfg.tariff.basic.kind == "demand":
        assert res.summary["peak_kw"] == pytest.approx(bill.months[0].peak_kw, abs=1e-6)


def test_home_plan_is_checked_and_meets_the_departure_target(configs):
    """Monday 18:00 to Wednesday 18:00: the leaf (plugged in from 18:30) leaves at 07:30 with 80 %."""
    cfg = configs["home-v2h"]
    start = "2024-06-03 18:00"
    load = series(start, 48, 30, 0.6)
    pv = series(start, 48, 30, 0.0)
    res = Planner(cfg).plan(load.index[0], pv, load, full_state(cfg, 30.0))
    s = res.schedule
    assert res.summary["status"] == "optimal" and not res.summary["fallback"]
    depart = pd.Timestamp("2024-06-04 07:30", tz=TOKYO)
    assert s.loc[depart, "leaf_soc_kwh"] >= 0.8 * 62 - 1e-6
    away = (s.index >= depart) & (s.index < pd.Timestamp("2024-06-04 19:00", tz=TOKYO))
    assert (s.loc[away, ["v2h1_charge_kw", "v2h1_discharge_kw"]].to_numpy() < 1e-9).all()
    assert list(s.columns) == ["pv_kw", "load_kw", "import_kw", "export_kw", "curtail_kw", "v2h1_charge_kw",
                               "v2h1_discharge_kw", "leaf_soc_kwh"]
    assert s.index.tz is not None and len(s) == 96


def test_unreachable_departure_is_named_in_words_and_the_shortfall_reported(configs):
    """At 05:00 with 20 %, the 6 kW unit cannot bring the leaf to 80 % by 07:30."""
    cfg = configs["home-v2h"]
    start = "2024-06-04 05:00"
    load = series(start, 24, 30, 0.5)
    res = plan_site(cfg, load.index[0], series(start, 24, 30, 0.0), load, full_state(cfg, 20.0), hours=24)
    out = res.outcome
    before = [s for s in out.shortfalls_of(ShortfallKind.TARGET) if not s.planned]
    planned = [s for s in out.shortfalls_of(ShortfallKind.TARGET) if s.planned]
    assert [(s.subject, s.at) for s in before] == [("leaf", "Tue 07:30")] and before[0].amount == pytest.approx(22.9, abs=0.05)
    assert [(s.subject, s.at) for s in planned] == [("leaf", "Tue 07:30")] and planned[0].amount == pytest.approx(22.9, abs=0.05)
    assert out.departures_short and not out.infeasible and not out.fallback
    reserve = out.shortfalls_of(ShortfallKind.RESERVE)
    assert reserve and reserve[0].at == "Tue 05:00" and reserve[0].amount == pytest.approx(6.6 - 2.7, abs=0.06)
    # the sentences for people carry the same facts
    assert "car leaf leaves at Tue 07:30 with 43 %, 22.9 kWh short of its 80 % target" in out.messages
    assert out.status is PlanStatus.OPTIMAL and res.summary["status"] == "optimal"
    assert res.summary["shortfalls"][0]["kind"] in {"target", "reserve"}


def test_ratchet_levels_come_from_the_history(configs):
    """Office, 11-month ratchet: an 80 kW peak 11 months ago holds June; 50 kW in May holds the
    months up to next April; May 2025, the last month the June peak can reach, is held only by the
    30 kW already metered in June."""
    cfg = configs["office-v2b"]
    idx = plan_index(cfg, pd.Timestamp("2024-06-10 00:00", tz=TOKYO), 48)
    state = full_state(cfg, month_peak_kw=30.0, peak_history_kw={"2023-07": 80.0, "2024-05": 50.0})
    d = demand_spec(cfg, idx, state)
    assert d.labels[0] == "2024-06" and d.labels[-1] == "2025-05" and len(d.labels) == 12
    assert d.held_kw[0] == 80.0 and d.held_kw[1] == 50.0 and d.held_kw[-1] == 30.0
    assert d.month_floor_kw.tolist() == [30.0]
    assert d.rate_per_kw_month == pytest.approx(1614.86)


def test_fifteen_minute_plan_started_mid_window_counts_the_metered_part(configs):
    """Starting at :15 with 5 kWh already metered in the window, that window's average is
    (5 + 0.25 h x import) / 0.5 h: at least 10 kW whatever the plan does."""
    cfg = configs["office-v2b"]
    cfg = cfg.model_copy(update={"planner": cfg.planner.model_copy(update={"step_minutes": 15})})
    start = "2024-06-10 10:15"
    load = series(start, 6, 15, 1.0)
    res = plan_site(cfg, load.index[0], series(start, 6, 15, 0.0), load,
                    full_state(cfg, window_import_kwh=5.0), hours=6)
    assert res.summary["month_peaks_kw"]["2024-06"] >= 10.0
    aligned = series("2024-06-10 10:00", 2, 15, 1.0)
    with pytest.raises(DataError, match="window boundary"):
        build_problem(cfg, aligned.index[0], aligned, aligned, full_state(cfg, window_import_kwh=1.0), hours=2)


def test_outage_plan_carries_the_critical_load(configs):
    """Shelter, grid down 18:00-06:00: critical circuits (1.4 kW) run from the municipal car."""
    cfg = configs["shelter"]
    start = "2024-06-03 12:00"
    load = series(start, 24, 30, 5.0)
    o = (pd.Timestamp("2024-06-03 18:00", tz=TOKYO), pd.Timestamp("2024-06-04 06:00", tz=TOKYO))
    res = plan_site(cfg, load.index[0], series(start, 24, 30, 0.0), load, full_state(cfg, 80.0), outage=o, hours=24)
    s = res.schedule
    down = (s.index >= o[0]) & (s.index < o[1])
    assert (s.loc[down, "import_kw"] == 0).all()
    assert np.allclose(s.loc[down, "load_kw"], 1.4)
    assert s.loc[down, "unserved_kw"].sum() == pytest.approx(0.0, abs=1e-6)
    assert s.loc[down, "v2h1_discharge_kw"].sum() * 0.5 == pytest.approx(1.4 * 12, abs=1e-6)


def test_bad_inputs_are_errors_naming_the_problem(configs):
    cfg = configs["home-v2h"]
    load = series("2024-06-03 18:00", 48, 30, 0.5)
    with pytest.raises(DataError, match="must lie on a 30-minute step"):
        plan_site(cfg, pd.Timestamp("2024-06-03 18:10", tz=TOKYO), load, load, full_state(cfg))
    with pytest.raises(DataError, match="no value for this and 47 more"):
        plan_site(cfg, load.index[0], load.iloc[:48], load, full_state(cfg))
    with pytest.raises(DataError, match=r"no state of charge for vehicle\(s\) \['leaf'\]"):
        plan_site(cfg, load.index[0], load, load, SiteState({}))


def test_plan_span_chains_months_through_soc_and_ratchet(configs):
    """Two weeks across a month end, perfect foresight: two chunks, June's peak in July's history."""
    cfg = configs["office-v2b"]
    start = "2024-06-24 00:00"
    n = 14 * 48
    hour = (np.arange(n) % 48) / 2
    load = series(start, 14 * 24, 30, np.where((hour >= 8) & (hour < 18), 45.0, 4.0))
    res = plan_span(cfg, series(start, 14 * 24, 30, 0.0), load, full_state(cfg))
    assert res.summary["months"] == 2 and not res.summary["fallback"]
    assert set(res.summary["month_peaks_kw"]) == {"2024-06", "2024-07"}
    assert len(res.schedule) == n and res.schedule.index.is_monotonic_increasing


def test_ems_plan_cli_with_csv_inputs(configs_dir, tmp_path, capfd):
    """capfd, not capsys: the solver library must not print to the process's stdout either (--json)."""
    start = pd.Timestamp("2024-06-03 18:00", tz=TOKYO)
    idx = pd.date_range(start, periods=96, freq="30min")
    for name, kw in (("pv", 0.0), ("load", 0.8)):
        pd.DataFrame({"timestamp": [t.isoformat() for t in idx], "kw": kw}).to_csv(tmp_path / f"{name}.csv", index=False)
    out = tmp_path / "schedule.csv"
    rc = main(["plan", "--config", str(configs_dir / "home-v2h.yaml"), "--start", start.isoformat(),
               "--pv", str(tmp_path / "pv.csv"), "--load", str(tmp_path / "load.csv"), "--soc", "leaf=40",
               "--out", str(out), "--json"])
    assert rc == 0
    summary = json.loads(capfd.readouterr().out)
    assert {"status", "objective", "energy_cost", "demand_cost", "export_credit", "wear_cost", "penalty_cost",
            "peak_kw", "build_seconds", "solve_seconds", "messages"} <= set(summary)
    assert summary["status"] == "optimal"
    table = pd.read_csv(out)
    assert list(table.columns) == ["timestamp", "pv_kw", "load_kw", "import_kw", "export_kw", "curtail_kw",
                                   "v2h1_charge_kw", "v2h1_discharge_kw", "leaf_soc_kwh"]
    assert table["timestamp"].iloc[0] == "2024-06-03T18:00:00+09:00" and len(table) == 96
    rc = main(["plan", "--config", str(configs_dir / "home-v2h.yaml"), "--start", start.isoformat(), "--hours", "4",
               "--pv", str(tmp_path / "pv.csv"), "--load", str(tmp_path / "load.csv"), "--soc", "leaf=40"])
    text = capfd.readouterr().out
    assert rc == 0 and "Mon 18:00" in text and "status: optimal" in text
    assert main(["plan", "--config", str(configs_dir / "home-v2h.yaml"), "--soc", "tesla=40",
                 "--pv", str(tmp_path / "pv.csv"), "--load", str(tmp_path / "load.csv")]) == 2
    assert "expected VEHICLE=PCT with a vehicle of ['leaf']" in capfd.readouterr().err


def test_outcome_survives_the_json_summary(configs):
    """The stored summary (as_dict, through JSON) reads back as the same typed outcome."""
    cfg = configs["home-v2h"]
    start = "2024-06-04 05:00"
    load = series(start, 24, 30, 0.5)
    res = plan_site(cfg, load.index[0], series(start, 24, 30, 0.0), load, full_state(cfg, 20.0), hours=24)
    back = PlanSummary.from_dict(json.loads(json.dumps(res.summary)))
    assert back == res.outcome
    assert back.departures_short and back.shortfalls_of(ShortfallKind.TARGET)[0].subject == "leaf"


@pytest.mark.parametrize("command", ["plan", "forecast"])
def test_a_start_before_the_history_is_an_input_error_naming_the_file(configs_dir, command, capfd):
    """office-v2b's history begins 2024-01-01 00:00 +09:00: a forecast from before it stops with exit 2,
    the history file, its first timestamp and the start on stderr, and no traceback."""
    rc = main([command, "--config", str(configs_dir / "office-v2b.yaml"), "--start", "2023-12-01T00:00+09:00",
               "--hours", "4"])
    err = capfd.readouterr().err
    assert rc == 2
    assert "office-2024-30min.csv" in err and "2024-01-01T00:00:00+09:00" in err and "2023-12-01T00:00:00+09:00" in err
    assert "Traceback" not in err and "ValueError" not in err


def _office_with(cfg, price: float, neutral: bool):
    """The office with every car settled at ``price`` and its windows energy-neutral or not."""
    cars = [v.model_copy(update={"energy_price_per_kwh": price,
                                 "windows": [w.model_copy(update={"energy_neutral": neutral}) for w in v.windows]})
            for v in cfg.vehicles]
    return cfg.model_copy(update={"vehicles": cars})


def test_drivers_energy_is_priced_and_an_energy_neutral_car_leaves_with_what_it_brought(configs):
    """Office Tuesday 10:00, cars plugged in since 08:30 at 80 %, a 90 kW afternoon block on a 40 kW
    building: free drivers' energy (price 0) is spent on the peak; at 40 JPY/kWh the settlement is in
    the plan's cost; with energy-neutral windows every car leaves at 18:00 with at least the 80 % it
    arrived with."""
    cfg = configs["office-v2b"]
    start = "2024-07-09 10:00"
    load = series(start, 24, 30, [40.0] * 8 + [90.0] * 6 + [40.0] * 34)
    pv = series(start, 24, 30, 0.0)
    arrived = {v.id: 0.8 * v.capacity_kwh for v in cfg.vehicles}
    state = SiteState(dict(arrived), arrival_kwh=dict(arrived))
    free = plan_site(_office_with(cfg, 0.0, False), load.index[0], pv, load, state, hours=24)
    priced = plan_site(_office_with(cfg, 40.0, False), load.index[0], pv, load, state, hours=24)
    neutral = plan_site(_office_with(cfg, 0.0, True), load.index[0], pv, load, state, hours=24)
    leave = pd.Timestamp("2024-07-09 17:30", tz=TOKYO)
    for res in (free, priced, neutral):
        assert res.outcome.status is PlanStatus.OPTIMAL and not res.outcome.shortfalls_of(ShortfallKind.TARGET)
    taken = {name: sum(max(arrived[v.id] - res.outcome.final_soc_kwh[v.id], 0.0) for v in cfg.vehicles)
             for name, res in (("free", free), ("priced", priced))}
    assert taken["free"] > 1.0                      # energy at no price is used for the peak
    assert priced.outcome.driver_settlement != 0.0 and free.outcome.driver_settlement == pytest.approx(0.0)
    assert priced.outcome.objective == pytest.approx(
        priced.outcome.energy_cost + priced.outcome.demand_cost + priced.outcome.ratchet_cost + priced.outcome.wear_cost
        + priced.outcome.driver_settlement + priced.outcome.penalty_cost + priced.outcome.hedge_cost
        - priced.outcome.export_credit - priced.outcome.terminal_value, rel=1e-9)
    s = neutral.schedule
    for v in cfg.vehicles:   # the SOC at the start of the last plugged step plus its flow: what the car leaves with
        ch, dis = s.loc[leave, f"{v.chargers[0]}_charge_kw"], s.loc[leave, f"{v.chargers[0]}_discharge_kw"]
        left = s.loc[leave, f"{v.id}_soc_kwh"] + (0.95 * ch - dis / 0.95) * 0.5
        assert left >= arrived[v.id] - 1e-6
    assert neutral.outcome.peak_kw >= free.outcome.peak_kw - 1e-6   # neutrality costs peak shaving


def test_peak_uplift_prices_the_later_windows_only(configs):
    """The error quantile is added to the demand windows after the current one, as if metered:
    the plan holds its peak against that load; the current window and the energy bill are untouched."""
    cfg = configs["office-v2b"]
    start = pd.Timestamp("2024-07-09 10:00", tz=TOKYO)
    idx = plan_index(cfg, start, 24)
    state = full_state(cfg, 70.0)
    up = np.full(len(idx), 2.0)
    plain, lifted = demand_spec(cfg, idx, state), demand_spec(cfg, idx, state, up)
    assert lifted.window_pre_kwh[0] == plain.window_pre_kwh[0]
    np.testing.assert_allclose(lifted.window_pre_kwh[1:] - plain.window_pre_kwh[1:], 2.0 * 0.5)
    load = series("2024-07-09 10:00", 24, 30, [40.0] * 8 + [60.0] * 6 + [40.0] * 34)
    pv = series("2024-07-09 10:00", 24, 30, 0.0)
    a = plan_site(cfg, start, pv, load, state, hours=24)
    b = plan_site(cfg, start, pv, load, state, hours=24, peak_uplift_kw=pd.Series(up, index=idx))
    assert b.outcome.peak_in("2024-07") >= a.outcome.peak_in("2024-07") - 1e-6
    assert b.outcome.energy_cost == pytest.approx(a.outcome.energy_cost, rel=0.05)


def test_a_peak_forecast_tomorrow_does_not_license_one_today(configs):
    """With ``planner.peak_hedge_pct`` (default 25) the plan prices today's highest window again: a surge the
    forecast sees tomorrow (more than the cars can cover) no longer makes today's windows free up
    to its level, so the cars shave today too, and the level the guard holds is today's."""
    cfg = configs["office-v2b"]
    start = pd.Timestamp("2024-07-09 08:00", tz=TOKYO)
    today = [20.0] * 5 + [38.0] * 4 + [25.0] * 12 + [10.0] * 27   # 10:30-12:30 at 38 kW
    tomorrow = [10.0] * 2 + [70.0] * 8 + [10.0] * 38       # 09:00-13:00 at 70 kW
    load = series("2024-07-09 08:00", 48, 30, today + tomorrow)
    pv = series("2024-07-09 08:00", 48, 30, 0.0)
    state = full_state(cfg, 70.0)
    assert cfg.planner.peak_hedge_pct == 25.0          # the default
    hedged_cfg = cfg
    cfg = cfg.model_copy(update={"planner": cfg.planner.model_copy(update={"peak_hedge_pct": 0.0})})
    plain = plan_site(cfg, start, pv, load, state, hours=48)
    hedged = plan_site(hedged_cfg, start, pv, load, state, hours=48)
    day = slice(0, 24)
    plain_today = plain.schedule["import_kw"].iloc[day].max()
    hedged_today = hedged.schedule["import_kw"].iloc[day].max()
    month_level = plain.outcome.planned_peaks_kw["2024-07"]
    assert month_level > 45.0                      # tomorrow's surge sets the month's level ...
    assert plain_today == pytest.approx(38.0, abs=0.05)   # ... so today's 38 kW costs nothing
    assert plain.outcome.near_peak_kw == {} and plain.outcome.peak_in("2024-07") == pytest.approx(month_level)
    assert hedged_today < plain_today - 3.0        # hedged: the cars shave today as well
    assert hedged.outcome.peak_in("2024-07") == pytest.approx(hedged.outcome.near_peak_kw["2024-07"])
    assert hedged.outcome.near_peak_kw["2024-07"] == pytest.approx(hedged_today, abs=1e-6)
    assert hedged.outcome.hedge_cost == pytest.approx(0.25 * cfg.tariff.basic.demand_rate() * hedged_today, rel=1e-6)
    assert not hedged.outcome.departures_short
