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


def test_a_gap_before_the_origin_reads_no_later_rows(office_cfg, office_history):
    """Origins inside a two-month gap: the profile falls back to the weeks before the gap exactly as
    it would from the rows before the origin; the rows after the gap change nothing."""
    gapped = office_history[(office_history.index < pd.Timestamp("2024-06-01T00:00+09:00"))
                            | (office_history.index >= pd.Timestamp("2024-08-01T00:00+09:00"))]
    full = SiteForecaster(office_cfg, gapped)
    for origin in ("2024-06-20T00:00+09:00", "2024-07-25T09:00+09:00"):   # 3 and 8 weeks into the gap
        start = pd.Timestamp(origin)
        past = forecast_site(office_cfg, start, 48, history=gapped[gapped.index < start])
        fc = full.forecast(start, 48)
        np.testing.assert_allclose(fc.load_kw.to_numpy(), past.load_kw.to_numpy(), rtol=1e-9, atol=1e-9)
        assert fc.load_kw.max() > 40   # a working day's profile, from May
    assert full.history_days(pd.Timestamp("2024-07-25T09:00+09:00")) == 42
    assert full.history_days(pd.Timestamp("2024-07-25T09:00+09:00"), recent=True) == 0


def test_an_origin_without_a_day_of_history_before_it_is_a_data_error(office_cfg, office_history):
    """Before the history begins, or on its first day: the file, its first timestamp, the start and the
    earliest start it can forecast from; never a bare ValueError."""
    sf = SiteForecaster(office_cfg, office_history)
    source = str(office_history.attrs["source"])
    for start, head in (("2023-06-01T00:00+09:00", "is before the history begins (2024-01-01T00:00:00+09:00)"),
                        ("2024-01-01T10:00+09:00", "no load measurements on a day before the forecast start")):
        with pytest.raises(DataError) as err:
            sf.forecast(pd.Timestamp(start), 48)
        text = str(err.value)
        assert text.startswith(f"{source}: load_kw: ") and pd.Timestamp(start).isoformat() in text and head in text
        assert "2024-01-01T00:00:00+09:00" in text and "the earliest start is 2024-01-02T00:00:00+09:00" in text
    assert not sf.forecast(pd.Timestamp("2024-01-02T00:00+09:00"), 48).load_kw.isna().any()
