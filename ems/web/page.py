"""The page: server-rendered HTML (layout, labels, forms) that ``static/app.js`` fills with the live
figures of ``/api/status`` every second, and today's plan against what was metered as a
server-drawn SVG (:func:`chart_svg`, ``/chart.svg``; no chart library, nothing from the internet).

Labels come from ``static/i18n.json`` (English and Japanese): the page is rendered in the language
asked for (``?lang=``, else the ``lang`` cookie the switch sets, else the browser's
``Accept-Language``), and the script switches without a reload.
"""

from __future__ import annotations

import functools
import json
import math
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ems.timegrid import WINDOW, local_iso, window_start

if TYPE_CHECKING:
    from ems.daemon.core import Daemon

STATIC = Path(__file__).resolve().parent / "static"
LANGS = ("en", "ja")
#: Chart size [px] (the SVG scales to the card's width) and its colours per series.
WIDTH, HEIGHT, PAD_L, PAD_R, PAD_T, PAD_B = 720, 300, 44, 26, 12, 46   # PAD_R: room for the 24:00 label
COLOURS = {"load_kw": "#7a7a7a", "pv_kw": "#e0a800", "import_kw": "#1f6fd1", "actual": "#0b3d91", "limit": "#c62828"}
CAR_COLOURS = ("#2e7d32", "#8e24aa", "#ef6c00", "#00838f", "#6d4c41", "#ad1457")


@functools.cache
def labels() -> dict[str, dict[str, str]]:
    """The page's labels by language (``static/i18n.json``)."""
    return json.loads((STATIC / "i18n.json").read_text(encoding="utf-8"))


def pick_lang(query: str | None, cookie: str | None, accept: str | None) -> str:
    """``en`` or ``ja``: the query's, the cookie's, else Japanese for a browser that prefers it."""
    for asked in (query, cookie):
        if asked in LANGS:
            return asked
    return "ja" if (accept or "").strip().lower().startswith("ja") else "en"


def _t(lang: str, key: str, tag: str = "span", attrs: str = "") -> str:
    """An element whose text is the label ``key`` (``data-i18n`` lets the script switch it)."""
    return f'<{tag} data-i18n="{key}"{attrs}>{escape(labels()[lang][key])}</{tag}>'


def _field(lang: str, key: str, control: str) -> str:
    return f"<label>{_t(lang, key)}{control}</label>"


def _form(lang: str, kind: str, title: str, fields: list[str]) -> str:
    return (f'<details><summary>{_t(lang, title)}</summary><form class="override" data-kind="{kind}">'
            + "".join(fields) + f'<button type="submit">{_t(lang, "submit")}</button></form></details>')


def render(d: Daemon, lang: str) -> str:
    """The page in ``lang`` for the running daemon (no live figures: the script fetches them)."""
    cfg = d.cfg
    cars = "".join(f'<option value="{escape(v.id)}">{escape(v.id)}</option>' for v in cfg.vehicles)
    car = f'<select name="vehicle" required>{cars}</select>'
    every = f'<select name="vehicle"><option value="" data-i18n="all_cars">{labels()[lang]["all_cars"]}</option>{cars}</select>'
    until = '<input type="datetime-local" name="until" step="60" required>'
    pct = '<input type="number" name="target_soc_pct" min="0" max="100" step="1" required>'
    forms = [
        _form(lang, "departure", "set_departure", [_field(lang, "car", car), _field(lang, "depart_at",
              '<input type="datetime-local" name="depart" step="60" required>'), _field(lang, "target_pct", pct)]),
        _form(lang, "boost", "boost", [_field(lang, "car", car), _field(lang, "target_pct", pct), _field(
            lang, "until", '<input type="datetime-local" name="until" step="60">') + _t(lang, "until_default", "small")]),
        _form(lang, "pause-v2b", "pause", [_field(lang, "car", every), _field(lang, "until", until)]),
        _form(lang, "reserve", "reserve", [_field(lang, "hours", '<input type="number" name="hours" min="0.5" max="336" '
                                                                 'step="0.5" required>'), _field(lang, "until", until)]),
        _form(lang, "peak-target", "peak_target", [_field(lang, "kw", f'<input type="number" name="kw" min="0.1" '
                                                          f'max="{cfg.grid.import_limit_kw:g}" step="0.1" required>'),
                                                   _field(lang, "until", until)]),
    ]
    heads = "".join(f"<th>{_t(lang, k)}</th>" for k in ("car", "unit", "soc", "car_target", "departure", "power", "setpoint",
                                                         "plan_step", "seen"))
    figure = '<div><dt>{}</dt><dd id="{}">–</dd></div>'
    demand = "".join(figure.format(_t(lang, k), i) for k, i in (("so_far", "w-kwh"), ("average_so_far", "w-avg"),
                                                                ("import_now", "w-now"), ("predicted", "w-pred"),
                                                                ("target", "w-target")))
    month = "".join(figure.format(_t(lang, k), i) for k, i in (("month_peak", "m-peak"), ("contract", "m-contract"),
                                                               ("plan", "p-state")))
    return f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(cfg.site.name)}</title><link rel="stylesheet" href="/static/app.css"></head>
