"""The JSON documents of the API, built from the running daemon (and, for history, its store).

Times are in the site's zone as ISO 8601 with the offset, to the second (``2024-07-08T16:00:05+09:00``,
:func:`ems.timegrid.local_iso`); power in kW, energy in kWh, SOC in % of the car's capacity,
money in the tariff's currency, ages in seconds of the daemon's clock (simulated with ``--speed``).
Each function reads what the daemon holds in memory where it can: the status is read every second
by the page, on the event loop the dispatch ticks run on.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ems.billing import compute_bill, site_contract_kw
from ems.timegrid import WINDOW, WINDOW_H, local_iso

if TYPE_CHECKING:
    from ems.config import Vehicle
    from ems.daemon.core import Daemon
    from ems.daemon.links import UnitLink

#: The window's predicted average at or above this share of its target is a warning (amber) [fraction].
WARN_SHARE = 0.95
#: Events per page: the default and the most a page may ask for.
EVENTS_PAGE, EVENTS_MAX = 50, 500


def _r(x: float | None, nd: int = 3) -> float | None:
    """A number for JSON: rounded, None for missing or not finite."""
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def _age_s(now: pd.Timestamp, t: pd.Timestamp | None) -> float | None:
    return None if t is None else _r((now - t).total_seconds(), 1)


def window(d: Daemon, now: pd.Timestamp) -> dict[str, Any]:
    """The demand window under way: start/end, kWh so far, the average so far and the predicted
    average at the window's end (so far + the import now for the time left), the guard's target
    and the alarm: ``over`` (predicted above the target), ``warn`` (above WARN_SHARE of it), ``ok``."""
    acc, zone = d.window, d.cfg.zone
    cur = acc.current
    target = d.dispatcher.guard_target_kw(now)
    if cur is None:
        return {"start": None, "end": None, "elapsed_s": None, "import_kwh": None, "average_kw": None,
                "import_now_kw": None, "predicted_kw": None, "target_kw": _r(target), "alarm": "ok"}
    elapsed = min(max(acc.elapsed_h(now), 0.0), WINDOW_H)
    predicted = (cur.import_kwh + acc.last_kw * (WINDOW_H - elapsed)) / WINDOW_H
    alarm = "over" if predicted > target + 1e-6 else "warn" if predicted >= WARN_SHARE * target else "ok"
    return {"start": local_iso(cur.start, zone), "end": local_iso(cur.start + WINDOW, zone), "elapsed_s": _r(elapsed * 3600, 0),
            "import_kwh": _r(cur.import_kwh), "average_kw": _r(cur.import_kwh / elapsed) if elapsed > 0 else None,
            "import_now_kw": _r(acc.last_kw), "predicted_kw": _r(predicted), "target_kw": _r(target), "alarm": alarm}


def month(d: Daemon, now: pd.Timestamp) -> dict[str, Any]:
    """This billing month's peak and the contract kW (the ratchet), each with where it came from."""
    m = d.tracker.month_of(now)
    sources = d.store.month_peak_sources()
    kw, by = site_contract_kw(m, {k: r["peak_kw"] for k, r in sources.items()}, d.cfg.tariff)
    return {"month": m, "peak_kw": _r(sources[m]["peak_kw"]) if m in sources else 0.0,
            "peak_source": sources[m]["source"] if m in sources else None,
            "contract_kw": _r(kw), "contract_set_by": by, "contract_source": sources[by]["source"] if by in sources else None}


def vehicle_status(d: Daemon, v: Vehicle, now: pd.Timestamp) -> dict[str, Any]:
    """A car's SOC (the tracker's last, % and kWh), target and departure (an override's, else the
    configured stay's), and whether it may discharge now. ``d``: the daemon, or what ``ems status``
    builds from the store with its ``cfg``, ``tracker`` and ``overrides``."""
    soc = d.tracker.soc_kwh.get(v.id)
    dep = d.overrides.departure(v, now)
    return {"vehicle": v.id, "capacity_kwh": v.capacity_kwh,
            "soc_pct": _r(100 * soc / v.capacity_kwh, 1) if soc is not None else None, "soc_kwh": _r(soc, 2),
            "target_pct": _r(100 * dep[0] / v.capacity_kwh, 1) if dep else None, "target_kwh": _r(dep[0], 2) if dep else None,
            "departure": local_iso((now + pd.Timedelta(hours=dep[1])).round("s"), d.cfg.zone) if dep else None,   # hours: a float
            "discharge_allowed": not d.overrides.no_discharge(v.id, now),
            "boost_pct": _r(100 * b / v.capacity_kwh, 1) if (b := d.overrides.boost_kwh(v, now)) is not None else None}


