"""Tariff files: validation errors with their lines, coverage, day types, periods and price lookups."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ems.errors import ConfigError
from ems.tariff import Tariff, load_tariff

TARIFFS = Path(__file__).parent / "data" / "tariffs"
TOKYO = "Asia/Tokyo"

GOOD = """\
name: test
basic:
  kind: demand
  rate_per_kw_month: 1614.86
seasons:
  - {name: summer, months: [7, 8, 9]}
  - {name: other, months: [1, 2, 3, 4, 5, 6, 10, 11, 12]}
energy:
  - {name: summer, seasons: [summer], rate_per_kwh: 16.94}
  - {name: other, seasons: [other], rate_per_kwh: 15.87}
"""


def tariff_text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return path


def at(*stamps: str) -> pd.DatetimeIndex:
    """Tokyo-time index of the given local times."""
    return pd.DatetimeIndex([pd.Timestamp(s, tz=TOKYO) for s in stamps])


def test_good_tariff_loads(tmp_path):
    t = load_tariff(tariff_text(tmp_path, GOOD))
    assert t.currency == "JPY" and t.timezone == TOKYO and t.holidays_country == "JP"
    assert t.basic.ratchet_months == 11 and t.basic.demand_rate() == pytest.approx(1614.86)
    assert t.describe_basic() == "demand 1,614.86 JPY/kW-month, ratchet 11 months, PF 85 %"


CASES = {
    "demand without a rate": (
        "  rate_per_kw_month: 1614.86\n", "",
        "{line}: basic: basic charge of kind 'demand' needs rate_per_kw_month", "basic:"),
    "a field the kind does not use": (
        "  rate_per_kw_month: 1614.86\n", "  rate_per_kw_month: 1614.86\n  contract_amperes: 60\n",
        "{line}: basic: basic charge of kind 'demand' does not use contract_amperes", "basic:"),
    "unknown basic kind": (
        "  kind: demand", "  kind: peak",
        "{line}: basic.kind = 'peak': Input should be 'fixed', 'per_ampere', 'per_kva' or 'demand'", "kind:"),
    "power factor above 100": (
        "  rate_per_kw_month: 1614.86\n", "  rate_per_kw_month: 1614.86\n  power_factor_pct: 110\n",
        "{line}: basic.power_factor_pct = 110: Input should be less than or equal to 100", "power_factor_pct"),
    "ratchet too long": (
        "  rate_per_kw_month: 1614.86\n", "  rate_per_kw_month: 1614.86\n  ratchet_months: 36\n",
        "{line}: basic.ratchet_months = 36: Input should be less than or equal to 24", "ratchet_months"),
    "a month in no season": (
        "months: [1, 2, 3, 4, 5, 6, 10, 11, 12]", "months: [1, 2, 3, 4, 5, 6, 10, 11]",
        "{line}: seasons: seasons must cover each month 1-12 exactly once; they cover [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]",
        "seasons:"),
    "a month in two seasons": (
        "months: [7, 8, 9]", "months: [6, 7, 8, 9]",
        "{line}: seasons: seasons must cover each month 1-12 exactly once", "seasons:"),
    "month 13": (
        "months: [7, 8, 9]", "months: [7, 8, 13]",
        "{line}: seasons[0].months: months are numbers 1-12; got [13]", "name: summer"),
    "duplicate season names": (
        "{name: other, months", "{name: summer, months",
        "{line}: seasons: season names must be unique; got ['summer', 'summer']", "seasons:"),
    "a period naming an unknown season": (
        "seasons: [summer], rate", "seasons: [sumer], rate",
        "{line}: energy: period 'summer' names unknown season(s) ['sumer']; defined: ['other', 'summer']", "energy:"),
    "a clock range not covered": (
        "{name: other, seasons: [other], rate_per_kwh: 15.87}",
        "{name: other, seasons: [other], start: \"08:00\", end: \"22:00\", rate_per_kwh: 15.87}",
        "{line}: energy: no period covers season 'other', weekday, 00:00; add a period or widen one", "energy:"),
    "holidays not covered": (
        "{name: other, seasons: [other], rate_per_kwh",
        "{name: other, seasons: [other], days: [weekday, saturday, sunday], rate_per_kwh",
        "{line}: energy: no period covers season 'other', holiday, 00:00", "energy:"),
    "boundary off the 15-minute grid": (
        "seasons: [summer], rate", "seasons: [summer], start: \"07:10\", rate",
        "{line}: energy[0].start = '07:10': period boundaries fall on 15-minute steps (:00, :15, :30, :45); got '07:10'",
        "name: summer, seasons"),
    "bad clock": (
        "seasons: [summer], rate", "seasons: [summer], end: \"24:30\", rate",
        "{line}: energy[0].end = '24:30': expected a clock time 'HH:MM' from 00:00 to 24:00; got '24:30'",
        "name: summer, seasons"),
    "start at 24:00": (
        "seasons: [summer], rate", "seasons: [summer], start: \"24:00\", rate",
        "{line}: energy[0].start = '24:00': a period starts at 00:00-23:45; 24:00 is only an end",
        "name: summer, seasons"),
    "unknown day type": (
        "seasons: [summer], rate", "seasons: [summer], days: [weekend], rate",
        "{line}: energy[0].days[0] = 'weekend': Input should be 'weekday', 'saturday', 'sunday' or 'holiday'",
        "name: summer, seasons"),
    "energy and blocks": (
        "energy:", "blocks: [{rate_per_kwh: 30}]\nenergy:",
        "{line}: give exactly one of energy (time-of-use periods) or blocks (increasing block rates)", "name: test"),
    "neither energy nor blocks": (
        "energy:\n  - {name: summer, seasons: [summer], rate_per_kwh: 16.94}\n  - {name: other, seasons: [other], rate_per_kwh: 15.87}\n",
        "", "{line}: give exactly one of energy (time-of-use periods) or blocks", "name: test"),
    "unknown time zone": (
        "name: test\n", "name: test\ntimezone: Tokyo\n",
        "{line}: timezone = 'Tokyo': unknown time zone; use an IANA name such as 'Asia/Tokyo'", "timezone"),
    "unknown holiday country": (
        "name: test\n", "name: test\nholidays_country: XX\n",
        "{line}: holidays_country = 'XX': unknown country code for public holidays", "holidays_country"),
    "extra holiday format": (
        "name: test\n", "name: test\nextra_holidays: [\"12/31\"]\n",
        "{line}: extra_holidays: extra_holidays are 'MM-DD' strings; got ['12/31']", "extra_holidays"),
    "adder month key": (
        "name: test\n", "name: test\nadders:\n  - name: levy\n    monthly: {\"2024-3\": 3.49}\n",
        "{line}: adders[0].monthly: monthly keys are 'YYYY-MM' strings (quote them in YAML); got ['2024-3']", "monthly"),
    "export with a rate and periods": (
        "name: test\n", "name: test\nexport:\n  rate_per_kwh: 16\n  periods: [{name: all, rate_per_kwh: 8}]\n",
        "{line}: export: give exactly one of rate_per_kwh or periods", "export:"),
    "export periods not covering": (
        "name: test\n", "name: test\nexport:\n  periods: [{name: day, start: \"10:00\", end: \"14:00\", rate_per_kwh: 8}]\n",
        "{line}: export: periods: no period covers season 'summer', weekday, 00:00", "export:"),
    "unknown key": (
        "name: test\n", "name: test\ncurency: JPY\n",
        "{line}: curency: unknown key; did you mean 'currency'?", "curency"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tariff_error_names_line_key_value_and_rule(tmp_path, case):
    old, new, message, needle = CASES[case]
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    path = tariff_text(tmp_path, text)
    number = next(i for i, row in enumerate(text.splitlines(), 1) if needle in row)
    with pytest.raises(ConfigError, match=re.escape(message.format(line=f"{path}:{number}"))):
        load_tariff(path)


@pytest.mark.parametrize("blocks, message", [
    ("[{up_to_kwh: 300, rate_per_kwh: 30}, {up_to_kwh: 120, rate_per_kwh: 36}, {rate_per_kwh: 40}]",
     "blocks: up_to_kwh must increase; got [300.0, 120.0]"),
    ("[{up_to_kwh: 120, rate_per_kwh: 30}, {up_to_kwh: 300, rate_per_kwh: 36}]",
     "blocks: every block but the last needs up_to_kwh; the last has none"),
    ("[{rate_per_kwh: 30}, {rate_per_kwh: 36}]", "blocks: every block but the last needs up_to_kwh"),
    ("[{up_to_kwh: 0, rate_per_kwh: 30}, {rate_per_kwh: 36}]",
     "blocks[0].up_to_kwh = 0: Input should be greater than 0"),
])
def test_block_rules(tmp_path, blocks, message):
    path = tariff_text(tmp_path, f"name: b\nbasic: {{kind: fixed, amount_per_month: 100}}\nblocks: {blocks}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:3: {message}")):
        load_tariff(path)


# ----- day types -------------------------------------------------------------------------------

def test_day_types_saturday_sunday_and_japanese_holidays():
    t = load_tariff(TARIFFS / "daytypes.yaml")
    got = t.day_types(at("2024-05-10 12:00",   # Friday
                         "2024-05-11 12:00",   # Saturday
                         "2024-05-12 12:00",   # Sunday
                         "2024-05-03 12:00",   # Constitution Memorial Day (a Friday)
                         "2024-05-04 12:00",   # Greenery Day on a Saturday: a holiday
                         "2024-05-06 12:00",   # substitute holiday (Children's Day fell on a Sunday)
                         "2024-09-16 12:00",   # Respect for the Aged Day (third Monday of September)
                         "2024-12-31 12:00",   # the tariff's extra holiday
                         "2025-12-31 00:00",   # ... every year
                         "2024-12-30 23:45"))  # an ordinary Monday
    assert list(got) == ["weekday", "saturday", "sunday", "holiday", "holiday", "holiday", "holiday",
                         "holiday", "holiday", "weekday"]


def test_no_holiday_country_keeps_only_the_extra_holidays():
    t = load_tariff(TARIFFS / "daytypes.yaml").model_copy(update={"holidays_country": None})
    assert list(t.day_types(at("2024-05-03 12:00", "2024-05-04 12:00", "2024-12-31 12:00"))) == \
        ["weekday", "saturday", "holiday"]


def test_day_types_follow_the_tariff_zone():
    t = load_tariff(TARIFFS / "daytypes.yaml")
    friday_utc_evening = pd.DatetimeIndex([pd.Timestamp("2024-05-10T15:30Z")])   # 00:30 Saturday in Tokyo
    assert list(t.day_types(friday_utc_evening)) == ["saturday"]
    assert list(t.months(pd.DatetimeIndex([pd.Timestamp("2024-05-31T15:00Z")]))) == ["2024-06"]
    with pytest.raises(ValueError, match="time zone or UTC offset"):
        t.months(pd.DatetimeIndex([pd.Timestamp("2024-05-31 15:00")]))


# ----- periods and prices ----------------------------------------------------------------------

def test_night_period_wraps_past_midnight():
    t = load_tariff(TARIFFS / "daytypes.yaml")
    idx = at("2024-05-09 22:45", "2024-05-09 23:00", "2024-05-10 00:00", "2024-05-10 06:45", "2024-05-10 07:00")
    assert list(t.period_names(idx)) == ["weekday", "weekday night", "weekday night", "weekday night", "weekday"]
    assert list(t.energy_rate(idx)) == [30, 25, 25, 25, 30]


def test_first_matching_period_wins_and_24_00_ends_the_day(tmp_path):
    path = tariff_text(tmp_path, """\
