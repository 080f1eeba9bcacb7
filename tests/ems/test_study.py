"""ems study on four days of the office's shipped data: hand-checked figures, the bill against the bill
engine, oracle <= mpc <= none, no missed departures, identical results in-process, in 2 processes
and on a Dask cluster, drawn stays, outage survival, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ems.billing import compute_bill, read_meter_csv
from ems.cli import main
from ems.config import load_site
from ems.errors import ConfigError, DataError
from ems.study import Scenario, execute, run_scenario, run_study, scenarios
from ems.study.outage import survival_hours, survival_summary
from ems.study.site import make_fleet, read_span
from ems.study.strategies import rule_windows

ROOT = Path(__file__).resolve().parents[2]
OFFICE = str(ROOT / "configs/office-v2b.yaml")
SHELTER = str(ROOT / "configs/shelter.yaml")


def slice_csv(src: Path, dst: Path, first_day: int, days: int) -> str:
    """Rows of ``days`` whole days from day ``first_day`` of a shipped 30-minute year."""
    frame = pd.read_csv(src)
    frame.iloc[48 * first_day:48 * (first_day + days)].to_csv(dst, index=False)
    return str(dst)


@pytest.fixture(scope="module")
def office_days(tmp_path_factory) -> str:
    """Mon 4 - Thu 7 March 2024 (no holiday): four working days of the office."""
    return slice_csv(ROOT / "configs/data/office-2024-30min.csv", tmp_path_factory.mktemp("data") / "office.csv", 63, 4)


@pytest.fixture(scope="module")
def study(office_days, tmp_path_factory):
    """All four strategies on the four days, in this process, with outputs written."""
    out = tmp_path_factory.mktemp("study")
    summary, results = run_study([(OFFICE, office_days)], strategies=["none", "rule", "mpc", "oracle"], out=out,
                                 workers=1, report=False)
    return out, summary, {r.scenario.strategy: r for r in results}


def figures(summary: dict) -> dict:
    return summary["results"]["office-v2b"]["config"]


def test_none_charges_each_car_from_its_arrival_soc_to_full(study):
    """Hand check: each working day every car arrives with its arrival SOC and charges to its 90 % max:
    leaf 62 x 20 %, bz4x 71.4 x 20 %, leaf40 40 x 25 % of stored energy, / 0.95 from the grid, no discharge;
    the meter is load - PV + that charging (PV surplus curtailed: export limit 0)."""
    out, summary, res = study
    f = figures(summary)["none"]
    stored_per_day = 62 * 0.20 + 71.4 * 0.20 + 40 * 0.25
    # the span starts at midnight with each car at its departure target, which is below 90 %: the first
    # arrival of each day resets the SOC, so only the arrivals count
    assert f["vehicle_charged_kwh"] == pytest.approx(4 * stored_per_day / 0.95, rel=1e-9)
    assert f["vehicle_discharged_kwh"] == 0
    r = res["none"]
    charging = r.charge_kw.sum(axis=0)
    expected = np.maximum(r.load_kw - r.pv_kw + charging, 0.0)
    assert np.allclose(r.import_kw, expected)
    assert f["import_kwh"] == pytest.approx(expected.sum() / 2)
    # 3 x 6 kW of charging from 08:30 lands on the morning load
    assert f["peak_kw"] == pytest.approx(max(r.import_kw), rel=1e-12)


def test_bill_in_summary_is_the_bill_engine_bill_of_the_simulated_meter(study):
    out, summary, res = study
    tariff = load_site(OFFICE).tariff
    for strategy, f in figures(summary).items():
        meter = read_meter_csv(out / "series" / f"office-v2b--config--{strategy}.csv")
        bill = compute_bill(meter, tariff)
        assert f["bill"]["total"] == pytest.approx(bill.total, rel=1e-12), strategy
        assert f["monthly_peaks_kw"] == pytest.approx(bill.peaks())
        items = f["bill"]["line_items"]
        assert items["basic"] + items["energy"] + items["adders"] - items["export_credit"] == pytest.approx(bill.total)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["results"]["office-v2b"]["config"]["mpc"]["bill"]["total"] == figures(summary)["mpc"]["bill"]["total"]


def test_oracle_bounds_mpc_bounds_none_and_nobody_misses_a_departure(study):
    _, summary, res = study
    f = figures(summary)
    bills = {s: f[s]["bill"]["total"] for s in f}
    assert bills["oracle"] <= bills["mpc"] + 1e-6 <= bills["none"] + 1e-6
    assert bills["rule"] < bills["none"]
    for s, x in f.items():
        assert x["departure_targets_missed"] == 0, (s, x["missed"])
        assert x["saving_vs_none"] == pytest.approx(bills["none"] - bills[s])
    assert f["oracle"]["share_of_oracle_saving"] == pytest.approx(1.0)
    # the oracle minimises bill + battery wear (8.7 JPY per battery-side kWh discharged, 95 % efficient units)
    for s in f:
        assert f[s]["battery_wear_cost"] == pytest.approx(f[s]["vehicle_discharged_kwh"] / 0.95 * 8.7)
        assert f["oracle"]["bill_plus_wear"] <= f[s]["bill_plus_wear"] + 1e-6
    assert f["oracle"]["share_of_oracle_net_saving"] == pytest.approx(1.0)
    assert 0.8 < f["mpc"]["share_of_oracle_saving"] <= 1.0 + 1e-9
    assert f["mpc"]["plans"] == 4 * 48 and f["mpc"]["steps_without_forecast"] == 0
    # the oracle's replay is the plan: the simulated bill is the plan's bill
    assert f["oracle"]["bill"]["total"] == pytest.approx(f["oracle"]["plan_bill"], rel=1e-9)
    # V2B shaves the peak: every strategy with discharge lands below none's
    assert f["oracle"]["peak_kw"] < f["rule"]["peak_kw"] < f["none"]["peak_kw"]


def test_rule_windows_and_discharge(study):
    """Office tariff has one price all day: charge 23-07, discharge 13-16; the cars discharge only then,
    never so far that the plugged cars together hold less than the reserve above their minimums
    (ems.dispatch.share_floors), and never push energy into the grid."""
    _, summary, res = study
    r = res["rule"]
    cfg = load_site(OFFICE)
    cheap, peak = rule_windows(cfg, r.index)
    hours = np.asarray(r.index.hour)
    assert np.array_equal(peak, (hours >= 13) & (hours < 16))
    assert np.array_equal(cheap, (hours >= 23) | (hours < 7))
    assert not r.discharge_kw[:, ~peak].any()
    assert r.discharge_kw[:, peak].sum() > 0
    assert np.all(r.import_kw >= -1e-12) and not r.export_kw.any()
    reserve = cfg.load.critical_kw * cfg.outage.reserve_hours
    mins = np.array([veh.min_soc_pct / 100 * veh.capacity_kwh for veh in cfg.vehicles])
    plugged = r.plugged
    steps = np.flatnonzero(r.discharge_kw.sum(axis=0) > 0)
    for t in steps:
        held = 0.95 * (r.soc_kwh[:, t + 1] - mins)
        assert held[plugged[:, t]].sum() >= reserve - 1e-6
        assert np.all(held[plugged[:, t]] >= -1e-9)


def test_same_results_in_two_processes_and_on_dask(office_days):
    """Scenarios are independent: in-process, a 2-process pool and a Dask LocalCluster agree exactly."""
    from distributed import Client, LocalCluster
    items = scenarios([(OFFICE, office_days)], [str(ROOT / "configs/tariffs/chubu-high-voltage-a.yaml")],
                      ["none", "rule", "oracle"])
    one = execute(items, workers=1)
    two = execute(items, workers=2)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        on_dask = execute(items, scheduler=cluster.scheduler_address)   # as --scheduler ADDRESS does
        with Client(cluster) as client:
            again = execute(items[:1], scheduler=client)
    assert np.array_equal(again[0].import_kw, one[0].import_kw)
    for a, b, c in zip(one, two, on_dask):
        assert a.scenario == b.scenario == c.scenario
        for name in ("import_kw", "export_kw", "charge_kw", "discharge_kw", "soc_kwh", "survival_hours"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
            assert np.array_equal(getattr(a, name), getattr(c, name)), name
        assert a.bill == b.bill == c.bill


def test_drawn_stays_are_reproducible_and_still_met(office_days):
    cfg = load_site(OFFICE)
    span = read_span(cfg, office_days)
    configured = make_fleet(cfg, span, 48)
    a, b, c = make_fleet(cfg, span, 48, seed=7), make_fleet(cfg, span, 48, seed=7), make_fleet(cfg, span, 48, seed=8)
    assert a.stays == b.stays and a.stays != c.stays
    assert not np.array_equal(a.plugged, configured.plugged)
    moved = [abs((x.arrive - y.arrive) / pd.Timedelta(minutes=1)) for x, y in zip(a.stays["leaf"], configured.stays["leaf"])]
    assert max(moved) <= 45 and any(moved)
    for strategy in ("none", "rule", "oracle"):
        res = run_scenario(Scenario(OFFICE, office_days, None, strategy, seed=7))
        assert res.figures["departure_targets_missed"] == 0, res.figures["missed"]


def test_outage_survival_by_hand(office_days):
    """One car plugged with 7.6 kWh above its minimum behind a 95 % discharge: 7.22 kWh carries the
    2 kW of critical circuits 3.5 h at night (whole 30-minute steps), nothing while it is away."""
    cfg = load_site(OFFICE)
    span = read_span(cfg, office_days)
    T = len(span.index)
    V = len(cfg.vehicles)
    soc = np.zeros((V, T + 1))
    soc[0] = 62 * 0.2 + 7.6
    plugged = np.zeros((V, T), dtype=bool)
    plugged[0, :24] = True                            # plugged from midnight to noon of the first day
    hours = survival_hours(cfg, span.index, np.zeros(T), soc, plugged, np.full((V, T), -1))
    assert len(hours) == 4 * 24
    assert np.all(hours[:12] == 3.5) and np.all(hours[12:] == 0)
    s = survival_summary(hours, 3.0)
    assert s["share_reaching_reserve"] == pytest.approx(12 / 96)
    assert s["curve"]["1"] == pytest.approx(12 / 96) and s["curve"]["4"] == 0
    # PV covering the load carries the site as long as it lasts
    pv = np.where(np.arange(T) < 30, 5.0, 0.0)
    assert survival_hours(cfg, span.index, pv, soc, plugged, np.full((V, T), -1))[14] == 1.0  # hour 14: no car, PV to 15:00
    assert survival_hours(cfg, span.index, pv, soc, plugged, np.full((V, T), -1))[0] == 15 + 3.5


def test_fleet_of_sites_from_a_folder(tmp_path):
    """--sites DIR: every config in the folder, each on its own load.history_csv."""
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    for name, data in (("office-v2b", "configs/data/office-2024-30min.csv"), ("shelter", "configs/data/shelter-2024-30min.csv")):
        days = slice_csv(ROOT / data, tmp_path / f"{name}.csv", 63, 2)
        text = (ROOT / "configs" / f"{name}.yaml").read_text()
        text = text.replace("tariff: tariffs/", f"tariff: {ROOT}/configs/tariffs/").replace(
            f"history_csv: {Path(data).relative_to('configs')}", f"history_csv: {days}")
        (fleet / f"{name}.yaml").write_text(text)
    out = tmp_path / "out"
    assert main(["study", "--sites", str(fleet), "--strategy", "none,rule", "--out", str(out), "--workers", "1",
                 "--no-report"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["results"]) == {"office-v2b", "shelter"}
    assert summary["results"]["shelter"]["config"]["none"]["span"]["steps"] == 96


def test_bad_inputs_name_file_key_and_value(tmp_path, office_days, capsys):
    bad = tmp_path / "bad.csv"
    frame = pd.read_csv(office_days)
    frame.loc[5, "load_kw"] = -3
    frame.to_csv(bad, index=False)
    with pytest.raises(DataError) as err:
        run_scenario(Scenario(OFFICE, str(bad), None, "none"))
    assert str(bad) in str(err.value) and "load_kw" in str(err.value) and "-3" in str(err.value)

    hourly = tmp_path / "hourly.csv"
    frame = pd.read_csv(office_days).iloc[::2]
    frame.to_csv(hourly, index=False)
    with pytest.raises(DataError) as err:
        run_scenario(Scenario(OFFICE, str(hourly), None, "none"))
    assert str(hourly) in str(err.value) and "timestamp" in str(err.value) and "01:00:00" in str(err.value)
    cfg = load_site(OFFICE)
    cfg15 = cfg.model_copy(update={"planner": cfg.planner.model_copy(update={"step_minutes": 15})})
    with pytest.raises(DataError) as err:
        read_span(cfg15, office_days)
    assert office_days in str(err.value) and "planner.step_minutes" in str(err.value) and "0:30:00" in str(err.value)

    with pytest.raises(ConfigError) as err:
        scenarios([(OFFICE, office_days)], [], ["none", "greedy"])
    assert "--strategy" in str(err.value) and "greedy" in str(err.value)

    assert main(["study", "--config", OFFICE, "--data", str(tmp_path / "missing.csv"), "--workers", "1",
                 "--out", str(tmp_path / "o")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert main(["study", "--config", OFFICE, "--data", office_days, "--tariff", "nope.yaml", "--out", str(tmp_path)]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert main(["study", "--config", OFFICE, "--data", office_days, "--stochastic", "--out", str(tmp_path)]) == 2
    assert "--seed" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text((ROOT / "configs/office-v2b.yaml").read_text().replace("min_soc_pct: 20", "min_soc_pct: 120", 1)
                      .replace("tariff: tariffs/", f"tariff: {ROOT}/configs/tariffs/"))
    assert main(["study", "--config", str(broken), "--data", office_days, "--out", str(tmp_path)]) == 2
    err_text = capsys.readouterr().err
    assert "broken.yaml" in err_text and "min_soc_pct" in err_text and "120" in err_text


def test_cli_writes_summary_report_and_pngs(tmp_path, office_days, capsys):
    out = tmp_path / "out"
    assert main(["study", "--config", OFFICE, "--data", office_days, "--strategy", "none,oracle", "--out", str(out),
                 "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "office-v2b" in text and "oracle" in text and "100.0 %" in text
    assert (out / "summary.json").is_file() and (out / "report.html").is_file()
    assert len(list(out.glob("*.png"))) == 5


def test_fill_gaps_takes_the_same_clock_time_of_the_day_before(tmp_path, office_days):
    frame = pd.read_csv(office_days)
    holes = frame.drop(index=[60, 61]).astype({"pv_kw": object})   # day 2, 06:00-07:00 missing
    holes.loc[100, "pv_kw"] = ""                                    # day 3, 02:00: night PV left empty
    path = tmp_path / "holes.csv"
    holes.to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        run_scenario(Scenario(OFFICE, str(path), None, "none"))
    assert str(path) in str(err.value)
    res = run_scenario(Scenario(OFFICE, str(path), None, "none", fill_gaps=True))
    assert res.figures["data_cells_filled"] == {"load_kw": 2, "pv_kw": 3}
    assert res.load_kw[60] == frame.loc[12, "load_kw"] and res.load_kw[61] == frame.loc[13, "load_kw"]
    assert res.pv_kw[100] == frame.loc[52, "pv_kw"]


@pytest.fixture(scope="module")
def office_sim_inputs(office_days):
    cfg = load_site(OFFICE)
    span = read_span(cfg, office_days)
    return cfg, span, make_fleet(cfg, span, 48)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 2), st.floats(-2, 9), st.floats(-2, 9), st.floats(0, 60)), min_size=1, max_size=6),
       st.integers(0, 4 * 48 - 1))
def test_site_physics_balance_and_limits(office_sim_inputs, wishes, start):
    """Whatever a strategy asks: power balance, ratings, SOC within [min, max] (or its start), no car
    energy into the grid, and the SOC moves by the efficiencies."""
    from ems.study.site import Flow, SiteSim, initial_soc_kwh
    cfg, span, fleet = office_sim_inputs
    sim = SiteSim(cfg, span, fleet, initial_soc_kwh(cfg))
    sim.t = start
    sim.soc = np.array([v.capacity_kwh * 0.5 for v in cfg.vehicles])
    before = sim.soc.copy()
    flows = {v: Flow(v, ch, dis, floor) for v, ch, dis, floor in wishes}
    sim.step(flows)
    r, t = sim.rec, start
    net = span.load_kw[t] - span.pv_kw[t] + r.charge_kw[:, t].sum() - r.discharge_kw[:, t].sum()
    assert r.import_kw[t] - r.export_kw[t] - r.curtail_kw[t] == pytest.approx(net, abs=1e-9)
    assert r.import_kw[t] >= 0 and r.export_kw[t] == 0                       # office: export limit 0
    assert net >= min(span.load_kw[t] - span.pv_kw[t], 0) - 1e-9              # no vehicle energy exported
    for v, veh in enumerate(cfg.vehicles):
        ch, dis = r.charge_kw[v, t], r.discharge_kw[v, t]
        assert 0 <= ch <= 6 + 1e-12 and 0 <= dis <= 6 + 1e-12 and ch * dis == 0
        if not fleet.plugged[v, t]:
            assert ch == dis == 0
        end = before[v] + (0.95 * ch - dis / 0.95) * 0.5
        arrived = not np.isnan(fleet.arrival_set_kwh[v, t + 1]) if t + 1 < len(span.index) else False
        if not arrived:
            assert sim.soc[v] == pytest.approx(end, abs=1e-9)
            assert sim.soc[v] <= max(before[v], veh.max_soc_pct / 100 * veh.capacity_kwh) + 1e-9
            floor = max(veh.min_soc_pct / 100 * veh.capacity_kwh, flows[v].floor_kwh if v in flows else 0.0)
            assert dis == 0 or sim.soc[v] >= floor - 1e-9


@pytest.fixture(scope="module")
def new_site_weeks(tmp_path_factory) -> str:
    """Two weeks of office data that start two months after the config's history ends: Mon 4 - Sun 17
    March 2024 moved 52 weeks on to Mon 3 - Sun 16 March 2025 (same weekdays, no holiday)."""
    frame = pd.read_csv(ROOT / "configs/data/office-2024-30min.csv").iloc[48 * 63:48 * 77].copy()
    frame["timestamp"] = [(pd.Timestamp(t) + pd.Timedelta(weeks=52)).isoformat() for t in frame["timestamp"]]
    path = tmp_path_factory.mktemp("new-site") / "office-2025.csv"
    frame.to_csv(path, index=False)
    return str(path)


def test_mpc_on_a_span_without_recent_history_warms_up_on_the_no_plan_rule(new_site_weeks, tmp_path, capsys):
    """The config's history (2024) ends two months before the span, so the load profile's six weeks hold
    nothing: mpc runs the first day on dispatch's no-plan rule, then forecasts from the span's own past;
    it completes without missing a departure and lands between the oracle and unmanaged charging."""
    out = tmp_path / "out"
    assert main(["study", "--config", OFFICE, "--data", new_site_weeks, "--strategy", "none,mpc,oracle",
                 "--out", str(out), "--workers", "1", "--no-report"]) == 0
    text = capsys.readouterr().out
    mpc_line = next(line for line in text.splitlines() if " mpc " in line)
    assert "no fcst" in text and mpc_line.split()[-1] == "48"
    f = json.loads((out / "summary.json").read_text())["results"]["office-v2b"]["config"]
    steps = 14 * 48
    assert f["mpc"]["span"]["steps"] == steps
    assert f["mpc"]["steps_without_forecast"] == 48          # the span's first day (it starts at midnight)
    assert f["mpc"]["plans"] == steps - 48
    for s, x in f.items():
        assert x["departure_targets_missed"] == 0, (s, x["missed"])
    # what the office pays: its bill plus the settlement with the drivers whose cars it used
    paid = {s: f[s]["bill_plus_settlement"] for s in f}
    assert paid["oracle"] <= paid["mpc"] + 1e-6 <= paid["none"] + 1e-6
    assert all(f[s]["bill_plus_settlement"] == pytest.approx(f[s]["bill"]["total"] + f[s]["driver_settlement"]) for s in f)
    assert f["mpc"]["share_of_oracle_net_saving"] > 0.5


def test_mpc_forecasts_read_only_the_span_before_each_step(new_site_weeks):
    """The study's forecaster (the stale config history, then the span) gives at every origin what it
    gives fed only the rows before it; the warm-up ends at the span's second midnight."""
    from ems.forecast import SiteForecaster
    from ems.study.run import mpc_history, site_span
    cfg = load_site(OFFICE)
    history = mpc_history(cfg, site_span(OFFICE, None, new_site_weeks))
    full = SiteForecaster(cfg, history)
    day1 = pd.Timestamp("2025-03-04T00:00+09:00")
    assert full.history_days(day1 - pd.Timedelta(minutes=30), recent=True) == 0
    assert full.history_days(day1, recent=True) == 1
    for now in (day1, pd.Timestamp("2025-03-08T13:30+09:00")):
        past = SiteForecaster(cfg, history[history.index < now])
        a, b = full.forecast(now, 48), past.forecast(now, 48)
        np.testing.assert_allclose(a.load_kw.to_numpy(), b.load_kw.to_numpy(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(a.pv_kw.to_numpy(), b.pv_kw.to_numpy(), rtol=1e-9, atol=1e-9)
    # on the second day the weekday profile is the span's first day (a Monday; G1 repeats its weekdays),
    # whatever 2024 held; the last hour is on that profile, so no level offset
    first_day = history.loc[(history.index >= day1 - pd.Timedelta(days=1)) & (history.index < day1), "load_kw"]
    fc = full.forecast(day1 + pd.Timedelta(hours=2), 12)
    assert fc.meta["level_offset_kw"] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(fc.load_kw.to_numpy(), first_day.to_numpy()[4:28], atol=1e-9)


def test_each_strategy_gives_its_money_by_owner_and_the_cars_energy(study):
    """Per strategy: the site's bill, the drivers' settlement, the two together, the wear, the net cost,
    the cars' energy in and out. Hand check on none: each working day the three driver-owned cars arrive
    with 20 / 20 / 25 % below their 90 % maximum and charge to it, so the drivers pay 40 JPY for each of
    4 x (62 x 0.20 + 71.4 x 0.20 + 40 x 0.25) kWh stored, and nobody takes energy out of them."""
    _, summary, res = study
    f = figures(summary)
    cfg = load_site(OFFICE)
    assert {v.settlement_price_per_kwh for v in cfg.vehicles} == {40.0}
    stored = 4 * (62 * 0.20 + 71.4 * 0.20 + 40 * 0.25)
    assert f["none"]["driver_settlement"] == pytest.approx(-40.0 * stored, rel=1e-9)
    assert f["none"]["driver_owned_vehicles"] == 3 and f["none"]["battery_wear_cost"] == 0
    eta = 0.95
    for s, x in f.items():
        assert x["bill_plus_settlement"] == pytest.approx(x["bill"]["total"] + x["driver_settlement"])
        assert x["net_cost"] == pytest.approx(x["bill_plus_settlement"] + x["battery_wear_cost"])
        r = res[s]
        assert x["vehicle_charged_kwh"] == pytest.approx(r.charge_kw.sum() / 2)
        assert x["vehicle_discharged_kwh"] == pytest.approx(r.discharge_kw.sum() / 2)
        # the settlement is the battery energy taken on balance at the drivers' price
        assert x["driver_settlement"] == pytest.approx(40.0 * (x["vehicle_discharged_kwh"] / eta - x["vehicle_charged_kwh"] * eta))
        assert x["departures"] == 12                    # three cars leave at 18:00 on four working days
        assert x["net_saving_vs_none"] == pytest.approx(f["none"]["net_cost"] - x["net_cost"])
        assert x["settled_saving_vs_none"] == pytest.approx(f["none"]["bill_plus_settlement"] - x["bill_plus_settlement"])


def test_headline_compares_the_ems_and_the_bound_with_unmanaged_charging(study):
    _, summary, _ = study
    f = figures(summary)
    h = summary["headlines"]["office-v2b"]["config"]
    assert set(h["comparisons"]) == {"mpc_vs_none", "oracle_vs_none"}       # no building strategy in this study
    assert h["demand_charge"] == {"rate_per_kw_month": pytest.approx(1614.86), "ratchet_months": 11}
    assert h["contract_kw"] == {s: f[s]["contract_kw"]["2024-03"] for s in f}
    for s in ("mpc", "oracle"):
        c = h["comparisons"][f"{s}_vs_none"]
        assert c["net"] == pytest.approx(f["none"]["net_cost"] - f[s]["net_cost"])
        assert c["basic_charge"] == pytest.approx(f["none"]["bill"]["line_items"]["basic"] - f[s]["bill"]["line_items"]["basic"])
        # the basic charge is the contract kW's: 1,614.86 JPY per kW cut
        assert c["basic_charge"] == pytest.approx(1614.86 * (h["contract_kw"]["none"] - h["contract_kw"][s]), rel=1e-6)
    # the EMS cannot beat perfect foresight on what the site pays net
    assert h["comparisons"]["oracle_vs_none"]["net"] >= h["comparisons"]["mpc_vs_none"]["net"] - 1e-6
    assert h["departures"] == {s: {"departures": 12, "missed": 0} for s in f}


def test_cli_prints_the_plain_summary_above_a_table_with_the_settlement(tmp_path, office_days, capsys):
    out = tmp_path / "out"
    assert main(["study", "--config", OFFICE, "--data", office_days, "--strategy", "building,none,oracle",
                 "--out", str(out), "--workers", "1", "--no-report"]) == 0
    text = capsys.readouterr().out
    f = json.loads((out / "summary.json").read_text())["results"]["office-v2b"]["config"]
    head = text.index("bill+settl")
    summary_part, table_part = text[:head], text[head:]
    assert summary_part.index("Contract kW") < summary_part.index("Departures kept") < summary_part.index("The strategies:")
    flat = " ".join(summary_part.split())
    assert (f"the building alone {f['building']['contract_kw']['2024-03']:.1f} kW, unmanaged charging "
            f"{f['none']['contract_kw']['2024-03']:.1f} kW; perfect foresight (oracle) would reach "
            f"{f['oracle']['contract_kw']['2024-03']:.1f} kW") in flat
    assert "the site's bill" in flat and "Whose money" in flat and "x 91.3 (365.25 / 4.0 days)" in flat
    for s in ("building", "none", "oracle"):
        row = next(line for line in table_part.splitlines() if line.split()[2:3] == [s])
        cells = row.split()
        assert cells[3:6] == [f"{f[s]['bill']['total']:,.0f}", f"{f[s]['driver_settlement']:,.0f}",
                              f"{f[s]['bill_plus_settlement']:,.0f}"]
    assert "settlement: the drivers'" in table_part
    assert max(len(line) for line in text.splitlines()) <= 150


# ----- weather forecasts for mpc (ems.study.weather) and the noisy office year ----------------------

def test_noisy_weather_forecast_is_seeded_and_changes_only_what_mpc_is_told(office_days, tmp_path, monkeypatch):
    """--weather-forecast noisy: the same seed gives the same forecasts, another seed others; mpc's PV
    forecast differs from the no-weather one and, with the errors set to zero, is the actual PV (the
    shipped office PV was made from that weather); a forecast changes only when a new issue arrives;
    a recorded file (issued_at or lead_h flavour) gives what it recorded."""
    from ems.forecast import SiteForecaster
    from ems.study import weather as W
    from ems.study.run import mpc_history, site_span
    cfg = load_site(OFFICE)
    span = site_span(OFFICE, None, office_days)
    history = mpc_history(cfg, span)

    def make(seed):
        return W.weather_forecaster(cfg, history, span.index, span.end, "noisy", seed)
    a, b, c = make(5), make(5), make(6)
    plain = SiteForecaster(cfg, history)
    for now in (pd.Timestamp("2024-03-05T09:00+09:00"), pd.Timestamp("2024-03-06T13:30+09:00")):
        fa, fb, fc = a.forecast(now, 48), b.forecast(now, 48), c.forecast(now, 48)
        assert np.array_equal(fa.pv_kw.to_numpy(), fb.pv_kw.to_numpy())
        assert np.array_equal(fa.load_kw.to_numpy(), fb.load_kw.to_numpy())
        assert not np.allclose(fa.pv_kw.to_numpy(), fc.pv_kw.to_numpy(), atol=0.05)
        assert not np.allclose(fa.pv_kw.to_numpy(), plain.forecast(now, 48).pv_kw.to_numpy(), atol=0.05)
        assert fa.meta["pv_source"] == "weather" and fa.meta["pv_intervals_without_weather"] == 0
        assert fa.meta["temperature"]["used"]
        issue = now.tz_convert("UTC").floor(f"{W.ISSUE_EVERY_HOURS}h")
        assert a.archive.available(now) is a.archive.available(issue)           # nothing new between issues
        assert not a.archive.available(issue - pd.Timedelta(minutes=30)).equals(a.archive.available(issue))
    v = a.describe["verification"]
    assert v["0-6h"]["ghi_rmse_wm2"] < v["24-48h"]["ghi_rmse_wm2"] and 0.5 < v["24-48h"]["temp_air_rmse_k"] < 2.5

    monkeypatch.setattr(W, "SIGMA_K", (0.0, 0.0))
    monkeypatch.setattr(W, "SIGMA_T", (0.0, 0.0))
    perfect = make(5)
    now = pd.Timestamp("2024-03-05T09:00+09:00")
    fc = perfect.forecast(now, 24)
    actual = pd.Series(span.pv_kw, index=span.index.tz_convert("UTC")).reindex(fc.pv_kw.index)
    assert np.nanmax(np.abs(fc.pv_kw.to_numpy() - actual.to_numpy())) < 0.15            # 30 kWp; the data have 3 decimals
    assert np.nanmax(np.abs(plain.forecast(now, 24).pv_kw.to_numpy() - actual.to_numpy())) > 2.0

    # recorded forecasts: the noisy archive written and read back, with issued_at or with lead_h
    path = a.archive.to_csv(tmp_path / "forecast.csv", zone="Asia/Tokyo")
    rec = W.read_forecast_csv(path)
    raw = pd.read_csv(path)
    lead = raw.drop(columns="issued_at")
    lead.insert(0, "lead_h", (pd.to_datetime(raw["timestamp"], utc=True) - pd.to_datetime(raw["issued_at"], utc=True))
                / pd.Timedelta(hours=1))
    lead.sample(frac=1.0, random_state=0).to_csv(tmp_path / "lead.csv", index=False)   # any row order
    by_lead = W.read_forecast_csv(tmp_path / "lead.csv")
    for now in (pd.Timestamp("2024-03-05T09:00+09:00"), pd.Timestamp("2024-03-06T20:00+09:00")):
        want = a.archive.available(now)
        for got in (rec.available(now), by_lead.available(now)):
            assert got.index.equals(want.index)
            np.testing.assert_allclose(got[["ghi", "temp_air"]].to_numpy(), want[["ghi", "temp_air"]].to_numpy(), atol=1e-3)
    from_file = W.weather_forecaster(cfg, history, span.index, span.end, str(tmp_path / "lead.csv"), None)
    now = pd.Timestamp("2024-03-06T13:30+09:00")
    np.testing.assert_allclose(from_file.forecast(now, 48).pv_kw.to_numpy(), a.forecast(now, 48).pv_kw.to_numpy(), atol=0.01)
    bad = raw.drop(columns="temp_air_c")
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError) as err:
        W.read_forecast_csv(tmp_path / "bad.csv")
    assert "bad.csv" in str(err.value) and "temp_air_c" in str(err.value)
    pd.concat([raw, raw.iloc[:1]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(DataError) as err:
        W.read_forecast_csv(tmp_path / "dup.csv")
    assert "more than once" in str(err.value)


def test_study_with_a_weather_forecast_keeps_the_data_and_reports_peak_gap_and_refills(study, office_days, tmp_path, capsys):
    """ems study --weather-forecast noisy --seed N: the simulated site sees the same actual data and the
    oracle is unchanged, mpc's plans change; summary.json gives mpc's per-month peak gap to the oracle
    and the peaks it set refilling cars, and says which forecast mpc had."""
    _, plain_summary, plain = study
    assert set(figures(plain_summary)["mpc"]["peak_gap_kw"]) == {"2024-03"}
    out = tmp_path / "out"
    assert main(["study", "--config", OFFICE, "--data", office_days, "--strategy", "mpc,oracle", "--out", str(out),
                 "--workers", "1", "--no-report", "--weather-forecast", "noisy", "--seed", "5"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["study"]["weather_forecast"] == "noisy" and summary["study"]["weather_seed"] == 5
    assert summary["study"]["stochastic"] is False and summary["study"]["seed"] is None   # stays not drawn
    f = figures(summary)
    m, o = f["mpc"], f["oracle"]
    assert m["weather_forecast"]["kind"] == "noisy" and m["weather_forecast"]["seed"] == 5
    assert set(m["peak_gap_kw"]) == set(m["monthly_peaks_kw"]) == set(m["peaks_set_by_refill"]) == {"2024-03"}
    assert m["peak_gap_kw"]["2024-03"] == pytest.approx(m["monthly_peaks_kw"]["2024-03"] - o["monthly_peaks_kw"]["2024-03"])
    assert isinstance(m["peaks_set_by_refill"]["2024-03"], int) and "peak_gap_kw" not in o
    assert o["bill"]["total"] == figures(plain_summary)["oracle"]["bill"]["total"]
    series = pd.read_csv(out / "series" / "office-v2b--config--mpc.csv")
    np.testing.assert_array_equal(series["load_kw"].to_numpy(), plain["mpc"].load_kw)
    np.testing.assert_array_equal(series["pv_kw"].to_numpy(), plain["mpc"].pv_kw)
    assert not np.array_equal(series["import_kw"].to_numpy(), plain["mpc"].import_kw)
    assert m["departure_targets_missed"] == 0 and m["plans"] == 4 * 48
    capsys.readouterr()
    assert main(["study", "--config", OFFICE, "--data", office_days, "--weather-forecast", "noisy",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--seed" in capsys.readouterr().err
    assert main(["study", "--config", OFFICE, "--data", office_days, "--weather-forecast", str(tmp_path / "nope.csv"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "nope.csv" in capsys.readouterr().err


def test_noisy_office_year_is_seeded_cools_only_when_hot_and_occupied_and_has_surprises():
    import sys
    sys.path.insert(0, str(ROOT / "configs" / "data"))
    import make_noisy_office as N
    a, b, c = N.noisy_office_year(1), N.noisy_office_year(1), N.noisy_office_year(2)
    assert a.frame.equals(b.frame) and a.surprises == b.surprises
    assert not np.allclose(a.frame["load_kw"], c.frame["load_kw"]) and a.surprises != c.surprises
    f = a.frame
    shipped = pd.read_csv(ROOT / "configs/data/office-2024-30min.csv")
    assert len(f) == len(shipped) == 366 * 48
    np.testing.assert_array_equal(f["pv_kw"].to_numpy(), shipped["pv_kw"].to_numpy())
    np.testing.assert_allclose(f["load_kw"], f["base_kw"] * f["occupancy"] + f["cooling_kw"] + f["surprise_kw"])
    # cooling only while occupied (working days 08-18) and above 24 degC, 1 kW per K there
    cooling = f["cooling_kw"] > 0
    assert cooling.sum() > 1000
    assert f["occupied"][cooling].all() and (f["temp_air_c"][cooling] > 24).all()
    hot = f["occupied"] & (f["temp_air_c"] > 24)
    np.testing.assert_allclose(f["cooling_kw"][hot], (f["temp_air_c"][hot] - 24) * 3.0 / 3.0)
    assert not cooling[f.index.day_of_week >= 5].any() and not cooling[(f.index.hour < 8) | (f.index.hour >= 18)].any()
    assert not cooling[f.index.normalize() == pd.Timestamp("2024-07-15", tz="Asia/Tokyo")].any()   # Marine Day
    occ = f["occupancy"]
    assert 0.05 < occ.std() < 0.2 and abs(occ.mean() - 1) < 0.01
    # two surprise afternoons a month June-September: 8-12 kW for 2-4 h from 12:00-15:00 on working days
    s = a.surprises
    assert len(s) == 8 and sorted({x.start.month for x in s}) == [6, 7, 8, 9]
    for x in s:
        assert 8 <= x.kw <= 12 and 2 <= x.hours <= 4 and 12 <= x.start.hour + x.start.minute / 60 <= 15
        assert x.start.day_of_week < 5
        at = (f.index >= x.start) & (f.index < x.start + pd.Timedelta(hours=x.hours))
        assert np.allclose(f["surprise_kw"][at], x.kw) and at.sum() == x.hours * 2
    assert f["surprise_kw"].sum() == pytest.approx(sum(x.kw * x.hours * 2 for x in s))
