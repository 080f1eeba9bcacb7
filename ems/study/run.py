"""Running a study: scenarios (site x tariff x strategy), executed in-process, in local processes
or on a Dask cluster, then summarised.

Every scenario is computed independently from its paths and seed (a fresh Planner each), so the
results do not depend on where or in which order they run.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ems.billing import compute_bill
from ems.config import SiteConfig, load_site
from ems.errors import ConfigError, Problem
from ems.planning import window_starts
from ems.study.outage import MAX_HOURS, survival_hours, survival_summary
from ems.study.site import SiteSim, Span, initial_soc_kwh, make_fleet, read_span, reserve_need_kwh
from ems.study.strategies import STRATEGIES, Mpc, Oracle, controller
from ems.tariff import load_tariff
from ems.timegrid import WINDOW_H


@dataclass(frozen=True)
class Scenario:
    """One simulation: a site config and its data, a tariff (None: the config's own), a strategy,
    the seed of drawn vehicle stays (None: the configured windows), whether to fill data gaps, and
    the weather forecast ``mpc`` is given (None: none; ``noisy`` with ``weather_seed``; or a recorded
    forecast CSV; ``weather_actual``: the actual weather CSV, see :mod:`ems.study.weather`)."""

    config: str
    data: str
    tariff: str | None
    strategy: str
    seed: int | None = None
    fill_gaps: bool = False
    weather_forecast: str | None = None
    weather_seed: int | None = None
    weather_actual: str | None = None

    @property
    def key(self) -> str:
        """File-name-safe label ``site--tariff--strategy``."""
        return f"{site_label(self.config)}--{tariff_label(self.tariff)}--{self.strategy}"


def site_label(config: str) -> str:
    """A site's label: its config file's stem."""
    return Path(config).stem


def tariff_label(tariff: str | None) -> str:
    """A tariff's label: its file's stem, or ``config`` for the site's own tariff."""
    return "config" if tariff is None else Path(tariff).stem


@dataclass
class ScenarioResult:
    """A simulated span: the metered series, the cars' flows and SOC, the bill and the findings."""

    scenario: Scenario
    index: pd.DatetimeIndex
    vehicles: tuple[str, ...]
    capacity_kwh: tuple[float, ...]
    load_kw: np.ndarray
    pv_kw: np.ndarray
    import_kw: np.ndarray
    export_kw: np.ndarray
    curtail_kw: np.ndarray
    charge_kw: np.ndarray
    discharge_kw: np.ndarray
    soc_kwh: np.ndarray
    bill: dict
    survival_hours: np.ndarray
    figures: dict = field(default_factory=dict)
    plugged: np.ndarray | None = None   # V x T: the car is plugged in for the whole step

    def meter(self) -> pd.DataFrame:
        """The simulated meter series (import_kw, export_kw) the bill is computed from."""
        return pd.DataFrame({"import_kw": self.import_kw, "export_kw": self.export_kw}, index=self.index)

    def frame(self) -> pd.DataFrame:
        """Every simulated series per step (SOC at the step start)."""
        cols = {"load_kw": self.load_kw, "pv_kw": self.pv_kw, "import_kw": self.import_kw,
                "export_kw": self.export_kw, "curtail_kw": self.curtail_kw}
        for v, vid in enumerate(self.vehicles):
            cols[f"{vid}_charge_kw"] = self.charge_kw[v]
            cols[f"{vid}_discharge_kw"] = self.discharge_kw[v]
            cols[f"{vid}_soc_kwh"] = self.soc_kwh[v, :-1]
        out = pd.DataFrame(cols, index=self.index)
        out.index.name = "timestamp"
        return out


@functools.lru_cache(maxsize=16)
def site_config(config: str, tariff: str | None) -> SiteConfig:
    """The site config with ``tariff`` (a tariff YAML) in place of its own."""
    cfg = load_site(config)
    if tariff is not None:
        cfg = cfg.model_copy(update={"tariff": load_tariff(tariff)})
    return cfg


@functools.lru_cache(maxsize=8)
def site_span(config: str, tariff: str | None, data: str, fill: bool = False) -> Span:
    """The data on the config's planning grid (cached per process)."""
    return read_span(site_config(config, tariff), data, fill)


def run_scenario(sc: Scenario, progress: Callable[[int], None] | None = None) -> ScenarioResult:
    """Simulate one scenario over the whole span; ``progress(steps)`` is called now and then."""
    t0 = time.perf_counter()
    cfg = site_config(sc.config, sc.tariff)
    if sc.strategy == "building":   # the building alone: the same site without its cars
        cfg = cfg.model_copy(update={"vehicles": []})
    span = site_span(sc.config, sc.tariff, sc.data, sc.fill_gaps)
    fleet = make_fleet(cfg, span, cfg.planner.horizon_hours, sc.seed)
    sim = SiteSim(cfg, span, fleet, initial_soc_kwh(cfg))
    forecaster = None
    if sc.strategy == "mpc":
        if sc.weather_forecast is None:
            from ems.forecast.site import SiteForecaster
            forecaster = SiteForecaster(cfg, history=mpc_history(cfg, span))
        else:
            from ems.study.weather import weather_forecaster
            forecaster = weather_forecaster(cfg, mpc_history(cfg, span), span.index, span.end, sc.weather_forecast,
                                            sc.weather_seed, sc.weather_actual)
    ctl = controller(sc.strategy, cfg, sim, forecaster)
    T = len(span.index)
    for t in range(T):
        sim.step(ctl.flows())
        if progress is not None and (t + 1) % 48 == 0:
            progress(48)
    if progress is not None:
        progress(T % 48)
    rec = sim.rec
    meter = pd.DataFrame({"import_kw": rec.import_kw, "export_kw": rec.export_kw}, index=span.index)
    bill = compute_bill(meter, cfg.tariff).to_json()
    hours = survival_hours(cfg, span.index, span.pv_kw, rec.soc_kwh, fleet.plugged, rec.charger)
    dt_h = span.dt_h
    figures = {
        "wall_seconds": time.perf_counter() - t0,
        "vehicle_discharged_kwh": float(rec.discharge_kw.sum() * dt_h),
        "vehicle_charged_kwh": float(rec.charge_kw.sum() * dt_h),
        "battery_wear_cost": wear_cost(cfg, sim),
        "driver_settlement": driver_settlement(cfg, sim),
        "driver_owned_vehicles": sum(v.owner == "driver" for v in cfg.vehicles),
        "import_kwh": float(rec.import_kw.sum() * dt_h),
        "export_kwh": float(rec.export_kw.sum() * dt_h),
        "curtailed_kwh": float(rec.curtail_kw.sum() * dt_h),
        "departure_targets_missed": len(rec.misses),
        "missed": rec.misses[:10],
        "reserve_breaches": reserve_breaches(cfg, span, sim),
        "notes": rec.notes[:10],
        "data_cells_filled": span.filled,
        "outage_survival": survival_summary(hours, cfg.outage.reserve_hours, MAX_HOURS),
    }
    if isinstance(ctl, Mpc):
        figures.update(plans=ctl.plans, plan_fallbacks=ctl.fallbacks, steps_without_forecast=ctl.unplanned,
                       peaks_set_by_refill=peaks_set_by_refill(cfg, span, rec.import_kw, ctl.refill_steps))
        if sc.weather_forecast is not None:
            figures["weather_forecast"] = forecaster.describe
    if isinstance(ctl, Oracle):
        figures.update(plans=ctl.outcome.months, plan_fallbacks=int(ctl.outcome.fallback),
                       plan_bill=float(ctl.outcome.bill_cost))
    return ScenarioResult(sc, span.index, fleet.ids, tuple(v.capacity_kwh for v in cfg.vehicles), span.load_kw, span.pv_kw,
                          rec.import_kw, rec.export_kw, rec.curtail_kw, rec.charge_kw, rec.discharge_kw, rec.soc_kwh, bill,
                          hours, figures, fleet.plugged)


def mpc_history(cfg: SiteConfig, span: Span) -> pd.DataFrame:
    """The forecaster's history: the config's ``load.history_csv`` before the span (when it has the
    same step) followed by the span's own data; the forecaster reads only what precedes each origin."""
    frame = span.frame[["load_kw", "pv_kw"]]
    if cfg.load.history_csv:
        from ems.forecast.site import site_history
        past = site_history(cfg)
        past = past[past.index < frame.index[0]]
        if len(past) and past.attrs.get("step") == frame.attrs.get("step"):
            frame = pd.concat([past.reindex(columns=frame.columns), frame])
    frame.attrs.update(span.frame.attrs)
    return frame


def peaks_set_by_refill(cfg: SiteConfig, span: Span, import_kw: np.ndarray, refill_steps: Sequence[int]) -> dict[str, int]:
    """Per billing month, the 30-minute windows that raised the month's peak while the guard kept
    charging cars their drivers needed before leaving (``refill_steps``): peaks set to refill a car."""
    if cfg.tariff.basic.kind != "demand":
        return {}
    starts = window_starts(span.index, cfg.tariff)
    months = cfg.tariff.months(starts)
    frame = pd.DataFrame({"kwh": import_kw * span.dt_h, "refill": np.isin(np.arange(len(import_kw)), list(refill_steps)),
                          "month": np.asarray(months, dtype=str)}, index=starts)
    windows = frame.groupby(level=0, sort=True).agg(kwh=("kwh", "sum"), refill=("refill", "any"), month=("month", "first"))
    out: dict[str, int] = {}
    for month, w in windows.groupby("month", sort=True):
        avg = w["kwh"].to_numpy() / WINDOW_H
        before = np.concatenate([[0.0], np.maximum.accumulate(avg)[:-1]])
        out[str(month)] = int(np.sum((avg > before + 1e-6) & w["refill"].to_numpy()))
    return out


def battery_kwh(sim: SiteSim) -> tuple[np.ndarray, np.ndarray]:
    """Battery-side energy per vehicle over the span [kWh]: (taken out = AC discharge / eta_d,
    put in = AC charge x eta_c), each summed over the steps on the charger the car used."""
    rec = sim.rec
    on = np.maximum(rec.charger, 0)
    eta_d = np.where(rec.charger >= 0, sim.eta_d[on], 1.0)
    eta_c = np.where(rec.charger >= 0, sim.eta_c[on], 1.0)
    dt_h = sim.span.dt_h
    return (rec.discharge_kw / eta_d * dt_h).sum(axis=1), (rec.charge_kw * eta_c * dt_h).sum(axis=1)


def wear_cost(cfg: SiteConfig, sim: SiteSim) -> float:
    """Battery wear of the discharge [currency]: battery-side kWh (AC / discharge efficiency) x each
    vehicle's ``wear_cost_per_kwh``, as the planner prices it (the bill does not show it)."""
    rate = np.array([v.wear_cost_per_kwh for v in cfg.vehicles])
    return float(battery_kwh(sim)[0] @ rate)


def driver_settlement(cfg: SiteConfig, sim: SiteSim) -> float:
    """What the site pays the drivers of driver-owned cars [currency] (positive = paid to drivers):
    each car's price x the net battery energy taken from it at the site (energy out - energy in),
    which over each stay is its arrival energy minus its departure energy."""
    out, into = battery_kwh(sim)
    price = np.array([v.settlement_price_per_kwh or 0.0 for v in cfg.vehicles])
    return float((out - into) @ price)


def reserve_breaches(cfg: SiteConfig, span: Span, sim: SiteSim) -> int:
    """Steps with a car plugged in whose end leaves the plugged cars holding less than the reserve
    (critical load x reserve hours net of the actual PV) above their minimum SOC."""
    need = reserve_need_kwh(cfg, span)
    if not need.any():
        return 0
    rec, plugged = sim.rec, sim.fleet.plugged
    eta = np.array([sim.eta_d[sim.allowed[v][0]] for v in range(len(cfg.vehicles))])
    held = ((rec.soc_kwh[:, 1:] - sim.min_kwh[:, None]) * eta[:, None] * plugged).sum(axis=0)
    return int(np.sum(plugged.any(axis=0) & (held < need - 0.01)))


# ----- executing many ---------------------------------------------------------------------------

def scenarios(sites: Sequence[tuple[str, str]], tariffs: Sequence[str | None], strategies: Sequence[str],
              seed: int | None = None, fill_gaps: bool = False, weather_forecast: str | None = None,
              weather_seed: int | None = None, weather_actual: str | None = None) -> list[Scenario]:
    """Every (site config, data) x tariff x strategy; strategies checked against STRATEGIES, the
    weather forecast options by :func:`ems.study.weather.check_option`."""
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise ConfigError(Problem("--strategy", None, "strategy", ",".join(strategies),
                                  f"unknown strategy {bad}; give a comma-separated list of {list(STRATEGIES)}"))
    if weather_forecast is not None or weather_actual is not None:
        from ems.study.weather import check_option
        check_option(weather_forecast, weather_seed, weather_actual)
    return [Scenario(c, d, t, s, seed, fill_gaps, weather_forecast, weather_seed, weather_actual)
            for c, d in sites for t in (tariffs or [None]) for s in strategies]


def execute(items: Sequence[Scenario], workers: int = 1, scheduler: str | object | None = None,
            progress: bool = False) -> list[ScenarioResult]:
    """Run the scenarios: in this process (``workers`` 1), in a process pool, or on a Dask cluster
    (``scheduler``: an address or a ``distributed.Client``). Results in the order of ``items``.

    Every input is read here first, so bad data or configs fail before any worker starts; the
    progress bar counts simulated steps (live in this process, per finished scenario elsewhere)."""
    from tqdm import tqdm
    total = sum(len(site_span(it.config, it.tariff, it.data, it.fill_gaps).index) for it in items)
    slow_first = sorted(range(len(items)), key=lambda i: items[i].strategy != "mpc")
    bar = tqdm(total=total, desc="study", unit="step", disable=not progress)
    out: dict[int, ScenarioResult] = {}
    try:
        for i, res, counted in _results(items, slow_first, workers, scheduler, bar.update):
            out[i] = res
            bar.set_postfix_str(items[i].key, refresh=False)
            if not counted:
                bar.update(len(res.index))
    finally:
        bar.close()
    return [out[i] for i in range(len(items))]


def _results(items: Sequence[Scenario], order: list[int], workers: int, scheduler: str | object | None,
             step: Callable[[int], object]) -> Iterator[tuple[int, ScenarioResult, bool]]:
    """(position, result, whether its steps were already counted) as scenarios finish."""
    if scheduler is not None:
        yield from ((i, r, False) for i, r in _dask_results(items, order, scheduler))
    elif workers <= 1 or len(items) == 1:
        for i in order:
            yield i, run_scenario(items[i], step), True
    else:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=ctx) as pool:
            futures = {pool.submit(run_scenario, items[i]): i for i in order}
            for fut in cf.as_completed(futures):
                yield futures[fut], fut.result(), False


def _dask_results(items: Sequence[Scenario], order: list[int], scheduler: str | object) -> Iterator[tuple[int, ScenarioResult]]:
    """Submit to a Dask distributed scheduler; a Client made here is closed when done."""
    from distributed import Client, as_completed
    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        futures = {client.submit(run_scenario, items[i], pure=False, key=f"study-{i}-{items[i].key}"): i for i in order}
        for fut in as_completed(list(futures)):
            yield futures[fut], fut.result()
    finally:
        if own:
            client.close()
