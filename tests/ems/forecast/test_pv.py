"""PV model: a clear-sky day against pvlib's own ModelChain; the decomposition path; clipping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pvlib
import pytest
from pvlib.modelchain import ModelChain
from pvlib.pvsystem import PVSystem

from ems.config import PvArray
from ems.forecast.pv import TEMPERATURE_PARAMS, PvModel
from ems.forecast.weather import clear_sky_index_transfer, read_tmy

STEP = pd.Timedelta(minutes=30)
DAY = pd.date_range("2024-06-21", periods=48, freq=STEP, tz="Asia/Tokyo")


def test_clear_sky_day_equals_pvlib_modelchain(office_cfg):
    """Our chain and pvlib's ModelChain (PVWatts, Hay-Davies, physical IAM, SAPM temperature,
    PVWatts losses 14.08 %) on the same Ineichen clear-sky weather give the same AC power."""
    array = PvArray(name="roof", capacity_kwp=30, tilt_deg=10, azimuth_deg=180, dc_loss_pct=14.08,
                    inverter_efficiency_pct=97)
    model = PvModel(office_cfg.site, [array])
    ours = model.clear_sky_power_kw(model.compute_geometry(DAY, STEP))

    site = office_cfg.site
    loc = pvlib.location.Location(site.latitude_deg, site.longitude_deg, altitude=site.altitude_m)
    mid = DAY + STEP / 2
    weather = loc.get_clearsky(mid, model="ineichen").assign(temp_air=20.0, wind_speed=0.0)
    system = PVSystem(surface_tilt=10, surface_azimuth=180, module_parameters={"pdc0": 30000, "gamma_pdc": -0.0037},
                      inverter_parameters={"pdc0": 30000, "eta_inv_nom": 0.97}, temperature_model_parameters=TEMPERATURE_PARAMS)
    mc = ModelChain(system, loc, aoi_model="physical", spectral_model="no_loss", transposition_model="haydavies",
                    losses_model="pvwatts")
    mc.run_model(weather)
    theirs = mc.results.ac.clip(lower=0).fillna(0).to_numpy() / 1000

    assert ours.max() == pytest.approx(theirs.max(), rel=1e-3)
    np.testing.assert_allclose(ours, theirs, atol=0.02)  # kW, on a 30 kWp array
    # midsummer noon in Nagoya, 10 deg tilt: about 22 kW AC from 30 kWp (0.74 of nameplate after 14 % losses)
    assert 20.0 < ours.max() < 24.0
    assert ours[:8].sum() == 0 and ours[-8:].sum() == 0  # 00:00-04:00 and 20:00-24:00 JST: dark


def test_ghi_only_is_split_by_erbs_and_dirint(office_cfg):
    """Given only GHI, Erbs (default) and DIRINT rebuild DNI/DHI; on a clear day the daily energy is
    within 5 % of the one from Ineichen's own components, and Erbs' split is pvlib's."""
    full = PvModel(office_cfg.site, office_cfg.pv)
    geom = full.compute_geometry(DAY, STEP)
    reference = full.power_kw(geom, geom.cs_ghi, geom.cs_dni, geom.cs_dhi).sum()
    erbs = full.power_kw(geom, geom.cs_ghi)
    dni, dhi = full.split(geom.cs_ghi, geom)
    expect = pvlib.irradiance.erbs(geom.cs_ghi, geom.zenith, geom.doy)
    np.testing.assert_allclose(dni, np.nan_to_num(expect["dni"]))
    np.testing.assert_allclose(dhi, np.nan_to_num(expect["dhi"]))
    dirint = PvModel(office_cfg.site, office_cfg.pv, decomposition="dirint").power_kw(geom, geom.cs_ghi)
    assert erbs.sum() == pytest.approx(reference, rel=0.05)
    assert dirint.sum() == pytest.approx(reference, rel=0.05)
    assert not np.allclose(erbs, dirint)


def test_inverter_clips_at_ac_capacity(office_cfg):
    """A 5 kWp array on a 3 kW inverter never exceeds 3 kW, and reaches it on a clear noon."""
    array = PvArray(name="small", capacity_kwp=5, tilt_deg=30, azimuth_deg=180, ac_capacity_kw=3.0)
    model = PvModel(office_cfg.site, [array])
    out = model.clear_sky_power_kw(model.compute_geometry(DAY, STEP))
    assert out.max() == pytest.approx(3.0, abs=1e-9)
    assert (out >= 0).all()


def test_prepared_geometry_is_sliced_not_recomputed(office_cfg):
    """A prepared year gives the same geometry as a fresh computation for any aligned window."""
    model = PvModel(office_cfg.site, office_cfg.pv)
    model.prepare(pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-12-31", tz="UTC"), STEP)
    fresh = model.compute_geometry(DAY, STEP)
    sliced = model.geometry(DAY, STEP)
    np.testing.assert_allclose(sliced.cs_ghi, fresh.cs_ghi)
    np.testing.assert_allclose(sliced.zenith, fresh.zenith)
    assert sliced.index.equals(DAY)


def test_tmy_transfer_keeps_the_clear_sky_index():
    """Moving the Greensboro TMY to Nagoya keeps each daytime hour's clear-sky index."""
    data, meta = read_tmy(f"{pvlib.__path__[0]}/data/723170TYA.CSV")
    moved = clear_sky_index_transfer(data, meta, latitude=35.17, longitude=136.91, altitude_m=15,
                                     timezone="Asia/Tokyo", year=2024)
    assert len(moved) == 366 * 24
    src = pvlib.location.Location(meta["latitude"], meta["longitude"], altitude=meta["altitude"])
    # 1 July 11:00-12:00 local standard time at both places
    local = data.index.tz_convert("Etc/GMT+5")  # the file's local standard time (UTC-5)
    row = data.loc[(local.month == 7) & (local.day == 1) & (local.hour == 11)]
    k_src = row["ghi"].iat[0] / src.get_clearsky(row.index + pd.Timedelta(minutes=30))["ghi"].iat[0]
    dst = pvlib.location.Location(35.17, 136.91, altitude=15)
    t_dst = pd.Timestamp("2024-07-01 11:00", tz="Asia/Tokyo")
    k_dst = moved.loc[t_dst, "ghi"] / dst.get_clearsky(pd.DatetimeIndex([t_dst + pd.Timedelta(minutes=30)]))["ghi"].iat[0]
    assert k_dst == pytest.approx(min(k_src, 1.5), rel=1e-6)
    assert moved.loc[t_dst, "temp_air"] == row["temp_air"].iat[0]
