"""Load model: day types from the Japanese calendar, weighted median, level fade, temperature term."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pvlib
import pytest

from ems.forecast import SiteForecaster, forecast_site
from ems.forecast.load import weighted_median
from ems.forecast.weather import clear_sky_index_transfer, read_tmy

JST = "Asia/Tokyo"


def at(series: pd.Series, when: str) -> float:
    return float(series.loc[pd.Timestamp(when).tz_convert("UTC")])


def test_profile_picks_holidays_and_saturdays(office_cfg, office_history):
    """BDEW G1 repeats the same day per season and day type, so each forecast must equal the last
    measured day of the *same* type: a holiday looks like a Sunday, a Saturday like a Saturday."""
    sf = SiteForecaster(office_cfg, office_history)
    load = office_history["load_kw"]
    # 3 May 2024 is Constitution Day (a Friday): the Sunday/holiday profile, not Thursday's
    holiday = sf.forecast(pd.Timestamp("2024-05-03T00:00+09:00"), 24).load_kw
    assert at(holiday, "2024-05-03T11:00+09:00") == pytest.approx(at(load, "2024-04-28T11:00+09:00"), abs=0.01)  # a Sunday
    assert at(holiday, "2024-05-03T11:00+09:00") < 0.2 * at(load, "2024-05-02T11:00+09:00")  # the Thursday before
    # Saturday 27 April, 35 h ahead, from the previous Saturdays (4 May is Greenery Day: a holiday)
    saturday = sf.forecast(pd.Timestamp("2024-05-10T00:00+09:00"), 48).load_kw
    assert at(saturday, "2024-05-11T11:00+09:00") == pytest.approx(at(load, "2024-04-27T11:00+09:00"), abs=0.01)
    weekday = sf.forecast(pd.Timestamp("2024-05-07T00:00+09:00"), 24).load_kw
    assert at(weekday, "2024-05-07T11:00+09:00") == pytest.approx(at(load, "2024-05-02T11:00+09:00"), abs=0.05)
    assert at(weekday, "2024-05-07T11:00+09:00") > 40.0  # G1 x 60 kW at 11:00 on a working day


def test_weighted_median_by_hand():
    x = np.array([[1.0, 5.0], [2.0, np.nan], [10.0, 7.0]])
    # column 0: weights 1, 1, 3 -> cumulative 1, 2, 5 >= 2.5 first at 10; column 1: 5 (w1), 7 (w3) -> 7
    np.testing.assert_array_equal(weighted_median(x, np.array([1.0, 1.0, 3.0])), [10.0, 7.0])
    np.testing.assert_array_equal(weighted_median(x, np.array([1.0, 1.0, 1.0])), [2.0, 5.0])
    assert np.isnan(weighted_median(np.array([[np.nan]]), np.array([1.0]))[0])


def test_level_of_the_last_hours_fades_out(office_cfg):
    """Six weeks of a fixed daily shape, then the last 2 h 1 kW above it: the forecast starts
    1 kW x exp(-0.25/1.5) above the profile and is back on it a day later."""
    index = pd.date_range("2024-05-01T00:00+09:00", "2024-06-12T00:00+09:00", freq="30min", inclusive="left")
    slot = (index.tz_convert(JST).hour * 2 + index.tz_convert(JST).minute // 30).to_numpy()
    shape = 1.0 + 0.01 * slot  # 1.00 .. 1.47 kW, never two equal readings in a row
    load = shape.copy()
    load[-4:] += 1.0
    history = pd.DataFrame({"load_kw": load}, index=index.tz_convert("UTC"))
    fc = forecast_site(office_cfg.model_copy(update={"pv": []}), pd.Timestamp("2024-06-12T00:00+09:00"), 24, history=history)
    assert fc.meta["level_offset_kw"] == pytest.approx(1.0)
    assert fc.load_kw.iat[0] == pytest.approx(1.00 + np.exp(-0.25 / 1.5))
    assert fc.load_kw.iat[47] == pytest.approx(1.47 + np.exp(-23.75 / 1.5))
    assert (fc.pv_kw == 0).all() and fc.meta["pv_source"].startswith("none")
    assert (fc.critical_kw == 2.0).all()  # 1200 + 600 + 200 W of critical circuits


def test_temperature_regression_recovers_a_cooling_slope(office_cfg, office_history):
    """Add 0.8 kW per degC above 18.3 degC (real TMY temperatures moved to Nagoya) to the office's
    BDEW load: the regression finds 0.8 kW/degC and the forecast follows the forecast heat."""
    data, meta = read_tmy(f"{pvlib.__path__[0]}/data/723170TYA.CSV")
    weather = clear_sky_index_transfer(data, meta, latitude=35.17, longitude=136.91, altitude_m=15, timezone=JST, year=2024)
    temp = weather["temp_air"].reindex(office_history.index, method="ffill")
    history = office_history.assign(load_kw=office_history["load_kw"] + 0.8 * np.maximum(temp - 18.3, 0.0))
    sf = SiteForecaster(office_cfg, history, weather[["temp_air"]])
    fc = sf.forecast(pd.Timestamp("2024-08-01T00:00+09:00"), 48)
    assert fc.meta["temperature"]["used"] is True
    assert fc.meta["temperature"]["beta_cooling_kw_per_c"] == pytest.approx(0.8, rel=0.02)
    truth = history["load_kw"].reindex(fc.load_kw.index)
    without = SiteForecaster(office_cfg, history).forecast(pd.Timestamp("2024-08-01T00:00+09:00"), 48).load_kw
    assert np.abs(fc.load_kw - truth).mean() < np.abs(without - truth).mean()


def test_quarter_hour_plan_on_half_hour_history(office_cfg, office_history):
    fc30 = forecast_site(office_cfg, pd.Timestamp("2024-06-05T00:00+09:00"), 48, history=office_history)
    fc15 = forecast_site(office_cfg, pd.Timestamp("2024-06-05T00:00+09:00"), 48, step_minutes=15, history=office_history)
    assert len(fc15.load_kw) == 192 and fc15.meta["step_minutes"] == 15
    pairs = fc15.load_kw.to_numpy().reshape(96, 2).mean(axis=1)
    np.testing.assert_allclose(pairs, fc30.load_kw.to_numpy(), rtol=0.02, atol=0.05)
    assert fc15.pv_kw.to_numpy().reshape(96, 2).mean(axis=1).sum() == pytest.approx(fc30.pv_kw.sum(), rel=0.03)


def test_weighted_median_of_no_days_is_nan():
    assert np.isnan(weighted_median(np.empty((0, 3)), np.empty(0))).all()
