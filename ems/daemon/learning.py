"""Forecasts that learn from the site's own meter (:class:`Learning`, owned by
:class:`~ems.daemon.forecasts.Forecasts`).

**What is metered per window.** At every dispatch tick :meth:`Learning.observe` accounts four
energies on the fixed :00/:30 windows of the tariff's time zone, each with the demand windows' own
accounting (:class:`~ems.daemon.metering.WindowAccount`: a device's energy counter where it has one,
else the trapezoid of its power samples, split at a window boundary in proportion to time):

- ``import_kwh``, ``export_kwh``: the grid meter (its import and export counters);
- ``charge_kwh``, ``discharge_kwh``: the AC power of every V2H/V2B unit, summed.

Each closed window is stored (table ``site_energy``, kept for ever) with::

    load_kwh = import_kwh - export_kwh - charge_kwh + discharge_kwh + pv_kwh        [kWh]

(the building takes what the grid and the PV deliver, less what the cars take, plus what they give
back). No device the daemon reads measures the PV output, so ``pv_kwh`` is estimated with the site's
PV model (:func:`ems.forecast.site.model_pv_kw`): driven by the cached weather forecast where it
covers the window (``pv_source`` ``weather``: the fetch's own view of the hours just gone), else by
clear sky x :data:`~ems.forecast.site.DEFAULT_CLEARNESS` (``clear-sky``); ``none`` for a site without
PV. The net ``load - PV`` is therefore metered exactly; the split between the two is only as good as
the PV estimate (a sunny day estimated as an average one puts the unseen PV into the load).

A window's load is not trusted (stored with its ``flags``, missing in the forecaster's history) when
a meter reading was not believed or not read (or the site has no meter), a unit did not answer
(``samples-missing``, ``samples-implausible``, the counter flags of
:class:`~ems.daemon.metering.WindowFlag`), the grid was down (``grid-down``: the meter reads 0 while
the units island the load) or the window was not observed whole (``partial``: the daemon started or
stopped inside it).

**The forecaster's history** (:func:`learned_history`): the seed (``load.history_csv``, or the
history given to the daemon) where it has a load reading, the metered windows everywhere else (after
the seed ends and in its gaps); the last :data:`HISTORY_DAYS` before its newest row (the load
profile's six weeks, the error quantile's six weeks of replayed forecasts before them and the spike
rule's 28 days). The same cleaning rules apply to seed and metered rows (:mod:`ems.forecast.clean`:
zero load missing, spikes, stuck readings, night PV). The forecaster is rebuilt from it, with the
weather cache, at the first forecast after a window closed or a weather forecast was fetched: every
planning step (30 minutes) while the meter runs, about 0.05 s in the plan worker thread (the PV
model and its solar geometry are kept across rebuilds). At a step boundary the plan job and the tick
that closes the window before it fire together, in either order: the window is in that plan's
forecast when the tick ran first, else in the next step's.

**Live forecast quality** (:func:`forecast_quality`): each forecast's value for the window that
starts 23.5 h after its origin is kept (table ``day_ahead_forecasts``: the first origin after the
same window a day earlier closed, so the forecast and persistence know the same past); over the
last :data:`QUALITY_DAYS` days the MAE of those day-ahead forecasts against the metered windows,
next to persistence (the same window a day earlier, metered), for the load and for the net load - PV
(the meter's own quantity). Stored in the state ``forecast_quality`` at each rebuild; ``ems status``
shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from adapters import MeterReading
from ems.daemon.host import Host
from ems.daemon.links import UnitLink
from ems.daemon.metering import WindowAccount, WindowFlag, WindowRecord
from ems.daemon.readings import MeterQuality
from ems.daemon.tracker import QUALITY_FLAGS
from ems.store import cached_weather, day_ahead, record_day_ahead, record_site_energy, set_site_pv, site_energy
from ems.timegrid import WINDOW, WINDOW_H

#: Days of history the forecaster is built from, back from its newest row: six weeks of load profile
#: + six weeks of replayed forecasts for the error quantile (ems.forecast.uncertainty.REPLAY_DAYS) +
#: the spike rule's 28 trailing days, rounded up.
HISTORY_DAYS = 120
#: The day-ahead forecast of a window is the one made this long before its start.
DAY_AHEAD_LEAD = pd.Timedelta(hours=23.5)
#: Days of day-ahead forecasts the live quality is measured over.
QUALITY_DAYS = 7
#: The state key holding the live quality.
QUALITY_KEY = "forecast_quality"
#: A window observed for less than its length minus this [h] is ``partial``.
PARTIAL_TOL_H = 1e-6
ENERGIES = ("import", "export", "charge", "discharge")


def _names(recs: Sequence[WindowRecord]) -> list[str]:
    """The flags of one window's four records (``grid-down``, ``partial`` added), without repeats."""
    names: list[str] = []
    for rec in recs:
        names += [n for n in rec.flags.names if n not in names]
    if any(r.grid_down for r in recs):
        names.append("grid-down")
    if recs[0].observed_h < WINDOW_H - PARTIAL_TOL_H:
        names.append("partial")
    return names


