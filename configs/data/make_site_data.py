"""Make the office and shelter history files from real shipped profiles (see README.md here).

    .venv/bin/pip install -e '.[data]'                    # demandlib (not in the core install)
    .venv/bin/python configs/data/make_site_data.py      # rewrites office-, shelter- and home-2024-30min.csv

Load: demandlib's BDEW standard load profiles with the Japanese holiday calendar (holidays use the
Sunday profile), 15-min values averaged to 30 min and scaled to the site. PV: this project's pvlib
model of each config's arrays, driven by pvlib's shipped TMY3 year for Greensboro NC moved to the
site by its clear-sky index (:func:`ems.forecast.weather.clear_sky_index_transfer`). Deterministic.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from unittest import mock

import holidays
import numpy as np
import pandas as pd
import pvlib

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from ems.config import load_site  # noqa: E402
from ems.extras import MissingExtra, require  # noqa: E402
from ems.forecast.pv import PvModel  # noqa: E402
from ems.forecast.weather import align_weather, clear_sky_index_transfer, read_tmy  # noqa: E402

YEAR = 2024
TMY_FILE = Path(pvlib.__file__).parent / "data" / "723170TYA.CSV"
#: site -> (config, BDEW profile, peak of the 30-min load [kW])
SITES = {
    "office": ("office-v2b.yaml", "g1", 60.0),  # G1: business on weekdays 08-18; daytime 30-60 kW
    "shelter": ("shelter.yaml", "g2", 15.0),  # G2: business with evening use (classes, meetings)
}


def bdew_profile(profile: str, year: int, zone: str) -> pd.Series:
    """demandlib's BDEW profile for ``year`` with Japanese holidays, 30-min means, normalised to peak 1.

    demandlib 0.2.2 turns every warning into an error inside its profile builder
    (``warnings.simplefilter("error")``) and pandas 3.1 warns about its ``inplace=True``; that one
    call is neutralised so the builder runs unchanged.
    """
    import demandlib.bdew as bdew

    with warnings.catch_warnings(), mock.patch.object(warnings, "simplefilter"):
        warnings.filterwarnings("ignore")
        slp = bdew.ElecSlp(year, holidays=holidays.country_holidays("JP", years=year))
        quarter = slp.get_scaled_power_profiles({profile: 1.0})[profile]
    half = quarter.groupby(quarter.index.floor("30min")).mean()
    half.index = half.index.tz_localize(zone)
    return half / half.max()


def pv_kw(config: Path) -> pd.Series:
    """30-min PV of the config's arrays [kW] over ``YEAR`` from the transferred TMY weather."""
    cfg = load_site(config)
    data, meta = read_tmy(TMY_FILE)
    weather = clear_sky_index_transfer(data, meta, latitude=cfg.site.latitude_deg, longitude=cfg.site.longitude_deg,
                                       altitude_m=cfg.site.altitude_m, timezone=cfg.site.timezone, year=YEAR)
    weather.attrs["step"] = pd.Timedelta(hours=1)
    step = pd.Timedelta(minutes=30)
    index = pd.date_range(f"{YEAR}-01-01", f"{YEAR + 1}-01-01", freq=step, inclusive="left", tz=cfg.site.timezone)
    model = PvModel(cfg.site, cfg.pv)
    geom = model.compute_geometry(index, step)
    w = align_weather(weather, index, step, geom.cs_ghi, geom.zenith)
    return pd.Series(model.power_kw(geom, w["ghi"], None, None, w["temp_air"], w["wind_speed"]), index=index)


def make(name: str) -> Path:
    """Write ``configs/data/<name>-2024-30min.csv``; return its path."""
    config, profile, peak_kw = SITES[name]
    cfg_path = HERE.parent / config
    zone = load_site(cfg_path).site.timezone
    load = bdew_profile(profile, YEAR, zone) * peak_kw
    pv = pv_kw(cfg_path)
    frame = pd.DataFrame({"load_kw": load.to_numpy(), "pv_kw": pv.reindex(load.index).to_numpy()}, index=load.index)
    if frame.isna().any().any():
        raise RuntimeError(f"{name}: missing values in the generated year")
    out = HERE / f"{name}-{YEAR}-30min.csv"
    text = ["timestamp,load_kw,pv_kw"] + [f"{t.isoformat()},{a:.3f},{b:.3f}" for t, a, b in
                                          zip(frame.index, np.round(frame["load_kw"], 3), np.round(frame["pv_kw"], 3))]
    out.write_text("\n".join(text) + "\n", encoding="utf-8")
    return out


HOUSEHOLD_CSV = HERE.parent.parent / "ems" / "data" / "household-2024-30min.csv"


def make_home() -> Path:
    """Write ``configs/data/home-2024-30min.csv``: the shipped real household year on Tokyo clock time.

    The household file is in UTC from a house outside Japan (see ems/data/README.md). Its UTC clock
    readings are reused as Asia/Tokyo clock readings (2024-02-28T21:00Z becomes
    2024-02-28T21:00+09:00), which keeps the measured midday PV peak at Tokyo's midday (the house's
    solar noon is near 11:30 UTC, Tokyo's near 11:40 JST) and gives Japanese holidays their dates;
    ``ems demo`` bills the year by the same rule. Empty cells (sensor gaps, night PV) stay empty: the
    forecaster's bad-data rules handle them.
    """
    raw = pd.read_csv(HOUSEHOLD_CSV, dtype={"load_kw": float, "pv_kw": float})
    stamps = pd.to_datetime(raw["timestamp"], utc=True).dt.tz_convert(None).dt.tz_localize("Asia/Tokyo")

    def cell(v: float) -> str:
        return "" if np.isnan(v) else f"{v:.4f}"

    text = ["timestamp,load_kw,pv_kw"] + [f"{t.isoformat()},{cell(a)},{cell(b)}"
                                          for t, a, b in zip(stamps, raw["load_kw"], raw["pv_kw"])]
    out = HERE / "home-2024-30min.csv"
    out.write_text("\n".join(text) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    try:
        require(["demandlib"], "configs/data/make_site_data.py")
    except MissingExtra as exc:
        sys.exit(f"error: {exc}")
    for site in SITES:
        path = make(site)
        print(f"wrote {path}")
    print(f"wrote {make_home()}")
