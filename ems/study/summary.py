"""summary.json: per site x tariff x strategy, the bill and what the strategy did.

Savings are against ``none`` on the bill (``saving_vs_none``, ``share_of_oracle_saving``) and on
the bill plus the battery wear the planner prices (``net_saving_vs_none``,
``share_of_oracle_net_saving``): the oracle minimises the latter, so a controller that ignores wear
(the rule) can beat it on the bill alone while wearing the battery for less than it saves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ems.study.run import ScenarioResult, site_label, tariff_label

SHARE_MIN_SAVING = 1e-6   # below this oracle saving [currency] the share of it is undefined


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
        "saving_vs_none": None,
        "share_of_oracle_saving": None,
        "bill_plus_wear": bill["total"] + res.figures["battery_wear_cost"],
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
            _savings(group, lambda s: s["bill_plus_wear"], "net_saving_vs_none", "share_of_oracle_net_saving")
    return {"study": meta, "results": tree}


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
    written[0].write_text(json.dumps(_plain(summary), indent=2) + "\n")
    if series:
        (out / "series").mkdir(exist_ok=True)
        for res in results:
            path = out / "series" / f"{res.scenario.key}.csv"
            frame = res.frame()
            frame.index = [t.isoformat() for t in frame.index]
            frame.index.name = "timestamp"
            frame.to_csv(path)
            written.append(path)
    return written
