"""`ems demo`: the example configs are checked, the example household year is billed, and the real
daemon runs a simulated day of a site against the in-process simulator: the office on its month's
peak day, leading with the contract kW and the money by whose it is; V2H's worth at the home tariff."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ems.cli import main
from ems.commands.demo import (DAYS, building_frame, demo_bill, fill_from_other_days, household_meter, pick_office_day,
                               the_day)
from ems.config import load_site
from ems.daemon.metering import WindowRecord
from ems.daemon.outcome import V2hValue, headline_lines, outcome, v2h_value
from ems.errors import DataError

ROOT = Path(__file__).resolve().parents[2]


def half_days(values: list[float]) -> pd.Series:
    """A series with two steps a day (12 h), so 'the same time on the previous day' is 2 steps back."""
    return pd.Series(values, index=pd.date_range("2024-06-01", periods=len(values), freq="12h", tz="Asia/Tokyo"),
                     name="test")


def test_gaps_take_the_same_time_on_the_nearest_earlier_day_with_a_value():
    filled, back, forward = fill_from_other_days(half_days([1, 2, np.nan, 4, np.nan, np.nan, 7, 8]))
    assert filled.tolist() == [1, 2, 1, 4, 1, 4, 7, 8] and (back, forward) == (3, 0)


def test_gaps_before_any_earlier_value_take_the_next_day():
    filled, back, forward = fill_from_other_days(half_days([np.nan, 2, 3, np.nan, 5, 6]))
    assert filled.tolist() == [3, 2, 3, 2, 5, 6] and (back, forward) == (1, 1)
    with pytest.raises(DataError, match="no value at this clock time within 1 days either side"):
        fill_from_other_days(half_days([np.nan, 2, np.nan, 4, np.nan, 6]), max_days=1)


def test_household_year_as_a_tokyo_meter():
    meter, notes = household_meter()
    assert meter.index[0] == pd.Timestamp("2024-03-01 00:00", tz="Asia/Tokyo")
    assert meter.index[-1] == pd.Timestamp("2025-01-31 23:30", tz="Asia/Tokyo")
    assert len(meter) == (366 - 31 - 29 + 31) * 48                 # March 2024 .. January 2025
    assert not meter.isna().any().any() and (meter >= 0).all().all()
    assert ((meter["import_kw"] == 0) | (meter["export_kw"] == 0)).all()   # never both in one half hour
    text = "\n".join(notes)
    assert "2024-02-28T21:00Z -> 2024-02-28T21:00:00+09:00" in text
    assert "Load gaps: 336 of 17524 half hours empty" in text and "nearest earlier day" in text


def test_demo_bill_under_the_home_tariff():
    bill, tariff, notes = demo_bill()
    assert tariff.name.startswith("Residential time-of-use")
    assert [m.month for m in bill.months][0::5] == ["2024-03", "2024-08", "2025-01"] and len(bill.months) == 11
    for m in bill.months:
        assert m.basic == pytest.approx(311.75 / 10 * 60)           # 311.75 JPY per 10 A, 60 A contract
        assert sum(m.import_kwh_by_period.values()) == pytest.approx(m.import_kwh)
        assert m.export_credit == pytest.approx(16.0 * m.export_kwh)
        assert not m.partial
    assert bill.total == pytest.approx(sum(m.total for m in bill.months))


OFFICE = ROOT / "configs/office-v2b.yaml"


def number(text: str) -> float:
    return float(text.replace(",", ""))


def test_the_office_day_is_a_month_peak_of_the_building_inside_the_plug_in_hours():
    """Computed from the raw data, not from the demo's helpers: the demo's office day is the day of its
    month's highest half hour of the building alone (import = max(load - PV, 0)), that half hour lies
    inside every car's plug-in hours, and the half hours before the cars arrive that day are well below it."""
    cfg = load_site(OFFICE)
    _, start, until, _ = DAYS["office"]
    start, until = pd.Timestamp(start), pd.Timestamp(until)
    raw = pd.read_csv(ROOT / "configs/data/office-2024-30min.csv")
    raw.index = pd.to_datetime(raw["timestamp"], utc=True).dt.tz_convert("Asia/Tokyo")
    building = (raw["load_kw"] - raw["pv_kw"]).clip(lower=0)
    month = building[building.index.strftime("%Y-%m") == start.strftime("%Y-%m")]
    at = month.idxmax()
    assert at.normalize() == start.tz_convert("Asia/Tokyo").normalize() and start <= at < until
    for v in cfg.vehicles:
        w = v.windows[0]
        assert w.arrive <= f"{at:%H:%M}" < w.depart and at.strftime("%a").lower() in w.days
    before = building[(building.index >= at.normalize()) & (building.index < at.normalize() + pd.Timedelta(hours=8, minutes=30))]
    assert month.max() - before.max() > 5.0          # room for the cars: they can cut the month's peak
    # the same day by the demo's own rule, which also keeps only summer months
    frame = building_frame(cfg)
    d = pick_office_day(frame)
    assert d.day == at.normalize() and d.peak_at == at and d.in_window and d.peak_kw == pytest.approx(month.max())
    assert d.day.month in (7, 8, 9)


