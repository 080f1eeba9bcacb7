"""Fixtures for the forecast tests: the real household year and the example sites."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

from ems.config import PvArray, SiteConfig, load_site
from ems.forecast import read_history_csv

ROOT = Path(__file__).resolve().parents[3]
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def _quiet_pvlib():
    """pvlib 0.16 calls pandas APIs that pandas 3.1 deprecates; the notices are not ours."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        yield


@pytest.fixture(scope="session")
def household() -> pd.DataFrame:
    """The shipped household year (UTC, load_kw with gaps, pv_kw empty at night)."""
    return read_history_csv(ROOT / "ems" / "data" / "household-2024-30min.csv")


@pytest.fixture(scope="session")
def house_cfg() -> SiteConfig:
    """The home example moved to the household's assumed place (bench/forecast.py says why),
    with the array the bench fits on the first 28 days."""
    cfg = load_site(ROOT / "configs" / "home-v2h.yaml")
    site = cfg.site.model_copy(update={"timezone": "Europe/Paris", "latitude_deg": 45.83, "longitude_deg": 6.86,
                                       "altitude_m": 1000.0})
    tariff = cfg.tariff.model_copy(update={"timezone": "Europe/Paris", "holidays_country": "FR", "extra_holidays": []})
    pv = [PvArray(name="fitted", capacity_kwp=4.9, tilt_deg=10, azimuth_deg=270)]
    return cfg.model_copy(update={"site": site, "tariff": tariff, "pv": pv})


@pytest.fixture(scope="session")
def office_cfg() -> SiteConfig:
    """The office example (history: configs/data/office-2024-30min.csv)."""
    return load_site(ROOT / "configs" / "office-v2b.yaml")


@pytest.fixture(scope="session")
def office_history(office_cfg) -> pd.DataFrame:
    """The office's generated year."""
    return read_history_csv(office_cfg.load.history_csv)
