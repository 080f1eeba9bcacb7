"""``ems status --config CONFIG [--database DB] [--json]``: what the daemon is doing, read from its store.

For a person: times in the site's zone to the second, each unit and car in words (plugged or not,
SOC in % and kWh, target and departure), whether the daemon is running (:func:`daemon_state`: the
heartbeat it writes at every dispatch tick), the overrides in force. ``--json`` prints the same as
one object (:func:`collect`). The database is the one ``ems run --config CONFIG`` uses:
``--database``, else ``daemon.database``, else the site's file in the state directory (:mod:`ems.paths`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from ems.commands.argtypes import integer
from ems.billing import site_contract_kw
from ems.config import SiteConfig, load_site
from ems.devices import vehicle_homes
from ems.errors import ConfigError, Problem
from ems.store import Store, engine_url, file_bytes
from ems.timegrid import local_iso, month_add, month_of

NAME = "status"
HELP = ("show whether the daemon is running, the last plan, each unit and car (SOC, target, departure), the overrides "
        "in force, this month's peak and contract kW (with where each ratchet month's peak came from: bill history "
        "or metered), and recent events")
#: The daemon counts as running while its last heartbeat is at most this many dispatch intervals old
#: (in real time: the interval divided by --speed) ...
ALIVE_INTERVALS = 3
#: ... and at least this many real seconds (a tick held up by a busy machine) [s].
ALIVE_MIN_S = 10.0
#: How many recent ``plug`` events are searched for the car on each unit.
PLUG_EVENTS = 500


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments: the site config (its daemon.database names the store, as for ``ems run``)."""
    p.add_argument("--config", required=True, help="site YAML file")
    p.add_argument("--database", metavar="PATH_OR_URL",
                   help="the daemon's database, as given to ems run (default: daemon.database, else the site's file in "
                        "the state directory: $STATE_DIRECTORY, else $XDG_STATE_HOME/ems, else ~/.local/state/ems)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--events", type=integer(0, 100_000), default=10, help="how many recent events to show (default 10)")


def collect(store: Store, cfg, now: pd.Timestamp, n_events: int = 10, wall: pd.Timestamp | None = None) -> dict:
    """The status as a plain dict (used by the CLI and the daemon's tests) at the daemon's time ``now``
    (``wall``: the real time now, default the wall clock; it dates the daemon's heartbeat).

    Contract fields: ``contract_kw`` and ``contract_set_by`` (the month whose peak sets it,
    ``"minimum"`` for minimum_contract_kw, None without any), ``contract_source`` (``"bill"``: a
    seeded peaks history of past bills, ``"metered"``: the daemon's meter, or None),
    ``month_peak_source`` likewise for this month's peak, and ``contract_months``: each month of the
    ratchet window that has a peak, oldest first, ``{"month", "peak_kw", "source", "bill_kw",
    "metered_kw"}``. ``flagged_windows``: this month's demand windows left out of its peak for bad
    meter data (:meth:`ems.store.Store.windows`: ``start``, ``average_kw``, ``flags`` ...).
    ``forecast_quality``: the live quality of the day-ahead forecasts over the last 7 days, as the
    daemon stored it (:func:`ems.daemon.learning.forecast_quality`; None before its first forecast);
    ``weather``: the last weather fetch (None: never fetched); ``store_mb``: the database file with its
    write-ahead log [MB] (None: not a SQLite file). ``zone``: the site's time zone; ``daemon``: whether
    it runs (:func:`daemon_state`); ``units``: each unit at its last tick (:func:`units_status`);
    ``vehicles``: each car's SOC, target and departure and ``overrides``: those in force, both as the
    HTTP API shows them (:func:`vehicles_status`). The keys above them are the store's rows as stored
    (times UTC); these have site-local times, to the second.
    """
    sources = store.month_peak_sources()
    peaks = {m: r["peak_kw"] for m, r in sources.items()}
    month = month_of(now, cfg.tariff.zone)
    ratchet = cfg.tariff.basic.ratchet_months if cfg.tariff.basic.kind == "demand" else 0
    window = [month_add(month, -k) for k in range(ratchet, -1, -1)]
    contract_kw, set_by = site_contract_kw(month, peaks, cfg.tariff)
    last = store.last_plan()
    devices = store.latest_telemetry()
    units = units_status(store, cfg, devices)
    vehicles, overrides = vehicles_status(store, cfg, now, units)
    return {
        "site": cfg.site.name,
        "month": month,
        "month_peak_kw": peaks.get(month, 0.0),
        "month_peak_source": sources[month]["source"] if month in sources else None,
        "contract_kw": contract_kw,
        "contract_set_by": set_by,
        "contract_source": sources[set_by]["source"] if set_by in sources else None,
        "contract_months": [{"month": m, "peak_kw": sources[m]["peak_kw"], "source": sources[m]["source"],
                             "bill_kw": sources[m]["bill_kw"], "metered_kw": sources[m]["metered_kw"]}
                            for m in window if m in sources],
        "flagged_windows": store.windows(month, flagged=True),
        "last_plan": None if last is None else {
            "created_at": last["created_at"], "start": last["start"], "status": last["status"],
            "fallback": last["fallback"], "peak_kw": last["peak_kw"], "objective": last["objective"],
        },
        "devices": devices,
        "events": store.events(limit=n_events),
        "faults": [e for e in store.events(limit=200) if e["severity"] != "info"][:n_events],
        **learning_status(store),
        "zone": cfg.site.timezone,
        "daemon": daemon_state(store, cfg.zone, pd.Timestamp.now(tz="UTC") if wall is None else wall),
        "units": units, "vehicles": vehicles, "overrides": overrides,
    }


