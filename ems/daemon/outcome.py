"""What a daemon run achieved, from its telemetry and demand windows: peak against contract, SOC at
departure, energy shifted, and an estimated saving against the same site without the EMS.

The comparison ("no EMS") is rebuilt from the same telemetry: the site base is
``base = metered net import - sum(charge) + sum(discharge)`` per tick, and each car, from the tick
it is first seen plugged in, charges at its charger's full rating until it has taken the same net
energy the EMS gave it (an uncontrolled charger that starts on arrival). When the EMS took energy
out of the cars on balance, that energy is charged back to the EMS at the run's mean import price
(it must be bought again later), so the saving is not flattered by draining the cars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ems.config import SiteConfig
from ems.daemon.metering import WindowRecord, window_start


@dataclass
class Outcome:
    """Figures of one run ([kW], [kWh], the tariff's currency)."""

    peak_kw: float
    baseline_peak_kw: float
    planned_peak_kw: float
    contract_before_kw: float
    charged_kwh: float
    discharged_kwh: float
    energy_cost: float
    baseline_energy_cost: float
    car_energy_adjustment: float
    demand_rate: float
    departures: dict[str, tuple[float, float]]   # vehicle -> (SOC % when it left, target %)

    @property
    def energy_saving(self) -> float:
        """Energy cost saved over the run [currency] (car energy used on balance charged back)."""
        return self.baseline_energy_cost - self.energy_cost - self.car_energy_adjustment

    @property
    def demand_saving_per_month(self) -> float:
        """Basic charge saved per month if this run set the month's peak [currency/month]."""
        held = self.contract_before_kw
        return self.demand_rate * (max(self.baseline_peak_kw, held) - max(self.peak_kw, held))


def _gaps_h(index: pd.DatetimeIndex, interval_s: float) -> np.ndarray:
    """Hours each tick stands for: the time to the next tick (the last one: the dispatch interval)."""
    nxt = np.append(np.diff(index.asi8) / 1e9, interval_s)
    return np.minimum(nxt, 5 * interval_s) / 3600


def _uncontrolled_kw(cfg: SiteConfig, t: pd.DataFrame, index: pd.DatetimeIndex, gaps_h: np.ndarray) -> tuple[pd.Series, float]:
    """Charging of uncontrolled chargers (full power from arrival until each car has the EMS's net
    energy) per tick [kW], and the grid energy the EMS took out of the cars on balance [kWh]."""
    out = pd.Series(0.0, index=index)
    dt = pd.Series(gaps_h, index=index)
    owed_kwh = 0.0
    for c in cfg.chargers:
        eta_c, eta_d = c.charge_efficiency_pct / 100, c.discharge_efficiency_pct / 100
        u = t[t["device"] == c.id].set_index("ts").reindex(index)
        net = float(((eta_c * u["charge_kw"].fillna(0) - u["discharge_kw"].fillna(0) / eta_d) * dt).sum())  # into the car [kWh]
        owed_kwh += max(-net, 0.0) / eta_c
        need = max(net, 0.0)
        for ts, plugged in u["plugged"].fillna(False).astype(bool).items():
            if need <= 1e-9 or not plugged:
                continue
            kw = min(c.max_charge_kw, need / (eta_c * dt[ts]))
            out[ts] += kw
            need -= kw * eta_c * dt[ts]
    return out, owed_kwh


def outcome(cfg: SiteConfig, telemetry: pd.DataFrame, windows: list[WindowRecord], interval_s: float,
            departures: dict[str, tuple[float, float]], contract_before_kw: float = 0.0) -> Outcome:
    """Figures of a run from its telemetry (one row per unit per tick) and its metered windows.

    The EMS side is the metered windows (energy counter); the comparison is the per-window mean
    of the rebuilt import samples (the replayed load and PV are constant within a window, so a
    window's ticks sample it fully even when some ticks were skipped).
    """
    t = telemetry.fillna({"charge_kw": 0.0, "discharge_kw": 0.0})
    ticks = t.groupby("ts").agg(site=("site_import_kw", "first"), ch=("charge_kw", "sum"), dis=("discharge_kw", "sum"))
    index = pd.DatetimeIndex(ticks.index)
    gaps = _gaps_h(index, interval_s)
    uncontrolled, owed_kwh = _uncontrolled_kw(cfg, t, index, gaps)
    base_imp = np.maximum(ticks["site"] - ticks["ch"] + ticks["dis"] + uncontrolled, 0.0)
    zone = cfg.tariff.timezone
    per_window = base_imp.groupby([window_start(ts, zone) for ts in index]).mean()
    full = [w for w in windows if w.observed_h > 0.45]
    starts = pd.DatetimeIndex([w.start for w in full])
    price = pd.Series(cfg.tariff.import_price(starts.tz_convert(cfg.tariff.zone)) if len(full) else [], index=starts)
    base = per_window.reindex(starts)
    return Outcome(
        peak_kw=max((w.average_kw for w in full), default=0.0),
        baseline_peak_kw=float(base.max()) if len(base) else 0.0,
        planned_peak_kw=max((w.planned_peak_kw for w in full if not math.isnan(w.planned_peak_kw)), default=math.nan),
        contract_before_kw=contract_before_kw,
        charged_kwh=float((ticks["ch"] * gaps).sum()), discharged_kwh=float((ticks["dis"] * gaps).sum()),
        energy_cost=float(sum(w.import_kwh * price[w.start] for w in full)),
        baseline_energy_cost=float((base.fillna(0.0) * 0.5 * price).sum()),
        car_energy_adjustment=owed_kwh * float(price.mean()) if len(price) else 0.0,
        demand_rate=cfg.tariff.basic.demand_rate() if cfg.tariff.basic.kind == "demand" else 0.0,
        departures=departures)


def format_outcome(o: Outcome, currency: str) -> list[str]:
    """The figures as readable lines."""
    lines = [f"  peak (highest 30-min average import): {o.peak_kw:.2f} kW with the EMS, {o.baseline_peak_kw:.2f} kW "
             f"without (plan's peak {o.planned_peak_kw:.2f} kW)"]
    if o.demand_rate > 0:
        lines.append(f"  contract kW before the run {o.contract_before_kw:.2f} kW (ratchet history in the store), "
                     f"after {max(o.contract_before_kw, o.peak_kw):.2f} kW")
    for v, (soc, target) in o.departures.items():
        lines.append(f"  {v}: left with {soc:.1f} % (target {target:.1f} %)")
    lines.append(f"  energy shifted: {o.discharged_kwh:.1f} kWh from the cars into the building, "
                 f"{o.charged_kwh:.1f} kWh charged")
    lines.append(f"  energy cost {o.energy_cost:,.0f} {currency} with the EMS, {o.baseline_energy_cost:,.0f} without"
                 + (f", car energy used on balance charged back: {o.car_energy_adjustment:,.0f}" if o.car_energy_adjustment else ""))
    saving = f"  estimated saving: {o.energy_saving:,.0f} {currency} of energy"
    if o.demand_rate > 0:
        saving += (f", and {o.demand_saving_per_month:,.0f} {currency}/month of basic charge "
                   f"({o.baseline_peak_kw - o.peak_kw:.2f} kW lower peak x {o.demand_rate:,.2f}) if this day sets the month's peak")
    lines.append(saving)
    return lines
