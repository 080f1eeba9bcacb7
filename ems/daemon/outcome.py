"""What a daemon run achieved, from its telemetry and demand windows: the contract kW with the EMS and
without it, the money by whose it is, SOC at departure, energy shifted.

Two comparisons are rebuilt from the same telemetry. The building alone: the site base
``base = metered net import - sum(charge) + sum(discharge)`` per tick (no car plugged in at all).
Unmanaged charging: the base plus each car, from the tick it is first seen plugged in, charging at
its charger's full rating until it has taken the same net energy the EMS gave it (an uncontrolled
charger that starts on arrival). When the EMS took energy out of the site's own cars on balance,
that energy is charged back to the EMS at the run's mean import price (it must be bought again
later), so the saving is not flattered by draining the cars.

Driver-owned cars (``owner: driver``) are settled with their drivers: the site pays each car's
``energy_price_per_kwh`` for the battery energy taken from it on balance (and is paid for the energy
it gained): :attr:`Outcome.settlement`, the drivers' money, not the bill's. The battery wear of the
discharge (``wear_cost_per_kwh`` per battery-side kWh, as the planner prices it) is reported apart.
On a tariff without a demand charge, :class:`V2hValue` says in one line whether shifting a kWh through
the car (discharge at the run's dearest import price, bought back at its cheapest, through both
efficiencies, plus the wear) pays at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ems.config import SiteConfig, Vehicle
from ems.daemon.metering import WindowRecord
from ems.timegrid import WINDOW_H, window_start


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
    building_peak_kw: float = math.nan            # the building alone, no car plugged in
    building_energy_cost: float = 0.0
    settlement: float = 0.0                       # paid to the drivers (negative: paid by them) [currency]
    settlement_kwh: float = 0.0                   # battery energy taken from driver-owned cars on balance [kWh]
    settlement_prices: tuple[float, ...] = ()     # the drivers' prices [currency/kWh]
    wear_cost: float = 0.0                        # battery wear of the discharge [currency]
    wear_kwh: float = 0.0                         # battery-side energy discharged [kWh]
    driver_wear_cost: float = 0.0                 # the part of wear_cost on driver-owned cars
    v2h: V2hValue | None = None                   # energy arbitrage through the cars (tariffs without a demand charge)
    flagged_windows: int = 0                      # full windows with bad meter data: billed for energy, not for the peak

    @property
    def energy_saving(self) -> float:
        """Energy cost saved over the run against unmanaged charging [currency] (the site's own cars'
        energy used on balance charged back)."""
        return self.baseline_energy_cost - self.energy_cost - self.car_energy_adjustment

    @property
    def contract_kw(self) -> float:
        """Contract kW with the EMS: the ratchet's held level or this run's peak [kW]."""
        return max(self.contract_before_kw, self.peak_kw)

    @property
    def building_contract_kw(self) -> float:
        """Contract kW of the building alone (no car plugged in) [kW]."""
        return max(self.contract_before_kw, self.building_peak_kw)

    @property
    def unmanaged_contract_kw(self) -> float:
        """Contract kW with the same cars charging unmanaged on arrival [kW]."""
        return max(self.contract_before_kw, self.baseline_peak_kw)

    @property
    def demand_saving_per_month(self) -> float:
        """Basic charge saved per month against unmanaged charging, if this run set the month's peak [currency/month]."""
        return self.demand_rate * (self.unmanaged_contract_kw - self.contract_kw)

    @property
    def demand_saving_vs_building_per_month(self) -> float:
        """Basic charge saved per month against the building alone, if this run set the month's peak [currency/month]."""
        return self.demand_rate * (self.building_contract_kw - self.contract_kw)

    @property
    def energy_saving_vs_building(self) -> float:
        """The site's energy cost over the run, the building alone minus with the EMS [currency] (the
        site's own cars' energy used on balance charged back)."""
        return self.building_energy_cost - self.energy_cost - self.car_energy_adjustment

    @property
    def net_vs_building_per_month(self) -> float:
        """The site's money for the month against the building alone: the month's basic charge saved,
        plus this run's energy saved, minus this run's settlement paid to the drivers [currency]."""
        return self.demand_saving_vs_building_per_month + self.energy_saving_vs_building - self.settlement


