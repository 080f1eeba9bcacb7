"""Bad-data rules: each one on a small frame with a hand-known answer, and on the household year."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ems.errors import DataError
from ems.forecast import SiteForecaster, clean_history, read_history_csv
from ems.forecast.clean import stuck_mask


def frame(load, pv=None, start="2024-07-01T00:00Z", freq="30min"):
    index = pd.date_range(start, periods=len(load), freq=freq)
    cols = {"load_kw": np.asarray(load, dtype=float)}
    if pv is not None:
        cols["pv_kw"] = np.asarray(pv, dtype=float)
    return pd.DataFrame(cols, index=index)


def test_gaps_stay_missing_and_the_forecast_has_no_nan(house_cfg, household):
    """Missing rows are put back on the grid as NaN; the forecast right after a 3-day outage is complete."""
    outage = (household.index >= pd.Timestamp("2024-07-07T00:00Z")) & (household.index < pd.Timestamp("2024-07-10T00:00Z"))
    h = household[~outage]
    sf = SiteForecaster(house_cfg, h)
    assert sf.history.report["load_kw"]["missing"] == 336 + 3 * 48
    fc = sf.forecast(pd.Timestamp("2024-07-10T00:00+02:00"), 48)
    assert len(fc.load_kw) == 96 and not fc.load_kw.isna().any() and not fc.pv_kw.isna().any()
    assert fc.meta["level_offset_kw"] == 0.0  # no measurement in the last 2 h: no level adjustment


def test_spike_over_four_times_the_trailing_p99_is_dropped():
    rng = np.random.default_rng(1)
    load = 1.0 + 0.5 * rng.random(30 * 48)  # 1.0-1.5 kW for 30 days: trailing p99 ~1.5 kW
    load[-10] = 7.0  # > 4 x 1.5
    load[-5] = 5.0  # < 4 x 1.5: a big but possible half hour
    h = clean_history(frame(load))
    assert np.isnan(h.load_kw[-10]) and h.load_kw[-5] == 5.0
    assert h.report["load_kw"]["spike"] == 1


def test_physical_limit_spike():
    h = clean_history(frame([1.0, 30.0, 1.2, 1.1]), max_load_kw=20.0)
    assert np.isnan(h.load_kw[1]) and h.report["load_kw"]["spike"] == 1


def test_stuck_sensor_from_the_fourth_hour_on_and_causal():
    values = np.array([1.0, 2.0] + [3.3] * 10 + [2.0])
    mask = stuck_mask(values, 8, exempt_zero=False)
    # the run of 3.3 starts at row 2; its 8th reading is row 9: rows 9, 10, 11 are flagged
    assert np.flatnonzero(mask).tolist() == [9, 10, 11]
    # causal: the same rows cut just before row 9 flag nothing (the run could still be real)
    assert not stuck_mask(values[:9], 8, exempt_zero=False).any()
    pv = np.array([0.0] * 12 + [1.0])
    assert not stuck_mask(pv, 8, exempt_zero=True).any()  # zero PV (night, snow) is never "stuck"


def test_zero_load_is_missing():
    h = clean_history(frame([0.5, 0.0, 0.7]))
    assert np.isnan(h.load_kw[1]) and h.report["load_kw"]["zero_as_missing"] == 1


def test_night_pv_missing_is_zero_daytime_missing_stays_missing(house_cfg, household):
    sf = SiteForecaster(house_cfg, household)
    h = sf.history
    night = sf.pv.geometry(h.index, h.step).zenith >= 90
    raw = household["pv_kw"].reindex(h.index).to_numpy()
    assert (h.pv_kw[night & np.isnan(raw)] == 0).all()
    assert np.isnan(h.pv_kw[~night & np.isnan(raw)]).all()
    assert h.report["pv_kw"]["night_missing_as_zero"] > 8000  # the file's nights
    assert h.report["pv_kw"]["missing_daytime"] < 600  # sensor outages and twilight at the assumed place


def test_timestamps_without_offset_are_rejected_naming_the_row(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("timestamp,load_kw\n2024-07-01T00:00+09:00,1.0\n2024-07-01T00:30,1.1\n")
    with pytest.raises(DataError, match=r"h.csv:3: timestamp = '2024-07-01T00:30': timestamp needs a UTC offset"):
        read_history_csv(path)
    naive = frame([1.0, 2.0]).tz_localize(None)
    with pytest.raises(DataError, match="timestamps need a time zone"):
        clean_history(naive)


def test_dst_with_offsets_is_continuous_and_a_repeated_hour_is_rejected(tmp_path):
    """Foreign data across the end of summer time (Berlin, 27 Oct 2024 03:00 CEST -> 02:00 CET)."""
    local = pd.date_range("2024-10-26T22:00Z", "2024-10-27T03:00Z", freq="30min").tz_convert("Europe/Berlin")
    rows = "\n".join(f"{t.isoformat()},1.0" for t in local)
    good = tmp_path / "berlin.csv"
    good.write_text("timestamp,load_kw\n" + rows + "\n")
    h = clean_history(read_history_csv(good))
    assert len(h.index) == 11 and h.step == pd.Timedelta(minutes=30)  # 02:00-03:00 twice, continuous in UTC
    # a logger that kept +02:00 after the change writes 02:00-02:30 twice with the same offset
    bad = tmp_path / "logger.csv"
    bad.write_text("timestamp,load_kw\n2024-10-27T02:00+02:00,1\n2024-10-27T02:30+02:00,1\n"
                   "2024-10-27T02:00+02:00,1\n2024-10-27T02:30+02:00,1\n")
    with pytest.raises(DataError, match=r"logger.csv:4: timestamp = '2024-10-27T02:00\+02:00': earlier than row 3"):
        read_history_csv(bad)
    dup = frame([1.0, 1.0, 1.0])
    dup.index = dup.index[[0, 1, 1]]
    with pytest.raises(DataError, match=r"history:4: timestamp = .*duplicate timestamp"):
        clean_history(dup)


def test_negative_and_off_grid_rows_are_errors():
    with pytest.raises(DataError, match=r"history:3: load_kw = .*negative power"):
        clean_history(frame([1.0, -0.5, 1.0]))
    off = frame([1.0, 1.0, 1.0])
    off.index = off.index[:2].append(pd.DatetimeIndex([off.index[2] + pd.Timedelta(minutes=7)]))
    with pytest.raises(DataError, match=r"history:4: timestamp = .*not on the 0 days 00:30:00 grid"):
        clean_history(off)
