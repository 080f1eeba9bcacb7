"""Vehicle plug-in windows -> stays -> per-step timelines."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import holidays
import numpy as np
import pandas as pd
import pytest

from ems.config import Vehicle
from ems.vehicles import stays, timeline

TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")
JP = holidays.country_holidays("JP", years=range(2024, 2026))


def jp_holiday(day: dt.date) -> bool:
    return day in JP


def ts(text: str, zone: dt.tzinfo = TOKYO) -> pd.Timestamp:
    return pd.Timestamp(text, tz=zone)


def leaf(**window: object) -> Vehicle:
    """The home example's Leaf e+: 62 kWh, weekday nights, Friday evening to Monday morning."""
    windows = [dict(days=["mon", "tue", "wed", "thu"], arrive="18:30", depart="07:30", departure_soc_pct=80, trip_km=30),
               dict(days=["fri"], arrive="18:30", depart="mon 07:30", departure_soc_pct=80, trip_km=30)]
    if window:
        windows = [window]
    return Vehicle(id="leaf", capacity_kwh=62, max_soc_pct=90, windows=windows)


def test_weekly_windows_become_stays_including_friday_to_monday():
    got = stays(leaf(), ts("2024-06-03 00:00"), ts("2024-06-10 12:00"), TOKYO)
    assert [(s.arrive, s.depart) for s in got] == [
        (ts("2024-05-31 18:30"), ts("2024-06-03 07:30")),   # the weekend stay already under way
        (ts("2024-06-03 18:30"), ts("2024-06-04 07:30")),
        (ts("2024-06-04 18:30"), ts("2024-06-05 07:30")),
        (ts("2024-06-05 18:30"), ts("2024-06-06 07:30")),
        (ts("2024-06-06 18:30"), ts("2024-06-07 07:30")),
        (ts("2024-06-07 18:30"), ts("2024-06-10 07:30")),   # Friday evening to Monday morning
    ]
    assert [s.target_kwh for s in got] == pytest.approx([0.8 * 62] * 6)   # 49.6 kWh
    assert [s.trip_kwh for s in got] == pytest.approx([30 / 6] * 6)       # 30 km at 6 km/kWh
    assert all(s.arrival_kwh is None for s in got)


def test_workplace_windows_skip_public_holidays_when_told():
    office = dict(days=["mon", "tue", "wed", "thu", "fri"], arrive="08:30", depart="18:00",
                  departure_range_km=60, arrival_soc_pct=70, on_holidays=False)
    week = (ts("2024-07-15 00:00"), ts("2024-07-20 00:00"))      # Monday 07-15 is Marine Day
    got = stays(leaf(**office), *week, TOKYO, jp_holiday)
    assert [s.arrive.day for s in got] == [16, 17, 18, 19]
    assert got[0].target_kwh == pytest.approx(0.2 * 62 + 60 / 6)   # min SOC + 60 km: 22.4 kWh
    assert got[0].arrival_kwh == pytest.approx(0.7 * 62)
    every_day = stays(leaf(**{**office, "on_holidays": True}), *week, TOKYO, jp_holiday)
    assert [s.arrive.day for s in every_day] == [15, 16, 17, 18, 19]


def test_timeline_on_a_30_minute_grid():
    idx = pd.date_range("2024-06-03 06:00", "2024-06-04 09:00", freq="30min", tz=TOKYO, inclusive="left")
    tl = timeline(leaf(), idx, TOKYO)
    t = {stamp: i for i, stamp in enumerate(idx)}
    plugged = set(idx[tl.plugged])
    assert ts("2024-06-03 07:00") in plugged and ts("2024-06-03 07:30") not in plugged
    assert ts("2024-06-03 18:00") not in plugged and ts("2024-06-03 18:30") in plugged
    assert ts("2024-06-04 07:00") in plugged and ts("2024-06-04 07:30") not in plugged
    assert int(tl.plugged.sum()) == 3 + 26                   # 06:00-07:30 and 18:30-07:30
    assert len(tl.target_kwh) == len(idx) + 1
    targets = {k: v for k, v in enumerate(tl.target_kwh) if not np.isnan(v)}
    assert targets == {t[ts("2024-06-03 07:30")]: pytest.approx(49.6), t[ts("2024-06-04 07:30")]: pytest.approx(49.6)}
    assert np.flatnonzero(tl.arrival_trip_kwh).tolist() == [t[ts("2024-06-03 18:30")]]
    assert tl.arrival_trip_kwh[t[ts("2024-06-03 18:30")]] == pytest.approx(5.0)
    assert np.isnan(tl.arrival_set_kwh).all()


