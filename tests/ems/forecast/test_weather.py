"""Weather readers (CSV, TMY, Open-Meteo response) and alignment onto the plan grid."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pvlib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ems.errors import DataError
from ems.forecast import SiteForecaster, read_open_meteo, read_tmy, read_weather_csv
from ems.forecast.pv import PvModel
from ems.forecast.weather import align_weather

from pathlib import Path

OPEN_METEO = Path(__file__).resolve().parent / "data" / "open_meteo_jma_nagoya.json"


def test_open_meteo_response_parsed_to_interval_start_utc():
    data, meta = read_open_meteo(OPEN_METEO)
    doc = json.loads(OPEN_METEO.read_text())
    hourly = doc["hourly"]
    # "2024-07-01T00:00" (GMT) holds the mean of the preceding hour: interval start 2024-06-30 23:00 UTC
    assert data.index[0] == pd.Timestamp("2024-06-30T23:00Z")
    assert data["ghi"].iat[0] == hourly["shortwave_radiation"][0] == 339.8
    assert np.isnan(data["ghi"].iat[-1])  # JSON null
    # temperature and wind are instants: the hour's mean is the mean of its two ends; wind km/h -> m/s
    t0, t1 = hourly["temperature_2m"][:2]
    assert data["temp_air"].iat[1] == pytest.approx((t0 + t1) / 2)
    w0, w1 = hourly["wind_speed_10m"][:2]
    assert data["wind_speed"].iat[1] == pytest.approx((w0 + w1) / 2 / 3.6)
    assert data["wind_speed"].iat[0] == pytest.approx(w0 / 3.6)
    assert meta["step"] == pd.Timedelta(hours=1) and meta["latitude"] == 35.18
    assert {"dni", "dhi"} <= set(data.columns)


def test_open_meteo_bad_responses_name_the_key(tmp_path):
    doc = json.loads(OPEN_METEO.read_text())
    doc["hourly_units"]["temperature_2m"] = "°F"
    with pytest.raises(DataError, match=r"hourly_units.temperature_2m = '°F': unexpected unit"):
        read_open_meteo(doc)
    with pytest.raises(DataError, match="Open-Meteo answered with an error"):
        read_open_meteo({"error": True, "reason": "Latitude must be in range of -90 to 90°."})
    with pytest.raises(DataError, match="no 'hourly' block"):
        read_open_meteo({"latitude": 35.0})
    bad = tmp_path / "r.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="r.json: cannot read as JSON"):
        read_open_meteo(bad)


def test_forecast_from_open_meteo_falls_back_where_not_covered(office_cfg, office_history):
    weather, _ = read_open_meteo(OPEN_METEO)
    sf = SiteForecaster(office_cfg, office_history, weather)
    fc = sf.forecast(pd.Timestamp("2024-07-01T00:00Z"), 48)
    assert fc.meta["pv_source"] == "weather"
    # the null hour 22:00-23:00 UTC on 2 July and the hour after the response ends: 4 half hours
    assert fc.meta["pv_intervals_without_weather"] == 4
    assert not fc.pv_kw.isna().any() and (fc.pv_kw >= 0).all()
    noon = fc.pv_kw.loc["2024-07-01T03:00Z"]  # 12:00 JST
    assert 5.0 < noon <= 30.0 * 0.97


def test_weather_csv_reads_units_and_rejects_bad_rows(tmp_path):
    good = tmp_path / "w.csv"
    good.write_text("timestamp,ghi_wm2,temp_air_c\n2024-07-01T00:00+09:00,-3,20.5\n2024-07-01T01:00+09:00,120,-2.0\n")
    data, meta = read_weather_csv(good)
    assert list(data.columns) == ["ghi", "temp_air"]
    assert data["ghi"].tolist() == [0.0, 120.0]  # -3 W/m^2 is a pyranometer's night offset
    assert data["temp_air"].iat[1] == -2.0 and meta["step"] == pd.Timedelta(hours=1)
    assert data.index[0] == pd.Timestamp("2024-06-30T15:00Z")

    neg = tmp_path / "neg.csv"
    neg.write_text("timestamp,ghi_wm2,temp_air_c\n2024-07-01T00:00+09:00,-50,20\n2024-07-01T01:00+09:00,10,20\n")
    with pytest.raises(DataError, match=r"neg.csv: ghi = -50.0: negative irradiance"):
        read_weather_csv(neg)
    half = tmp_path / "half.csv"
    half.write_text("timestamp,ghi_wm2,dni_wm2,temp_air_c\n2024-07-01T00:00+09:00,5,1,20\n2024-07-01T01:00+09:00,10,2,20\n")
    with pytest.raises(DataError, match="give both dni_wm2 and dhi_wm2"):
        read_weather_csv(half)
    naive = tmp_path / "naive.csv"
    naive.write_text("timestamp,ghi_wm2,temp_air_c\n2024-07-01T00:00,5,20\n2024-07-01T01:00,10,20\n")
    with pytest.raises(DataError, match=r"naive.csv:2: timestamp = '2024-07-01T00:00': timestamp needs a UTC offset"):
        read_weather_csv(naive)


def test_tmy3_rows_move_to_interval_start_and_tmy2_units_scale():
    data, meta = read_tmy(f"{pvlib.__path__[0]}/data/723170TYA.CSV")
    # the file's 08:00 (UTC-5) row holds 07:00-08:00: GHI 9 W/m^2, now labelled 07:00 local = 12:00 UTC
    assert data["ghi"].iat[7] == 9 and data.index[7] == pd.Timestamp("1988-01-01T12:00Z")
    assert meta["format"] == "tmy3" and meta["latitude"] == 36.1
    data2, meta2 = read_tmy(f"{pvlib.__path__[0]}/data/12839.tm2")
    assert data2["temp_air"].iat[6] == pytest.approx(19.4)  # 194 tenths of a degree
    assert data2["wind_speed"].iat[6] == pytest.approx(4.1)


def test_fine_weather_is_averaged_onto_the_plan_grid(office_cfg):
    index = pd.date_range("2024-07-01T00:00Z", periods=4, freq="30min")
    weather = pd.DataFrame({"ghi": [100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0], "temp_air": 20.0},
                           index=pd.date_range("2024-07-01T00:00Z", periods=8, freq="15min"))
    out = align_weather(weather, index, pd.Timedelta(minutes=30), np.full(4, 500.0), np.full(4, 30.0))
    assert out["ghi"].tolist() == [150.0, 350.0, 550.0, 750.0]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1100), min_size=24, max_size=24))
def test_hourly_weather_keeps_each_hours_energy(office_cfg, ghi):
    """Hourly GHI spread over half hours by the clear-sky shape: each hour's mean is kept."""
    model = PvModel(office_cfg.site, office_cfg.pv)
    step = pd.Timedelta(minutes=30)
    index = pd.date_range("2024-07-01T00:00+09:00", periods=48, freq=step)
    geom = model.compute_geometry(index, step)
    weather = pd.DataFrame({"ghi": ghi}, index=pd.date_range(index[0], periods=24, freq="h"))
    out = align_weather(weather, index, step, geom.cs_ghi, geom.zenith)["ghi"]
    np.testing.assert_allclose(out.reshape(24, 2).mean(axis=1), ghi, rtol=1e-9, atol=1e-9)