def _unit(d: Daemon, u: UnitLink, now: pd.Timestamp, row: pd.Series | None) -> dict[str, Any]:
    """One unit: reachable, plugged, the car on it (:func:`vehicle_status`, SOC as the unit reads it now), the
    measured power (+ charge, - discharge), the setpoint written last, the plan's step, when it last answered."""
    s, cid = u.state, u.charger.id
    v = d.tracker.vehicle_on(u, s) if s is not None else None
    car = vehicle_status(d, v, now) if v is not None else {"vehicle": s.vehicle_id if s is not None and s.plugged else None}
    if s is not None and s.plugged and s.soc_pct is not None:
        car["soc_pct"] = _r(s.soc_pct, 1)
        if v is not None:
            car["soc_kwh"] = _r(v.pct_kwh(s.soc_pct), 2)
    seen = d.stats.unit_seen.get(cid)
    sp = u.setpoint
    return {"id": cid, "reachable": s is not None, "fault": u.fault, "plugged": None if s is None else s.plugged, **car,
            "power_kw": None if s is None else _r(s.charge_kw - s.discharge_kw),
            "setpoint": None if sp is None else {"charge_kw": _r(sp.charge_kw), "discharge_kw": _r(sp.discharge_kw),
                                                 "reason": sp.reason},
            "plan_step": None if row is None else {"charge_kw": _r(float(row[f"{cid}_charge_kw"])),
                                                   "discharge_kw": _r(float(row[f"{cid}_discharge_kw"]))},
            "last_seen": None if seen is None else local_iso(seen, d.cfg.zone), "heartbeat_age_s": _age_s(now, seen)}


def plan_brief(d: Daemon, now: pd.Timestamp) -> dict[str, Any] | None:
    """The plan in force in brief: id, made when, age, mode, peak, whether dispatch follows it (and why not)."""
    p = d.plan
    if p is None:
        return None
    return {"id": p.plan_id, "created": local_iso(p.created, d.cfg.zone), "start": local_iso(p.start, d.cfg.zone),
            "age_s": _age_s(now, p.created), "mode": p.mode, "peak_kw": _r(p.peak_kw), "following": p.unusable is None,
            "unusable": p.unusable, "solve_s": _r(d.stats.plan_seconds[-1]) if d.stats.plan_seconds else None}


def status(d: Daemon) -> dict[str, Any]:
    """Everything the page's live parts show: the site, the daemon, the window, the month, the plan
    in brief, each unit and each car, the meter, the overrides in force and the faults."""
    now, cfg, zone = d.clock.now(), d.cfg, d.cfg.zone
    p = d.plan
    row = p.row(now) if p is not None and p.unusable is None and p.mode == "normal" else None
    reading = d.last_reading
    units = [_unit(d, u, now, row) for u in d.units]
    where = {x["vehicle"]: x["id"] for x in units if x.get("vehicle") and x["plugged"]}
    return {
        "site": cfg.site.name, "zone": cfg.site.timezone, "now": local_iso(now, zone), "speed": d.clock.speed,
        "daemon": {"started": d.started, "ticks": d.stats.ticks, "plans": d.stats.plans,
                   "last_tick": None if d.stats.last_tick is None else local_iso(d.stats.last_tick, zone),
                   "last_tick_age_s": _age_s(now, d.stats.last_tick), "store_alarm": d.store.alarm},
        "grid_up": d.grid_up, "outage_since": None if d.outage_since is None else local_iso(d.outage_since, zone),
        "window": window(d, now), "month": month(d, now), "plan": plan_brief(d, now),
        "meter": {"import_kw": None if reading is None else _r(reading.import_kw),
                  "export_kw": None if reading is None else _r(reading.export_kw), "fault": d.meter_fault,
                  "present": d.meter is not None},
        "units": units,
        "vehicles": [{**vehicle_status(d, v, now), "unit": where.get(v.id)} for v in cfg.vehicles],
        "overrides": [o.to_json(zone) for o in d.overrides.in_force(now)],
        "faults": [{"device": u.charger.id, "fault": u.fault} for u in d.units if u.fault]
                  + ([{"device": "meter", "fault": d.meter_fault}] if d.meter_fault else []),
    }


def _columns(frame: pd.DataFrame, zone) -> dict[str, Any]:
    """A frame as ``{"time": [...], "series": {column: [...]}}`` (times local, values rounded, NaN as null)."""
    return {"time": [local_iso(t, zone) for t in frame.index],
            "series": {str(c): [_r(x) for x in frame[c].to_numpy(dtype=float)] for c in frame.columns}}


def plan(d: Daemon) -> dict[str, Any] | None:
    """The plan in force as a series per step: load, PV, import, export, each unit's charge and
    discharge [kW], each car's SOC at the step start [%] (``<vehicle>_soc_pct``); None without a plan."""
    p = d.plan
    if p is None:
        return None
    sched = p.result.schedule.copy()
    for v in d.cfg.vehicles:
        col = f"{v.id}_soc_kwh"
        if col in sched:
            sched[f"{v.id}_soc_pct"] = 100 * sched.pop(col) / v.capacity_kwh
    return {**plan_brief(d, d.clock.now()), "status": p.result.summary.get("status"), **_columns(sched, d.cfg.zone)}