@dataclass(frozen=True)
class V2hValue:
    """What one kWh delivered from a car's battery to the site is worth in energy alone over a run:
    it displaces import at the run's dearest price ``sell`` and must be bought back at its cheapest
    ``buy`` through both efficiencies (``buy / (eta_c x eta_d)``), and wears the battery by
    ``wear_per_kwh / eta_d`` ([currency/kWh] each)."""

    sell: float
    buy: float
    eta_c: float
    eta_d: float
    wear_per_kwh: float

    @property
    def buy_back(self) -> float:
        return self.buy / (self.eta_c * self.eta_d)

    @property
    def wear(self) -> float:
        return self.wear_per_kwh / self.eta_d

    @property
    def margin(self) -> float:
        """What a kWh shifted through the car earns [currency/kWh]; at most 0: it does not pay."""
        return self.sell - self.buy_back - self.wear

    def sentence(self, currency: str) -> str:
        """One line: whether V2H pays at this tariff, and why."""
        how = (f"a kWh from the car displaces {self.sell:.2f} {currency}/kWh of import at best, but buying it back costs "
               f"{self.buy:.2f} / ({self.eta_c:.2f} x {self.eta_d:.2f}) = {self.buy_back:.2f} at the cheapest hour "
               f"plus {self.wear:.2f} of battery wear ({self.wear_per_kwh:g} per kWh / {self.eta_d:.2f})")
        if self.margin <= 0:
            return (f"V2H is not worth it at this tariff: {how}, {-self.margin:.2f} {currency} lost per kWh; the EMS only "
                    "moves the charging to the cheap hours")
        return f"V2H pays at this tariff: {how}, {self.margin:.2f} {currency} earned per kWh shifted"


def _gaps_h(index: pd.DatetimeIndex, interval_s: float) -> np.ndarray:
    """Hours each tick stands for: the time to the next tick (the last one: the dispatch interval)."""
    nxt = np.append(np.diff(index.as_unit("ns").asi8) / 1e9, interval_s)
    return np.minimum(nxt, 5 * interval_s) / 3600


def vehicle_on(cfg: SiteConfig, charger_id: str) -> Vehicle | None:
    """The configured car that uses charger ``charger_id`` (None unless exactly one may)."""
    found = [v for v in cfg.vehicles if not v.chargers or charger_id in v.chargers]
    return found[0] if len(found) == 1 else None


@dataclass
class _CarEnergy:
    """Battery-side energy of the cars over a run, by owner [kWh], and what it is worth [currency]."""

    owed_kwh: float = 0.0          # grid energy to buy back what the EMS took from the site's own cars
    settlement: float = 0.0        # paid to drivers for the energy taken from their cars on balance
    settlement_kwh: float = 0.0
    prices: tuple[float, ...] = ()
    wear_cost: float = 0.0
    wear_kwh: float = 0.0
    driver_wear_cost: float = 0.0


def _uncontrolled_kw(cfg: SiteConfig, t: pd.DataFrame, index: pd.DatetimeIndex, gaps_h: np.ndarray) -> tuple[pd.Series, _CarEnergy]:
    """Charging of uncontrolled chargers (full power from arrival until each car has the EMS's net
    energy) per tick [kW], and the cars' energy: what the EMS took out of the site's own cars on
    balance (grid kWh to buy it back), the drivers' settlement, the wear."""
    out = pd.Series(0.0, index=index)
    dt = pd.Series(gaps_h, index=index)
    e = _CarEnergy()
    for c in cfg.chargers:
        eta_c, eta_d = c.charge_efficiency, c.discharge_efficiency
        u = t[t["device"] == c.id].set_index("ts").reindex(index)
        taken = float((u["discharge_kw"].fillna(0) / eta_d * dt).sum())   # out of the battery [kWh]
        net = float((eta_c * u["charge_kw"].fillna(0) * dt).sum()) - taken  # into the car [kWh]
        car = vehicle_on(cfg, c.id)
        wear = taken * (car.wear_cost_per_kwh if car is not None else 0.0)
        e.wear_kwh += taken
        e.wear_cost += wear
        price = car.settlement_price_per_kwh if car is not None else None
        if price is not None:        # a driver-owned car: its energy is settled with the driver
            e.settlement += -net * price
            e.settlement_kwh += -net
            e.driver_wear_cost += wear
            if taken > 0 or net != 0:
                e.prices = tuple(sorted(set(e.prices) | {price}))
        else:
            e.owed_kwh += max(-net, 0.0) / eta_c
        need = max(net, 0.0)
        for ts, plugged in u["plugged"].fillna(False).astype(bool).items():
            if need <= 1e-9 or not plugged:
                continue
            kw = min(c.max_charge_kw, need / (eta_c * dt[ts]))
            out[ts] += kw
            need -= kw * eta_c * dt[ts]
    return out, e


