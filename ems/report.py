"""The study report: report.html (self-contained, plots embedded) and the same plots as PNG files.

The page opens with a plain-language summary for a decision maker (:func:`headline_lines`, the
same text ``ems study`` prints above its table): the contract kW before (the building alone,
unmanaged charging) and after (the EMS as deployed, ``mpc``) and what perfect foresight would
reach, the money net of the drivers' settlement and the battery wear, each part named by whose
money it is, over the span and scaled to a year (saying how), the departures kept, the backup
hours and one sentence per strategy (:data:`STRATEGY_TEXT`).

Then per site x tariff: monthly bills, monthly peaks, a typical week of dispatch (the week whose load
energy is the median of the span's whole weeks), the SOC trajectories over that week, and the
outage survival curve. Matplotlib's Agg canvas is used directly (no pyplot state), so reports can
be drawn from worker threads.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ems.outputs import write_atomic, write_text_atomic
from ems.study.outage import MAX_HOURS
from ems.study.run import ScenarioResult, site_label, tariff_label

COLORS = {"building": "#8c564b", "none": "#7f7f7f", "rule": "#ff7f0e", "mpc": "#1f77b4", "oracle": "#2ca02c"}
#: One sentence per strategy: what it is.
STRATEGY_TEXT = {
    "building": "the building alone: the same site with no car plugged in, what it pays without any car or charger.",
    "none": "unmanaged charging: each car charges at full power from plug-in until full and never gives energy back "
            "(plain chargers, no EMS).",
    "rule": "a timer: charge in the tariff's cheapest hours, discharge in its dearest down to the outage reserve and "
            "what the driver still needs.",
    "mpc": "the EMS as deployed (the daemon's planner and dispatch): forecasts from the past only, re-plans every step; "
           "the best strategy one can actually run.",
    "oracle": "perfect foresight of the whole span's load, PV and cars: a bound no real controller reaches, to show "
              "what is left on the table.",
}
NAMES = {"building": "the building alone", "none": "unmanaged charging", "rule": "the timer rule",
         "mpc": "the EMS (mpc)", "oracle": "perfect foresight (oracle)"}
PLOTS = ("monthly_bills", "monthly_peaks", "typical_week", "soc", "survival")


def _figure(width: float = 9, height: float = 4) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def typical_week(index: pd.DatetimeIndex, load_kw: np.ndarray) -> slice:
    """Steps of the whole Monday-to-Sunday week whose load energy is the median of the span's whole
    weeks (the whole span when it has none)."""
    local = index
    steps_per_day = int(round(pd.Timedelta(days=1) / (index[1] - index[0])))
    n = 7 * steps_per_day
    mondays = np.flatnonzero((np.asarray(local.day_of_week) == 0) & (np.asarray(local.hour) == 0) & (np.asarray(local.minute) == 0))
    weeks = [m for m in mondays if m + n <= len(index)]
    if not weeks:
        return slice(0, len(index))
    energy = np.array([load_kw[m:m + n].sum() for m in weeks])
    pick = weeks[int(np.argsort(energy)[len(energy) // 2])]
    return slice(pick, pick + n)


def plot_monthly_bills(group: Sequence[ScenarioResult]) -> Figure:
    """Grouped bars: each month's bill per strategy."""
    fig = _figure()
    ax = fig.add_subplot()
    months = [m["month"] for m in group[0].bill["months"]]
    width = 0.8 / len(group)
    x = np.arange(len(months))
    for i, res in enumerate(group):
        s = res.scenario.strategy
        ax.bar(x + i * width - 0.4 + width / 2, [m["total"] for m in res.bill["months"]], width, label=s,
               color=COLORS.get(s))
    ax.set_xticks(x, months, rotation=45 if len(months) > 6 else 0)
    ax.set_ylabel(f"bill [{group[0].bill['currency']}]")
    ax.set_title("Monthly bills")
    ax.legend()
    return fig


