"""Fixed-window metering (property tests): energy is never lost or counted twice across window
boundaries, windows are contiguous :00/:30 windows, and a window's share follows time."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ems.daemon import WindowAccount

T0 = pd.Timestamp("2024-07-31T23:10+09:00")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(1, 900), st.floats(0, 30)), min_size=1, max_size=40))
def test_counter_energy_is_conserved_across_windows(ticks):
    acc = WindowAccount("Asia/Tokyo")
    t, counter = T0, 1000.0
    acc.update(t, 0.0, counter)
    closed = []
    for gap_s, kw in ticks:   # the meter delivered exactly kw over the gap
        t += pd.Timedelta(seconds=gap_s)
        counter += kw * gap_s / 3600
        closed += acc.update(t, kw, counter)
    total = sum(w.import_kwh for w in closed) + acc.current.import_kwh
    assert total == pytest.approx(counter - 1000.0, abs=1e-9)
    starts = [w.start for w in closed] + [acc.current.start]
    assert all(b - a == pd.Timedelta(minutes=30) for a, b in zip(starts, starts[1:]))
    assert all(s.tz_convert("Asia/Tokyo").minute in (0, 30) for s in starts)
    assert all(w.observed_h == pytest.approx(0.5) for w in closed[1:])


def test_a_gap_spanning_windows_is_shared_by_time():
    acc = WindowAccount("Asia/Tokyo")
    acc.update(pd.Timestamp("2024-07-08T10:00+09:00"), 0.0, 0.0)
    closed = acc.update(pd.Timestamp("2024-07-08T11:15+09:00"), 4.0, 5.0)   # 5 kWh over 75 minutes
    assert [round(w.import_kwh, 9) for w in closed] == [2.0, 2.0] and acc.current.import_kwh == pytest.approx(1.0)
    assert closed[1].start.month == 7 and closed[0].average_kw == pytest.approx(4.0)
