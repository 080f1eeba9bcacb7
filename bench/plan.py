"""Planner speed: prints one JSON object (medians of repeated re-plans; no pass/fail).

- home (configs/home-v2h.yaml, one unit) on the shipped household year (ems/data), and office
  (configs/office-v2b.yaml, three units) on configs/data/office-2024-30min.csv (demandlib G1 load,
  pvlib PV): 48 h at 30 and at 15 minutes, a receding horizon moved one step per re-plan with a
  persistent Planner (default interface: the HiGHS model kept and updated in place, its LP
  hot-started); build (problem data + model build or in-place update) and solve separately, their
  total (median and p90), the whole ``Planner.plan`` call (``wall``) and its split (problem data,
  model, solve, rest: verification and costs), and ``tables``: building the result's DataFrames
  when first read (after the call: the daemon reads them, a study does not); the same with a fresh model
  built for every re-plan (``fresh_build``) and the total through the persistent pyomo
  appsi_highs model beside it;
- office 48 h/30 min through each interface: highs_direct (the default: HiGHS matrix built with
  numpy, no pyomo) persistent and fresh, both pyomo interfaces (appsi_highs, contrib 'highs')
  persistent and without persistence;
- the ratio of the planner's build+solve to the bare matrix model's build and LP solve alone (no
  problem data, no result checks);
- one year of perfect foresight for the office (12 monthly problems chained through SOC and the
  ratchet): wall time and the process's peak resident memory.

Usage: .venv/bin/python bench/plan.py [--replans N] [--skip-year]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ems.commands.demo import fill_from_other_days  # noqa: E402
from ems.config import load_site  # noqa: E402
from ems.planning import Planner, SiteState, build_problem, plan_span, solve_options  # noqa: E402
from ems.timeseries import read_series_csv  # noqa: E402
from models import direct  # noqa: E402
from models.requirements import requirements  # noqa: E402


def household() -> pd.DataFrame:
    """The shipped household year on Tokyo clock time, load gaps filled from other days, PV gaps 0."""
    raw = read_series_csv(ROOT / "ems/data/household-2024-30min.csv", ["load_kw", "pv_kw"], allow_empty=True)
    raw.index = raw.index.tz_convert(None).tz_localize("Asia/Tokyo")
    load, _, _ = fill_from_other_days(raw["load_kw"].rename("household"))
    return pd.DataFrame({"load_kw": load, "pv_kw": raw["pv_kw"].fillna(0.0)})


def office() -> pd.DataFrame:
    return read_series_csv(ROOT / "configs/data/office-2024-30min.csv", ["load_kw", "pv_kw"])


def with_step(cfg, minutes: int):
    return cfg.model_copy(update={"planner": cfg.planner.model_copy(update={"step_minutes": minutes})})


def _med(xs: list[float]) -> float:
    return round(statistics.median(xs), 4)


def _p90(xs: list[float]) -> float:
    return round(statistics.quantiles(xs, n=10, method="inclusive")[-1], 4)


class _Timed:
    """A Planner whose session reports the model build/update seconds of each plan."""

    def __init__(self, cfg, **opts):
        self.planner = Planner(cfg, solve_options(cfg, **opts))
        self.model_s = 0.0
        solve = self.planner.session.solve

        def timed(*args, **kwargs):
            sol = solve(*args, **kwargs)
            self.model_s += sol.build_seconds
            return sol

        self.planner.session.solve = timed
        self.rows: list[dict] = []
        self.methods: set[str] = set()

    def plan(self, at: pd.Timestamp, data: pd.DataFrame, state: SiteState, keep: bool) -> None:
        self.model_s = 0.0
        w = time.perf_counter()
        res = self.planner.plan(at, data["pv_kw"], data["load_kw"], state)
        wall = time.perf_counter() - w
        w = time.perf_counter()
        res.schedule   # the tables, built on first access
        tables = time.perf_counter() - w
        summ = res.summary
        b, s = summ["build_seconds"], summ["solve_seconds"]
        if keep:
            self.rows.append({"build": b, "solve": s, "total": b + s, "wall": wall, "problem": b - self.model_s,
                              "model": self.model_s, "rest": wall - b - s, "tables": tables})
        self.methods.add(summ["method"])

    def figures(self) -> dict:
        col = {k: [r[k] for r in self.rows] for k in self.rows[0]}
        session = self.planner.session
        return {"build_s": _med(col["build"]), "solve_s": _med(col["solve"]), "total_s": _med(col["total"]),
                "p90_total_s": _p90(col["total"]), "wall_s": _med(col["wall"]), "p90_wall_s": _p90(col["wall"]),
                "split_s": {k: _med(col[k]) for k in ("problem", "model", "solve", "rest", "tables")},
                "methods": sorted(self.methods), "rebuilds": session.rebuilds, "updates": session.updates}


def compare(cfg, data: pd.DataFrame, start: str, n: int, state: SiteState, variants: dict[str, dict]) -> dict[str, dict]:
    """Seconds per re-plan over ``n`` consecutive re-plans (the first, which builds, excluded), for
    each variant of the solve options (a Planner each, their re-plans interleaved so that load on
    the machine hits all alike): medians of build (problem data + model build/update) and solve,
    their total (median and p90), and the split of the whole ``Planner.plan`` call (``wall``):
    problem data and requirements, model build or in-place update, solve, and the rest
    (verification, costs); then the result's DataFrames (``tables``), built when first read."""
    planners = {name: _Timed(cfg, **opts) for name, opts in variants.items()}
    t0 = pd.Timestamp(start, tz="Asia/Tokyo")
    step = pd.Timedelta(minutes=cfg.planner.step_minutes)
    for i in range(n + 1):
        for p in planners.values():
            p.plan(t0 + i * step, data, state, keep=i > 0)
    return {name: p.figures() for name, p in planners.items()}