def plot_monthly_peaks(group: Sequence[ScenarioResult]) -> Figure:
    """Each month's 30-minute peak and contract kW per strategy."""
    fig = _figure()
    ax = fig.add_subplot()
    months = [m["month"] for m in group[0].bill["months"]]
    for res in group:
        s = res.scenario.strategy
        ax.plot(months, [m["peak_kw"] for m in res.bill["months"]], "o-", color=COLORS.get(s), label=f"{s} peak")
        contract = [m["contract_kw"] for m in res.bill["months"]]
        if any(c is not None for c in contract):
            ax.plot(months, [np.nan if c is None else c for c in contract], "--", color=COLORS.get(s), alpha=0.6,
                    label=f"{s} contract")
    ax.set_ylabel("kW")
    ax.set_title("Monthly peak (30-minute average import) and contract kW")
    ax.legend(fontsize=8, ncol=2)
    if len(months) > 6:
        ax.tick_params(axis="x", rotation=45)
    return fig


def plot_typical_week(group: Sequence[ScenarioResult]) -> Figure:
    """Load, PV and each strategy's grid import over the typical week; the cars' net power below."""
    ref = group[0]
    w = typical_week(ref.index, ref.load_kw)
    t = ref.index[w].tz_localize(None)
    fig = _figure(10, 6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.fill_between(t, ref.load_kw[w], step="post", color="#dddddd", label="load")
    top.step(t, ref.pv_kw[w], where="post", color="#bcbd22", label="PV")
    for res in group:
        s = res.scenario.strategy
        top.step(t, res.import_kw[w], where="post", color=COLORS.get(s), label=f"import ({s})", lw=1)
        if s not in ("none", "building"):
            net = (res.discharge_kw - res.charge_kw).sum(axis=0)[w]
            bottom.step(t, net, where="post", color=COLORS.get(s), label=s, lw=1)
    top.set_ylabel("kW")
    top.set_title(f"Typical week of dispatch ({t[0]:%Y-%m-%d} to {t[-1]:%Y-%m-%d})")
    top.legend(fontsize=8, ncol=3)
    bottom.axhline(0, color="black", lw=0.5)
    bottom.set_ylabel("cars: discharge - charge [kW]")
    bottom.legend(fontsize=8)
    return fig


def plot_soc(group: Sequence[ScenarioResult]) -> Figure:
    """Each car's SOC [% of capacity] over the typical week, one panel per strategy."""
    ref = group[0]
    w = typical_week(ref.index, ref.load_kw)
    t = ref.index[w].tz_localize(None)
    group = [res for res in group if res.vehicles] or group[:1]   # the building alone has no car
    fig = _figure(10, 2.2 * len(group) + 0.5)
    axes = np.atleast_1d(fig.subplots(len(group), 1, sharex=True, sharey=True))
    for ax, res in zip(axes, group):
        for v, vid in enumerate(res.vehicles):
            soc = res.soc_kwh[v, :-1][w]
            cap = res.capacity_kwh[v]
            ax.plot(t, 100 * soc / cap, label=vid, lw=1)
        ax.set_ylabel(f"{res.scenario.strategy}\nSOC [%]")
        ax.set_ylim(0, 105)
    axes[0].set_title("SOC trajectories over the typical week [% of capacity]")
    axes[0].legend(fontsize=8, ncol=4)
    return fig


def plot_survival(group: Sequence[ScenarioResult]) -> Figure:
    """Share of start hours at which the critical load would be carried for at least x hours."""
    fig = _figure()
    ax = fig.add_subplot()
    x = np.arange(0, MAX_HOURS + 1)
    for res in group:
        h = np.sort(res.survival_hours)
        if h.size:
            ax.step(x, 1 - np.searchsorted(h, x, side="left") / h.size, where="post",
                    color=COLORS.get(res.scenario.strategy), label=res.scenario.strategy)
    ax.set_xlabel("outage duration [h]")
    ax.set_ylabel("share of start hours survived")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, MAX_HOURS)
    ax.set_xticks([0, 12, 24, 48, 72, 96, 120, 144, 168])
    ax.grid(alpha=0.3)
    ax.set_title("Outage survival (critical load from PV and the plugged-in cars)")
    ax.legend()
    return fig


