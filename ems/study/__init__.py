"""Studies: a span of a site's own data simulated under tariffs x control strategies.

``run_study`` is the entry point behind ``ems study``; :mod:`ems.study.site` holds the simulated
site, :mod:`ems.study.strategies` the controllers (none, rule, mpc, oracle), :mod:`ems.study.outage`
the outage-survival figures, :mod:`ems.study.run` the execution (in-process, local processes, Dask)
and :mod:`ems.study.summary` summary.json. The report (HTML + PNG) is :mod:`ems.report`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from ems.study.run import STRATEGIES, Scenario, ScenarioResult, execute, run_scenario, scenarios
from ems.study.summary import summarise, write_outputs

__all__ = ["STRATEGIES", "Scenario", "ScenarioResult", "execute", "run_scenario", "run_study", "scenarios",
           "summarise", "write_outputs"]


def run_study(sites: Sequence[tuple[str, str]], tariffs: Sequence[str] = (), strategies: Sequence[str] = STRATEGIES,
              out: str | Path | None = None, workers: int = 1, scheduler: str | object | None = None,
              seed: int | None = None, progress: bool = False, report: bool = True,
              fill_gaps: bool = False, weather_forecast: str | None = None, weather_seed: int | None = None,
              weather_actual: str | None = None) -> tuple[dict, list[ScenarioResult]]:
    """Simulate every (site config, data CSV) x tariff x strategy; write the outputs to ``out``.
    ``weather_forecast``: what ``mpc`` is told of the weather (None, ``noisy`` with ``weather_seed``,
    or a recorded forecast CSV; :mod:`ems.study.weather`).

    Returns (summary dict as written to summary.json, the scenario results).
    """
    t0 = time.perf_counter()
    items = scenarios(list(sites), list(tariffs), list(strategies), seed, fill_gaps, weather_forecast, weather_seed,
                      weather_actual)
    results = execute(items, workers, scheduler, progress)
    meta = {"sites": [{"config": str(c), "data": str(d)} for c, d in sites], "tariffs": [str(t) for t in tariffs],
            "strategies": list(strategies), "seed": seed, "stochastic": seed is not None, "fill_gaps": fill_gaps,
            "weather_forecast": None if weather_forecast is None else str(weather_forecast),
            "weather_seed": weather_seed if weather_forecast is not None else None,
            "weather_actual": None if weather_actual is None else str(weather_actual),
            "workers": workers, "scheduler": None if scheduler is None else str(scheduler),
            "wall_seconds": time.perf_counter() - t0}
    summary = summarise(results, meta)
    if out is not None:
        out = Path(out)
        write_outputs(results, summary, out)
        if report:
            from ems.report import write_report
            write_report(results, summary, out)
    return summary, results
