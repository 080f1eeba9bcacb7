"""`ems demo`: the example configs are checked, the example household year is billed, and the real
daemon runs a simulated day of a site against the in-process simulator."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from ems.cli import main
from ems.commands.demo import demo_bill, fill_from_other_days, household_meter
from ems.errors import DataError


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


def test_ems_demo_prints_the_checks_the_bill_and_the_daemon_day(capsys):
    assert main(["demo", "--site", "office", "--speed", "4800"]) == 0
    out = capsys.readouterr().out
    assert out.count(": OK") >= 3
    assert "used as Asia/Tokyo clock time" in out and "TOTAL over 11 month(s)" in out
    daemon = out[out.index("The daemon (ems run)"):]
    assert "Office V2B (Nagoya): 2024-07-08T08:00+09:00 to 2024-07-08T18:30+09:00, simulated at 4800x" in daemon
    assert "dispatch ticks every 240 simulated s over Modbus TCP" in daemon
    peaks = re.search(r"peak \(highest 30-min average import\): ([\d.]+) kW with the EMS, ([\d.]+) kW without", daemon)
    assert peaks and float(peaks.group(1)) < float(peaks.group(2))      # the cars shaved the office's peak
    for v, target in (("leaf", 36.1), ("bz4x", 34.0), ("leaf40", 40.8)):
        left = float(re.search(rf"{v}: left with ([\d.]+) %", daemon).group(1))
        assert left >= target - 1.0                                        # drivers leave with what they need
    assert "contract kW before the run" in daemon and "estimated saving" in daemon and "JPY/month of basic charge" in daemon
