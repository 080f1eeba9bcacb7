"""Units converted once at the config boundary: percent in YAML, fractions and kWh inside."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.convention import soc_kwh, soc_pct
from ems.config import load_site

ROOT = Path(__file__).resolve().parents[2]


def test_config_fractions_and_energies_match_the_percent_keys():
    cfg = load_site(ROOT / "configs" / "home-v2h.yaml")
    c, v, a = cfg.chargers[0], cfg.vehicles[0], cfg.pv[0] if cfg.pv else None
    assert c.charge_efficiency == pytest.approx(c.charge_efficiency_pct / 100)
    assert c.discharge_efficiency == pytest.approx(c.discharge_efficiency_pct / 100)
    assert v.min_soc_kwh == pytest.approx(v.min_soc_pct / 100 * v.capacity_kwh)
    assert v.max_soc_kwh == pytest.approx(v.max_soc_pct / 100 * v.capacity_kwh)
    assert cfg.planner.mip_gap == pytest.approx(cfg.planner.mip_gap_pct / 100)
    if a is not None:
        assert a.inverter_efficiency == pytest.approx(a.inverter_efficiency_pct / 100)


def test_device_soc_percent_round_trips():
    assert soc_kwh(50.0, 62.0) == 31.0 and soc_pct(31.0, 62.0) == 50.0