def v2h_value(cfg: SiteConfig, prices: pd.Series) -> V2hValue | None:
    """Energy arbitrage through the site's first car over the run's import prices (None without a
    car, a price, or on a demand-charge tariff, where the cars earn on the peak instead)."""
    if not cfg.vehicles or prices.empty or cfg.tariff.basic.kind == "demand":
        return None
    v = cfg.vehicles[0]
    c = next((c for c in cfg.chargers if not v.chargers or c.id in v.chargers), None)
    if c is None:
        return None
    return V2hValue(float(prices.max()), float(prices.min()), c.charge_efficiency,
                    c.discharge_efficiency, v.wear_cost_per_kwh)


def outcome(cfg: SiteConfig, telemetry: pd.DataFrame, windows: list[WindowRecord], interval_s: float,
            departures: dict[str, tuple[float, float]], contract_before_kw: float = 0.0) -> Outcome:
    """Figures of a run from its telemetry (one row per unit per tick) and its metered windows.

    The EMS side is the metered windows (energy counter); the comparison is the per-window mean
    of the rebuilt import samples (the replayed load and PV are constant within a window, so a
    window's ticks sample it fully even when some ticks were skipped). A window flagged for bad
    meter data counts for energy but not for the peak, as in the store's month peaks.
    """
    t = telemetry.fillna({"charge_kw": 0.0, "discharge_kw": 0.0})
    ticks = t.groupby("ts").agg(site=("site_import_kw", "first"), ch=("charge_kw", "sum"), dis=("discharge_kw", "sum"))
    index = pd.DatetimeIndex(ticks.index)
    gaps = _gaps_h(index, interval_s)
    uncontrolled, cars = _uncontrolled_kw(cfg, t, index, gaps)
    building_imp = np.maximum(ticks["site"] - ticks["ch"] + ticks["dis"], 0.0)
    base_imp = np.maximum(ticks["site"] - ticks["ch"] + ticks["dis"] + uncontrolled, 0.0)
    zone = cfg.tariff.timezone
    keys = [window_start(ts, zone) for ts in index]
    per_window = base_imp.groupby(keys).mean()
    full = [w for w in windows if w.observed_h > 0.45]
    starts = pd.DatetimeIndex([w.start for w in full])
    price = pd.Series(cfg.tariff.import_price(starts.tz_convert(cfg.tariff.zone)) if len(full) else [], index=starts, dtype=float)
    base = per_window.reindex(starts)
    building = building_imp.groupby(keys).mean().reindex(starts)
    owed_kwh = cars.owed_kwh
    return Outcome(
        peak_kw=max((w.average_kw for w in full if not w.flags), default=0.0),
        baseline_peak_kw=float(base.max()) if len(base) else 0.0,
        planned_peak_kw=max((w.planned_peak_kw for w in full if not math.isnan(w.planned_peak_kw)), default=math.nan),
        contract_before_kw=contract_before_kw,
        charged_kwh=float((ticks["ch"] * gaps).sum()), discharged_kwh=float((ticks["dis"] * gaps).sum()),
        energy_cost=float(sum(w.import_kwh * price[w.start] for w in full)),
        baseline_energy_cost=float((base.fillna(0.0) * WINDOW_H * price).sum()),
        car_energy_adjustment=owed_kwh * float(price.mean()) if len(price) else 0.0,
        demand_rate=cfg.tariff.basic.demand_rate() if cfg.tariff.basic.kind == "demand" else 0.0,
        departures=departures,
        building_peak_kw=float(building.max()) if len(building) else 0.0,
        building_energy_cost=float((building.fillna(0.0) * WINDOW_H * price).sum()),
        settlement=cars.settlement, settlement_kwh=cars.settlement_kwh, settlement_prices=cars.prices,
        wear_cost=cars.wear_cost, wear_kwh=cars.wear_kwh, driver_wear_cost=cars.driver_wear_cost,
        v2h=v2h_value(cfg, price), flagged_windows=sum(1 for w in full if w.flags))


def _more_less(x: float, more: str = "more", less: str = "less") -> str:
    return more if x > 0 else less


