"""The strict CSV reader: every rule names the file and the spreadsheet row (header = row 1)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from ems.errors import DataError
from ems.timeseries import MAX_PROBLEMS, read_series_csv


def csv(tmp_path, text: str, name: str = "s.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def rows(n: int, start: str = "2024-06-01T00:00:00+09:00", step: str = "30min", value: str = "1") -> list[str]:
    return [f"{t.isoformat()},{value}" for t in pd.date_range(start, periods=n, freq=step)]


def test_offsets_in_any_iso_form_become_utc(tmp_path):
    path = csv(tmp_path, "timestamp,load_kw\n2024-06-01T00:00:00+09:00,1\n2024-05-31T15:30:00Z,2.5\n"
                         "2024-06-01T01:00:00+0900,3\n")
    df = read_series_csv(path, ["load_kw"])
    assert list(df.index) == list(pd.date_range("2024-05-31T15:00Z", periods=3, freq="30min"))
    assert list(df["load_kw"]) == [1.0, 2.5, 3.0]
    assert df.attrs["step"] == pd.Timedelta("30min") and df.attrs["source"] == str(path)


def test_step_is_measured_in_real_minutes(tmp_path):
    df = read_series_csv(csv(tmp_path, "timestamp,x\n" + "\n".join(rows(5, step="15min"))), ["x"])
    assert df.attrs["step"] == pd.Timedelta("15min")
    hourly = csv(tmp_path, "timestamp,x\n" + "\n".join(rows(3, step="60min")))
    with pytest.raises(DataError, match=r"s\.csv:3: .*step of 0 days 01:00:00 does not divide 30 minutes"):
        read_series_csv(hourly, ["x"])
    assert read_series_csv(hourly, ["x"], require_divides_30=False).attrs["step"] == pd.Timedelta("1h")


def test_optional_columns_are_read_when_present(tmp_path):
    text = "timestamp,a,b,notes\n" + "\n".join(r + ",2,hello" for r in rows(2))
    df = read_series_csv(csv(tmp_path, text), ["a"], optional=["b", "c"])
    assert list(df.columns) == ["a", "b"] and list(df["b"]) == [2.0, 2.0]


@pytest.mark.parametrize("text, message", [
    ("load_kw\n1\n", "s.csv:1: timestamp = ['load_kw']: no 'timestamp' column in the header"),
    ("timestamp,load\n" + "\n".join(rows(2)), "s.csv:1: load_kw = ['timestamp', 'load']: missing column(s) ['load_kw']"),
    ("timestamp,load_kw\n", "s.csv: no data rows"),
    ("timestamp,load_kw\n" + rows(1)[0], "s.csv: timestamp = 1: need at least two rows to know the step"),
    ("timestamp,load_kw\n" + "\n".join(rows(2) + ["2024-06-01 01:00,1"]),
     "s.csv:4: timestamp = '2024-06-01 01:00': timestamp needs a UTC offset, e.g. 2024-07-01T13:00:00+09:00"),
    ("timestamp,load_kw\n" + "\n".join(rows(2) + ["2024-06-31T01:00:00+09:00,1"]),
     "s.csv:4: timestamp = '2024-06-31T01:00:00+09:00': not an ISO 8601 timestamp"),
    ("timestamp,load_kw\n" + "\n".join(rows(2) + rows(2)[1:]), "s.csv:4: timestamp = '2024-06-01T00:30:00+09:00': duplicate of row 3"),
    ("timestamp,load_kw\n" + "\n".join(rows(3)[::-1]),
     "s.csv:3: timestamp = '2024-06-01T00:30:00+09:00': earlier than row 2 (2024-06-01T01:00:00+09:00); rows must be sorted"),
    ("timestamp,load_kw\n" + "\n".join(rows(4)[:2] + rows(4)[3:]),
     "s.csv:4: timestamp = '2024-06-01T01:30:00+09:00': gap or irregular step after row 3 (2024-06-01T00:30:00+09:00); "
     "expected every 0 days 00:30:00"),
    ("timestamp,load_kw\n" + "\n".join(rows(2) + ["2024-06-01T01:00:00+09:00,1,5"]), "s.csv: cannot read as CSV"),
    ("timestamp,load_kw\n" + "\n".join(rows(2) + ["2024-06-01T01:00:00+09:00,1.2.3"]),
     "s.csv:4: load_kw = '1.2.3': not a number"),
    ("timestamp,load_kw\n" + "\n".join(rows(2) + ["2024-06-01T01:00:00+09:00,inf"]),
     "s.csv:4: load_kw = 'inf': not a finite number"),
    ("timestamp,load_kw\n" + "\n".join(rows(2) + ["2024-06-01T01:00:00+09:00,-0.5"]),
     "s.csv:4: load_kw = -0.5: must not be negative (kW)"),
    ("timestamp,load_kw\n" + "\n".join(rows(2) + ["2024-06-01T01:00:00+09:00,"]),
     "s.csv:4: load_kw = '': empty cell; every row needs a value"),
    ("timestamp,load_kw\n" + rows(3)[0] + "\n\n" + "\n".join(rows(3)[1:]), "s.csv:3: blank line inside the data; remove it"),
])
def test_each_rule_names_the_row(tmp_path, text, message):
    with pytest.raises(DataError, match=re.escape(message)):
        read_series_csv(csv(tmp_path, text), ["load_kw"])


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'none.csv'}: file not found")):
        read_series_csv(tmp_path / "none.csv", ["x"])


def test_row_numbers_stay_right_after_errors_and_trailing_blank_lines_are_fine(tmp_path):
    text = "timestamp,load_kw\n" + "\n".join(rows(3)) + "\n\n\n"
    assert len(read_series_csv(csv(tmp_path, text), ["load_kw"])) == 3
    bad = "timestamp,load_kw\n" + "\n".join(rows(3)).replace("00:30:00+09:00,1", "00:30:00+09:00,x") + "\n\n"
    with pytest.raises(DataError, match=r"s\.csv:3: load_kw = 'x'"):
        read_series_csv(csv(tmp_path, bad), ["load_kw"])


def test_many_bad_rows_are_reported_together_up_to_a_limit(tmp_path):
    text = "timestamp,load_kw\n" + "\n".join(rows(50, value="-1"))
    with pytest.raises(DataError) as info:
        read_series_csv(csv(tmp_path, text), ["load_kw"])
    assert [p.line for p in info.value.problems] == list(range(2, 2 + MAX_PROBLEMS))


def test_allowances_for_gaps_negatives_and_empty_cells(tmp_path):
    text = "timestamp,x\n" + "\n".join(rows(4)[:2] + rows(4)[3:]).replace("01:30:00+09:00,1", "01:30:00+09:00,-2") \
        + "\n2024-06-01T02:00:00+09:00,\n"
    df = read_series_csv(csv(tmp_path, text), ["x"], allow_gaps=True, allow_negative=True, allow_empty=True)
    assert len(df) == 4 and df["x"].iloc[2] == -2.0 and np.isnan(df["x"].iloc[3])