<body data-lang="{lang}">
<header><h1>{_t(lang, "title")} <span class="site">{escape(cfg.site.name)}</span></h1>
<div class="meta"><span id="clock"></span><span id="alive" class="pill"></span>
<button id="lang" type="button" data-i18n="lang">{escape(labels()[lang]["lang"])}</button></div></header>
<div id="grid-down" class="banner" hidden>{_t(lang, "grid_down")}</div>
<main>
<section class="card" id="demand"><h2>{_t(lang, "demand")}</h2>
<p class="window">{_t(lang, "window")} <b id="w-range">–</b></p><div class="bar"><div id="w-progress"></div></div>
<dl class="figures">{demand}</dl><p id="alarm" class="alarm ok">–</p></section>
<section class="card" id="month"><h2>{_t(lang, "month")} <span id="m-name"></span></h2>
<dl class="figures">{month}</dl><div class="bar peak"><div id="m-bar"></div></div></section>
<section class="card wide" id="chart"><h2>{_t(lang, "chart")}</h2><div id="chart-svg" class="chart"></div></section>
<section class="card wide" id="cars"><h2>{_t(lang, "cars")}</h2>
<div class="scroll"><table><thead><tr>{heads}</tr></thead><tbody id="car-rows"></tbody></table></div></section>
<section class="card wide" id="overrides"><h2>{_t(lang, "overrides")}</h2><ul id="ov-list"></ul>
<div class="who">{_field(lang, "token", '<input type="password" id="token" autocomplete="off">')}
<small>{_t(lang, "token_hint")}</small>{_field(lang, "who", '<input type="text" id="who" maxlength="64">')}</div>
{"".join(forms)}<p id="ov-msg" role="status"></p></section>
<section class="card" id="bill"><h2>{_t(lang, "bill")}</h2><div class="scroll"><table id="bill-table"></table></div>
<small>{_t(lang, "bill_estimate")}</small></section>
<section class="card" id="events"><h2>{_t(lang, "events")}</h2><ol id="ev-list"></ol>
<button id="ev-more" type="button">{_t(lang, "more")}</button></section>
</main>
<script src="/static/app.js"></script>
</body></html>
"""


# ----------------------------------------------------------------------------- the chart

class Actuals:
    """Each demand window's mean charge - discharge per unit [kW] from the telemetry, kept per
    window once it is closed, so each chart reads only the ticks since the last closed window."""

    def __init__(self) -> None:
        self.kw: dict[pd.Timestamp, dict[str, float]] = {}

    def update(self, d: Daemon, since: pd.Timestamp, now: pd.Timestamp) -> dict[pd.Timestamp, dict[str, float]]:
        """The windows from ``since`` to ``now`` (the open one as far as it went)."""
        zone = d.cfg.tariff.timezone
        done = [t for t in self.kw if t >= since]
        frm = max(done) + WINDOW if done else since
        rows = d.store.telemetry(since=frm)
        out = {t: v for t, v in self.kw.items() if t >= since}
        if not rows.empty:
            rows["net"] = rows["charge_kw"].fillna(0.0) - rows["discharge_kw"].fillna(0.0)
            rows["w"] = [window_start(t, zone) for t in rows["ts"]]
            for (w, device), net in rows.groupby(["w", "device"])["net"].mean().items():
                out.setdefault(w, {})[device] = float(net)
        current = window_start(now, zone)
        self.kw = {t: v for t, v in out.items() if t < current}   # closed windows only are kept
        return out


def _nice_step(span: float) -> float:
    raw = span / 5
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def chart_svg(d: Daemon, lang: str, actuals: Actuals) -> str:
    """Today (local midnight to midnight): the plan in force (load, PV, import, each unit's net
    charge, dashed) against what was metered per 30-minute window (import, each unit, solid), the
    month's peak (red) and now."""
    cfg, now = d.cfg, d.clock.now()
    zone = cfg.zone
    day = now.tz_convert(zone).normalize()
    end = day + pd.Timedelta(days=1)
    text = labels()[lang]
    series: list[tuple[str, str, bool, list[tuple[pd.Timestamp, float]]]] = []   # label, colour, dashed, points
    p = d.plan
    if p is not None:
        sched = p.result.schedule.loc[day:end - pd.Timedelta(seconds=1)]
        for col, key in (("load_kw", "load"), ("pv_kw", "pv"), ("import_kw", "import")):
            if col in sched:
                series.append((text[key], COLOURS[col], True, list(sched[col].items())))
        for i, u in enumerate(d.units):
            c = u.charger.id
            if f"{c}_charge_kw" in sched:
                net = sched[f"{c}_charge_kw"] - sched[f"{c}_discharge_kw"]
                series.append((c, CAR_COLOURS[i % len(CAR_COLOURS)], True, list(net.items())))
    windows = [w for w in d.store.windows(d.tracker.month_of(now)) if day <= pd.Timestamp(w["start"]) < end]
    metered = [(pd.Timestamp(w["start"]), w["average_kw"]) for w in windows]
    series.append((text["actual_import"], COLOURS["actual"], False, metered))
    per_unit = actuals.update(d, day, now)
    for i, u in enumerate(d.units):
        pts = sorted((t, v[u.charger.id]) for t, v in per_unit.items() if u.charger.id in v)
        series.append((u.charger.id, CAR_COLOURS[i % len(CAR_COLOURS)], False, pts))
    peak = d.store.month_peaks().get(d.tracker.month_of(now), 0.0)
    values = [v for *_, pts in series for _, v in pts if math.isfinite(v)] + [peak, 0.0]
    lo, hi = min(values), max(values) * 1.05 + 0.1
    step = _nice_step(hi - lo)
    lo = math.floor(lo / step) * step
    w, h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B

    def x(t: pd.Timestamp) -> float:
        return PAD_L + w * ((t - day) / (end - day))

    def y(v: float) -> float:
        return PAD_T + h * (1 - (v - lo) / (hi - lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="{escape(text["chart"])}" font-size="11" font-family="sans-serif">']
    v = lo
    while v <= hi + 1e-9:
        out.append(f'<line x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e3e3e3"/>'
                   f'<text x="{PAD_L - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        v += step
    for hour in range(0, 25, 3):
        t = day + pd.Timedelta(hours=hour)
        out.append(f'<text x="{x(t):.1f}" y="{PAD_T + h + 14}" text-anchor="middle">{hour:02d}:00</text>')
    out.append(f'<text x="4" y="{PAD_T + 8}">kW</text>')
    if peak > 0:
        out.append(f'<line x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y(peak):.1f}" y2="{y(peak):.1f}" stroke="{COLOURS["limit"]}" '
                   f'stroke-dasharray="2 3"><title>{escape(text["month_peak"])} {peak:.2f} kW</title></line>')
    for label, colour, dashed, pts in series:   # a step line: each value holds for its 30 minutes
        if not pts:
            continue
        path = []
        for t, val in pts:
            if not math.isfinite(val):
                continue
            path.append(f"{'M' if not path else 'L'}{x(t):.1f},{y(val):.1f} H{min(x(t + WINDOW), WIDTH - PAD_R):.1f}")
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        out.append(f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" stroke-width="{1.4 if dashed else 2}"{dash}>'
                   f"<title>{escape(label)}</title></path>")
    out.append(f'<line x1="{x(now):.1f}" x2="{x(now):.1f}" y1="{PAD_T}" y2="{PAD_T + h}" stroke="#000" stroke-width="0.8"/>'
               f'<text x="{x(now) + 3:.1f}" y="{PAD_T + 10}">{escape(text["now"])} {local_iso(now, zone)[11:16]}</text>')
    legend = [(text["actual_import"], COLOURS["actual"], False)] + [(s[0], s[1], s[2]) for s in series if s[2]]
    for i, (label, colour, dashed) in enumerate(legend):
        lx, ly = PAD_L + (i % 5) * 135, HEIGHT - 22 + (i // 5) * 13
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        out.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"{dash}/>'
                   f'<text x="{lx + 22}" y="{ly}">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)