DRAW = {"monthly_bills": plot_monthly_bills, "monthly_peaks": plot_monthly_peaks, "typical_week": plot_typical_week,
        "soc": plot_soc, "survival": plot_survival}


def money(x: float | None) -> str:
    """An amount with thousands separators, empty for None."""
    return "" if x is None else f"{x:,.0f}"


def pct(x: float | None) -> str:
    """A share as a percentage with one decimal, empty for None."""
    return "" if x is None else f"{100 * x:.1f} %"


def kw(x: float | None) -> str:
    """A power with one decimal and its unit, empty for None."""
    return "" if x is None else f"{x:.1f} kW"


def _row(s: dict) -> str:
    surv = s["outage_survival"]
    contract = [c for c in s["contract_kw"].values() if c is not None]
    cells = [s["strategy"], money(s["bill"]["total"]), money(s["driver_settlement"]), money(s["bill_plus_settlement"]),
             money(s["battery_wear_cost"]), money(s["net_cost"]), money(s["net_saving_vs_none"]),
             pct(s["share_of_oracle_net_saving"]), money(s["saving_vs_none"]), pct(s["share_of_oracle_saving"]),
             f"{contract[-1]:.1f}" if contract else "", f"{s['peak_kw']:.1f}",
             money(s["vehicle_charged_kwh"]), money(s["vehicle_discharged_kwh"]), str(s["departure_targets_missed"]),
             str(s["reserve_breaches"]), f"{surv.get('median_hours', 0):.1f}", pct(surv.get("share_reaching_reserve", 0))]
    return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


HEAD = ("strategy", "bill (the site's)", "drivers' settlement (+ paid to drivers, - paid by them)", "bill + settlement",
        "battery wear", "net cost (bill + settlement + wear)", "net saving vs none", "of oracle's",
        "bill saving vs none (the site's bill only)", "of oracle's", "contract kW at the end", "max peak kW",
        "vehicles charged kWh", "vehicles discharged kWh",
        "departures missed", "reserve breaches (steps)", "median outage survival h", "starts reaching the reserve hours")


def _amount(x: float, cur: str) -> str:
    return f"{abs(x):,.0f} {cur}"


def _saving_text(c: dict, h: dict) -> str:
    """One comparison as a sentence: each part by whose money it is, the net over the span and per year."""
    cur = h["currency"]
    parts = [f"the site's bill {_amount(c['site_bill'], cur)} {'lower' if c['site_bill'] >= 0 else 'higher'}"
             + (f" (of which the basic charge {_amount(c['basic_charge'], cur)} {'lower' if c['basic_charge'] >= 0 else 'higher'})"
                if abs(c["basic_charge"]) >= 0.5 else "")]
    if abs(c["driver_settlement"]) >= 0.5:
        parts.append(f"the drivers' settlement {_amount(c['driver_settlement'], cur)} in "
                     f"{'the site' + chr(39) + 's' if c['driver_settlement'] >= 0 else 'the drivers' + chr(39)} favour")
    if abs(c["battery_wear"]) >= 0.5:
        parts.append(f"battery wear {_amount(c['battery_wear'], cur)} {'less' if c['battery_wear'] >= 0 else 'more'}")
    net = c["net"]
    span = "over the year" if h["span"]["is_year"] else "over the span"
    text = (f"{NAMES[c['strategy']][0].upper()}{NAMES[c['strategy']][1:]} against {NAMES[c['baseline']]}: "
            f"{', '.join(parts)}: net {_amount(net, cur)} {'saved' if net >= 0 else 'lost'} {span}")
    if not h["span"]["is_year"]:
        per_year = c["net_per_year"]
        text += f", about {_amount(per_year, cur)} a year {'saved' if per_year >= 0 else 'lost'} (scaled, see below)"
    return text + "."