def headline_lines(o: Outcome, currency: str, period: str = "this run") -> list[str]:
    """What a decision maker asks first, each amount named by whose money it is. With a demand
    charge: the contract kW with the EMS and without it (the building alone; the same cars charging
    unmanaged), and the site's money for the month against the building alone: the month's basic
    charge on the kW difference, ``period``'s energy and ``period``'s settlement with the drivers.
    Without one: the energy bill against unmanaged charging, and whether V2H pays at this tariff."""
    cur = currency
    if o.demand_rate <= 0:
        lines = [f"  energy cost {period} (the site's bill): {o.energy_cost:,.0f} {cur} with the EMS, "
                 f"{o.baseline_energy_cost:,.0f} with {'the car' if len(o.departures) == 1 else 'the cars'} charging unmanaged "
                 "on arrival (the same energy)"
                 + (f", the car energy used on balance bought back: {o.car_energy_adjustment:,.0f}" if o.car_energy_adjustment else "")
                 + f": {abs(o.energy_saving):,.0f} {cur} {'saved' if o.energy_saving >= 0 else 'lost'}"]
        if o.v2h is not None:
            lines.append(f"  {o.v2h.sentence(cur)}")
        return lines
    cut = o.building_contract_kw - o.contract_kw
    lines = [f"  contract kW: {o.contract_kw:.2f} with the EMS, {o.building_contract_kw:.2f} without "
             f"(the building alone, no car plugged in); {o.unmanaged_contract_kw:.2f} if the same cars charged unmanaged on arrival",
             f"  {cur} per month for the site, net of the drivers' settlement: {o.net_vs_building_per_month:,.0f} {cur} "
             "against the building alone, made of",
             f"    basic charge (the site's bill, for the month): {abs(cut):.2f} kW {_more_less(cut, 'lower', 'higher')} "
             f"x {o.demand_rate:,.2f} {cur}/kW-month = {abs(o.demand_saving_vs_building_per_month):,.0f} {cur} "
             f"{'saved' if o.demand_saving_vs_building_per_month >= 0 else 'more'}",
             f"    energy (the site's bill, {period}): {o.energy_cost:,.0f} {cur} with the EMS, {o.building_energy_cost:,.0f} "
             f"for the building alone: {abs(o.energy_saving_vs_building):,.0f} {cur} "
             + ("saved" if o.energy_saving_vs_building >= 0 else "more (the cars' charging)")
             + (f", the site's own cars' energy used bought back: {o.car_energy_adjustment:,.0f}" if o.car_energy_adjustment else "")]
    if o.settlement_prices:
        price = "/".join(f"{p:g}" for p in o.settlement_prices)
        who = (f"the site paid the drivers {o.settlement:,.0f} {cur} for {o.settlement_kwh:.1f} kWh taken from their cars"
               if o.settlement >= 0 else
               f"the drivers paid the site {-o.settlement:,.0f} {cur} for {-o.settlement_kwh:.1f} kWh their cars gained")
        lines.append(f"    drivers' settlement (the drivers' money, {period}): {who} on balance, at {price} {cur}/kWh")
    lines.append(f"  against unmanaged charging instead (the site's bill; the same energy into the cars, so the same settlement): "
                 f"{abs(o.unmanaged_contract_kw - o.contract_kw):.2f} kW "
                 f"{_more_less(o.unmanaged_contract_kw - o.contract_kw, 'lower', 'higher')}, "
                 f"{abs(o.demand_saving_per_month):,.0f} {cur}/month of basic charge "
                 f"{'saved' if o.demand_saving_per_month >= 0 else 'more'}, "
                 f"{abs(o.energy_saving):,.0f} {cur} {'saved' if o.energy_saving >= 0 else 'more'} on energy {period}")
    return lines


def detail_lines(o: Outcome, currency: str) -> list[str]:
    """The rest of the figures: peaks against the plan, the ratchet, departures, energy, wear."""
    lines = [f"  peak (highest 30-min average import): {o.peak_kw:.2f} kW with the EMS, {o.baseline_peak_kw:.2f} kW "
             f"with unmanaged charging, {o.building_peak_kw:.2f} kW for the building alone (plan's peak {o.planned_peak_kw:.2f} kW)"]
    if o.demand_rate > 0:
        lines.append(f"  contract kW before the run {o.contract_before_kw:.2f} kW (ratchet history in the store), "
                     f"after {o.contract_kw:.2f} kW")
    if o.flagged_windows:
        lines.append(f"  {o.flagged_windows} window(s) with bad meter data: billed for energy, left out of the peak")
    for v, (soc, target) in o.departures.items():
        lines.append(f"  {v}: left with {soc:.1f} % (target {target:.1f} %)")
    lines.append(f"  energy shifted: {o.discharged_kwh:.1f} kWh from the cars into the building, "
                 f"{o.charged_kwh:.1f} kWh charged")
    if o.wear_kwh > 0:
        whose = ("the drivers' batteries" if o.driver_wear_cost >= o.wear_cost - 1e-9 else
                 "the site's own batteries" if o.driver_wear_cost <= 1e-9 else "the site's and the drivers' batteries")
        lines.append(f"  battery wear: {o.wear_kwh:.1f} kWh out of {whose}, {o.wear_cost:,.0f} {currency} as the planner "
                     "prices it (not in the figures above)")
    return lines


def format_outcome(o: Outcome, currency: str, period: str = "this run") -> list[str]:
    """The figures as readable lines: the headline first, then the details."""
    return headline_lines(o, currency, period) + detail_lines(o, currency)
