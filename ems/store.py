"""The store: telemetry, plans, events and monthly peaks, in SQLite by default.

A plain file path opens a SQLite database in WAL mode (readers such as ``ems status`` never block
the daemon); any SQLAlchemy URL (``postgresql://...``) is accepted for a server database. The
monthly peaks are the site's memory of the demand ratchet: they are never deleted by retention.
Each month's peak comes from one of two sources, kept in two tables: ``monthly_peaks`` holds what
the daemon metered itself (``"metered"``), ``bill_peaks`` what a peaks history from past bills
seeded (``"bill"``, :meth:`Store.seed_bill_peaks`). A month's peak is the larger of the two; a
metered peak wins only when it is higher. Databases created before ``bill_peaks`` existed gain the
table when opened (nothing else changes, and an older version still reads the file).

Timestamps are stored as UTC ISO 8601 strings (sortable, readable with the sqlite3 shell).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event

META = sa.MetaData()

TELEMETRY = sa.Table(
    "telemetry", META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.String(32), nullable=False, index=True),
    sa.Column("device", sa.String(64), nullable=False),
    sa.Column("plugged", sa.Boolean),
    sa.Column("soc_kwh", sa.Float),
    sa.Column("charge_kw", sa.Float),
    sa.Column("discharge_kw", sa.Float),
    sa.Column("setpoint_charge_kw", sa.Float),
    sa.Column("setpoint_discharge_kw", sa.Float),
    sa.Column("site_import_kw", sa.Float),
    sa.Column("grid_up", sa.Boolean),
    sa.Column("reason", sa.String(32)),
)
PLANS = sa.Table(
    "plans", META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.String(32), nullable=False, index=True),
    sa.Column("start", sa.String(32), nullable=False),
    sa.Column("status", sa.String(64)),
    sa.Column("fallback", sa.Boolean),
    sa.Column("peak_kw", sa.Float),
    sa.Column("objective", sa.Float),
    sa.Column("summary_json", sa.Text),
    sa.Column("inputs_json", sa.Text),
    sa.Column("schedule_json", sa.Text),
)
EVENTS = sa.Table(
    "events", META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.String(32), nullable=False, index=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("data_json", sa.Text),
)
PEAKS = sa.Table(
    "monthly_peaks", META,
    sa.Column("month", sa.String(7), primary_key=True),
    sa.Column("peak_kw", sa.Float, nullable=False),
    sa.Column("window_start", sa.String(32)),
    sa.Column("updated_at", sa.String(32)),
)
BILL_PEAKS = sa.Table(
    "bill_peaks", META,
    sa.Column("month", sa.String(7), primary_key=True),
    sa.Column("peak_kw", sa.Float, nullable=False),
    sa.Column("source_file", sa.Text),
    sa.Column("seeded_at", sa.String(32)),
)
STATE = sa.Table(
    "state", META,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value_json", sa.Text, nullable=False),
)

SEVERITIES = ("info", "warning", "error")
#: Where a month's peak came from: a past bill (a seeded peaks history), or the daemon's own meter.
BILL, METERED = "bill", "metered"


def _iso(ts: pd.Timestamp | dt.datetime) -> str:
    """UTC ISO 8601 text of an aware timestamp."""
    t = pd.Timestamp(ts)
    if t.tzinfo is None:
        raise ValueError(f"store timestamps must be time-zone aware; got {ts!r}")
    return t.tz_convert("UTC").isoformat()


def engine_url(database: str) -> str:
    """A SQLAlchemy URL for ``database``: a URL as given, or a SQLite file path."""
    if "://" in database:
        return database
    return f"sqlite:///{Path(database).expanduser().resolve()}"


class Store:
    """Access to the EMS database. Safe to share across the daemon's threads."""

    def __init__(self, database: str):
        url = engine_url(database)
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        META.create_all(self.engine)

    def close(self) -> None:
        """Release every connection (the WAL is checkpointed by SQLite on last close)."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- writes ---------------------------------------------------------------------------

    def record_telemetry(self, ts: pd.Timestamp, rows: list[dict[str, Any]]) -> None:
        """One dispatch tick: a row per device (keys as the telemetry columns, ``device`` required)."""
        if not rows:
            return
        stamp = _iso(ts)
        with self.engine.begin() as con:
            con.execute(TELEMETRY.insert(), [{**r, "ts": stamp} for r in rows])

    def record_plan(self, created_at: pd.Timestamp, start: pd.Timestamp, summary: dict[str, Any],
                    schedule: pd.DataFrame | None = None, inputs: dict[str, Any] | None = None) -> int:
        """Store a plan with its summary, an inputs summary and its schedule; return its id."""
        sched = None
        if schedule is not None:
            frame = schedule.copy()
            frame.index = [_iso(t) for t in frame.index]
            sched = frame.to_json(orient="split")
        with self.engine.begin() as con:
            res = con.execute(PLANS.insert().values(
                created_at=_iso(created_at), start=_iso(start), status=str(summary.get("status")),
                fallback=bool(summary.get("fallback", False)), peak_kw=_num(summary.get("peak_kw")),
                objective=_num(summary.get("objective")), summary_json=json.dumps(summary, default=str),
                inputs_json=json.dumps(inputs or {}, default=str), schedule_json=sched))
            return int(res.inserted_primary_key[0])

    def record_event(self, ts: pd.Timestamp, kind: str, message: str, severity: str = "info", **data: Any) -> None:
        """Log an event (fault, outage, infeasibility, config reload...)."""
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}; got {severity!r}")
        with self.engine.begin() as con:
            con.execute(EVENTS.insert().values(ts=_iso(ts), kind=kind, severity=severity, message=message,
                                               data_json=json.dumps(data, default=str) if data else None))

    def raise_month_peak(self, month: str, peak_kw: float, window_start: pd.Timestamp, now: pd.Timestamp) -> bool:
        """Record a 30-minute window average for ``month``; keep it only if it beats the stored
        metered peak (a seeded bill peak is kept apart: :meth:`month_peaks` takes the larger).

        Returns True when the month's metered peak rose.
        """
        with self.engine.begin() as con:
            row = con.execute(sa.select(PEAKS.c.peak_kw).where(PEAKS.c.month == month)).first()
            if row is not None and row[0] >= peak_kw:
                return False
            values = dict(peak_kw=float(peak_kw), window_start=_iso(window_start), updated_at=_iso(now))
            if row is None:
                con.execute(PEAKS.insert().values(month=month, **values))
            else:
                con.execute(PEAKS.update().where(PEAKS.c.month == month).values(**values))
            return True

    def seed_bill_peaks(self, peaks: dict[str, float], source_file: str, now: pd.Timestamp) -> dict[str, list[str]]:
        """Store monthly peaks from past bills (``"YYYY-MM" -> kW``, as read by
        :func:`ems.billing.read_peaks_history_csv`), all in one transaction.

        A month not seeded yet is added, a month seeded with another value takes the new one (the
        file was corrected), a month with the same value is left alone, so seeding the same file
        again changes nothing. Months seeded before but not in ``peaks`` are kept (peaks are never
        deleted). Metered peaks are not touched. Returns the months ``added``, ``changed`` and
        ``unchanged``.
        """
        stamp = _iso(now)
        out: dict[str, list[str]] = {"added": [], "changed": [], "unchanged": []}
        with self.engine.begin() as con:
            known = {m: float(p) for m, p in con.execute(sa.select(BILL_PEAKS.c.month, BILL_PEAKS.c.peak_kw))}
            for month, kw in sorted(peaks.items()):
                values = dict(peak_kw=float(kw), source_file=str(source_file), seeded_at=stamp)
                if month not in known:
                    con.execute(BILL_PEAKS.insert().values(month=month, **values))
                    out["added"].append(month)
                elif known[month] != float(kw):
                    con.execute(BILL_PEAKS.update().where(BILL_PEAKS.c.month == month).values(**values))
                    out["changed"].append(month)
                else:
                    out["unchanged"].append(month)
        return out

    def set_state(self, key: str, value: Any) -> None:
        """Persist a small piece of daemon state (JSON-serialisable)."""
        self.set_states({key: value})

    def set_states(self, values: dict[str, Any]) -> None:
        """Persist several pieces of daemon state in one transaction."""
        with self.engine.begin() as con:
            known = {k for (k,) in con.execute(sa.select(STATE.c.key).where(STATE.c.key.in_(list(values))))}
            for key, value in values.items():
                text = json.dumps(value, default=str)
                if key in known:
                    con.execute(STATE.update().where(STATE.c.key == key).values(value_json=text))
                else:
                    con.execute(STATE.insert().values(key=key, value_json=text))

    def apply_retention(self, now: pd.Timestamp, days: int) -> dict[str, int]:
        """Delete telemetry, plans and events older than ``days``; monthly peaks are kept forever."""
        cutoff = _iso(pd.Timestamp(now) - pd.Timedelta(days=days))
        with self.engine.begin() as con:
            out = {
                "telemetry": con.execute(TELEMETRY.delete().where(TELEMETRY.c.ts < cutoff)).rowcount,
                "plans": con.execute(PLANS.delete().where(PLANS.c.created_at < cutoff)).rowcount,
                "events": con.execute(EVENTS.delete().where(EVENTS.c.ts < cutoff)).rowcount,
            }
        return out

    # ----- reads ----------------------------------------------------------------------------

    def month_peaks(self) -> dict[str, float]:
        """Every month's peak, ``"YYYY-MM" -> kW``: the larger of the metered and the bill peak."""
        return {m: row["peak_kw"] for m, row in self.month_peak_sources().items()}

    def month_peak_sources(self) -> dict[str, dict[str, Any]]:
        """Every month's peak and where it came from, months in order: ``{"YYYY-MM": {"peak_kw",
        "source" ("bill" or "metered"), "bill_kw", "metered_kw" (None when absent), "window_start"
        (of the metered peak), "source_file" (of the bill peak)}}``. A metered peak is the
        month's peak only when it is higher than the bill's."""
        with self.engine.connect() as con:
            metered = {r["month"]: r for r in con.execute(sa.select(PEAKS)).mappings()}
            bills = {r["month"]: r for r in con.execute(sa.select(BILL_PEAKS)).mappings()}
        out: dict[str, dict[str, Any]] = {}
        for month in sorted(set(metered) | set(bills)):
            m, b = metered.get(month), bills.get(month)
            m_kw = None if m is None else float(m["peak_kw"])
            b_kw = None if b is None else float(b["peak_kw"])
            use_metered = b_kw is None or (m_kw is not None and m_kw > b_kw)
            out[month] = {"peak_kw": m_kw if use_metered else b_kw, "source": METERED if use_metered else BILL,
                          "bill_kw": b_kw, "metered_kw": m_kw,
                          "window_start": None if m is None else m["window_start"],
                          "source_file": None if b is None else b["source_file"]}
        return out

    def get_state(self, key: str, default: Any = None) -> Any:
        """A persisted piece of state, or ``default``."""
        with self.engine.connect() as con:
            row = con.execute(sa.select(STATE.c.value_json).where(STATE.c.key == key)).first()
        return default if row is None else json.loads(row[0])

    def last_plan(self) -> dict[str, Any] | None:
        """The newest plan: its row with ``summary`` (dict) and ``schedule`` (DataFrame or None)."""
        with self.engine.connect() as con:
            row = con.execute(sa.select(PLANS).order_by(PLANS.c.id.desc()).limit(1)).mappings().first()
        if row is None:
            return None
        out = dict(row)
        out["summary"] = json.loads(out.pop("summary_json") or "{}")
        out["inputs"] = json.loads(out.pop("inputs_json") or "{}")
        text = out.pop("schedule_json")
        out["schedule"] = _schedule_from_json(text) if text else None
        return out

    def count(self, table: str) -> int:
        """Number of rows in a table (telemetry, plans, events, monthly_peaks, bill_peaks)."""
        t = META.tables[table]
        with self.engine.connect() as con:
            return int(con.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())

    def events(self, limit: int = 50, kind: str | None = None) -> list[dict[str, Any]]:
        """The newest events, newest first."""
        q = sa.select(EVENTS).order_by(EVENTS.c.id.desc()).limit(limit)
        if kind is not None:
            q = q.where(EVENTS.c.kind == kind)
        with self.engine.connect() as con:
            rows = [dict(r) for r in con.execute(q).mappings()]
        for r in rows:
            r["data"] = json.loads(r.pop("data_json") or "{}")
        return rows

    def latest_telemetry(self) -> dict[str, dict[str, Any]]:
        """The newest telemetry row of each device."""
        newest = sa.select(TELEMETRY.c.device, sa.func.max(TELEMETRY.c.id).label("id")).group_by(TELEMETRY.c.device).subquery()
        q = sa.select(TELEMETRY).join(newest, TELEMETRY.c.id == newest.c.id)
        with self.engine.connect() as con:
            return {r["device"]: dict(r) for r in con.execute(q).mappings()}

    def telemetry(self, since: pd.Timestamp | None = None) -> pd.DataFrame:
        """Telemetry rows (optionally from ``since``) as a DataFrame with a UTC ``ts`` column."""
        q = sa.select(TELEMETRY).order_by(TELEMETRY.c.id)
        if since is not None:
            q = q.where(TELEMETRY.c.ts >= _iso(since))
        with self.engine.connect() as con:
            frame = pd.DataFrame(con.execute(q).mappings().all())
        if not frame.empty:
            frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
        return frame


def _sqlite_pragmas(dbapi_con: Any, _record: Any) -> None:
    """WAL journal (readers never block the writer), sane durability, wait on locks."""
    cur = dbapi_con.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def _num(v: Any) -> float | None:
    """A float, or None for missing/non-numeric values."""
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _schedule_from_json(text: str) -> pd.DataFrame:
    """Inverse of the schedule serialisation in :meth:`Store.record_plan`."""
    from io import StringIO

    frame = pd.read_json(StringIO(text), orient="split")
    frame.index = pd.to_datetime(frame.index, utc=True, format="ISO8601")
    return frame