def headline_lines(h: dict) -> list[str]:
    """The plain-language summary of one site x tariff (a ``headlines`` entry of summary.json), one
    sentence per item: contract kW, money by whose it is (over the span, and per year saying how it
    was scaled), departures kept, backup hours, what each strategy is."""
    cur, cmp = h["currency"], h["comparisons"]
    span = h["span"]
    start, end = span["start"][:10], span["end"][:10]
    lines = [f"{start} to {end} ({span['days']:.0f} days, {span['billing_months']} billing month(s)), {h['tariff_name']}."]
    present = list(h["contract_kw"])
    before = [f"{NAMES[s]} {kw(h['contract_kw'][s])}" for s in ("building", "none") if s in present]
    after = [f"with {NAMES[s]} {kw(h['contract_kw'][s])}" for s in ("mpc",) if s in present]
    bound = [f"{NAMES['oracle']} would reach {kw(h['contract_kw']['oracle'])}"] if "oracle" in present else []
    d = h["demand_charge"]
    if d is not None:
        lines.append(f"Contract kW in {h['contract_month']} (the highest 30-minute average import of that month and the "
                     f"{d['ratchet_months']} before, billed at {d['rate_per_kw_month']:,.2f} {cur}/kW-month): "
                     + "; ".join(x for x in (", ".join(before), ", ".join(after), ", ".join(bound)) if x) + ".")
    else:
        peaks = [f"{NAMES[s]} {kw(h['peak_kw'][s])}" for s in present]
        lines.append("No demand charge under this tariff: the peak does not set the bill (highest 30-minute import: "
                     + ", ".join(peaks) + ").")
    full = "mpc" if any(k.startswith("mpc_") for k in cmp) else "oracle"   # without the EMS studied: the bound itself
    own = h.get("site_owned_vehicles", 0)
    bases = ("building", "none") if not own or "none" not in h["contract_kw"] else ("none",)
    for key in (f"{full}_vs_{b}" for b in bases):
        if key in cmp:
            lines.append(_saving_text(cmp[key], h))
    if bases == ("none",) and f"{full}_vs_building" in cmp:
        lines.append(f"No money against the building alone: the site's own car{'s' if own > 1 else ''} drive{'' if own > 1 else 's'} "
                     "on energy the site buys, which the building alone never pays for; the money is measured against "
                     "unmanaged charging, the same cars and trips without the EMS.")
    for base in bases if full == "mpc" else ():
        if f"oracle_vs_{base}" in cmp:
            o = cmp[f"oracle_vs_{base}"]
            line = (f"The bound: {NAMES['oracle']} against {NAMES[base]} would save {_amount(o['net'], cur)} net of "
                    f"the drivers' settlement and the wear {'over the year' if span['is_year'] else 'over the span'}")
            m = cmp.get(f"mpc_vs_{base}")
            if m is not None and o["net"] > 0:
                line += f"; the EMS gets {100 * m['net'] / o['net']:.0f} % of it"
            lines.append(line + ".")
            break
    if not span["is_year"] and cmp:
        py = h["per_year"]
        lines.append(f"Per year: the span scaled to a year, the basic charge x {py['basic_charge_factor']:.2f} "
                     f"(12 / {span['billing_months']} billing month(s); it is billed per month) and the rest x "
                     f"{py['other_factor']:.1f} (365.25 / {span['days']:.1f} days): a rough guide that assumes the "
                     "rest of the year is like the span, not a forecast.")
    if h["departures"]:
        kept = [f"{NAMES[s]} {x['departures'] - x['missed']} of {x['departures']}" + (f" ({x['missed']} missed)" if x["missed"] else "")
                for s, x in h["departures"].items()]
        lines.append("Departures kept (the car had what its driver needs when it left): " + "; ".join(kept) + ".")
    b = h["backup_hours"]
    if b:
        res = next((x["reserve_hours"] for x in b.values() if x.get("reserve_hours")), None)
        share = res is not None and all(x.get("share_reaching_reserve") is not None for x in b.values())
        hrs = [f"{NAMES[s]} {x['median_hours']:.1f} h" + (f" / {100 * x['share_reaching_reserve']:.0f} %" if share else "")
               for s, x in b.items() if x.get("median_hours") is not None]
        if hrs:
            lines.append("Backup hours in a grid outage (the critical load carried by PV and the plugged-in cars), the median "
                         "over every start hour of the span" + (f" / the share of start hours reaching the {res:g} h reserve"
                                                               if share else "") + ": " + "; ".join(hrs) + ".")
    lines.append("Whose money: the bill is the site's; the drivers' settlement is paid to (or by) the drivers of "
                 "driver-owned cars for the energy taken from (or given to) them; the wear is the batteries' "
                 "(priced per kWh discharged, as the planner does).")
    return lines


