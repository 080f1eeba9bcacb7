"""Bills from metered data, hand-computed: demand ratchet, power factor, blocks, day types, 15-minute
meters, bad meter files, and two properties (more import never costs less; a year billed month by
month with the carried peak history equals the year billed whole)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ems.billing import (
    compute_bill,
    contract_kw,
    month_add,
    read_meter_csv,
    read_peaks_history_csv,
    window_demand_kw,
)
from ems.cli import main
from ems.errors import DataError
from ems.tariff import Tariff, load_tariff

TARIFFS = Path(__file__).parent / "data" / "tariffs"
TOKYO = "Asia/Tokyo"
RATE = 1614.86  # JPY per kW-month (Chubu high-voltage A)


def tariff(name: str, **basic: object) -> Tariff:
    """A fixture tariff, with basic-charge fields overridden."""
    t = load_tariff(TARIFFS / f"{name}.yaml")
    return t.model_copy(update={"basic": t.basic.model_copy(update=basic)}) if basic else t


def meter(start: str, end: str, import_kw: float | np.ndarray, freq: str = "30min",
          export_kw: float | np.ndarray = 0.0) -> pd.DataFrame:
    """A meter frame on [start, end) in Tokyo time."""
    idx = pd.date_range(start, end, freq=freq, tz=TOKYO, inclusive="left")
    return pd.DataFrame({"import_kw": np.broadcast_to(import_kw, len(idx)).astype(float),
                         "export_kw": np.broadcast_to(export_kw, len(idx)).astype(float)}, index=idx)


# ----- the demand charge and its ratchet -------------------------------------------------------

@pytest.fixture(scope="module")
def fourteen_months():
    """14 months at a steady 100 kW, and the same with one half hour of 120 kW on 2024-01-15."""
    base = meter("2024-01-01", "2025-03-01", 100.0)
    spiked = base.copy()
    spiked.loc[pd.Timestamp("2024-01-15 10:00", tz=TOKYO), "import_kw"] = 120.0
    t = tariff("demand-flat")
    return compute_bill(base, t), compute_bill(spiked, t)


def test_20_kw_higher_peak_costs_32297_a_month_and_387566_over_the_12_months_it_binds(fourteen_months):
    base, spiked = fourteen_months
    extra = [s.basic - b.basic for b, s in zip(base.months, spiked.months)]
    assert extra[:12] == pytest.approx([20 * RATE] * 12)          # 32,297.2 JPY a month
    assert round(extra[0]) == 32297
    assert sum(extra) == pytest.approx(387566.4)                   # 12 x 32,297.2
    assert round(sum(extra)) == 387566
    # the whole bill differs by that plus the extra 10 kWh of energy in January
    assert spiked.total - base.total == pytest.approx(387566.4 + 20 * 0.5 * 15.87)


def test_a_peak_sets_the_contract_for_exactly_12_billing_months_then_drops(fourteen_months):
    _, spiked = fourteen_months
    months = [m.month for m in spiked.months]
    assert months[0] == "2024-01" and months[-1] == "2025-02"
    assert [m.contract_kw for m in spiked.months] == pytest.approx([120.0] * 12 + [100.0] * 2)
    assert [m.contract_month for m in spiked.months] == ["2024-01"] * 12 + ["2025-01", "2025-02"]
    assert [m.peak_kw for m in spiked.months] == pytest.approx([120.0] + [100.0] * 13)
    assert spiked.months[12].basic == pytest.approx(100 * RATE)


def test_seeded_history_is_honoured_and_expires(tmp_path):
    hist = tmp_path / "peaks.csv"
    hist.write_text("month,peak_kw\n2023-03,200\n2023-04,90\n2023-05,80\n")
    history = read_peaks_history_csv(hist)
    assert history == {"2023-03": 200.0, "2023-04": 90.0, "2023-05": 80.0}
    bill = compute_bill(meter("2024-03-01", "2024-06-01", 50.0), tariff("demand-flat"), history)
    # 2023-03 is 12 months before 2024-03: outside the 11-month ratchet
    assert [(m.month, m.contract_kw, m.contract_month) for m in bill.months] == [
        ("2024-03", 90.0, "2023-04"), ("2024-04", 80.0, "2023-05"), ("2024-05", 50.0, "2024-05")]
    assert bill.months[0].basic == pytest.approx(90 * RATE)


def test_history_of_a_partial_first_month_counts_and_the_full_basic_charge_is_paid():
    bill = compute_bill(meter("2024-03-15", "2024-04-01", 40.0), tariff("demand-flat"), {"2024-03": 70.0})
    (march,) = bill.months
    assert march.partial and march.contract_kw == 70.0 and march.contract_month == "2024-03"
    assert march.peak_kw == 70.0
    assert march.basic == pytest.approx(70 * RATE)    # the whole month's basic charge
    assert march.import_kwh == pytest.approx(17 * 24 * 40)


@pytest.mark.parametrize("pf, factor", [(85, 1.00), (90, 0.95), (100, 0.85), (80, 1.05)])
def test_power_factor_adjusts_the_basic_charge(pf, factor):
    bill = compute_bill(meter("2024-06-01", "2024-07-01", 100.0), tariff("demand-flat", power_factor_pct=pf))
    assert bill.months[0].basic == pytest.approx(100 * RATE * factor)   # PF 90 %: 153,411.70 JPY


def test_minimum_contract_binds_when_above_every_peak():
    t = tariff("demand-flat", minimum_contract_kw=150.0)
    (june,) = compute_bill(meter("2024-06-01", "2024-07-01", 100.0), t).months
    assert (june.contract_kw, june.contract_month, june.peak_kw) == (150.0, "minimum", 100.0)


def test_contract_ties_go_to_the_latest_month_and_months_wrap_years():
    peaks = {"2023-12": 80.0, "2024-02": 80.0, "2024-03": 10.0}
    assert contract_kw("2024-03", peaks, 11) == (80.0, "2024-02")
    assert contract_kw("2024-03", peaks, 0) == (10.0, "2024-03")
    assert contract_kw("2024-03", {}, 11, minimum_kw=5.0) == (5.0, "minimum")
    assert month_add("2024-01", -1) == "2023-12" and month_add("2024-12", 1) == "2025-01"
    assert month_add("2024-03", -27) == "2021-12"


# ----- energy, adders, export ------------------------------------------------------------------

@pytest.mark.parametrize("kwh, energy", [
    (0.0, 0.0),
    (120.0, 120 * 29.80),                                  # 3,576.00: exactly the first block
    (300.0, 120 * 29.80 + 180 * 36.40),                    # 10,128.00: up to the second boundary
    (301.0, 120 * 29.80 + 180 * 36.40 + 1 * 40.49),        # 10,168.49: one kWh into the third
])
def test_block_tier_boundaries(kwh, energy):
    (june,) = compute_bill(meter("2024-06-03", "2024-06-04", kwh / 24), tariff("blocks")).months
    assert june.energy == pytest.approx(energy)
    assert june.basic == pytest.approx(311.75 * 20)        # per-kVA basic charge, 6,235 JPY
    assert sum(june.import_kwh_by_period.values()) == pytest.approx(kwh)
    assert june.import_kwh_by_period["block 1 (0-120 kWh)"] == pytest.approx(min(kwh, 120))
    assert june.contract_kw is None and june.contract_month is None


def test_holiday_saturday_sunday_and_wrapping_night_rates():
    # 2024-05-02 (Thu) .. 2024-05-13 (Mon) at 1 kW. Golden Week: 05-03 Fri, 05-04 Sat (a holiday
    # on a Saturday is a holiday), 05-05 Sun, 05-06 Mon (substitute holiday). 05-11 is a plain
    # Saturday, 05-12 a plain Sunday; six weekdays with 8 h of night (23:00-07:00) each.
    (may,) = compute_bill(meter("2024-05-02", "2024-05-14", 1.0), tariff("daytypes")).months
    assert may.import_kwh_by_period == pytest.approx(
        {"weekday night": 48, "weekday": 96, "saturday": 24, "sunday": 24, "holiday": 96})
    assert may.energy_by_period == pytest.approx(
        {"weekday night": 48 * 25, "weekday": 96 * 30, "saturday": 24 * 20, "sunday": 24 * 15, "holiday": 96 * 10})
    assert may.energy == pytest.approx(5880.0)
    assert may.adders_by_name == pytest.approx({"levy": 288 * 3.49, "fuel": 288 * -1.5})   # May levy rate
    assert may.total == pytest.approx(1000 + 5880 + 1005.12 - 432)


def test_extra_holiday_and_new_year_split_into_two_billing_months():
    # 12-30 Mon weekday; 12-31 Tue an extra holiday of the tariff; 01-01 a public holiday; 01-02 weekday
    dec, jan = compute_bill(meter("2024-12-30", "2025-01-03", 1.0), tariff("daytypes")).months
    assert (dec.month, jan.month) == ("2024-12", "2025-01")
    assert dec.energy_by_period == pytest.approx({"weekday night": 8 * 25, "weekday": 16 * 30, "holiday": 24 * 10})
    assert jan.energy_by_period == pytest.approx({"holiday": 24 * 10, "weekday night": 8 * 25, "weekday": 16 * 30})
    assert dec.adders == pytest.approx(48 * (3.0 - 1.5))   # default adder rates outside May 2024
    assert dec.partial and jan.partial and dec.basic == jan.basic == 1000


def test_export_credit_by_time_of_use_and_flat():
    m = meter("2024-06-03", "2024-06-04", 0.0, export_kw=2.0)
    (june,) = compute_bill(m, tariff("daytypes")).months
    assert june.export_kwh == pytest.approx(48)
    assert june.export_credit == pytest.approx(8 * 8 + 40 * 12)              # 10:00-14:00 at 8, rest at 12
    assert june.total == pytest.approx(1000 - 544)
    (june,) = compute_bill(m, tariff("blocks")).months
    assert june.export_credit == pytest.approx(480) and june.total == pytest.approx(6235 - 480)


# ----- 15-minute and 5-minute meters -----------------------------------------------------------

def test_15_minute_data_is_averaged_over_fixed_30_minute_windows():
    values = np.tile([10.0, 30.0], 48)                        # every window averages 20 kW
    m = meter("2024-06-01", "2024-06-02", values, freq="15min")
    noon = m.index.get_loc(pd.Timestamp("2024-06-01 12:00", tz=TOKYO))
    m.iloc[noon:noon + 2, 0] = [0.0, 50.0]                    # a 50 kW quarter hour: a 25 kW window
    demand = window_demand_kw(m, tariff("demand-flat"))
    assert len(demand) == 48 and demand.index[0] == pd.Timestamp("2024-06-01 00:00", tz=TOKYO)
    assert demand.loc[pd.Timestamp("2024-06-01 12:00", tz=TOKYO)] == 25.0
    assert demand.drop(pd.Timestamp("2024-06-01 12:00", tz=TOKYO)).eq(20.0).all()
    (june,) = compute_bill(m, tariff("demand-flat")).months
    assert june.peak_kw == 25.0 and june.basic == pytest.approx(25 * RATE)   # not 50 kW
    assert june.import_kwh == pytest.approx(47 * 20 * 0.5 + 25 * 0.5)      # 482.5 kWh
    assert june.energy == pytest.approx(482.5 * 15.87)


def test_5_minute_data_averages_six_steps():
    values = np.zeros(12)
    values[6:] = [60, 0, 0, 0, 0, 0]
    demand = window_demand_kw(meter("2024-06-01 10:00", "2024-06-01 11:00", values, freq="5min"), tariff("demand-flat"))
    assert list(demand) == [0.0, 10.0]


def test_windows_follow_the_tariff_zone_not_utc():
    # 30-minute data on UTC :00/:30 is also on Tokyo :00/:30; months are Tokyo months
    idx = pd.date_range("2024-05-31T14:30Z", periods=4, freq="30min")     # 23:30 May 31 .. 01:00 June 1 JST
    m = pd.DataFrame({"import_kw": [5.0, 7.0, 1.0, 1.0]}, index=idx)
    may, june = compute_bill(m, tariff("demand-flat")).months
    assert (may.month, may.peak_kw, june.month, june.peak_kw) == ("2024-05", 5.0, "2024-06", 7.0)


# ----- bad meter data: every rule names the row ------------------------------------------------

def write(tmp_path: Path, text: str, name: str = "meter.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


HEADER = "timestamp,import_kw\n"
ROWS = ["2024-06-01T00:00:00+09:00,1", "2024-06-01T00:30:00+09:00,2", "2024-06-01T01:00:00+09:00,3",
        "2024-06-01T01:30:00+09:00,4"]


@pytest.mark.parametrize("rows, pattern", [
    ([ROWS[0], "2024-06-01T00:30:00,2"] + ROWS[2:],
     r"meter\.csv:3: timestamp = '2024-06-01T00:30:00': timestamp needs a UTC offset"),
    ([ROWS[0], ROWS[1], ROWS[1], ROWS[3]], r"meter\.csv:4: timestamp = '2024-06-01T00:30:00\+09:00': duplicate of row 3"),
    ([ROWS[0], ROWS[2], ROWS[1], ROWS[3]], r"meter\.csv:4: timestamp = '2024-06-01T00:30:00\+09:00': earlier than row 3"),
    ([ROWS[0], ROWS[1], ROWS[3]], r"meter\.csv:4: timestamp = '2024-06-01T01:30:00\+09:00': gap or irregular step after row 3"),
    ([ROWS[0], "2024-06-01T00:30:00+09:00,-2"] + ROWS[2:], r"meter\.csv:3: import_kw = -2\.0: must not be negative"),
    ([ROWS[0], "2024-06-01T00:30:00+09:00,2kW"] + ROWS[2:], r"meter\.csv:3: import_kw = '2kW': not a number"),
    ([ROWS[0], "2024-06-01T00:30:00+09:00,"] + ROWS[2:], r"meter\.csv:3: import_kw = '': empty cell"),
    (["2024-06-01T00:00:00+09:00,1", "2024-06-01T00:20:00+09:00,1", "2024-06-01T00:40:00+09:00,1"],
     r"meter\.csv:3: timestamp = '2024-06-01T00:20:00\+09:00': step of 0 days 00:20:00 does not divide 30 minutes"),
    ([ROWS[0], "2024-06-01 half past,2"] + ROWS[2:], r"meter\.csv:3: timestamp = '2024-06-01 half past': timestamp needs a UTC offset"),
])
def test_bad_meter_data_names_the_row(tmp_path, rows, pattern):
    with pytest.raises(DataError, match=pattern):
        read_meter_csv(write(tmp_path, HEADER + "\n".join(rows) + "\n"))


def test_partial_demand_windows_at_the_edges_name_the_row(tmp_path):
    text = "timestamp,import_kw\n" + "\n".join(
        f"2024-06-01T{h:02d}:{mi:02d}:00+09:00,5" for h in range(10, 12) for mi in (0, 15, 30, 45))
    starts_at_quarter = write(tmp_path, text.replace("2024-06-01T10:00:00+09:00,5\n", ""), "late.csv")
    t = tariff("demand-flat")
    with pytest.raises(DataError, match=r"late\.csv:2: timestamp = '2024-06-01T10:15:00\+09:00': the 30-minute demand "
                                        r"window starting 2024-06-01 10:00 holds 1 of 2 intervals"):
        compute_bill(read_meter_csv(starts_at_quarter), t)
    ends_at_quarter = write(tmp_path, text.rsplit("\n", 1)[0], "early.csv")
    with pytest.raises(DataError, match=r"early\.csv:8: .*window starting 2024-06-01 11:30 holds 1 of 2"):
        window_demand_kw(read_meter_csv(ends_at_quarter), t)
    # a caller that accepts partial edge windows drops them
    assert len(window_demand_kw(read_meter_csv(ends_at_quarter), t, edges="drop")) == 3
    # a non-demand tariff never needs the partial window
    assert compute_bill(read_meter_csv(ends_at_quarter), tariff("blocks")).months[0].import_kwh == pytest.approx(8.75)


def test_interval_starts_off_the_window_grid_are_errors(tmp_path):
    rows = [f"2024-06-01T10:{m:02d}:00+09:00,1" for m in (5, 15, 25, 35, 45, 55)]
    with pytest.raises(DataError, match=r"meter\.csv:2: timestamp = '2024-06-01T10:05:00\+09:00': interval start is "
                                        r"not on the 0 days 00:10:00 grid"):
        window_demand_kw(read_meter_csv(write(tmp_path, HEADER + "\n".join(rows))), tariff("demand-flat"))


def test_export_column_is_optional_and_checked(tmp_path):
    m = read_meter_csv(write(tmp_path, HEADER + "\n".join(ROWS)))
    assert list(m["export_kw"]) == [0.0] * 4 and m.attrs["step"] == pd.Timedelta("30min")
    text = "timestamp,import_kw,export_kw\n" + "\n".join(r + ",0" for r in ROWS).replace("01:00:00+09:00,3,0", "01:00:00+09:00,3,-1")
    with pytest.raises(DataError, match=r"meter\.csv:4: export_kw = -1\.0: must not be negative"):
        read_meter_csv(write(tmp_path, text))


def test_meter_frames_built_in_code_are_checked_too():
    m = meter("2024-06-01", "2024-06-02", 1.0)
    with pytest.raises(DataError, match="time-zone aware"):
        compute_bill(m.tz_localize(None), tariff("blocks"))
    bad = m.copy()
    bad.iloc[3, 0] = np.nan
    with pytest.raises(DataError, match=r"meter data: import_kw = nan: must be a finite, non-negative number \[kW\] "
                                        r"\(interval starting 2024-06-01T01:30:00\+09:00\)"):
        compute_bill(bad, tariff("blocks"))
    with pytest.raises(DataError, match=r"duplicate, unsorted or gap: expected every 0 days 00:30:00"):
        compute_bill(m.drop(m.index[5]), tariff("blocks"))
    with pytest.raises(DataError, match=r"peaks history: 2024-01 = -3: peak must be a finite, non-negative"):
        compute_bill(m, tariff("demand-flat"), {"2024-01": -3})


@pytest.mark.parametrize("text, pattern", [
    ("month,peak_kw\n2024-13,5\n", r"h\.csv:2: month = '2024-13': expected a month 'YYYY-MM'"),
    ("month,peak_kw\n2024-01,5\n2024/02,5\n", r"h\.csv:3: month = '2024/02': expected a month"),
    ("month,peak_kw\n2024-01,5\n2024-01,6\n", r"h\.csv:3: month = '2024-01': duplicate of row 2"),
    ("month,peak_kw\n2024-01,-5\n", r"h\.csv:2: peak_kw = -5\.0: must not be negative"),
    ("month,peak_kw\n2024-01,many\n", r"h\.csv:2: peak_kw = 'many': not a number"),
    ("month,kw\n2024-01,5\n", r"h\.csv:1: peak_kw = \['month', 'kw'\]: missing column"),
    ("when,peak_kw\n2024-01,5\n", r"h\.csv:1: month = \['when', 'peak_kw'\]: no 'month' column"),
    ("month,peak_kw\n", r"h\.csv: no data rows"),
])
def test_bad_peaks_history_names_the_row(tmp_path, text, pattern):
    with pytest.raises(DataError, match=pattern):
        read_peaks_history_csv(write(tmp_path, text, "h.csv"))


# ----- the command ------------------------------------------------------------------------------

def test_ems_bill_json_and_table(tmp_path, capsys):
    rows = [f"{ts.isoformat()},{50 + (ts.day == 10 and ts.hour == 14) * 30}"
            for ts in pd.date_range("2024-06-01", "2024-08-01", freq="30min", tz=TOKYO, inclusive="left")]
    path = write(tmp_path, HEADER + "\n".join(rows) + "\n")
    hist = write(tmp_path, "month,peak_kw\n2024-01,90\n", "h.csv")
    args = ["bill", "--tariff", str(TARIFFS / "demand-flat.yaml"), "--meter", str(path), "--peaks-history", str(hist)]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["month"] for m in out["months"]] == ["2024-06", "2024-07"]
    assert {"month", "contract_kw", "basic", "energy", "adders", "export_credit", "total"} <= set(out["months"][0])
    june, july = out["months"]
    assert (june["contract_kw"], june["contract_month"]) == (90.0, "2024-01")
    assert (july["contract_kw"], july["contract_month"], july["peak_kw"]) == (90.0, "2024-01", 80.0)
    assert out["total"] == pytest.approx(june["total"] + july["total"])
    assert june["basic"] == pytest.approx(90 * RATE)
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "contract 90.00 kW, set by the peak of 2024-01; this month's peak 80.00 kW" in text
    assert "not rounded" in text and f"{out['total']:,.2f}" in text


def test_ems_bill_bad_meter_exits_2_naming_the_row(tmp_path, capsys):
    path = write(tmp_path, HEADER + "\n".join([ROWS[0], ROWS[1], ROWS[1]]) + "\n")
    assert main(["bill", "--tariff", str(TARIFFS / "blocks.yaml"), "--meter", str(path)]) == 2
    assert "meter.csv:4: timestamp = '2024-06-01T00:30:00+09:00': duplicate of row 3" in capsys.readouterr().err


# ----- properties -------------------------------------------------------------------------------

PROPERTY_TARIFFS = {name: load_tariff(TARIFFS / f"{name}.yaml") for name in ("demand-flat", "daytypes", "blocks")}


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(PROPERTY_TARIFFS)), seed=st.integers(0, 2**32 - 1),
       rises=st.lists(st.tuples(st.integers(0, 2 * 1440 - 1), st.floats(0, 200)), min_size=1, max_size=10))
def test_more_import_never_costs_less(name, seed, rises):
    rng = np.random.default_rng(seed)
    base = meter("2024-04-01", "2024-06-01", rng.uniform(0, 60, 2928), export_kw=rng.uniform(0, 5, 2928))
    more = base.copy()
    for i, kw in rises:
        more.iloc[i, 0] += kw
    before, after = compute_bill(base, PROPERTY_TARIFFS[name]), compute_bill(more, PROPERTY_TARIFFS[name])
    for b, a in zip(before.months, after.months):
        assert a.total >= b.total - 1e-6
    assert after.total >= before.total - 1e-6


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), ratchet=st.integers(0, 11), pf=st.floats(70, 100),
       history=st.dictionaries(st.sampled_from([month_add("2024-10", -k) for k in range(1, 13)]),
                               st.floats(0, 120), max_size=6))
def test_billing_month_by_month_with_carried_peaks_equals_billing_whole(seed, ratchet, pf, history):
    t = tariff("demand-flat", ratchet_months=ratchet, power_factor_pct=pf)
    rng = np.random.default_rng(seed)
    year = meter("2024-10-01", "2025-03-01", rng.gamma(4.0, 10.0, 7248))
    whole = compute_bill(year, t, history)
    carried, parts = dict(history), []
    for month in [m.month for m in whole.months]:
        start = pd.Timestamp(f"{month}-01", tz=TOKYO)
        part = compute_bill(year[start:start + pd.offsets.MonthBegin(1) - pd.Timedelta("1ns")], t, carried)
        carried.update(part.peaks())
        parts += part.months
    assert [(p.month, p.contract_month) for p in parts] == [(w.month, w.contract_month) for w in whole.months]
    for p, w in zip(parts, whole.months):
        assert (p.contract_kw, p.basic, p.energy, p.total) == pytest.approx((w.contract_kw, w.basic, w.energy, w.total))
    assert sum(p.total for p in parts) == pytest.approx(whole.total)