def replans(cfg, data: pd.DataFrame, start: str, n: int, state: SiteState, **opts) -> dict:
    """:func:`compare` of one variant."""
    return compare(cfg, data, start, n, state, {"one": opts})["one"]


def direct_ratio(cfg, data: pd.DataFrame, start: str, n: int, state: SiteState, ours_total: float) -> dict:
    """Median direct highspy build+solve of the same problems (without the problem-data step)."""
    t0 = pd.Timestamp(start, tz="Asia/Tokyo")
    step = pd.Timedelta(minutes=cfg.planner.step_minutes)
    times = []
    for i in range(1, n + 1):
        p = build_problem(cfg, t0 + i * step, data["pv_kw"], data["load_kw"], state)
        r = direct.solve(p, requirements(p), relax=True)
        times.append(r.build_seconds + r.solve_seconds)
    d = statistics.median(times)
    return {"direct_highspy_s": round(d, 4), "ratio_ours_to_direct": round(ours_total / d, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--replans", type=int, default=20)
    ap.add_argument("--skip-year", action="store_true")
    args = ap.parse_args()
    n = args.replans
    home_cfg, office_cfg = load_site(ROOT / "configs/home-v2h.yaml"), load_site(ROOT / "configs/office-v2b.yaml")
    home_data, office_data = household(), office()
    home_state = SiteState({"leaf": 35.0})
    office_state = SiteState({"leaf": 40.0, "bz4x": 45.0, "leaf40": 25.0}, month_peak_kw=30.0,
                             peak_history_kw={"2024-05": 45.0})
    cases = {
        "home": (home_cfg, home_data, "2024-06-03 17:00", home_state),
        "office": (office_cfg, office_data, "2024-06-03 06:00", office_state),
    }
    out: dict = {"replans": n, "note": "seconds per re-plan, medians unless p90; build = problem data + model "
                 "build/update; wall = the whole Planner.plan call; fresh_build: a new model for every re-plan"}
    for name, (cfg, data, start, state) in cases.items():
        for minutes in (30, 15):
            c = with_step(cfg, minutes)
            key = f"{name}_48h_{minutes}min"
            both = compare(c, data, start, n, state, {"persistent": {}, "fresh": {"persistent": False}})
            out[key] = both["persistent"]
            out[key]["fresh_build"] = {k: both["fresh"][k] for k in ("total_s", "p90_total_s", "wall_s", "p90_wall_s",
                                                                     "split_s", "methods")}
            out[key]["appsi_highs_total_s"] = replans(c, data, start, n, state, interface="appsi_highs")["total_s"]
            out[key].update(direct_ratio(c, data, start, min(n, 10), state, out[key]["total_s"]))
    cfg, data, start, state = cases["office"]
    out["office_48h_30min_interfaces"] = {
        "highs_direct": replans(cfg, data, start, n, state, interface="highs_direct"),
        "highs_direct_fresh_build": replans(cfg, data, start, n, state, interface="highs_direct", persistent=False),
        "appsi_highs_persistent": replans(cfg, data, start, n, state, interface="appsi_highs"),
        "contrib_highs_persistent": replans(cfg, data, start, n, state, interface="highs"),
        "appsi_highs_fresh_build": replans(cfg, data, start, n, state, interface="appsi_highs", persistent=False),
        "contrib_highs_fresh_build": replans(cfg, data, start, n, state, interface="highs", persistent=False),
    }
    if not args.skip_year:
        t = time.perf_counter()
        res = plan_span(office_cfg, office_data["pv_kw"], office_data["load_kw"],
                        SiteState({"leaf": 40.0, "bz4x": 45.0, "leaf40": 25.0}))
        out["office_year_perfect_foresight"] = {
            "wall_s": round(time.perf_counter() - t, 2), "build_s": round(res.summary["build_seconds"], 2),
            "solve_s": round(res.summary["solve_seconds"], 2), "months": res.summary["months"],
            "methods": res.summary["method"], "fallback": res.summary["fallback"],
            "bill_cost_jpy": round(res.summary["bill_cost"]), "peak_kw": round(res.summary["peak_kw"], 2),
        }
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
