"""The one home for time: demand windows, billing months and step grids (ems.timegrid)."""

from __future__ import annotations

import pandas as pd

from ems import timegrid
from ems.billing import month_add as billing_month_add
from ems.daemon.metering import window_start as metering_window_start
from ems.dispatch import WINDOW_H as DISPATCH_WINDOW_H

TOKYO = "Asia/Tokyo"


def test_the_window_is_thirty_minutes_and_its_old_names_are_the_same_objects():
    assert timegrid.WINDOW == pd.Timedelta(minutes=30) and timegrid.WINDOW_H == 0.5 == DISPATCH_WINDOW_H
    assert billing_month_add is timegrid.month_add and metering_window_start is timegrid.window_start


def test_scalar_and_index_window_starts_agree_on_the_local_clock():
    idx = pd.date_range("2024-03-31 14:50", periods=8, freq="5min", tz="UTC")
    starts = timegrid.window_starts(idx, TOKYO)
    assert list(starts.tz_convert("UTC")) == [timegrid.window_start(t, TOKYO) for t in idx]
    assert timegrid.hours_into_window(pd.Timestamp("2024-03-31 00:50", tz=TOKYO), TOKYO) == 20 / 60


def test_billing_months_are_local_and_month_arithmetic_wraps_years():
    t = pd.Timestamp("2024-03-31 15:30", tz="UTC")   # 00:30 on 1 April in Tokyo
    assert timegrid.month_of(t, TOKYO) == "2024-04"
    assert list(timegrid.months(pd.DatetimeIndex([t]), TOKYO)) == ["2024-04"]
    assert timegrid.month_add("2024-01", -1) == "2023-12" and timegrid.month_add("2024-12", 13) == "2026-01"
    assert timegrid.month_start("2024-04", TOKYO) == pd.Timestamp("2024-04-01", tz=TOKYO)


def test_step_grid():
    step = pd.Timedelta(minutes=15)
    n = timegrid.step_count(2.0, step)
    assert n == 8 and timegrid.is_whole(n) and not timegrid.is_whole(timegrid.step_count(0.1, step))
    assert len(timegrid.step_grid(pd.Timestamp("2024-06-01", tz=TOKYO), n, step)) == 8


def test_whole_months_leave_out_a_month_cut_at_either_end():
    from ems.timegrid import whole_months
    zone = "Asia/Tokyo"
    # a UTC file from 15 Jan to 1 Apr 00:00 local: February and March whole, January cut
    idx = pd.date_range(pd.Timestamp("2024-01-15", tz=zone), pd.Timestamp("2024-04-01", tz=zone), freq="30min",
                        inclusive="left")
    keep = whole_months(idx, zone)
    kept = idx[keep].tz_convert(zone)
    assert kept[0] == pd.Timestamp("2024-02-01", tz=zone) and kept[-1] == pd.Timestamp("2024-03-31 23:30", tz=zone)
    # the same span one half hour short at the end: March is cut too
    short = whole_months(idx[:-1], zone)
    assert idx[:-1][short].tz_convert(zone)[-1] == pd.Timestamp("2024-02-29 23:30", tz=zone)
    # a UTC index is judged by the local clock: 2024-01-31T15:00Z is local midnight of 1 February
    utc = idx.tz_convert("UTC")
    assert (whole_months(utc, zone) == keep).all()
