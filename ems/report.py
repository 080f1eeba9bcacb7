"""The study report: report.html (self-contained, plots embedded) and the same plots as PNG files.

Per site x tariff: monthly bills, monthly peaks, a typical week of dispatch (the week whose load
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

from ems.study.outage import MAX_HOURS
from ems.study.run import ScenarioResult, site_label, tariff_label

COLORS = {"none": "#7f7f7f", "rule": "#ff7f0e", "mpc": "#1f77b4", "oracle": "#2ca02c"}
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
        if s != "none":
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


def _row(s: dict) -> str:
    surv = s["outage_survival"]
    cells = [s["strategy"], money(s["bill"]["total"]), money(s["saving_vs_none"]), pct(s["share_of_oracle_saving"]),
             money(s["net_saving_vs_none"]), pct(s["share_of_oracle_net_saving"]), f"{s['peak_kw']:.1f}",
             money(s["vehicle_discharged_kwh"]), str(s["departure_targets_missed"]), str(s["reserve_breaches"]),
             f"{surv.get('median_hours', 0):.1f}", pct(surv.get("share_reaching_reserve", 0))]
    return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


HEAD = ("strategy", "bill", "saving vs none", "of oracle's saving", "saving net of battery wear", "of oracle's",
        "max peak kW", "V2H discharged kWh",
        "departures missed", "reserve breaches (steps)", "median outage survival h", "starts reaching the reserve hours")


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
                 f"{first['span']['steps']} steps; bills in {html.escape(first['bill']['currency'])}</p>",
                 "<table><tr>" + "".join(f"<th>{h}</th>" for h in HEAD) + "</tr>"
                 + "".join(_row(s) for s in figs.values()) + "</table>"]
        for name in PLOTS:
            data = _png(DRAW[name](group))
            path = out / f"{site}--{tariff}--{name}.png"
            path.write_bytes(data)
            written.append(path)
            parts.append(f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
                         f"<figcaption>{html.escape(path.name)}</figcaption></figure>")
        sections.append("\n".join(parts))
    meta = summary.get("study", {})
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>V2H study</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}} img{{max-width:100%}}</style></head>
<body><h1>V2H/V2B study</h1>
<p>Strategies: {html.escape(", ".join(meta.get("strategies", [])))}; vehicle stays
{"drawn with seed " + str(meta.get("seed")) if meta.get("stochastic") else "as configured"}.
Bills by the tariff engine from the simulated meter series; savings against <code>none</code>.</p>
{"".join(sections)}
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return [path, *written]
