"""Bad-data rules for a site's measured history (load and PV), each stated and counted.

The history arrives as a UTC-indexed frame (from :func:`read_history_csv` or the daemon's store).
Structural faults are **errors naming the rows** (:class:`~ems.errors.DataError`):

- timestamps without a UTC offset / a naive index (CSV: :mod:`ems.timeseries` names the rows);
- duplicated or unsorted timestamps -- this is how a daylight-saving jump shows in foreign data
  whose clock was written without the right offset (02:00-03:00 twice at the same offset); data
  written *with* offsets crosses DST cleanly because everything is converted to UTC;
- timestamps off the regular grid of the file's step, negative kW, non-numbers.

Value faults are **turned into missing values** (NaN inside, never in a forecast), causally, so a
backtest that cleans once gives each origin exactly what it would have seen live:

- *gaps*: missing rows and empty cells stay missing; statistics skip them;
- *zero load*: a building load of exactly 0.000 kW is a missing reading (buildings always have a
  standby load; the shipped household shows isolated zeros next to outages);
- *spikes*: a reading above ``SPIKE_FACTOR`` times the 99th percentile of the previous
  ``SPIKE_WINDOW`` (28 days), or above the site's physical limit (load: grid import limit + PV AC +
  all chargers' discharge; PV: ``PV_MAX_OVER_KWP`` x kWp);
- *stuck sensor*: from the ``STUCK_HOURS``-th hour of identical readings on (a real 30-min mean
  never repeats to the watt for 4 h; PV zeros are exempt, they are night or snow);
- *night-time PV recorded as missing*: an empty PV reading with the sun below the horizon at the
  interval's midpoint is 0 kW. Empty daytime PV stays missing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ems.errors import DataError, Problem
from ems.timeseries import read_series_csv

SPIKE_FACTOR = 4.0  # the household's largest reading is 2.3x its trailing 28-day p99: 4x is never real
SPIKE_WINDOW = "28D"
SPIKE_MIN_POINTS = 96  # two days at 30 min before the statistical spike rule is trusted
STUCK_HOURS = 4.0
PV_MAX_OVER_KWP = 1.2  # 30-min PV above 1.2 x kWp is a glitch (cloud enhancement is brief)
MAX_EXAMPLES = 5


@dataclass
class History:
    """Cleaned measurements on a regular UTC grid; NaN marks a missing value [kW]."""

    index: pd.DatetimeIndex
    step: pd.Timedelta
    load_kw: np.ndarray
    pv_kw: np.ndarray | None
    report: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def position(self, when: pd.Timestamp) -> int:
        """Number of grid rows strictly before ``when`` (rows ``[:position]`` are the past)."""
        return int(np.searchsorted(self._ns, pd.Timestamp(when).as_unit("ns").value, side="left"))

    @functools.cached_property
    def _ns(self) -> np.ndarray:
        """Epoch nanoseconds of ``index`` (a forecaster asks for positions at every origin)."""
        return self.index.as_unit("ns").asi8


def read_history_csv(path: str | Path, load_column: str = "load_kw") -> pd.DataFrame:
    """A history CSV (``timestamp`` with offset, ``load_column``, optional ``pv_kw``) as a UTC frame
    with columns ``load_kw`` and, when present, ``pv_kw``. Empty cells are allowed (gaps)."""
    df = read_series_csv(path, [load_column], ["pv_kw"], allow_gaps=True, allow_empty=True)
    return df.rename(columns={load_column: "load_kw"})


def _rows(where: str, index: pd.Index, positions: np.ndarray, column: str, message: str) -> list[Problem]:
    """Problems naming data rows (spreadsheet numbering: header is row 1)."""
    return [Problem(where, int(i) + 2, column, str(index[i]), message) for i in positions[:20]]


def check_frame(history: pd.DataFrame, where: str = "history") -> None:
    """Structural rules of a history frame: aware sorted unique index, load_kw column, no negatives."""
    if "load_kw" not in history.columns:
        raise DataError(Problem(where, 1, "load_kw", list(history.columns), "history needs a load_kw column [kW]"))
    if not isinstance(history.index, pd.DatetimeIndex) or history.index.tz is None:
        raise DataError(Problem(where, 2, "timestamp", str(history.index[:1].tolist()),
                                "timestamps need a time zone or UTC offset (read CSVs with ems.timeseries)"))
    ns = history.index.as_unit("ns").asi8
    d = np.diff(ns)
    problems = _rows(where, history.index, np.flatnonzero(d == 0) + 1, "timestamp",
                     "duplicate timestamp (a daylight-saving hour written twice with the same offset?)")
    problems += _rows(where, history.index, np.flatnonzero(d < 0) + 1, "timestamp", "earlier than the previous row")
    for col in ("load_kw", "pv_kw"):
        if col in history:
            problems += _rows(where, history.index, np.flatnonzero((history[col] < 0).to_numpy()), col,
                              "negative power; load and PV are >= 0 kW")
    if problems:
        raise DataError(problems)


def infer_step(history: pd.DataFrame) -> pd.Timedelta:
    """The history's step: ``attrs["step"]`` when a reader set it, else the smallest interval."""
    step = history.attrs.get("step")
    if step is None:
        d = np.diff(history.index.as_unit("ns").asi8)
        step = pd.Timedelta(int(d.min()), "ns") if len(d) else pd.Timedelta(0)
    if step <= pd.Timedelta(0) or pd.Timedelta(days=1) % step != pd.Timedelta(0):
        raise DataError(Problem("history", None, "timestamp", str(step), "the step must divide a day (e.g. 15 or 30 minutes)"))
    return pd.Timedelta(step)