def test_outcome_by_hand_contract_money_and_owners():
    """Two half hours of telemetry: the building draws 30 then 20 kW; the leaf (driver-owned) gives
    6 kW in the first and takes 4 kW in the second. The building alone peaks at 30 kW, the EMS at
    24 kW; the driver is paid for the battery energy taken on balance; the wear is the battery side."""
    cfg = load_site(OFFICE)
    t0 = pd.Timestamp("2024-07-03T09:00+09:00").tz_convert("UTC")
    ticks = pd.date_range(t0, periods=30, freq="120s")
    rows = []
    for ts in ticks:
        first = ts < t0 + pd.Timedelta(minutes=30)
        building, dis, ch = (30.0, 6.0, 0.0) if first else (20.0, 0.0, 4.0)
        for c in ("v2b1", "v2b2", "v2b3"):
            mine = c == "v2b1"
            rows.append({"ts": ts, "device": c, "plugged": mine, "charge_kw": ch if mine else 0.0,
                         "discharge_kw": dis if mine else 0.0, "site_import_kw": building - dis + ch})
    windows = [WindowRecord(t0, 24.0 * 0.5, 0.5), WindowRecord(t0 + pd.Timedelta(minutes=30), 24.0 * 0.5, 0.5)]
    o = outcome(cfg, pd.DataFrame(rows), windows, 120.0, {})
    leaf = cfg.vehicles[0]
    charger = cfg.chargers[0]
    eta_c, eta_d = charger.charge_efficiency_pct / 100, charger.discharge_efficiency_pct / 100
    price = float(cfg.tariff.import_price(pd.DatetimeIndex([t0]).tz_convert(cfg.tariff.zone))[0])
    assert (o.peak_kw, o.building_peak_kw, o.contract_kw, o.building_contract_kw) == pytest.approx((24.0, 30.0, 24.0, 30.0))
    taken = 6.0 * 0.5 / eta_d - 4.0 * 0.5 * eta_c
    assert o.settlement_kwh == pytest.approx(taken) and o.settlement == pytest.approx(leaf.energy_price_per_kwh * taken)
    assert o.wear_kwh == pytest.approx(3.0 / eta_d) and o.wear_cost == pytest.approx(leaf.wear_cost_per_kwh * 3.0 / eta_d)
    assert o.car_energy_adjustment == 0.0             # the drivers' energy is settled, not bought back
    rate = cfg.tariff.basic.rate_per_kw_month
    assert o.demand_saving_vs_building_per_month == pytest.approx(6.0 * rate)
    assert o.building_energy_cost == pytest.approx(25.0 * price) and o.energy_cost == pytest.approx(24.0 * price)
    assert o.net_vs_building_per_month == pytest.approx(6.0 * rate + price - o.settlement)
    lines = headline_lines(o, "JPY", "this day")
    assert lines[0].startswith("  contract kW: 24.00 with the EMS, 30.00 without (the building alone")
    assert f"{o.net_vs_building_per_month:,.0f} JPY against the building alone" in lines[1]
    assert f"basic charge (the site's bill, for the month): 6.00 kW lower x {rate:,.2f} JPY/kW-month" in lines[2]
    assert "energy (the site's bill, this day)" in lines[3]
    assert f"drivers' settlement (the drivers' money, this day): the site paid the drivers {o.settlement:,.0f} JPY" in lines[4]