class SiteEnergy:
    """The four energies of the open window (module docstring); :meth:`update` per tick."""

    def __init__(self, zone: str):
        self.accounts = {k: WindowAccount(zone) for k in ENERGIES}

    def update(self, now: pd.Timestamp, reading: MeterReading | None, units: Sequence[UnitLink], meter: MeterQuality,
               grid_up: bool) -> list[tuple[pd.Timestamp, dict[str, float], list[str]]]:
        """Account the tick at ``now``: the meter ``reading`` as the reading guard passed it (``meter``:
        what it is worth), the units' measured power; return the windows that closed as
        ``(start, {"import_kwh", ...}, flags)``."""
        m_flags = WindowFlag.SAMPLES_MISSING if meter is MeterQuality.ABSENT else QUALITY_FLAGS[meter]
        states = [u.state for u in units]
        u_flags = WindowFlag.SAMPLES_MISSING if any(s is None for s in states) else WindowFlag.NONE
        known = [s for s in states if s is not None]
        r = reading
        closed = [
            self.accounts["import"].update(now, r.import_kw if r else 0.0, r.import_kwh if r else None, m_flags),
            self.accounts["export"].update(now, r.export_kw if r else 0.0, r.export_kwh if r else None, m_flags),
            self.accounts["charge"].update(now, sum(s.charge_kw for s in known), None, u_flags),
            self.accounts["discharge"].update(now, sum(s.discharge_kw for s in known), None, u_flags),
        ]
        if not grid_up:
            for acc in self.accounts.values():
                if acc.current is not None:
                    acc.current.grid_down = True
        out = []
        for recs in zip(*closed):   # the four accounts see the same ticks: they close the same windows
            values = {f"{k}_kwh": rec.import_kwh for k, rec in zip(ENERGIES, recs)}
            out.append((recs[0].start, values, _names(recs)))
        return out


def on_window_grid(seed: pd.DataFrame) -> pd.DataFrame:
    """A history frame on the 30-minute window grid: finer steps averaged, an hourly step held for
    both of its half hours."""
    from ems.forecast.clean import infer_step
    step = infer_step(seed)
    if step == WINDOW:
        return seed
    if step < WINDOW:
        out = seed.resample(WINDOW, origin="epoch").mean()
    else:
        out = seed.resample(WINDOW, origin="epoch").ffill(limit=int(step / WINDOW) - 1)
    out.attrs = {**seed.attrs, "step": WINDOW}
    return out


def metered_frame(energy: pd.DataFrame) -> pd.DataFrame:
    """The stored windows as history rows [kW]: ``load_kw`` (missing where flagged, not yet estimated
    or negative: a PV estimate above the real output) and ``pv_kw``."""
    load = energy["load_kwh"].astype(float) / WINDOW_H
    trusted = (energy["flags"] == "") & load.notna() & (load >= 0)
    return pd.DataFrame({"load_kw": load.where(trusted), "pv_kw": energy["pv_kwh"].astype(float) / WINDOW_H},
                        index=energy.index)