def strategy_lines(strategies) -> list[str]:
    """One sentence per strategy present: what it is."""
    return [f"{s}: {STRATEGY_TEXT[s]}" for s in strategies if s in STRATEGY_TEXT]


def summary_html(summary: dict) -> str:
    """The report's first section: the plain-language summary of every site x tariff and the strategies."""
    parts = ['<section id="summary"><h2>Summary</h2>']
    strategies = []
    for site, tariffs in summary.get("headlines", {}).items():
        for tariff, h in tariffs.items():
            parts.append(f"<h3>{html.escape(site)} &middot; {html.escape(h['tariff_name'])}</h3><ul>"
                         + "".join(f"<li>{html.escape(line)}</li>" for line in headline_lines(h)) + "</ul>")
            strategies += [s for s in h["contract_kw"] if s not in strategies]
    parts.append("<h3>The strategies</h3><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in strategy_lines(strategies))
                 + "</ul></section>")
    return "\n".join(parts)


def write_report(results: Sequence[ScenarioResult], summary: dict, out: Path) -> list[Path]:
    """report.html and ``<site>--<tariff>--<plot>.png`` for every site x tariff; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], list[ScenarioResult]] = {}
    for res in results:
        groups.setdefault((site_label(res.scenario.config), tariff_label(res.scenario.tariff)), []).append(res)
    written, sections = [], []
    for (site, tariff), group in groups.items():
        figs = summary["results"][site][tariff]
        first = next(iter(figs.values()))
        parts = [f"<h2>{html.escape(site)} &middot; {html.escape(first['tariff_name'])}</h2>",
                 f"<p>{html.escape(first['span']['start'])} to {html.escape(first['span']['end'])}, "
                 f"{first['span']['steps']} steps; amounts in {html.escape(first['bill']['currency'])}</p>",
                 "<table><tr>" + "".join(f"<th>{h}</th>" for h in HEAD) + "</tr>"
                 + "".join(_row(s) for s in figs.values()) + "</table>"]
        for name in PLOTS:
            data = _png(DRAW[name](group))
            path = out / f"{site}--{tariff}--{name}.png"
            write_atomic(path, lambda tmp, data=data: tmp.write_bytes(data))
            written.append(path)
            parts.append(f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
                         f"<figcaption>{html.escape(path.name)}</figcaption></figure>")
        sections.append('<section class="detail">' + "\n".join(parts) + "</section>")
    meta = summary.get("study", {})
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>V2H study</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}} img{{max-width:100%}}</style></head>
<body><h1>V2H/V2B study</h1>
{summary_html(summary)}
<h2>Details</h2>
<p>Strategies: {html.escape(", ".join(meta.get("strategies", [])))}; vehicle stays
{"drawn with seed " + str(meta.get("seed")) if meta.get("stochastic") else "as configured"}.
Bills by the tariff engine from the simulated meter series; savings in the tables against <code>none</code>.</p>
{"".join(sections)}
</body></html>
"""
    path = out / "report.html"
    write_text_atomic(path, page)
    return [path, *written]