def test_v2h_at_the_home_tariff_does_not_pay_and_says_why():
    """The home's Leaf over an evening and night: the dearest hour's import price against the night's
    bought back through both 95 % efficiencies, plus the wear per battery kWh."""
    cfg = load_site(ROOT / "configs/home-v2h.yaml")
    night = pd.date_range("2024-07-08T17:00+09:00", "2024-07-09T07:30+09:00", freq="30min")
    prices = pd.Series(cfg.tariff.import_price(night), index=night)
    v = v2h_value(cfg, prices)
    day_price = cfg.tariff.import_price(pd.DatetimeIndex([pd.Timestamp("2024-07-08T20:00+09:00")]))[0]
    night_price = cfg.tariff.import_price(pd.DatetimeIndex([pd.Timestamp("2024-07-09T03:00+09:00")]))[0]
    assert (v.sell, v.buy) == pytest.approx((day_price, night_price)) and day_price > night_price
    margin = day_price - night_price / (0.95 * 0.95) - cfg.vehicles[0].wear_cost_per_kwh / 0.95
    assert v.margin == pytest.approx(margin) and margin < 0
    text = v.sentence("JPY")
    assert text.startswith("V2H is not worth it at this tariff") and f"{-margin:.2f} JPY lost per kWh" in text
    # a spread wide enough pays
    assert V2hValue(60.0, 20.0, 0.95, 0.95, 8.7).sentence("JPY").startswith("V2H pays at this tariff")
    assert v2h_value(load_site(OFFICE), prices) is None   # a demand-charge site earns on the peak instead


def test_ems_demo_prints_the_checks_the_bill_and_the_daemon_day(capsys):
    assert main(["demo", "--site", "office", "--speed", "4800"]) == 0
    out = capsys.readouterr().out
    assert out.count(": OK") >= 3
    assert "used as Asia/Tokyo clock time" in out and "TOTAL over 11 month(s)" in out
    daemon = out[out.index("The daemon (ems run)"):]
    _, start, until, _ = DAYS["office"]
    lines = daemon.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith(f"Office V2B (Nagoya): {start} to {until}, simulated at 4800x"))
    # the output leads with the contract kW, with the EMS and without it
    contract = re.fullmatch(r"  contract kW: ([\d.]+) with the EMS, ([\d.]+) without \(the building alone, no car plugged in\); "
                            r"([\d.]+) if the same cars charged unmanaged on arrival", lines[head + 1])
    assert contract, lines[head + 1]
    ems, building, unmanaged = (float(x) for x in contract.groups())
    assert ems < building <= unmanaged   # the cars cut the building's own peak; unmanaged charging of the EMS's
    # net energy into the cars adds to it (nothing when the EMS took energy out of them on balance)
    frame = building_frame(load_site(OFFICE))
    assert building == pytest.approx(the_day(frame, pd.Timestamp(start)).peak_kw, abs=0.01)   # the data's peak
    # then the money for the month, each part named by whose it is, adding up
    money = re.fullmatch(r"  JPY per month for the site, net of the drivers' settlement: ([-\d,]+) JPY against the building alone, made of",
                         lines[head + 2])
    basic = re.fullmatch(r"    basic charge \(the site's bill, for the month\): ([\d.]+) kW lower x ([\d,.]+) JPY/kW-month "
                         r"= ([\d,]+) JPY saved",
                         lines[head + 3])
    energy = re.fullmatch(r"    energy \(the site's bill, this day\): [\d,]+ JPY with the EMS, [\d,]+ for the building alone: "
                          r"([\d,]+) JPY (saved|more.*)",
                          lines[head + 4])
    settle = re.fullmatch(r"    drivers' settlement \(the drivers' money, this day\): "
                          r"(the site paid the drivers|the drivers paid the site) "
                          r"([\d,]+) JPY for ([\d.]+) kWh .* on balance, at 40 JPY/kWh", lines[head + 5])
    assert money and basic and energy and settle, lines[head + 2:head + 6]
    assert number(basic.group(2)) == load_site(OFFICE).tariff.basic.rate_per_kw_month
    assert float(basic.group(1)) == pytest.approx(building - ems, abs=0.011)
    assert number(basic.group(3)) == pytest.approx((building - ems) * number(basic.group(2)), abs=0.01 * number(basic.group(2)) + 1)
    assert number(settle.group(2)) == pytest.approx(40 * float(settle.group(3)), abs=2.5)
    e = number(energy.group(1)) * (1 if energy.group(2) == "saved" else -1)
    st = number(settle.group(2)) * (-1 if settle.group(1) == "the site paid the drivers" else 1)
    assert number(money.group(1)) == pytest.approx(number(basic.group(3)) + e + st, abs=2)
    assert "July's peak day for the building alone" in daemon and "while the cars are plugged in" in daemon
    assert "dispatch ticks every 240 simulated s over Modbus TCP" in daemon
    for v, target in (("leaf", 36.1), ("bz4x", 34.0), ("leaf40", 40.8)):
        left = float(re.search(rf"{v}: left with ([\d.]+) %", daemon).group(1))
        assert left >= target - 1.0                                        # drivers leave with what they need
    assert "contract kW before the run" in daemon and "battery wear:" in daemon