@pytest.mark.parametrize("freq, first, last, target_at", [
    ("15min", "2024-06-03 18:45", "2024-06-04 07:30", "2024-06-04 07:45"),
    ("30min", "2024-06-03 19:00", "2024-06-04 07:00", "2024-06-04 07:30"),
])
def test_times_off_the_grid_round_inward(freq, first, last, target_at):
    # arrives 18:40, leaves 07:50: plugged only for whole steps; the target is due at the last
    # step boundary before the departure
    car = leaf(days=["mon"], arrive="18:40", depart="07:50", departure_soc_pct=50, arrival_soc_pct=30)
    idx = pd.date_range("2024-06-03 12:00", "2024-06-04 12:00", freq=freq, tz=TOKYO, inclusive="left")
    tl = timeline(car, idx, TOKYO)
    on = idx[tl.plugged]
    assert (on[0], on[-1]) == (ts(first), ts(last))
    assert len(on) == (ts(last) - ts(first)) / pd.Timedelta(freq) + 1
    assert idx[np.flatnonzero(~np.isnan(tl.target_kwh[:-1]))].tolist() == [ts(target_at)]
    assert tl.arrival_set_kwh[idx.get_loc(ts(first))] == pytest.approx(0.3 * 62)


def test_horizon_edges():
    idx = pd.date_range("2024-06-03 20:00", "2024-06-04 07:30", freq="30min", tz=TOKYO, inclusive="left")
    tl = timeline(leaf(), idx, TOKYO)
    assert tl.plugged.all()                                    # arrived before the start, leaves at the end
    assert tl.target_kwh[-1] == pytest.approx(49.6)            # departure exactly at the horizon end
    assert np.isnan(tl.target_kwh[:-1]).all() and not tl.arrival_trip_kwh.any()
    shorter = timeline(leaf(), idx[:-1], TOKYO)
    assert np.isnan(shorter.target_kwh).all()                  # departure after the horizon: no target in it


def test_overlapping_stays_merge():
    car = Vehicle(id="v", capacity_kwh=40, windows=[
        dict(days=["mon"], arrive="08:00", depart="20:00", departure_soc_pct=50),
        dict(days=["mon"], arrive="18:00", depart="07:00", departure_soc_pct=70)])
    (merged,) = stays(car, ts("2024-06-03 00:00"), ts("2024-06-05 00:00"), TOKYO)
    assert (merged.arrive, merged.depart, merged.target_kwh) == (ts("2024-06-03 08:00"), ts("2024-06-04 07:00"), 28.0)


def test_departure_keeps_its_wall_clock_time_across_daylight_saving():
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    car = leaf(days=["sat"], arrive="18:00", depart="07:30", departure_soc_pct=80)
    (stay,) = stays(car, ts("2024-03-30 00:00", berlin), ts("2024-04-01 00:00", berlin), berlin)
    assert stay.depart == ts("2024-03-31 07:30", berlin)     # the clocks went forward at 02:00
    assert stay.depart - stay.arrive == pd.Timedelta(hours=12, minutes=30)


def test_timeline_needs_an_aware_index():
    with pytest.raises(ValueError, match="time-zone aware"):
        timeline(leaf(), pd.date_range("2024-06-03", periods=4, freq="30min"), TOKYO)
    with pytest.raises(ValueError, match="needs the step"):
        timeline(leaf(), pd.DatetimeIndex([ts("2024-06-03 00:00")]), TOKYO)