name: order
basic: {kind: fixed, amount_per_month: 0}
energy:
  - {name: evening, start: "17:00", end: "24:00", rate_per_kwh: 40}
  - {name: peak, start: "13:00", end: "19:00", rate_per_kwh: 50}
  - {name: base, rate_per_kwh: 20}
""")
    t = load_tariff(path)
    idx = at("2024-07-01 12:45", "2024-07-01 13:00", "2024-07-01 17:00", "2024-07-01 23:45", "2024-07-02 00:00")
    assert list(t.period_names(idx)) == ["base", "peak", "evening", "evening", "base"]


def test_seasons_select_rates(tmp_path):
    t = load_tariff(tariff_text(tmp_path, GOOD))
    assert list(t.energy_rate(at("2024-06-30 23:30", "2024-07-01 00:00", "2024-09-30 23:30", "2024-10-01 00:00"))) \
        == [15.87, 16.94, 16.94, 15.87]
    assert list(t.seasons_of(at("2024-08-15 12:00"))) == ["summer"]


def test_blocks_marginal_rate_and_cost():
    t = load_tariff(TARIFFS / "blocks.yaml")
    assert [t.block_rate(k) for k in (0, 119.9, 120, 299.9, 300, 1000)] == [29.80, 29.80, 36.40, 36.40, 40.49, 40.49]
    assert t.block_energy_cost(120) == pytest.approx(3576.0)
    assert t.block_energy_cost(350) == pytest.approx(120 * 29.80 + 180 * 36.40 + 50 * 40.49)
    assert list(t.energy_rate(at("2024-06-01 10:00"), month_kwh=150)) == [36.40]
    assert list(t.period_names(at("2024-06-01 10:00"))) == ["block"]


def test_adders_by_month_export_rates_and_import_price():
    t = load_tariff(TARIFFS / "daytypes.yaml")
    idx = at("2024-04-30 12:00", "2024-05-01 12:00", "2024-05-01 09:45", "2024-05-01 10:00")
    assert list(t.adder_rate(idx)) == pytest.approx([1.5, 1.99, 1.99, 1.99])        # levy 3.00 or 3.49, fuel -1.50
    assert list(t.export_rate(idx)) == [8, 8, 12, 8]
    assert list(t.import_price(idx)) == pytest.approx([31.5, 31.99, 31.99, 31.99])  # weekday 30 + adders
    assert list(load_tariff(TARIFFS / "blocks.yaml").export_rate(idx)) == [10] * 4
    assert list(load_tariff(TARIFFS / "demand-flat.yaml").export_rate(idx)) == [0] * 4


def test_fifteen_minute_index_on_period_boundaries():
    t = load_tariff(TARIFFS / "daytypes.yaml")
    idx = pd.date_range("2024-05-09 22:30", periods=4, freq="15min", tz=TOKYO)
    assert list(t.period_names(idx)) == ["weekday", "weekday", "weekday night", "weekday night"]


def test_shipped_tariffs_are_valid(configs_dir):
    for path in sorted((configs_dir / "tariffs").glob("*.yaml")):
        assert isinstance(load_tariff(path), Tariff)
    chubu = load_tariff(configs_dir / "tariffs" / "chubu-high-voltage-a.yaml")
    assert chubu.basic.rate_per_kw_month == 1614.86 and chubu.basic.ratchet_months == 11
    assert np.allclose(chubu.energy_rate(at("2024-08-01 14:00", "2024-11-01 14:00")), [16.94, 15.87])