def learned_history(seed: pd.DataFrame | None, energy: pd.DataFrame) -> pd.DataFrame | None:
    """The forecaster's history (module docstring): ``seed`` (None: none) where it has a load reading,
    the metered windows ``energy`` (:func:`ems.store.site_energy`) elsewhere, the last HISTORY_DAYS.
    The seed itself, untouched, when the meter adds no load reading it lacks."""
    if energy.empty:
        return seed
    metered = metered_frame(energy)
    if seed is not None and len(seed):
        grid = on_window_grid(seed)
        known = grid.index[grid["load_kw"].notna()] if "load_kw" in grid else grid.index[:0]
        metered = metered.loc[metered.index.difference(known)]
        if not metered["load_kw"].notna().any():
            return seed
        frame = grid.combine_first(metered)
    else:
        frame = metered
    frame = frame[frame.index >= frame.index[-1] - pd.Timedelta(days=HISTORY_DAYS)]
    frame = frame[[c for c in ("load_kw", "pv_kw") if c in frame]]
    frame.attrs = {"step": WINDOW, "source": "history seed + metered windows" if seed is not None else "metered windows"}
    return frame


def _mae(fc: pd.Series, actual: pd.Series, persistence: pd.Series) -> dict[str, Any]:
    """MAE of the forecast and of persistence [kW] on the windows where all three are known; skill."""
    ok = np.isfinite(fc.to_numpy(float)) & np.isfinite(actual.to_numpy(float)) & np.isfinite(persistence.to_numpy(float))
    n = int(ok.sum())
    if not n:
        return {"mae_kw": None, "persistence_mae_kw": None, "skill": None, "samples": 0}
    a = actual.to_numpy(float)[ok]
    mae = float(np.mean(np.abs(fc.to_numpy(float)[ok] - a)))
    pers = float(np.mean(np.abs(persistence.to_numpy(float)[ok] - a)))
    return {"mae_kw": mae, "persistence_mae_kw": pers, "skill": 1 - mae / pers if pers > 0 else None, "samples": n}


def forecast_quality(store: Any, now: pd.Timestamp, days: int = QUALITY_DAYS) -> dict[str, Any]:
    """Live quality of the day-ahead forecasts over the windows that closed in the last ``days`` days
    (module docstring): for ``load`` and ``net`` (load - PV), ``mae_kw``, ``persistence_mae_kw``,
    ``skill`` (1 - MAE / persistence MAE) and ``samples`` (windows scored)."""
    since = pd.Timestamp(now) - pd.Timedelta(days=days)
    out: dict[str, Any] = {"days": days, "computed_at": pd.Timestamp(now).isoformat(), "lead_h": DAY_AHEAD_LEAD / pd.Timedelta(hours=1)}
    fc = day_ahead(store, since)
    energy = site_energy(store, since - pd.Timedelta(days=1))
    if fc.empty or energy.empty:
        return {**out, "load": _mae(pd.Series(dtype=float), pd.Series(dtype=float), pd.Series(dtype=float)),
                "net": _mae(pd.Series(dtype=float), pd.Series(dtype=float), pd.Series(dtype=float)), "pv_source": None}
    fc = fc[fc.index + WINDOW <= pd.Timestamp(now)]
    load = metered_frame(energy)["load_kw"]
    net = ((energy["import_kwh"] - energy["export_kwh"] - energy["charge_kwh"] + energy["discharge_kwh"]) / WINDOW_H
           ).where(energy["flags"] == "")
    t, before = fc.index, fc.index - pd.Timedelta(days=1)
    sources = energy["pv_source"].dropna()
    return {**out, "load": _mae(fc["load_kw"], load.reindex(t), load.reindex(before)),
            "net": _mae(fc["load_kw"] - fc["pv_kw"], net.reindex(t), net.reindex(before)),
            "pv_source": sources.value_counts().to_dict() if len(sources) else None}


