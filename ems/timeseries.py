"""Reading timestamped CSV files strictly: one set of rules for meter, history and input series.

Rules (each broken rule is a :class:`~ems.errors.DataError` naming the file, the row and the value;
nothing is guessed): a ``timestamp`` column in ISO 8601 *with* a UTC offset, interval-start
labelled; timestamps strictly increasing (no duplicates, sorted); the requested numeric columns;
optionally no gaps, a step that divides 30 minutes, and no negative values. Row numbers count the
header as row 1, as a spreadsheet shows them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from adapters.yamlsafe import InputFileError, open_regular
from ems.errors import DataError, Problem
from ems.timegrid import WINDOW

MAX_PROBLEMS = 20  # report at most this many rows per rule: enough to see the pattern
#: largest CSV read [bytes]: four years of 1-minute rows with a few columns
MAX_CSV_BYTES = 128 * 2**20
MAX_HEADER_BYTES = 64 * 1024
#: years a timestamp may be in (data, tariffs and calendars are of this era; pandas' own ends in 2262)
YEARS = (2000, 2099)


def _row(i: int) -> int:
    """Spreadsheet row number of data row ``i`` (0-based), the header being row 1."""
    return i + 2


def read_csv_raw(path: str | Path, key: str = "timestamp") -> pd.DataFrame:
    """Read a CSV as strings; DataError if it cannot be read or has no ``key`` column.

    Only a regular file of at most :data:`MAX_CSV_BYTES` is read (a FIFO, a device such as
    ``/dev/zero`` or a directory is refused at once, never read); a header naming a column twice
    and a row with more values than the header are errors, not silently dropped columns.
    """
    where = str(path)
    try:
        with open_regular(path, MAX_CSV_BYTES, "CSV file") as fh:
            head = fh.readline(MAX_HEADER_BYTES).decode("utf-8", "replace")
            fh.seek(0)
            # blank lines are kept (not skipped) so that row numbers in errors match the file's lines
            df = pd.read_csv(fh, dtype=str, keep_default_na=False, skipinitialspace=True, skip_blank_lines=False)
    except InputFileError as exc:
        raise DataError(Problem(where, None, "", None, exc.message, has_value=False)) from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(Problem(where, None, "", None, f"cannot read as CSV: {str(exc)[:200]}", has_value=False)) from None
    names = [c.strip() for c in next(csv.reader([head]), [])]
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise DataError(Problem(where, 1, ",".join(twice), names, "column named twice in the header"))
    if not isinstance(df.index, pd.RangeIndex):   # pandas took the extra leading values as an index
        raise DataError(Problem(where, 2, "", None, f"more values than the header's {len(names)} column(s)",
                                has_value=False))
    df.columns = [c.strip() for c in df.columns]
    if key not in df.columns:
        raise DataError(Problem(where, 1, key, list(df.columns), f"no {key!r} column in the header"))
    blank = (df == "").all(axis=1).to_numpy()
    n = len(df) - int(np.argmin(blank[::-1])) if blank.size and not blank.all() else 0
    if blank[:n].any():
        raise DataError([Problem(where, _row(int(i)), "", None, "blank line inside the data; remove it", has_value=False)
                         for i in np.flatnonzero(blank[:n])[:MAX_PROBLEMS]])
    return df.iloc[:n]  # trailing blank lines are dropped


def parse_timestamps(raw: pd.Series, where: str) -> pd.DatetimeIndex:
    """Parse ISO 8601 timestamps that carry an offset; return them in UTC.

    Every row without an offset, or unparseable, is named in the error.
    """
    problems = []
    has_offset = raw.str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$", regex=True)
    for i in np.flatnonzero(~has_offset.to_numpy())[:MAX_PROBLEMS]:
        problems.append(Problem(where, _row(int(i)), "timestamp", raw.iat[i],
                                "timestamp needs a UTC offset, e.g. 2024-07-01T13:00:00+09:00"))
    if problems:
        raise DataError(problems)
    parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        raise DataError([Problem(where, _row(int(i)), "timestamp", raw.iat[i], "not an ISO 8601 timestamp")
                         for i in bad[:MAX_PROBLEMS]])
    years = parsed.dt.year.to_numpy()
    far = np.flatnonzero((years < YEARS[0]) | (years > YEARS[1]))
    if far.size:
        raise DataError([Problem(where, _row(int(i)), "timestamp", raw.iat[i], f"must be in the years {YEARS[0]}-{YEARS[1]}")
                         for i in far[:MAX_PROBLEMS]])
    return pd.DatetimeIndex(parsed).as_unit("ns")


def check_order(index: pd.DatetimeIndex, raw: pd.Series, where: str) -> None:
    """Timestamps must strictly increase: duplicates and unsorted rows are errors."""
    d = np.diff(index.as_unit("ns").asi8)  # in ns whatever the resolution (pandas 3 parses to us)
    problems = []
    for i in np.flatnonzero(d == 0)[:MAX_PROBLEMS]:
        problems.append(Problem(where, _row(int(i) + 1), "timestamp", raw.iat[i + 1],
                                f"duplicate of row {_row(int(i))}"))
    for i in np.flatnonzero(d < 0)[:MAX_PROBLEMS]:
        problems.append(Problem(where, _row(int(i) + 1), "timestamp", raw.iat[i + 1],
                                f"earlier than row {_row(int(i))} ({raw.iat[i]}); rows must be sorted by time"))
    if problems:
        raise DataError(problems)


def infer_step(index: pd.DatetimeIndex, raw: pd.Series, where: str, require_divides_30: bool = True) -> pd.Timedelta:
    """The file's step (the smallest interval between rows); it must divide 30 minutes if asked."""
    if len(index) < 2:
        raise DataError(Problem(where, None, "timestamp", len(index), "need at least two rows to know the step"))
    d = np.diff(index.as_unit("ns").asi8)  # in ns whatever the resolution (pandas 3 parses to us)
    step = pd.Timedelta(int(d.min()), "ns")
    if step % pd.Timedelta(minutes=1) != pd.Timedelta(0):
        i = int(np.argmin(d))
        raise DataError(Problem(where, _row(i + 1), "timestamp", raw.iat[i + 1],
                                f"step of {step} is not a whole number of minutes"))
    if require_divides_30 and (step > WINDOW or WINDOW % step != pd.Timedelta(0)):
        i = int(np.argmin(d))
        raise DataError(Problem(where, _row(i + 1), "timestamp", raw.iat[i + 1],
                                f"step of {step} does not divide 30 minutes; allowed steps: 1, 5, 10, 15 or 30 minutes..."))
    return step


