"""Backtest references and scores, and the ``ems forecast`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ems.cli import main
from ems.forecast import SiteForecaster
from ems.forecast.backtest import _references, backtest


def test_persistence_is_the_last_fully_past_day_and_climatology_the_slot_mean():
    per_day = 4  # 6-hour steps, to count by hand
    values = np.arange(40, dtype=float)  # 10 days
    slots = np.tile(np.arange(per_day), 10)
    pos, n = 32, 8  # origin at day 8, 48 h ahead
    pers, clim = _references(values, pos, n, per_day, slots)
    # leads 1-4 steps (<= 24 h) take t - 1 day (4 steps); leads 5-8 take t - 2 days
    assert pers.tolist() == [28, 29, 30, 31, 28, 29, 30, 31]
    # slot 0 over the 28 days before (here all 8 days): 0, 4, ..., 28 -> mean 14
    assert clim[0] == pytest.approx(np.mean(np.arange(0, 32, 4)))
    assert clim.tolist() == [14, 15, 16, 17, 14, 15, 16, 17]


def test_backtest_scores_on_the_office_year(office_cfg, office_history):
    sf = SiteForecaster(office_cfg, office_history)
    result = backtest(sf, horizon_hours=48, stride_hours=72, warmup_days=28)
    load, pv = result["load"], result["pv"]
    assert result["timing"]["origins"] > 100 and result["timing"]["seconds_per_forecast"] < 0.2
    # BDEW profiles repeat per day type: a day-type model all but reproduces them, persistence does not
    assert load["overall"]["skill_vs_persistence"] > 0.8
    assert pv["overall"]["skill_vs_persistence"] > 0.0
    assert pv["normaliser_kw"] == pytest.approx(30 * 0.97)
    assert len(load["mae_by_lead_hour"]) == 48 and set(load["by_lead_bin"]) == {"0-1h", "1-3h", "3-6h", "6-12h", "12-24h", "24-48h"}
    o = load["overall"]
    assert o["forecast"]["rmse_kw"] >= o["forecast"]["mae_kw"]
    assert o["skill_vs_climatology"] == pytest.approx(1 - o["forecast"]["mae_kw"] / o["climatology"]["mae_kw"])


def test_cli_backtest_json_and_show_table(configs_dir, capsys):
    shelter = str(configs_dir / "shelter.yaml")
    history = str(configs_dir / "data" / "shelter-2024-30min.csv")
    assert main(["forecast", "backtest", "--config", shelter, "--history", history, "--stride-hours", "96", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["load"]["overall"]["skill_vs_persistence"] > 0.5 and "pv" in doc
    assert main(["forecast", "--config", shelter, "--hours", "6", "--start", "2024-07-01T00:00+09:00"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("2024-07-01 Mon 00:00") and len(out) == 2 + 12
    assert out[-1].split()[-1] == "1.40"  # the shelter's 1.4 kW of critical circuits


def test_cli_rejects_origin_without_offset(configs_dir, capsys):
    code = main(["forecast", "--config", str(configs_dir / "office-v2b.yaml"), "--start", "2024-07-01T00:00"])
    assert code == 2
    assert "--start: start = '2024-07-01T00:00': needs a UTC offset" in capsys.readouterr().err