def forecasts(d: Daemon) -> dict[str, Any] | None:
    """The forecast in hand: load, PV and critical load per step [kW] from the current step; None before the first."""
    fc = d.plans.forecasts.forecast
    if fc is None:
        return None
    start = d.plans.forecasts.step_start(d.clock.now())
    frame = pd.DataFrame({"load_kw": fc.load_kw, "pv_kw": fc.pv_kw, "critical_kw": fc.critical_kw}).loc[start:]
    meta = {k: (v if isinstance(v, (str, int, float, bool)) or v is None else str(v)) for k, v in (fc.meta or {}).items()}
    return {"origin": local_iso(d.plans.forecasts.origin, d.cfg.zone) if d.plans.forecasts.origin is not None else None,
            "meta": meta, **_columns(frame, d.cfg.zone)}


def events(d: Daemon, limit: int, before: int | None, kind: str | None) -> dict[str, Any]:
    """A page of events, newest first, and the query of the next (older) page (None: no more)."""
    rows = d.store.events(limit=limit, kind=kind, before_id=before)
    zone = d.cfg.zone
    out = [{"id": r["id"], "time": local_iso(pd.Timestamp(r["ts"]), zone), "kind": r["kind"], "severity": r["severity"],
            "message": r["message"], "data": r["data"]} for r in rows]
    nxt = None
    if len(rows) == limit and rows:
        nxt = f"/api/events?limit={limit}&before={rows[-1]['id']}" + (f"&kind={kind}" if kind else "")
    return {"events": out, "next": nxt}


def overrides(d: Daemon, history: bool) -> dict[str, Any]:
    """The overrides in force; with ``history`` also the stored ones that ended (newest first, 200 at most)."""
    now, zone = d.clock.now(), d.cfg.zone
    out: dict[str, Any] = {"active": [o.to_json(zone) for o in d.overrides.in_force(now)]}
    if history:
        out["history"] = [{"id": r["id"], "kind": r["kind"], "vehicle": r["vehicle"], **r["spec"], "by": r["created_by"],
                           "created_at": local_iso(pd.Timestamp(r["created_at"]), zone),
                           "expires_at": local_iso(pd.Timestamp(r["expires_at"]), zone),
                           "ended_at": None if r["ended_at"] is None else local_iso(pd.Timestamp(r["ended_at"]), zone),
                           "ended_by": r["ended_by"]} for r in d.store.overrides()]
    return out


def bill(d: Daemon) -> dict[str, Any]:
    """This month's bill so far (:func:`ems.billing.compute_bill`) from the daemon's metered 30-minute
    windows (the open one with its energy so far); a window the daemon did not see counts as 0 kWh
    (``missing_windows``), a window flagged for bad meter data is held at the month's peak, which it
    never sets (``flagged_windows``; the energy above that, ``flagged_kwh_left_out``, is not billed).
    Export is not metered by the windows: no export credit. An estimate: the utility's meter bills."""
    now, cfg = d.clock.now(), d.cfg
    m = d.tracker.month_of(now)
    peaks = d.store.month_peaks()
    rows = d.store.windows(m)
    kwh = {pd.Timestamp(r["start"]): (r["import_kwh"], bool(r["flags"])) for r in rows}
    cur = d.window.current
    if cur is not None and d.tracker.month_of(cur.start) == m:
        kwh[cur.start.tz_convert("UTC")] = (cur.import_kwh, bool(cur.flags))
    base = {"month": m, "currency": cfg.tariff.currency, "windows": len(kwh), "missing_windows": 0, "flagged_windows": 0}
    if not kwh:
        return {**base, "bill": None}
    index = pd.date_range(min(kwh), max(max(kwh), min(kwh) + WINDOW), freq=WINDOW, tz="UTC")   # two at least: the step
    cap_kwh = peaks.get(m, 0.0) * WINDOW_H
    flagged = [t for t, (_, f) in kwh.items() if f]
    energy = np.array([min(kwh[t][0], cap_kwh) if t in flagged else kwh.get(t, (0.0, False))[0] for t in index])
    meter = pd.DataFrame({"import_kw": energy / WINDOW_H, "export_kw": 0.0}, index=index)
    result = compute_bill(meter, cfg.tariff, peaks)
    this = next(b for b in result.months if b.month == m)
    lost = sum(max(kwh[t][0] - cap_kwh, 0.0) for t in flagged)
    return {**base, "from": local_iso(index[0], cfg.zone), "to": local_iso(index[-1] + WINDOW, cfg.zone),
            "missing_windows": int(len(index) - len(kwh) - (len(kwh) == 1)), "flagged_windows": len(flagged),
            "flagged_kwh_left_out": _r(lost),
            "bill": {k: (_r(v, 2) if isinstance(v, float) else v) for k, v in vars(this).items()}}
