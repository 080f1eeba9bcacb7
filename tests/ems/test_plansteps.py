"""The planner's step table (ems.plansteps) and the lazy result tables: the same numbers as a plan
built on its own, at a fraction of the cost."""

from __future__ import annotations

import pickle
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ems.config import load_site
from ems.errors import DataError
from ems.planning import Planner, PlanResult, SiteState, build_problem, on_grid, plan_index, step_table, window_starts
from ems.plansteps import CHUNK_DAYS, BoundaryLabels
from ems.tariff import load_tariff

TOKYO = "Asia/Tokyo"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def site(name: str, minutes: int, tariff: str | None = None):
    """An example site at ``minutes`` per step, with another tariff file if given."""
    cfg = load_site(CONFIGS / f"{name}.yaml")
    update = {"planner": cfg.planner.model_copy(update={"step_minutes": minutes})}
    if tariff:
        update["tariff"] = load_tariff(CONFIGS / "tariffs" / tariff)
    return cfg.model_copy(update=update)


def flat(start: str, days: int, minutes: int, kw: float) -> pd.Series:
    """A constant kW series from ``start`` (Tokyo time)."""
    idx = pd.date_range(pd.Timestamp(start, tz=TOKYO), periods=days * 1440 // minutes, freq=f"{minutes}min")
    return pd.Series(kw, index=idx)


def assert_same(a, b, path: str = "") -> None:
    """Field by field equality of dataclasses, arrays (NaN equal to NaN), sequences and numbers."""
    if is_dataclass(a):
        for f in fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, pd.Index):
        assert a.equals(b), path
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    elif isinstance(a, (tuple, list, BoundaryLabels)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.mark.parametrize("name,minutes,tariff", [("office-v2b", 30, None), ("office-v2b", 15, None),
                                                  ("home-v2h", 30, "low-voltage-blocks.yaml")])
def test_sliced_steps_are_the_tariffs_own_lookups(name, minutes, tariff):
    """Across rebuilds of the planner's table (a month end, a jump back in time), every slice holds
    the tariff's prices, months and windows of exactly the plan's steps."""
    cfg = site(name, minutes, tariff)
    planner, step = Planner(cfg), pd.Timedelta(minutes=minutes)
    t0 = pd.Timestamp("2024-05-29 06:00", tz=TOKYO)
    starts = [t0 + k * step for k in range(0, 3 * CHUNK_DAYS * 1440 // minutes, 37)] + [t0 - 3 * step]
    for start in starts:
        index = plan_index(cfg, start)
        steps = planner.steps.steps(index, step)
        price = cfg.tariff.adder_rate(index) if cfg.tariff.blocks else cfg.tariff.import_price(index)
        assert np.array_equal(steps.import_price, price)
        assert np.array_equal(steps.export_price, cfg.tariff.export_rate(index))
        assert list(steps.month) == list(cfg.tariff.months(index))
        starts_of_windows = window_starts(index, cfg.tariff)
        assert np.array_equal(steps.window_ns, starts_of_windows.as_unit("ns").asi8)
        assert list(steps.window_month) == list(cfg.tariff.months(starts_of_windows))
        assert_same(steps, step_table(cfg, index))
    assert 3 <= planner.steps.builds < len(starts)


@pytest.mark.parametrize("minutes", [30, 15])
def test_problem_from_the_planners_steps_equals_one_built_alone(minutes):
    """build_problem with the planner's slice gives the very problem it builds from the plan alone."""
    cfg = site("office-v2b", minutes)
    planner, step = Planner(cfg), pd.Timedelta(minutes=minutes)
    pv, load = flat("2024-06-25", 20, minutes, 5.0), flat("2024-06-25", 20, minutes, 30.0)
    uplift = flat("2024-06-25", 20, minutes, 2.0)
    state = SiteState({"leaf": 40.0, "bz4x": 45.0, "leaf40": 25.0}, month_peak_kw=30.0, peak_history_kw={"2024-05": 45.0})
    for k in range(0, 600, 29):
        start = pd.Timestamp("2024-06-27 05:00", tz=TOKYO) + k * step
        steps = planner.steps.steps(plan_index(cfg, start), step)
        kept = build_problem(cfg, start, pv, load, state, peak_uplift_kw=uplift, steps=steps)
        alone = build_problem(cfg, start, pv, load, state, peak_uplift_kw=uplift)
        assert_same(kept, alone)


def test_boundary_labels_name_each_boundary_in_the_plans_format():
    """Clock times within one date and 24 h, weekday and clock time otherwise; T+1 of them."""
    step = pd.Timedelta(minutes=30)
    morning = pd.date_range(pd.Timestamp("2024-06-03 06:00", tz=TOKYO), periods=12, freq=step)
    labels = BoundaryLabels(morning, step)
    assert len(labels) == 13 and labels[0] == "06:00" and labels[12] == labels[-1] == "12:00"
    assert labels[1:3] == ("06:30", "07:00")
    two_days = pd.date_range(pd.Timestamp("2024-06-03 00:00", tz=TOKYO), periods=96, freq=step)
    assert list(BoundaryLabels(two_days, step))[::48] == ["Mon 00:00", "Tue 00:00", "Wed 00:00"]
    whole_day = pd.date_range(pd.Timestamp("2024-06-03 00:00", tz=TOKYO), periods=48, freq=step)
    assert BoundaryLabels(whole_day, step)[48] == "Tue 00:00"   # the end is the next date
    with pytest.raises(IndexError):
        labels[13]


def test_result_tables_are_built_when_read_and_agree_with_the_first_step():
    """step_flows(t) reads the schedule's charger columns and the assignment without building them;
    a pickled result carries its tables; a stored result (tables only) answers from them."""
    cfg = site("office-v2b", 30)
    pv, load = flat("2024-06-03", 3, 30, 5.0), flat("2024-06-03", 3, 30, 35.0)
    res = Planner(cfg).plan(pd.Timestamp("2024-06-03 09:00", tz=TOKYO), pv, load,   # the cars plugged in ...
                            SiteState({"leaf": 4.0, "bz4x": 5.0, "leaf40": 4.0}))   # ... below their minimum
    flows = [res.step_flows(t) for t in range(len(res.schedule))]
    stored = PlanResult(res.schedule, res.outcome)
    assert stored.assignment is None
    for t, by_vehicle in enumerate(flows):
        row = res.assignment.iloc[t]
        assert {vid for vid, cid in row.items() if cid} == set(by_vehicle)
        for vid, (cid, ch, dis) in by_vehicle.items():
            assert row[vid] == cid
            assert (ch, dis) == (res.schedule[f"{cid}_charge_kw"].iloc[t], res.schedule[f"{cid}_discharge_kw"].iloc[t])
    assert any(flows)
    again = pickle.loads(pickle.dumps(res))
    pd.testing.assert_frame_equal(again.schedule, res.schedule)
    pd.testing.assert_frame_equal(again.assignment, res.assignment)
    with pytest.raises(ValueError):
        PlanResult(None, res.outcome)


def test_an_empty_series_is_a_data_error_naming_the_steps():
    """No value at all on the planning steps is the same error as a gap, not an IndexError."""
    index = pd.date_range(pd.Timestamp("2024-06-03 06:00", tz=TOKYO), periods=4, freq="30min")
    with pytest.raises(DataError, match="no value for this and 3 more"):
        on_grid(pd.Series([], index=pd.DatetimeIndex([], tz=TOKYO), dtype=float), index, "load_kw")
