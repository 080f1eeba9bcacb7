"""The net import forecast's error quantile from the site's own history (ems.forecast.uncertainty)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ems.forecast.site import SiteForecaster
from ems.forecast.uncertainty import LEAD_EDGES_H, NetErrorQuantile, net_error_quantile

END = pd.Timestamp("2024-07-20T00:00+09:00")


@pytest.fixture(scope="module")
def office_forecaster(office_cfg, office_history):
    return SiteForecaster(office_cfg, office_history)


def test_the_quantile_is_read_from_forecasts_made_before_the_end(office_cfg, office_history, office_forecaster):
    """Replaying only the history before END gives the same table as the whole year: no peeking."""
    q = net_error_quantile(office_forecaster, END, 0.9)
    past = SiteForecaster(office_cfg, office_history[office_history.index < END])
    assert q is not None and q.origins >= 40 and q.samples > 40 * 90
    np.testing.assert_allclose(net_error_quantile(past, END, 0.9).table, q.table)
    assert q.table.shape == (len(LEAD_EDGES_H) - 1, 8)
    # a higher quantile allows for more; the 90 % quantile is above the median somewhere in the day
    hi = net_error_quantile(office_forecaster, END, 0.95)
    assert np.all(hi.table >= q.table - 1e-9) and np.any(q.table > net_error_quantile(office_forecaster, END, 0.5).table)


def test_uplift_by_lead_and_hour_never_negative():
    table = np.array([[-1.0, 2.0, 0, 0, 0, 0, 0, 0], [0.5] * 8, [3.0] * 8])
    q = NetErrorQuantile(0.9, table, 100, 10)
    start = pd.Timestamp("2024-07-01T02:00+09:00")
    index = pd.date_range(start, periods=48 * 2, freq="30min")
    up = q.uplift_kw(start, index, "Asia/Tokyo")
    assert up[0] == 0.0 and up[2] == 2.0          # lead < 3 h: the 00-03 block clipped at 0, the 03-06 block 2 kW
    assert up[8] == 0.5 and up[30] == 3.0         # 4 h lead: the second class; 15 h lead: the third


def test_a_new_site_without_history_before_the_end_gets_none(office_cfg, office_history):
    short = SiteForecaster(office_cfg, office_history[office_history.index < pd.Timestamp("2024-01-03T00:00+09:00")])
    assert net_error_quantile(short, pd.Timestamp("2024-01-03T00:00+09:00"), 0.9) is None