def check_gaps(index: pd.DatetimeIndex, raw: pd.Series, step: pd.Timedelta, where: str) -> None:
    """Every interval must follow the previous one by exactly ``step``."""
    d = np.diff(index.as_unit("ns").asi8)  # in ns whatever the resolution (pandas 3 parses to us)
    bad = np.flatnonzero(d != step.value)
    if bad.size:
        raise DataError([Problem(where, _row(int(i) + 1), "timestamp", raw.iat[i + 1],
                                 f"gap or irregular step after row {_row(int(i))} ({raw.iat[i]}); expected every {step}")
                         for i in bad[:MAX_PROBLEMS]])


#: physical range of a column by the unit its name ends with: kW (100 MW, far beyond any site a V2H/V2B
#: controller serves), W/m^2 (irradiance: at most about 1,400, cloud enhancement included), degC, m/s, h
UNIT_BOUNDS = {"kw": (-1e5, 1e5), "wm2": (-1e3, 2e3), "c": (-100.0, 100.0), "ms": (-150.0, 150.0), "h": (-1e5, 1e5)}


def bounds(column: str) -> tuple[float, float]:
    """The physical range of a column from its unit suffix (``import_kw``: kW); unbounded otherwise."""
    unit = column.rsplit("_", 1)[-1].lower()
    return UNIT_BOUNDS.get(unit, (-np.inf, np.inf))


def to_numbers(df: pd.DataFrame, column: str, where: str, allow_negative: bool, allow_empty: bool) -> np.ndarray:
    """Column as floats; non-numeric (and, unless allowed, empty or negative) cells are errors."""
    text = df[column].str.strip()
    empty = (text == "").to_numpy()
    values = pd.to_numeric(text.where(~empty, None), errors="coerce").to_numpy(dtype=float)
    problems = []
    bad_text = np.isnan(values) & ~empty
    for i in np.flatnonzero(bad_text)[:MAX_PROBLEMS]:
        problems.append(Problem(where, _row(int(i)), column, df[column].iat[i], "not a number"))
    if not allow_empty:
        for i in np.flatnonzero(empty)[:MAX_PROBLEMS]:
            problems.append(Problem(where, _row(int(i)), column, "", "empty cell; every row needs a value"))
    inf = np.isinf(values)
    for i in np.flatnonzero(inf)[:MAX_PROBLEMS]:
        problems.append(Problem(where, _row(int(i)), column, df[column].iat[i], "not a finite number"))
    if not allow_negative:
        for i in np.flatnonzero(values < 0)[:MAX_PROBLEMS]:
            problems.append(Problem(where, _row(int(i)), column, float(values[i]), "must not be negative (kW)"))
    lo, hi = bounds(column)
    for i in np.flatnonzero((values < lo) | (values > hi))[:MAX_PROBLEMS]:
        problems.append(Problem(where, _row(int(i)), column, df[column].iat[i],
                                f"outside {lo:,g}..{hi:,g}, the physical range of this unit (a unit mix-up, W for kW?)"))
    if problems:
        raise DataError(problems)
    return values


def read_series_csv(
    path: str | Path,
    columns: list[str],
    optional: list[str] | None = None,
    *,
    allow_gaps: bool = False,
    allow_negative: bool = False,
    allow_empty: bool = False,
    require_divides_30: bool = True,
) -> pd.DataFrame:
    """Read a timestamped CSV under the module's rules; return floats indexed by UTC time.

    ``columns`` must exist; ``optional`` columns are read when present. The returned frame has
    ``attrs["step"]`` (a Timedelta) and ``attrs["source"]`` (the path).
    """
    where = str(path)
    df = read_csv_raw(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(Problem(where, 1, ",".join(missing), list(df.columns),
                                f"missing column(s) {missing}; the header must name timestamp and {columns}"))
    if df.empty:
        raise DataError(Problem(where, None, "", None, "no data rows", has_value=False))
    raw = df["timestamp"].str.strip()
    index = parse_timestamps(raw, where)
    check_order(index, raw, where)
    step = infer_step(index, raw, where, require_divides_30)
    if not allow_gaps:
        check_gaps(index, raw, step, where)
    wanted = columns + [c for c in (optional or []) if c in df.columns]
    out = pd.DataFrame({c: to_numbers(df, c, where, allow_negative, allow_empty) for c in wanted}, index=index)
    out.index.name = "timestamp"
    out.attrs["step"] = step
    out.attrs["source"] = where
    return out