def daemon_state(store: Store, zone, wall: pd.Timestamp) -> dict[str, Any]:
    """Whether the daemon is running, from the heartbeat it writes with its restart state at every
    dispatch tick (:data:`ems.daemon.tracker.HEARTBEAT`). ``state``: ``"running"`` (its last write at
    most :data:`ALIVE_INTERVALS` dispatch intervals of real time before ``wall``, and at least
    :data:`ALIVE_MIN_S`), ``"stopped"`` (it stopped cleanly), ``"gone"`` (no write since, and no clean
    stop: killed, crashed or hung), ``"unknown"`` (a store written before the heartbeat) or ``"never"``
    (no daemon has run on it); ``running`` (None: unknown); ``last_seen``: the wall-clock time of the
    last write and ``age_s`` [real s]; ``alive_within_s``: the age up to which it counts as running;
    ``clock``: the daemon's own time then (simulated when ``speed`` is not 1); ``pid``."""
    clock = store.get_state("now")
    out: dict[str, Any] = {"state": "never" if clock is None else "unknown", "running": False if clock is None else None,
                           "last_seen": None, "age_s": None, "alive_within_s": None,
                           "clock": None if clock is None else local_iso(pd.Timestamp(clock), zone), "speed": None, "pid": None}
    beat = heartbeat(store, wall)
    if beat is None:
        return out
    hb, age, limit, running = beat
    return {**out, "state": "running" if running else "gone" if hb["running"] else "stopped", "running": running,
            "last_seen": local_iso(pd.Timestamp(hb["at"]), zone), "age_s": round(age, 1), "alive_within_s": round(limit, 1),
            "clock": local_iso(pd.Timestamp(hb["clock"]), zone), "speed": hb["speed"], "pid": hb["pid"]}


def heartbeat(store: Store, wall: pd.Timestamp) -> tuple[dict[str, Any], float, float, bool] | None:
    """The daemon's last heartbeat (None: none stored), its age at ``wall`` [real s], the age up to
    which the daemon counts as running [real s], and whether it does (:func:`daemon_state`)."""
    from ems.daemon.tracker import HEARTBEAT
    hb = store.get_state(HEARTBEAT)
    if hb is None:
        return None
    age = max((wall - pd.Timestamp(hb["at"])).total_seconds(), 0.0)
    limit = max(ALIVE_INTERVALS * hb["interval_s"] / hb["speed"], ALIVE_MIN_S)
    return hb, age, limit, bool(hb["running"]) and age <= limit