class Learning:
    """Site energy per window into the store, and the forecaster built from the seed and the meter.

    :meth:`observe` runs on the event loop at every tick; :meth:`forecaster` and :meth:`note_forecast`
    in the plan worker thread. ``version`` counts the windows stored and the weather fetches: the
    forecaster is rebuilt when it changed."""

    def __init__(self, host: Host):
        self.host = host
        self.energy = SiteEnergy(host.cfg.tariff.timezone)
        self.version = 0
        self._pv: Any = None
        self._seed_csv: pd.DataFrame | None = None

    def reset(self) -> None:
        """A reloaded config: the PV model and the history file are read again (either may have changed)."""
        self._pv, self._seed_csv = None, None
        self.version += 1

    def observe(self, now: pd.Timestamp, reading: MeterReading | None, units: Sequence[UnitLink], meter: MeterQuality,
                grid_up: bool) -> None:
        """One dispatch tick: account it; store the windows that closed."""
        for start, values, flags in self.energy.update(now, reading, units, meter, grid_up):
            record_site_energy(self.host.store, start, values, flags, now)
            self.version += 1

    def weather_arrived(self) -> None:
        """A weather forecast was cached: the next forecast rebuilds the forecaster with it."""
        self.version += 1

    def _pv_model(self) -> Any:
        from ems.forecast.pv import PvModel
        if self._pv is None:
            self._pv = PvModel(self.host.cfg.site, self.host.cfg.pv)
        return self._pv

    def estimate_pv(self, energy: pd.DataFrame, weather: pd.DataFrame | None) -> pd.DataFrame:
        """Fill in the PV (and so the load) of the windows that have none yet, in the store and in
        ``energy`` (returned)."""
        todo = energy.index[energy["pv_source"].isna()] if not energy.empty else energy.index
        if not len(todo):
            return energy
        base = energy["import_kwh"] - energy["export_kwh"] - energy["charge_kwh"] + energy["discharge_kwh"]
        if not self.host.cfg.pv:
            pv_kw, source = np.zeros(len(todo)), np.full(len(todo), "none", dtype=object)
        else:
            from ems.forecast.site import DEFAULT_CLEARNESS, model_pv_kw
            grid = pd.date_range(todo[0], todo[-1], freq=WINDOW)
            model = self._pv_model()
            kw, uncovered = model_pv_kw(model, weather, grid, WINDOW, model.compute_geometry(grid, WINDOW), DEFAULT_CLEARNESS)
            pos = grid.get_indexer(todo)
            pv_kw, source = kw[pos], np.where(uncovered[pos], "clear-sky", "weather")
        pv_kwh = pv_kw * WINDOW_H
        load_kwh = base.loc[todo].to_numpy() + pv_kwh
        set_site_pv(self.host.store, {t: (p, ld, s) for t, p, ld, s in zip(todo, pv_kwh, load_kwh, source)})
        energy = energy.copy()
        energy.loc[todo, "pv_kwh"], energy.loc[todo, "load_kwh"], energy.loc[todo, "pv_source"] = pv_kwh, load_kwh, source
        return energy

    def _seed(self, given: pd.DataFrame | None) -> pd.DataFrame | None:
        """The history seed: ``given``, else ``load.history_csv`` (read once per config), else None."""
        from ems.forecast.site import site_history
        if given is not None or not self.host.cfg.load.history_csv:
            return given
        if self._seed_csv is None:
            self._seed_csv = site_history(self.host.cfg)
        return self._seed_csv

    def forecaster(self, seed: pd.DataFrame | None, now: pd.Timestamp, current: Any = None) -> Any:
        """A :class:`~ems.forecast.site.SiteForecaster` on :func:`learned_history` and the weather
        cache (worker thread); the live quality is refreshed with it. ``seed``: the daemon's history
        (None: ``load.history_csv``; a site without one learns from the meter alone). ``current``, the
        forecaster in hand, is kept when neither the meter nor the weather adds anything to its seed
        (a simulated run replaying its own history file)."""
        from ems.forecast.site import SiteForecaster
        cfg, store = self.host.cfg, self.host.store
        seed = self._seed(seed)
        since = pd.Timestamp(now) - pd.Timedelta(days=HISTORY_DAYS)
        energy = site_energy(store, since)
        weather = cached_weather(store, since - pd.Timedelta(days=1))
        energy = self.estimate_pv(energy, weather)
        history = learned_history(seed, energy)
        store.set_state(QUALITY_KEY, forecast_quality(store, now))
        if current is not None and history is seed and weather is None:
            return current
        # history None: neither a history file nor a metered window yet, the forecaster says what is missing
        return SiteForecaster(cfg, history, weather, pv_model=self._pv_model())

    def note_forecast(self, origin: pd.Timestamp, load_kw: pd.Series, pv_kw: pd.Series) -> None:
        """Keep the forecast's day-ahead value: its mean over the window starting DAY_AHEAD_LEAD after
        ``origin`` [kW] (nothing when the forecast does not reach it)."""
        target = pd.Timestamp(origin) + DAY_AHEAD_LEAD
        sel = (load_kw.index >= target) & (load_kw.index < target + WINDOW)
        if sel.any():
            record_day_ahead(self.host.store, origin, target, float(load_kw[sel].mean()), float(pv_kw[sel].mean()))
