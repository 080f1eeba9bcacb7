"""summary.json: per site x tariff x strategy, the bill and what the strategy did.

Whose money: the bill is the site's; ``driver_settlement`` is what the site pays the drivers of
driver-owned cars for the energy taken from them (positive = paid to drivers, negative = they paid
for charging); the wear is the batteries'. ``bill_plus_settlement`` is what the site really pays,
``net_cost`` that plus the wear.

Savings are against ``none`` on the bill (``saving_vs_none``, ``share_of_oracle_saving``), on the
bill plus the drivers' settlement (``settled_saving_vs_none``), and on the net cost
(``net_saving_vs_none``, ``share_of_oracle_net_saving``): the oracle minimises the latter, so a
controller that ignores wear or the drivers' energy (the rule) can beat it on the bill alone while
costing more than it saves.

``headlines`` (per site x tariff) holds what the report and ``ems study`` open with, for a decision
maker: the contract kW at the end of the span per strategy, the deployable EMS (``mpc``) and the
perfect-foresight bound (``oracle``) against the building alone (``building``) and against unmanaged
charging (``none``), each split by whose money it is (the site's bill, of which the basic charge;
the drivers' settlement; the battery wear) and scaled to a year (:func:`per_year_factors`), the
departures kept and the backup hours.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ems.outputs import write_atomic, write_text_atomic
from ems.study.run import ScenarioResult, site_config, site_label, tariff_label

SHARE_MIN_SAVING = 1e-6   # below this oracle saving [currency] the share of it is undefined
DEPLOYABLE, BOUND = "mpc", "oracle"   # the best strategy one can run, and the perfect-foresight bound
BASELINES = ("building", "none")      # the site without its cars, and its cars charging unmanaged
DAYS_PER_YEAR = 365.25


def line_items(bill: dict) -> dict[str, float]:
    """Annual totals of the bill's lines [currency]: basic, energy, adders, export credit, total."""
    months = bill["months"]
    return {k: float(sum(m[k] for m in months)) for k in ("basic", "energy", "adders", "export_credit", "total")}


def scenario_summary(res: ScenarioResult) -> dict:
    """The figures of one scenario (savings are filled in by :func:`summarise`)."""
    bill = res.bill
    months = bill["months"]
    return {
        "site": site_label(res.scenario.config),
        "tariff": tariff_label(res.scenario.tariff),
        "tariff_name": bill["tariff"],
        "strategy": res.scenario.strategy,
        "seed": res.scenario.seed,
        "span": {"start": res.index[0].isoformat(), "end": (res.index[-1] + (res.index[1] - res.index[0])).isoformat(),
                 "steps": len(res.index)},
        "bill": {"total": bill["total"], "currency": bill["currency"], "line_items": line_items(bill),
                 "months": [{k: m[k] for k in ("month", "total", "basic", "energy", "adders", "export_credit",
                                               "import_kwh", "export_kwh", "energy_by_period", "adders_by_name",
                                               "partial")} for m in months]},
        "monthly_peaks_kw": {m["month"]: m["peak_kw"] for m in months},
        "contract_kw": {m["month"]: m["contract_kw"] for m in months},
        "peak_kw": float(max(m["peak_kw"] for m in months)),
        "departures": departures(res),
        "saving_vs_none": None,
        "share_of_oracle_saving": None,
        "bill_plus_wear": bill["total"] + res.figures["battery_wear_cost"],
        "bill_plus_settlement": bill["total"] + res.figures["driver_settlement"],
        "net_cost": bill["total"] + res.figures["driver_settlement"] + res.figures["battery_wear_cost"],
        "settled_saving_vs_none": None,
        "share_of_oracle_settled_saving": None,
        "net_saving_vs_none": None,
        "share_of_oracle_net_saving": None,
        **{k: v for k, v in res.figures.items()},
    }


def summarise(results: list[ScenarioResult], meta: dict) -> dict:
    """``{"study": meta, "results": {site: {tariff: {strategy: figures}}}}`` with savings against
    ``none`` and the share of the oracle's saving each strategy captures."""
    tree: dict = {}
    for res in results:
        s = scenario_summary(res)
        tree.setdefault(s["site"], {}).setdefault(s["tariff"], {})[s["strategy"]] = s
    for tariffs in tree.values():
        for group in tariffs.values():
            _savings(group, lambda s: s["bill"]["total"], "saving_vs_none", "share_of_oracle_saving")
            _savings(group, lambda s: s["bill_plus_settlement"], "settled_saving_vs_none", "share_of_oracle_settled_saving")
            _savings(group, lambda s: s["net_cost"], "net_saving_vs_none", "share_of_oracle_net_saving")
            _peak_gap(group)
    cfgs = {(site_label(r.scenario.config), tariff_label(r.scenario.tariff)): site_config(r.scenario.config, r.scenario.tariff)
            for r in results}
    heads = {site: {tariff: headline(group, cfgs[site, tariff]) for tariff, group in tariffs.items()}
             for site, tariffs in tree.items()}
    return {"study": meta, "results": tree, "headlines": heads}


def departures(res: ScenarioResult) -> int:
    """Departures inside the span: steps after which a plugged-in car is no longer plugged in."""
    p = res.plugged
    if p is None or p.size == 0 or p.shape[1] < 2:
        return 0
    return int((p[:, :-1] & ~p[:, 1:]).sum())