def _rounded(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(float(x), nd)


def units_status(store: Store, cfg: SiteConfig, devices: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each unit at its last tick (``devices``: :meth:`ems.store.Store.latest_telemetry`): ``id``, ``at``
    (site-local), ``reachable``, ``plugged``, the ``vehicle`` on it (the newest ``plug`` event's, else
    the unit's only home car), its ``soc_kwh`` and ``soc_pct``, the measured ``power_kw`` (+ charge,
    - discharge), the ``setpoint`` written and its ``reason``."""
    caps = {v.id: v.capacity_kwh for v in cfg.vehicles}
    homes = vehicle_homes(cfg)
    plugged_in: dict[str, str | None] = {}
    for e in store.events(limit=PLUG_EVENTS, kind="plug"):   # newest first
        plugged_in.setdefault(e["data"].get("device"), e["data"].get("vehicle"))
    out = []
    for cid, row in sorted(devices.items()):
        vid = None
        if row["plugged"]:
            vid = plugged_in.get(cid)
            if vid is None and len(homes.get(cid, [])) == 1:
                vid = homes[cid][0].id
        soc, cap = row["soc_kwh"], caps.get(vid or "")
        ch, dis = row["setpoint_charge_kw"], row["setpoint_discharge_kw"]
        out.append({"id": cid, "at": local_iso(pd.Timestamp(row["ts"]), cfg.zone), "reachable": row["plugged"] is not None,
                    "plugged": row["plugged"], "vehicle": vid, "soc_kwh": _rounded(soc),
                    "soc_pct": None if soc is None or not cap else round(100 * soc / cap, 1),
                    "power_kw": None if row["charge_kw"] is None else _rounded(row["charge_kw"] - (row["discharge_kw"] or 0.0), 3),
                    "setpoint": None if ch is None and dis is None else
                    {"charge_kw": _rounded(ch or 0.0, 3), "discharge_kw": _rounded(dis or 0.0, 3)},
                    "reason": row["reason"]})
    return out


def vehicles_status(store: Store, cfg: SiteConfig, now: pd.Timestamp,
                    units: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each car and the overrides in force at the daemon's time ``now``, as the HTTP API shows them
    (:func:`ems.web.views.vehicle_status`: SOC % and kWh, target, departure, ``discharge_allowed``,
    ``boost_pct``; and ``unit``, from ``units``), from the daemon's restart state and the stored
    overrides, read by the daemon's own tracker and overrides."""
    from ems.daemon.overrides import Overrides
    from ems.daemon.tracker import Tracker
    from ems.web.views import vehicle_status
    host = SimpleNamespace(cfg=cfg, store=store)
    tracker = Tracker(host)   # type: ignore[arg-type]
    tracker.resume(now)
    overrides = Overrides(host, tracker, links=None)   # type: ignore[arg-type]
    overrides.resume(now)
    d = SimpleNamespace(cfg=cfg, tracker=tracker, overrides=overrides)
    where = {u["vehicle"]: u["id"] for u in units if u["vehicle"] and u["plugged"]}
    return ([{**vehicle_status(d, v, now), "unit": where.get(v.id)} for v in cfg.vehicles],   # type: ignore[arg-type]
            [o.to_json(cfg.zone) for o in overrides.in_force(now)])


def learning_status(store: Store) -> dict:
    """What ``ems status`` shows of the forecasts' learning: their live quality, the last weather
    fetch, the store's size (see :func:`collect`)."""
    size = file_bytes(store)
    return {"forecast_quality": store.get_state("forecast_quality"), "weather": store.get_state("weather"),
            "store_mb": None if size is None else round(size / 2**20, 2)}


def quality_lines(q: dict | None) -> list[str]:
    """The live forecast quality as text lines (none before the daemon's first day-ahead forecast)."""
    if not q:
        return []
    out = [f"forecast quality, day-ahead (lead {q['lead_h']:g} h), last {q['days']} days against persistence "
           "(the same window a day earlier):"]
    for key, name in (("load", "load"), ("net", "load - PV")):
        m = q[key]
        if not m["samples"]:
            out.append(f"  {name}: no window scored yet")
            continue
        skill = "" if m["skill"] is None else f", skill {m['skill']:+.0%}"
        out.append(f"  {name}: MAE {m['mae_kw']:.2f} kW, persistence {m['persistence_mae_kw']:.2f} kW{skill} "
                   f"({m['samples']} windows)")
    if q.get("pv_source"):
        out.append("  (the metered load's PV is " + ", ".join(f"{k} {v}" for k, v in q["pv_source"].items())
                   + " windows: no PV meter, load - PV is metered exactly)")
    return out


def daemon_now(store: Store, wall: pd.Timestamp | None = None) -> pd.Timestamp:
    """The daemon's (possibly simulated) time: while it runs, its last heartbeat's clock carried on to
    ``wall`` (default: now) at its speed; else its last time from the store, else the wall clock."""
    wall = pd.Timestamp.now(tz="UTC") if wall is None else wall
    beat = heartbeat(store, wall)
    if beat is not None and beat[3]:
        return pd.Timestamp(beat[0]["clock"]).tz_convert("UTC") + pd.Timedelta(seconds=beat[1] * beat[0]["speed"])
    saved = store.get_state("now")
    return pd.Timestamp(saved).tz_convert("UTC") if saved else wall


def when(t: Any, zone, ref: Any = None) -> str:
    """A time for a person: site-local, to the second, ``2024-07-08 16:00:05``; the time of day alone
    when it falls on ``ref``'s date."""
    x = pd.Timestamp(t).tz_convert(zone)
    if ref is not None and x.date() == pd.Timestamp(ref).tz_convert(zone).date():
        return f"{x:%H:%M:%S}"
    return f"{x:%Y-%m-%d %H:%M:%S}"


def ago(seconds: float) -> str:
    """An age in words: ``12 s ago``, ``3 min ago``, ``5.2 h ago``, ``3 days ago``."""
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def daemon_line(d: dict[str, Any], zone, wall: pd.Timestamp) -> str:
    """:func:`daemon_state` in one line."""
    if d["state"] == "never":
        return "daemon: has not run on this database"
    if d["state"] == "unknown":
        return f"daemon: unknown (no heartbeat in this database: written by an older ems); its clock last at {when(d['clock'], zone)}"
    seen = f"{when(d['last_seen'], zone, wall)} ({ago(d['age_s'])})"
    text = f"daemon: running (pid {d['pid']}), last write {seen}" if d["running"] else \
        f"daemon: not running, last seen {seen}, " + ("stopped cleanly" if d["state"] == "stopped" else
                                                      f"without a clean stop (killed, crashed or hung: no write for over "
                                                      f"{d['alive_within_s']:g} s)")
    lag = abs((pd.Timestamp(d["clock"]) - pd.Timestamp(d["last_seen"])).total_seconds())
    if d["speed"] != 1 or lag > 60:
        text += f"; its simulated clock {'at' if d['running'] else 'then'} {when(d['clock'], zone)} ({d['speed']:g}x)"
    return text


def unit_line(u: dict[str, Any]) -> str:
    """One unit of :func:`units_status` in words."""
    if not u["reachable"]:
        return "unreachable"
    if not u["plugged"]:
        text = "not plugged"
    else:
        soc = "SOC unknown" if u["soc_kwh"] is None else f"SOC {u['soc_kwh']:.2f} kWh" if u["soc_pct"] is None else \
            f"SOC {u['soc_pct']:.1f} % ({u['soc_kwh']:.2f} kWh)"
        text = f"{u['vehicle'] or 'a car'} plugged in, {soc}"
    p = u["power_kw"]
    if p is not None:
        text += ", idle" if abs(p) < 0.005 else f", charging {p:.2f} kW" if p > 0 else f", discharging {-p:.2f} kW"
    sp = u["setpoint"]
    if sp is not None:
        what = f"charge {sp['charge_kw']:.2f} kW" if sp["charge_kw"] > 0 else \
            f"discharge {sp['discharge_kw']:.2f} kW" if sp["discharge_kw"] > 0 else "0 kW"
        text += f"; setpoint {what} ({u['reason']})"
    return text


def vehicle_line(c: dict[str, Any], zone, now: pd.Timestamp) -> str:
    """One car of :func:`vehicles_status` in words."""
    text = f"plugged into {c['unit']}, " if c["unit"] else "not plugged in, "
    text += "SOC unknown" if c["soc_kwh"] is None else \
        f"{'SOC' if c['unit'] else 'last SOC'} {c['soc_pct']:.1f} % ({c['soc_kwh']:.2f} of {c['capacity_kwh']:g} kWh)"
    text += "; no departure known" if c["departure"] is None else \
        f"; target {c['target_pct']:g} % ({c['target_kwh']:.2f} kWh) by {when(c['departure'], zone, now)}"
    if c["boost_pct"] is not None:
        text += f"; boost to {c['boost_pct']:g} %"
    if not c["discharge_allowed"]:
        text += "; no discharge (override)"
    return text


def run(args: argparse.Namespace) -> int:
    """Print the status of the site's store."""
    cfg = load_site(args.config)
    database = args.database or cfg.daemon.database
    url = engine_url(database)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise ConfigError(Problem("--database", None, "--database", database, "no database yet: start the daemon "
                                  "with `ems run` first") if args.database else
                          Problem(args.config, None, "daemon.database", database,
                                  "no database yet: start the daemon with `ems run` first"))
    wall = pd.Timestamp.now(tz="UTC")
    with Store(database) as store:
        now = daemon_now(store, wall)
        status = collect(store, cfg, now, args.events, wall)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    zone = cfg.zone
    src = {"bill": "bill history", "metered": "metered"}
    by = status["contract_set_by"]
    setter = "" if by is None else " (minimum_contract_kw)" if by == "minimum" else \
        f" (set in {by}, {src[status['contract_source']]})"
    print(f"{status['site']}  month {status['month']}: peak {status['month_peak_kw']:.2f} kW"
          + (f" ({src[status['month_peak_source']]})" if status["month_peak_source"] else "")
          + f", contract {status['contract_kw']:.2f} kW" + setter)
    if status["contract_months"]:
        print("contract months (ratchet window):")
        for row in status["contract_months"]:
            other = row["metered_kw"] if row["source"] == "bill" else row["bill_kw"]
            note = "" if other is None else \
                f" (metered {other:.2f} kW)" if row["source"] == "bill" else f" (bill {other:.2f} kW)"
            print(f"  {row['month']}  {row['peak_kw']:>9.2f} kW  {src[row['source']]}{note}"
                  + ("  <- sets the contract" if row["month"] == by else ""))
    if status["flagged_windows"]:
        print("windows left out of the month's peak (bad meter data):")
        for w in status["flagged_windows"]:
            print(f"  {when(w['start'], zone)}  {w['average_kw']:>9.2f} kW  {', '.join(w['flags'])}")
    print(daemon_line(status["daemon"], zone, wall))
    print(f"times in {status['zone']}")
    lp = status["last_plan"]
    print("last plan: none" if lp is None else
          f"last plan {when(lp['created_at'], zone)} from {when(lp['start'], zone, lp['created_at'])}: {lp['status']}"
          f"{' (FALLBACK)' if lp['fallback'] else ''}, planned peak {lp['peak_kw'] or 0:.2f} kW")
    if status["units"]:
        newest = max(u["at"] for u in status["units"])
        print(f"units at {when(newest, zone)}:")
        for u in status["units"]:
            print(f"  {u['id']:<8} {unit_line(u)}" + ("" if u["at"] == newest else f" (at {when(u['at'], zone, newest)})"))
    if status["vehicles"]:
        print("cars:")
        for c in status["vehicles"]:
            print(f"  {c['vehicle']:<8} {vehicle_line(c, zone, now)}")
    print("overrides in force:" + ("" if status["overrides"] else " none"))
    for o in status["overrides"]:
        print(f"  {o['text']} (set by {o['by']} at {when(o['created_at'], zone)}, id {o['id']})")
    if status["faults"]:
        print("active faults / warnings:")
        for e in status["faults"]:
            print(f"  {when(e['ts'], zone)} {e['severity']} {e['kind']}: {e['message']}")
    for line in quality_lines(status["forecast_quality"]):
        print(line)
    w = status["weather"]
    if w:
        print(f"weather: last fetch {when(w.get('failed_at') or w.get('fetched_at'), zone)} "
              + ("ok" if w.get("ok") else f"failed ({w.get('fault')}: {w.get('error')})")
              + (f", cache to {when(w['covers_until'], zone)}" if w.get("covers_until") else ""))
    if status["store_mb"] is not None:
        print(f"store: {status['store_mb']:.1f} MB")
    print("recent events:")
    for e in status["events"]:
        print(f"  {when(e['ts'], zone)} {e['severity']} {e['kind']}: {e['message']}")
    return 0