def regularize(history: pd.DataFrame, step: pd.Timedelta, where: str = "history") -> pd.DataFrame:
    """Reindex onto the full grid ``first, first+step, ...``; rows off the grid are errors."""
    ns = history.index.as_unit("ns").asi8
    off = (ns - ns[0]) % step.value
    bad = np.flatnonzero(off != 0)
    if bad.size:
        raise DataError(_rows(where, history.index, bad, "timestamp", f"not on the {step} grid of the first row"))
    grid = pd.date_range(history.index[0], history.index[-1], freq=step).tz_convert("UTC")
    out = history.copy()
    out.index = out.index.tz_convert("UTC")
    return out.reindex(grid)


def stuck_mask(values: np.ndarray, n: int, exempt_zero: bool) -> np.ndarray:
    """True from the ``n``-th consecutive identical reading on (causal: uses only earlier rows)."""
    same = np.r_[False, values[1:] == values[:-1]]
    run = np.zeros(len(values), dtype=int)
    count = 0
    for i, s in enumerate(same):  # one pass; run[i] = length of the identical run ending at i
        count = count + 1 if s else 1
        run[i] = count
    mask = run >= n
    if exempt_zero:
        mask &= values != 0
    return mask


def spike_mask(series: pd.Series, physical_max_kw: float | None) -> np.ndarray:
    """True where a reading exceeds the physical limit or SPIKE_FACTOR x the trailing 28-day p99."""
    p99 = series.rolling(SPIKE_WINDOW, closed="left", min_periods=SPIKE_MIN_POINTS).quantile(0.99).to_numpy()
    values = series.to_numpy()
    with np.errstate(invalid="ignore"):
        mask = values > SPIKE_FACTOR * np.where(p99 > 0, p99, np.inf)
        if physical_max_kw is not None:
            mask |= values > physical_max_kw
    return mask


def _flag(values: np.ndarray, mask: np.ndarray, index: pd.DatetimeIndex, rule: str, report: dict[str, int],
          examples: dict[str, list[str]], column: str) -> np.ndarray:
    """Set the masked readings to NaN; count them and keep a few timestamps for the log."""
    mask = mask & ~np.isnan(values)
    report[rule] = int(mask.sum())
    if mask.any():
        examples[f"{column}.{rule}"] = [str(t) for t in index[np.flatnonzero(mask)[:MAX_EXAMPLES]]]
    return np.where(mask, np.nan, values)


def clean_history(history: pd.DataFrame, *, is_night: Callable[[pd.DatetimeIndex], np.ndarray] | None = None,
                  max_load_kw: float | None = None, pv_kwp: float | None = None, where: str = "history") -> History:
    """Apply the module's rules and return the cleaned history on its regular grid.

    ``is_night(grid)`` tells, per grid row, whether the sun is below the horizon at the interval's
    midpoint (used to turn night-time empty PV into 0 kW); ``max_load_kw`` and ``pv_kwp`` set the
    physical spike limits.
    """
    check_frame(history, where)
    step = infer_step(history)
    frame = regularize(history, step, where)
    index = frame.index
    n_stuck = max(2, int(round(STUCK_HOURS * 3600 / step.total_seconds())))
    report: dict[str, dict[str, int]] = {}
    examples: dict[str, list[str]] = {}

    load = frame["load_kw"].to_numpy(dtype=float)
    rep: dict[str, int] = {"missing": int(np.isnan(load).sum())}
    load = _flag(load, load == 0, index, "zero_as_missing", rep, examples, "load_kw")
    load = _flag(load, spike_mask(pd.Series(load, index=index), max_load_kw), index, "spike", rep, examples, "load_kw")
    load = _flag(load, stuck_mask(load, n_stuck, exempt_zero=False), index, "stuck", rep, examples, "load_kw")
    report["load_kw"] = rep

    pv = None
    if "pv_kw" in frame and frame["pv_kw"].notna().any():
        pv = frame["pv_kw"].to_numpy(dtype=float)
        rep = {}
        if is_night is not None:
            fill = np.isnan(pv) & is_night(index)
            rep["night_missing_as_zero"] = int(fill.sum())
            pv = np.where(fill, 0.0, pv)
        rep["missing_daytime"] = int(np.isnan(pv).sum())
        limit = PV_MAX_OVER_KWP * pv_kwp if pv_kwp else None
        pv = _flag(pv, spike_mask(pd.Series(pv, index=index), limit), index, "spike", rep, examples, "pv_kw")
        pv = _flag(pv, stuck_mask(pv, n_stuck, exempt_zero=True), index, "stuck", rep, examples, "pv_kw")
        report["pv_kw"] = rep
    return History(index, step, load, pv, report, examples)