def per_year_factors(months: int, days: float) -> tuple[float, float, bool]:
    """(factor of the basic charge, factor of everything else, whether the span is a year): a span of
    12 billing months and a year's days is not scaled; any other span is scaled to a year, the basic
    charge by 12 / its billing months (it is billed per month, partial months in full) and the rest
    by 365.25 / its days."""
    if months == 12 and abs(days - DAYS_PER_YEAR) <= 1.0:
        return 1.0, 1.0, True
    return 12 / months, DAYS_PER_YEAR / days, False


def compare(base: dict, s: dict, basic_factor: float, other_factor: float) -> dict:
    """What strategy ``s`` saves against ``base`` [currency], by whose money it is: the site's bill
    (of which the basic charge), the drivers' settlement (positive: in the site's favour), the
    battery wear; ``net`` is their sum (= base's net_cost - s's), ``net_per_year`` it scaled."""
    bill = base["bill"]["total"] - s["bill"]["total"]
    basic = base["bill"]["line_items"]["basic"] - s["bill"]["line_items"]["basic"]
    settlement = base["driver_settlement"] - s["driver_settlement"]
    wear = base["battery_wear_cost"] - s["battery_wear_cost"]
    net = bill + settlement + wear
    return {"strategy": s["strategy"], "baseline": base["strategy"], "site_bill": bill, "basic_charge": basic,
            "driver_settlement": settlement, "battery_wear": wear, "net": net,
            "net_per_year": basic * basic_factor + (net - basic) * other_factor}


def headline(group: dict, cfg) -> dict:
    """The plain-language summary's figures of one site x tariff (``cfg``: its site config with that
    tariff). ``site_owned_vehicles``: cars not settled with a driver; with any, the money against the
    building alone also holds the energy those cars drive on, which the building alone never buys."""
    basic = cfg.tariff.basic
    first = next(iter(group.values()))
    months = [m["month"] for m in first["bill"]["months"]]
    start, end = pd.Timestamp(first["span"]["start"]), pd.Timestamp(first["span"]["end"])
    days = (end - start) / pd.Timedelta(days=1)
    fb, fo, is_year = per_year_factors(len(months), days)
    demand = basic.kind == "demand"
    comparisons = {f"{s}_vs_{b}": compare(group[b], group[s], fb, fo)
                   for s in (DEPLOYABLE, BOUND) for b in BASELINES if s in group and b in group}
    return {
        "span": {"start": first["span"]["start"], "end": first["span"]["end"], "days": days,
                 "billing_months": len(months), "is_year": is_year},
        "per_year": {"basic_charge_factor": fb, "other_factor": fo},
        "currency": first["bill"]["currency"],
        "tariff_name": first["tariff_name"],
        "demand_charge": {"rate_per_kw_month": basic.demand_rate(), "ratchet_months": basic.ratchet_months} if demand else None,
        "site_owned_vehicles": sum(v.owner != "driver" for v in cfg.vehicles),
        "contract_month": months[-1],
        "contract_kw": {s: f["contract_kw"].get(months[-1]) for s, f in group.items()},
        "peak_kw": {s: f["peak_kw"] for s, f in group.items()},
        "comparisons": comparisons,
        "departures": {s: {"departures": f["departures"], "missed": f["departure_targets_missed"]}
                       for s, f in group.items() if f["departures"] or f["departure_targets_missed"]},
        "backup_hours": {s: {k: f["outage_survival"].get(k) for k in ("median_hours", "share_reaching_reserve", "reserve_hours")}
                         for s, f in group.items()},
    }


def _savings(group: dict, cost, saving_key: str, share_key: str) -> None:
    """Fill ``saving_key`` (cost of none - cost) and ``share_key`` (that / the oracle's) in each figure set."""
    if "none" not in group:
        return
    base = cost(group["none"])
    best = cost(group["oracle"]) if "oracle" in group else None
    for s in group.values():
        s[saving_key] = base - cost(s)
        if best is not None and base - best > SHARE_MIN_SAVING:
            s[share_key] = (base - cost(s)) / (base - best)


def _peak_gap(group: dict) -> None:
    """``peak_gap_kw`` in mpc's figures when the oracle ran too: per billing month, mpc's peak minus
    the oracle's [kW] (what perfect foresight would have shaved off that month's peak on top)."""
    if DEPLOYABLE not in group or BOUND not in group:
        return
    mpc, oracle = group[DEPLOYABLE]["monthly_peaks_kw"], group[BOUND]["monthly_peaks_kw"]
    group[DEPLOYABLE]["peak_gap_kw"] = {m: mpc[m] - oracle[m] for m in mpc if m in oracle}


def _plain(x):
    """JSON-ready: numpy scalars to Python, NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_outputs(results: list[ScenarioResult], summary: dict, out: Path, series: bool = True) -> list[Path]:
    """summary.json, and per scenario ``series/<site--tariff--strategy>.csv`` (every simulated series)."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "summary.json"]
    write_text_atomic(written[0], json.dumps(_plain(summary), indent=2) + "\n")   # whole or not at all
    if series:
        (out / "series").mkdir(exist_ok=True)
        for res in results:
            path = out / "series" / f"{res.scenario.key}.csv"
            frame = res.frame()
            frame.index = [t.isoformat() for t in frame.index]
            frame.index.name = "timestamp"
            write_atomic(path, frame.to_csv)
            written.append(path)
    return written
