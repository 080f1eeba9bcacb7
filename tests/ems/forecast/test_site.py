"""forecast_site / SiteForecaster: no peeking, never NaN, corrections, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ems.errors import DataError
from ems.forecast import SiteForecaster, forecast_site


@pytest.fixture(scope="module")
def house_forecaster(house_cfg, household):
    return SiteForecaster(house_cfg, household)


@settings(max_examples=12, deadline=None)
@given(st.integers(40 * 48, 330 * 48))
def test_no_peeking_and_never_nan(house_cfg, household, house_forecaster, offset):
    """A forecast made with the whole year equals one made with only the rows before the origin."""
    start = household.index[0] + offset * pd.Timedelta(minutes=30)
    full = house_forecaster.forecast(start, 48)
    past = forecast_site(house_cfg, start, 48, history=household[household.index < start])
    for a, b in ((full.pv_kw, past.pv_kw), (full.load_kw, past.load_kw)):
        assert not a.isna().any() and (a >= 0).all()
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-9, atol=1e-9)
    assert full.pv_kw.index.equals(pd.date_range(start, periods=96, freq="30min"))
    assert str(full.pv_kw.index.tz) == "UTC"


def test_recent_ratio_fades_with_two_hour_time_constant(house_cfg, household, house_forecaster):
    start = pd.Timestamp("2024-06-12T11:00Z")
    fc = house_forecaster.forecast(start, 24)
    r = fc.meta["pv_ratio"]
    assert r is not None and abs(r - 1) > 0.05
    unfaded = SiteForecaster(house_cfg, household, pv_fade_tau_hours=1e-9).forecast(start, 24).pv_kw
    # first interval's midpoint is 0.25 h ahead: factor 1 + (r - 1) exp(-0.25 / 2)
    assert fc.pv_kw.iat[0] == pytest.approx(unfaded.iat[0] * (1 + (r - 1) * np.exp(-0.25 / 2.0)))
    assert fc.pv_kw.iat[40] == pytest.approx(unfaded.iat[40] * (1 + (r - 1) * np.exp(-20.25 / 2.0)))
    assert 0 < fc.meta["pv_clearness_day"] <= 1.5 and 0 < fc.meta["pv_clearness_long"] <= 1.5


def test_stale_history_still_forecasts_and_says_so(house_forecaster):
    fc = house_forecaster.forecast(pd.Timestamp("2026-01-05T00:00+01:00"), 48)
    assert fc.meta["history_age_hours"] > 24 * 300
    assert not fc.load_kw.isna().any() and fc.load_kw.mean() > 0.2


def test_bad_origins_and_missing_history_are_errors(house_forecaster, office_cfg):
    with pytest.raises(DataError, match=r"start = '2024-06-12 11:10:00\+00:00': must be on a 0 days 00:30:00 boundary"):
        house_forecaster.forecast(pd.Timestamp("2024-06-12T11:10Z"), 48)
    with pytest.raises(DataError, match="start needs a time zone"):
        house_forecaster.forecast(pd.Timestamp("2024-06-12T11:00"), 48)
    with pytest.raises(DataError, match="hours = 0.2: must be a positive whole number"):
        house_forecaster.forecast(pd.Timestamp("2024-06-12T11:00Z"), 0.2)
    no_history = office_cfg.model_copy(update={"load": office_cfg.load.model_copy(update={"history_csv": None})})
    with pytest.raises(DataError, match="load.history_csv: the load forecast needs the site's past measurements"):
        forecast_site(no_history, pd.Timestamp("2024-06-12T11:00Z"), 48)


def test_default_history_is_the_configured_csv(office_cfg):
    fc = forecast_site(office_cfg, pd.Timestamp("2024-10-01T00:00+09:00"), 48)
    assert fc.meta["history_end"] == "2024-09-30 14:30:00+00:00"
    assert fc.meta["cleaning"]["load_kw"]["missing"] == 0
