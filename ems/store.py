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

Faults (a SQLite file; issue 16):

- **at open** a file that is not SQLite, or that fails ``PRAGMA quick_check``, is refused
  (:class:`StoreError`, exit 2) with the recovery command (:func:`recover_command`);
- **one daemon per database**: ``Store(..., exclusive=True)`` holds an ``flock`` on ``F.lock`` (with
  its pid in it) for its lifetime; a second daemon is refused naming the holder's pid;
- **durable**: ``synchronous=FULL``, so a committed month peak survives a power cut;
- **write errors** (disk full, read-only, I/O error, a lock held too long) never end the daemon:
  the write is kept in memory with an alarm (:attr:`Store.alarm`, and a ``store-error`` event kept
  with the writes) and retried at the next write at most every :data:`RETRY_S`; when the database
  takes writes again everything kept is written, month peaks and the restart state first, then a
  ``store-recovered`` event. At most :data:`MAX_PENDING` writes are kept (the oldest telemetry goes
  first; peaks and state are never dropped). Meanwhile the daemon reads its peaks and state from
  memory;
- **deleted or replaced** under a running daemon (the file's inode is compared at each write): a
  ``store-file-lost`` event, and the file is recreated with the month peaks, bill peaks and the
  restart state the store keeps in memory (earlier telemetry, plans and events are gone with it).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event

from ems.errors import InputError, Problem
from ems.locks import LockHeld, hold

log = logging.getLogger(__name__)

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
#: Closed demand windows with their bad-data flags (issue 16): ``flags`` lists the
#: ems.daemon.metering.WindowFlag names, comma-separated ("" = trusted); a flagged window never sets a
#: metered peak. A database from before this table gains it when opened (META.create_all).
WINDOWS = sa.Table(
    "demand_windows", META,
    sa.Column("start", sa.String(32), primary_key=True),
    sa.Column("month", sa.String(7), nullable=False, index=True),
    sa.Column("import_kwh", sa.Float, nullable=False),
    sa.Column("counter_kwh", sa.Float),
    sa.Column("samples_kwh", sa.Float),
    sa.Column("flags", sa.String(200), nullable=False),
    sa.Column("closed_at", sa.String(32)),
)

#: Operator overrides (issue 12; ems/daemon/overrides.py): one row per override, kept after it ends
#: (``ended_at``/``ended_by``: expired, cancelled by whom, or replaced by which override); ``spec_json``
#: is the override as the API took it. The daemon reads the ones in force at start (a restart keeps them).
OVERRIDES = sa.Table(
    "overrides", META,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("vehicle", sa.String(64)),
    sa.Column("spec_json", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False, index=True),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.String(32), nullable=False),
    sa.Column("ended_at", sa.String(32)),
    sa.Column("ended_by", sa.String(200)),
)

SEVERITIES = ("info", "warning", "error")
#: Where a month's peak came from: a past bill (a seeded peaks history), or the daemon's own meter.
BILL, METERED = "bill", "metered"
#: the first 16 bytes of every SQLite database file
SQLITE_MAGIC = b"SQLite format 3\x00"
#: writes kept in memory while the database refuses them (beyond: the oldest telemetry is dropped)
MAX_PENDING = 50_000
#: least real time between two retries of the kept writes [s] (a locked database waits busy_timeout)
RETRY_S = 5.0
#: order in which kept writes are replayed: the ratchet and the restart state first
PEAKS_FIRST, RECORDS, TELEMETRY_LAST = 0, 1, 2


class StoreError(InputError):
    """The database cannot be used: not a SQLite file, damaged, or held by another daemon."""


def recover_command(path: Path) -> str:
    """How to rescue what SQLite can still read from a damaged database file."""
    return (f"recover what can be read with: sqlite3 {path} \".recover\" | sqlite3 {path}.recovered, then keep "
            f"{path} aside and move {path}.recovered to {path}")


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
    """Access to the EMS database. Safe to share across the daemon's threads.

    ``exclusive``: hold the database's lock file for the store's lifetime (the daemon); ``check``:
    run ``PRAGMA quick_check`` at open. StoreError when the file cannot be used (module docstring).
    """

    def __init__(self, database: str, *, exclusive: bool = False, check: bool = True):
        url = engine_url(database)
        self.url = url
        self.path = Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None
        self.alarm: str | None = None          # the current write error, None while writes succeed
        self.dropped = 0                       # kept telemetry writes dropped past MAX_PENDING
        self._pending: list[tuple[int, Callable[[sa.Connection], Any]]] = []
        self._retry_at = 0.0
        self._last_ts = _iso(pd.Timestamp.now(tz="UTC"))
        self._mutex = threading.RLock()
        self._lock_fd: int | None = None
        # what must outlive the file: metered peaks, bill peaks, the restart state (key -> JSON text)
        self._peaks: dict[str, dict[str, Any]] = {}
        self._bills: dict[str, dict[str, Any]] = {}
        self._state: dict[str, str] = {}
        if self.path is not None:
            _refuse_unusable(self.path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if exclusive:
                self._lock_fd = _take_lock(self.path)
        try:
            try:
                self.engine = self._open(check)
            except (sa.exc.ArgumentError, ImportError) as exc:   # a URL SQLAlchemy cannot parse, a driver missing
                raise StoreError(Problem(_shown(url), None, "", None, f"cannot be opened as a database: {str(exc)[:200]}; give a "
                                         "SQLite file path or a SQLAlchemy URL whose driver is installed",
                                         has_value=False)) from None
            with self.engine.connect() as con:
                self._peaks = {r["month"]: _row(r, PEAKS) for r in con.execute(sa.select(PEAKS)).mappings()}
                self._bills = {r["month"]: _row(r, BILL_PEAKS) for r in con.execute(sa.select(BILL_PEAKS)).mappings()}
                self._state = {k: v for k, v in con.execute(sa.select(STATE.c.key, STATE.c.value_json))}
        except sa.exc.DBAPIError as exc:
            self.close()
            raise StoreError(Problem(str(self.path or _shown(url)), None, "", None, f"cannot be opened as the EMS store: "
                                     f"{_reason(exc)}" + (f"; {recover_command(self.path)}" if self.path else ""),
                                     has_value=False)) from None
        except BaseException:
            self.close()
            raise
        self._ident = self._file_ident()

    def _open(self, check: bool) -> sa.Engine:
        """A new engine on the database, its integrity checked (``check``) and its tables created."""
        engine = sa.create_engine(self.url, future=True)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
            if check:
                with engine.connect() as con:
                    found = [r[0] for r in con.exec_driver_sql("PRAGMA quick_check").fetchmany(3)]
                if found != ["ok"]:
                    engine.dispose()
                    raise StoreError(Problem(str(self.path), None, "", None,
                                             f"fails SQLite's integrity check ({'; '.join(found)[:200]}): the daemon "
                                             f"will not run on a damaged store; {recover_command(self.path)}",
                                             has_value=False))
        _create_tables(engine)
        return engine

    def close(self) -> None:
        """Release every connection (the WAL is checkpointed by SQLite on last close) and the lock."""
        if getattr(self, "engine", None) is not None:
            self.engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)   # releases the flock
            self._lock_fd = None

    # ----- write errors, a deleted or replaced file --------------------------------------------

    def _file_ident(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path) if self.path is not None else None
        except OSError:
            return None
        return None if st is None else (st.st_dev, st.st_ino)

    def _write(self, op: Callable[[sa.Connection], Any], order: int, default: Any = None, ts: str | None = None) -> Any:
        """Run ``op`` in a transaction; on a storage error keep it in memory (module docstring)."""
        with self._mutex:
            if ts is not None:
                self._last_ts = ts
            self._watch_file()
            if self._pending and not self._flush():
                self._keep(order, op)
                return default
            try:
                with self.engine.begin() as con:
                    return op(con)
            except sa.exc.DBAPIError as exc:
                if not _storage_error(exc):
                    raise
                self._failed(exc)
                self._keep(order, op)
                return default

    def _keep(self, order: int, op: Callable[[sa.Connection], Any]) -> None:
        self._pending.append((order, op))
        if len(self._pending) > MAX_PENDING:
            oldest = next((i for i, (o, _) in enumerate(self._pending) if o == TELEMETRY_LAST), None)
            if oldest is not None:
                del self._pending[oldest]
                self.dropped += 1

    def _failed(self, exc: Exception) -> None:
        """The first failed write raises the alarm (an event kept with the writes), later ones only wait."""
        self._retry_at = time.monotonic() + RETRY_S
        if self.alarm is not None:
            return
        self.alarm = f"cannot write to {self.path or _shown(self.url)}: {_reason(exc)}"
        log.error("%s; writes are kept in memory and retried every %g s", self.alarm, RETRY_S)
        self._keep(RECORDS, _event_op(self._last_ts, "store-error", f"{self.alarm}; writes kept in memory and "
                                      f"retried every {RETRY_S:g} s", "error"))

    def _flush(self) -> bool:
        """Write everything kept, peaks and state first, in one transaction; True when done."""
        if time.monotonic() < self._retry_at:
            return False
        kept = sorted(self._pending, key=lambda item: item[0])
        note = f"{len(kept)} write(s) kept in memory" + (f" ({self.dropped} telemetry rows dropped)" if self.dropped else "")
        try:
            with self.engine.begin() as con:
                for _, op in kept:
                    op(con)
                if self.alarm is not None:
                    _event_op(self._last_ts, "store-recovered", f"the store takes writes again: {note} are written "
                              f"(the failure was: {self.alarm})", "warning")(con)
        except sa.exc.DBAPIError as exc:
            if not _storage_error(exc):
                raise
            self._failed(exc)
            return False
        log.warning("store recovered: %s written", note)
        self._pending.clear()
        self.alarm, self.dropped = None, 0
        self._ident = self._file_ident()
        return True

    def _watch_file(self) -> None:
        """A database file deleted or replaced under the daemon: recreate it from memory."""
        if self.path is None or self._file_ident() == self._ident:
            return
        ident = self._file_ident()
        what = "deleted" if ident is None else "replaced by another file"
        log.error("%s was %s while the daemon ran; recreating it from memory", self.path, what)
        self.engine.dispose()
        for suffix in ("-wal", "-shm"):   # the old file's write-ahead log must not be replayed into the new one
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.engine = sa.create_engine(self.url, future=True)
        event.listen(self.engine, "connect", _sqlite_pragmas)
        self._pending.insert(0, (PEAKS_FIRST, self._restore))
        self._keep(RECORDS, _event_op(self._last_ts, "store-file-lost", f"{self.path} was {what} while the daemon "
                                      "ran: month peaks, bill peaks and the restart state are written back from memory; "
                                      "earlier telemetry, plans and events went with the old file", "error"))
        self._ident = ident
        self._retry_at = 0.0
        self._flush()

    def _restore(self, con: sa.Connection) -> None:
        """Tables, and the peaks and state kept in memory, into a new (or another) database file."""
        META.create_all(con)
        for month, values in self._peaks.items():
            _raise_peak(con, month, values)
        for month, values in self._bills.items():
            _upsert(con, BILL_PEAKS, BILL_PEAKS.c.month, month, values)
        for key, text in self._state.items():
            _upsert(con, STATE, STATE.c.key, key, {"value_json": text})

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
        values = [{**r, "ts": stamp} for r in rows]
        self._write(lambda con: con.execute(TELEMETRY.insert(), values), TELEMETRY_LAST, ts=stamp)

    def record_plan(self, created_at: pd.Timestamp, start: pd.Timestamp, summary: dict[str, Any],
                    schedule: pd.DataFrame | None = None, inputs: dict[str, Any] | None = None) -> int | None:
        """Store a plan with its summary, an inputs summary and its schedule; return its id (None
        while the database refuses writes: the plan is kept in memory and written later)."""
        sched = None
        if schedule is not None:
            frame = schedule.copy()
            frame.index = [_iso(t) for t in frame.index]
            sched = frame.to_json(orient="split")
        row = PLANS.insert().values(
            created_at=_iso(created_at), start=_iso(start), status=str(summary.get("status")),
            fallback=bool(summary.get("fallback", False)), peak_kw=_num(summary.get("peak_kw")),
            objective=_num(summary.get("objective")), summary_json=json.dumps(summary, default=str),
            inputs_json=json.dumps(inputs or {}, default=str), schedule_json=sched)
        return self._write(lambda con: int(con.execute(row).inserted_primary_key[0]), RECORDS, ts=_iso(created_at))

    def record_event(self, ts: pd.Timestamp, kind: str, message: str, severity: str = "info", **data: Any) -> None:
        """Log an event (fault, outage, infeasibility, config reload...)."""
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}; got {severity!r}")
        stamp = _iso(ts)
        self._write(_event_op(stamp, kind, message, severity, **data), RECORDS, ts=stamp)

    def raise_month_peak(self, month: str, peak_kw: float, window_start: pd.Timestamp, now: pd.Timestamp) -> bool:
        """Record a 30-minute window average for ``month``; keep it only if it beats the stored
        metered peak (a seeded bill peak is kept apart: :meth:`month_peaks` takes the larger).

        Returns True when the month's metered peak rose (also while the database refuses writes:
        the peak is kept in memory, first in line when it is written).
        """
        with self._mutex:
            row = self._peaks.get(month)
            if row is not None and row["peak_kw"] >= peak_kw:
                return False
            values = dict(peak_kw=float(peak_kw), window_start=_iso(window_start), updated_at=_iso(now))
            self._peaks[month] = values
        self._write(lambda con: _raise_peak(con, month, values), PEAKS_FIRST, ts=values["updated_at"])
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
        new: dict[str, dict[str, Any]] = {}
        with self._mutex:
            for month, kw in sorted(peaks.items()):
                known = self._bills.get(month)
                if known is not None and known["peak_kw"] == float(kw):
                    out["unchanged"].append(month)
                    continue
                out["added" if known is None else "changed"].append(month)
                new[month] = dict(peak_kw=float(kw), source_file=str(source_file), seeded_at=stamp)
            self._bills.update(new)

        def op(con: sa.Connection) -> None:
            for month, values in new.items():
                _upsert(con, BILL_PEAKS, BILL_PEAKS.c.month, month, values)
        if new:
            self._write(op, PEAKS_FIRST, ts=stamp)
        return out

    def set_state(self, key: str, value: Any) -> None:
        """Persist a small piece of daemon state (JSON-serialisable)."""
        self.set_states({key: value})

    def set_states(self, values: dict[str, Any]) -> None:
        """Persist several pieces of daemon state in one transaction."""
        texts = {key: json.dumps(value, default=str) for key, value in values.items()}
        with self._mutex:
            self._state.update(texts)

        def op(con: sa.Connection) -> None:
            for key, text in texts.items():
                _upsert(con, STATE, STATE.c.key, key, {"value_json": text})
        self._write(op, PEAKS_FIRST)

    def record_window(self, month: str, start: pd.Timestamp, import_kwh: float, counter_kwh: float | None,
                      samples_kwh: float | None, flags: list[str], now: pd.Timestamp) -> None:
        """Store one closed demand window of ``month``: its import energy [kWh] (and the counter's and
        the power samples' alone, when known) and its bad-data flag names (empty: trusted)."""
        stamp = _iso(now)
        values = dict(month=month, import_kwh=float(import_kwh), counter_kwh=_num(counter_kwh),
                      samples_kwh=_num(samples_kwh), flags=",".join(flags), closed_at=stamp)
        key = _iso(start)
        self._write(lambda con: _upsert(con, WINDOWS, WINDOWS.c.start, key, values), PEAKS_FIRST, ts=stamp)

    def windows(self, month: str | None = None, flagged: bool = False) -> list[dict[str, Any]]:
        """Stored demand windows, oldest first (of ``month``; only flagged ones if ``flagged``), each
        with ``flags`` as a list of names and ``average_kw``."""
        q = sa.select(WINDOWS).order_by(WINDOWS.c.start)
        if month is not None:
            q = q.where(WINDOWS.c.month == month)
        if flagged:
            q = q.where(WINDOWS.c.flags != "")
        with self.engine.connect() as con:
            rows = [dict(r) for r in con.execute(q).mappings()]
        for r in rows:
            r["flags"] = [f for f in r["flags"].split(",") if f]
            r["average_kw"] = r["import_kwh"] / 0.5
        return rows

    def apply_retention(self, now: pd.Timestamp, days: int) -> dict[str, int]:
        """Delete telemetry, plans and events older than ``days``; monthly peaks are kept forever
        (nothing is deleted while the database refuses writes)."""
        cutoff = _iso(pd.Timestamp(now) - pd.Timedelta(days=days))

        def op(con: sa.Connection) -> dict[str, int]:
            return {
                "telemetry": con.execute(TELEMETRY.delete().where(TELEMETRY.c.ts < cutoff)).rowcount,
                "plans": con.execute(PLANS.delete().where(PLANS.c.created_at < cutoff)).rowcount,
                "events": con.execute(EVENTS.delete().where(EVENTS.c.ts < cutoff)).rowcount,
            }
        with self._mutex:
            if self._pending:
                return {"telemetry": 0, "plans": 0, "events": 0}
            return self._write(op, RECORDS, default={"telemetry": 0, "plans": 0, "events": 0})

    # ----- reads ----------------------------------------------------------------------------

    def month_peaks(self) -> dict[str, float]:
        """Every month's peak, ``"YYYY-MM" -> kW``: the larger of the metered and the bill peak."""
        return {m: row["peak_kw"] for m, row in self.month_peak_sources().items()}

    def month_peak_sources(self) -> dict[str, dict[str, Any]]:
        """Every month's peak and where it came from, months in order: ``{"YYYY-MM": {"peak_kw",
        "source" ("bill" or "metered"), "bill_kw", "metered_kw" (None when absent), "window_start"
        (of the metered peak), "source_file" (of the bill peak)}}``. A metered peak is the
        month's peak only when it is higher than the bill's."""
        metered, bills = self._peaks, self._bills   # while writes are kept in memory, memory is the truth
        if not self._pending:
            try:
                with self.engine.connect() as con:
                    metered = {r["month"]: r for r in con.execute(sa.select(PEAKS)).mappings()}
                    bills = {r["month"]: r for r in con.execute(sa.select(BILL_PEAKS)).mappings()}
            except sa.exc.DBAPIError as exc:
                if not _storage_error(exc):
                    raise
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
        if self._pending:
            text = self._state.get(key)
            return default if text is None else json.loads(text)
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

    def events(self, limit: int = 50, kind: str | None = None, before_id: int | None = None) -> list[dict[str, Any]]:
        """The newest events, newest first (``before_id``: only older than that event: the next page)."""
        q = sa.select(EVENTS).order_by(EVENTS.c.id.desc()).limit(limit)
        if kind is not None:
            q = q.where(EVENTS.c.kind == kind)
        if before_id is not None:
            q = q.where(EVENTS.c.id < before_id)
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


    # ----- operator overrides (issue 12; ems/daemon/overrides.py) ------------------------------

    def record_override(self, oid: str, kind: str, vehicle: str | None, spec: dict[str, Any], created_at: pd.Timestamp,
                        created_by: str, expires_at: pd.Timestamp) -> None:
        """Store a new override (``spec``: JSON-ready, as the API took it; times aware)."""
        row = OVERRIDES.insert().values(id=oid, kind=kind, vehicle=vehicle, spec_json=json.dumps(spec, default=str),
                                        created_at=_iso(created_at), created_by=created_by, expires_at=_iso(expires_at))
        self._write(lambda con: con.execute(row), RECORDS, ts=_iso(created_at))

    def end_override(self, oid: str, ended_at: pd.Timestamp, ended_by: str) -> None:
        """Mark an override ended (expired, cancelled, replaced: ``ended_by`` says which and by whom)."""
        q = OVERRIDES.update().where(OVERRIDES.c.id == oid).values(ended_at=_iso(ended_at), ended_by=ended_by)
        self._write(lambda con: con.execute(q), RECORDS, ts=_iso(ended_at))

    def overrides(self, active_at: pd.Timestamp | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Overrides, newest first, each with ``spec`` (dict); with ``active_at``: only those neither
        ended nor expired at that time."""
        q = sa.select(OVERRIDES).order_by(OVERRIDES.c.created_at.desc()).limit(limit)
        if active_at is not None:
            q = q.where(OVERRIDES.c.ended_at.is_(None), OVERRIDES.c.expires_at > _iso(active_at))
        with self.engine.connect() as con:
            rows = [dict(r) for r in con.execute(q).mappings()]
        for r in rows:
            r["spec"] = json.loads(r.pop("spec_json"))
        return rows


def _sqlite_pragmas(dbapi_con: Any, _record: Any) -> None:
    """WAL journal (readers never block the writer), every commit on disk (a month peak survives a
    power cut; about 0.2 ms per commit), wait on locks. ``auto_vacuum=INCREMENTAL`` first: it only takes
    on a database without tables and before WAL is set (an older file is converted by :func:`compact`)."""
    cur = dbapi_con.cursor()
    cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def _refuse_unusable(path: Path) -> None:
    """StoreError for a path that is not a regular file or not a SQLite database (missing is fine)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(Problem(str(path), None, "", None, f"cannot be opened: {exc.strerror}", has_value=False)) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise StoreError(Problem(str(path), None, "", None, f"is {kind}; daemon.database (or --database) names a "
                                 "SQLite file, created when missing", has_value=False))
    if st.st_size == 0:
        return
    with open(path, "rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    if head != SQLITE_MAGIC:
        raise StoreError(Problem(str(path), None, "", None, f"is not a SQLite database (it starts with {head[:8]!r}); "
                                 "daemon.database (or --database) names the EMS store, a SQLite file created when "
                                 "missing: give another path", has_value=False))


def _create_tables(engine: sa.Engine, attempts: int = 5) -> None:
    """The tables that are missing. Two processes opening a new file at once (the daemon creating
    it, ``ems status`` reading it) can both find a table missing; the loser's CREATE then fails, so it
    looks again: done once every table is there (the tables are the same in every process)."""
    for attempt in range(attempts):
        try:
            META.create_all(engine)
            return
        except sa.exc.OperationalError:
            if set(META.tables) <= set(sa.inspect(engine).get_table_names()):
                return
            if attempt == attempts - 1:
                raise


def _take_lock(path: Path) -> int:
    """An exclusive flock on ``F.lock`` holding this process's pid (:func:`ems.locks.hold`);
    StoreError naming the holder."""
    lock = path.with_name(path.name + ".lock")
    try:
        return hold(lock, str(path))
    except LockHeld as held:
        raise StoreError(Problem(str(path), None, "", None, f"is in use by another ems daemon (pid {held.holder}, lock "
                                 f"{lock}): one daemon per database; stop that one first, or give this one another "
                                 "daemon.database", has_value=False)) from None


def _shown(url: str) -> str:
    """A database URL fit for a message: its password masked."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url[:80]


def _storage_error(exc: sa.exc.DBAPIError) -> bool:
    """A failure of the storage (disk full, read-only, I/O, locked, damaged), not of the program."""
    return isinstance(exc, sa.exc.OperationalError) or type(exc) is sa.exc.DatabaseError


def _reason(exc: sa.exc.DBAPIError) -> str:
    """The driver's own message (``database or disk is full``), without SQLAlchemy's SQL dump."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]


def _row(r: Any, table: sa.Table) -> dict[str, Any]:
    """A row's values without its key column."""
    return {c.name: r[c.name] for c in table.columns if not c.primary_key}


def _upsert(con: sa.Connection, table: sa.Table, key: sa.Column, value: str, values: dict[str, Any]) -> None:
    """Insert or update the row whose ``key`` is ``value``."""
    if con.execute(sa.select(key).where(key == value)).first() is None:
        con.execute(table.insert().values({key.name: value, **values}))
    else:
        con.execute(table.update().where(key == value).values(**values))


def _raise_peak(con: sa.Connection, month: str, values: dict[str, Any]) -> None:
    """A month's metered peak in the database, only if higher than the one there."""
    row = con.execute(sa.select(PEAKS.c.peak_kw).where(PEAKS.c.month == month)).first()
    if row is None or row[0] < values["peak_kw"]:
        _upsert(con, PEAKS, PEAKS.c.month, month, values)


def _event_op(ts: str, kind: str, message: str, severity: str, **data: Any) -> Callable[[sa.Connection], None]:
    """The insert of one event, as a write the store can run now or keep."""
    row = EVENTS.insert().values(ts=ts, kind=kind, severity=severity, message=message,
                                 data_json=json.dumps(data, default=str) if data else None)
    return lambda con: con.execute(row)


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


# ----- what the forecasts learn from (issue 14): site energy per window, day-ahead forecasts, the
# weather cache; and compaction. Kept apart from the class above: module functions over a Store.

#: Each closed 30-minute window's energies as the daemon metered them [kWh] (ems.daemon.learning):
#: grid import and export, the V2H/V2B units' AC charge and discharge (summed); ``pv_kwh`` the PV
#: output (estimated when no device measures it, ``pv_source`` says how; NULL until it is) and
#: ``load_kwh = import - export - charge + discharge + pv``; ``flags`` why the load is not trusted
#: (comma-separated, "" = trusted). Kept for ever (about 1.9 MB a year), as are ``demand_windows``.
SITE_ENERGY = sa.Table(
    "site_energy", META,
    sa.Column("start", sa.String(32), primary_key=True),
    sa.Column("import_kwh", sa.Float, nullable=False),
    sa.Column("export_kwh", sa.Float, nullable=False),
    sa.Column("charge_kwh", sa.Float, nullable=False),
    sa.Column("discharge_kwh", sa.Float, nullable=False),
    sa.Column("pv_kwh", sa.Float),
    sa.Column("load_kwh", sa.Float),
    sa.Column("pv_source", sa.String(16)),
    sa.Column("flags", sa.String(200), nullable=False),
)
#: The day-ahead forecast of each 30-minute window [kW]: the one made 23.5 h before its start (the
#: first origin after the same window a day earlier closed). Kept ``retention_days``.
DAY_AHEAD = sa.Table(
    "day_ahead_forecasts", META,
    sa.Column("target", sa.String(32), primary_key=True),
    sa.Column("origin", sa.String(32), nullable=False),
    sa.Column("load_kw", sa.Float, nullable=False),
    sa.Column("pv_kw", sa.Float, nullable=False),
)
#: The weather forecast cache: per hour (interval start, UTC) the values of the latest fetch that
#: covered it (for a past hour: the forecast's own view of it), pvlib names and units (W/m^2, degC,
#: m/s); kept for ever (about 1.8 MB a year: the load model's temperature history).
WEATHER_VALUES = ("ghi", "dni", "dhi", "temp_air", "wind_speed")
WEATHER = sa.Table(
    "weather_forecasts", META,
    sa.Column("ts", sa.String(32), primary_key=True),
    *(sa.Column(name, sa.Float) for name in WEATHER_VALUES),
    sa.Column("issued_at", sa.String(32), nullable=False),
    sa.Column("models", sa.String(64)),
)


def _frame(store: Store, query: Any, key: str) -> pd.DataFrame:
    """Rows of ``query`` as a frame indexed by the UTC time in column ``key`` (empty: no rows)."""
    with store.engine.connect() as con:
        frame = pd.DataFrame(con.execute(query).mappings().all())
    if frame.empty:
        return frame
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop(key), utc=True, format="ISO8601"), name=key)
    return frame


def record_site_energy(store: Store, start: pd.Timestamp, values: dict[str, Any], flags: list[str], now: pd.Timestamp) -> None:
    """Store one closed window's energies (``import_kwh``, ``export_kwh``, ``charge_kwh``,
    ``discharge_kwh`` [kWh]; ``pv_kwh``/``load_kwh``/``pv_source`` when already known)."""
    row = {k: _num(v) if k.endswith("_kwh") else v for k, v in values.items()}
    row["flags"] = ",".join(flags)
    key = _iso(start)
    store._write(lambda con: _upsert(con, SITE_ENERGY, SITE_ENERGY.c.start, key, row), RECORDS, ts=_iso(now))


def site_energy(store: Store, since: pd.Timestamp | None = None) -> pd.DataFrame:
    """Stored windows (from ``since``), oldest first, indexed by their UTC start; ``flags`` as text."""
    q = sa.select(SITE_ENERGY).order_by(SITE_ENERGY.c.start)
    if since is not None:
        q = q.where(SITE_ENERGY.c.start >= _iso(since))
    return _frame(store, q, "start")


def set_site_pv(store: Store, pv: dict[pd.Timestamp, tuple[float, float, str]]) -> None:
    """Fill in windows' PV: ``start -> (pv_kwh, load_kwh, pv_source)``, in one transaction."""
    rows = [(_iso(t), {"pv_kwh": float(p), "load_kwh": _num(load), "pv_source": src}) for t, (p, load, src) in pv.items()]

    def op(con: sa.Connection) -> None:
        for key, values in rows:
            con.execute(SITE_ENERGY.update().where(SITE_ENERGY.c.start == key).values(**values))
    if rows:
        store._write(op, RECORDS)


def record_day_ahead(store: Store, origin: pd.Timestamp, target: pd.Timestamp, load_kw: float, pv_kw: float) -> None:
    """Keep the forecast of window ``target`` made at ``origin`` [kW] (replacing one made before)."""
    values = {"origin": _iso(origin), "load_kw": float(load_kw), "pv_kw": float(pv_kw)}
    key = _iso(target)
    store._write(lambda con: _upsert(con, DAY_AHEAD, DAY_AHEAD.c.target, key, values), RECORDS, ts=values["origin"])


def day_ahead(store: Store, since: pd.Timestamp) -> pd.DataFrame:
    """Day-ahead forecasts of the windows from ``since``, indexed by the window's UTC start."""
    return _frame(store, sa.select(DAY_AHEAD).where(DAY_AHEAD.c.target >= _iso(since)).order_by(DAY_AHEAD.c.target),
                  "target")


def record_weather(store: Store, data: pd.DataFrame, issued_at: pd.Timestamp, models: str | None) -> int:
    """Cache a fetched forecast (hourly rows, UTC interval starts, pvlib names): each hour takes the
    new values. Returns the number of hours written."""
    stamp = _iso(issued_at)
    rows = [(_iso(t), {**{c: _num(r.get(c)) if pd.notna(r.get(c)) else None for c in WEATHER_VALUES},
                       "issued_at": stamp, "models": models})
            for t, r in zip(data.index, data.to_dict("records"))]

    def op(con: sa.Connection) -> int:
        keys = [k for k, _ in rows]
        con.execute(WEATHER.delete().where(WEATHER.c.ts.in_(keys)))
        con.execute(WEATHER.insert(), [{"ts": k, **v} for k, v in rows])
        return len(rows)
    return store._write(op, RECORDS, default=0, ts=stamp) if rows else 0


def cached_weather(store: Store, since: pd.Timestamp | None = None) -> pd.DataFrame | None:
    """The weather cache from ``since`` as a weather frame (:mod:`ems.forecast.weather`: hourly, UTC
    interval starts, ``attrs["step"]`` one hour); None when it holds nothing."""
    q = sa.select(WEATHER).order_by(WEATHER.c.ts)
    if since is not None:
        q = q.where(WEATHER.c.ts >= _iso(since))
    frame = _frame(store, q, "ts")
    if frame.empty:
        return None
    data = frame[list(WEATHER_VALUES)].astype(float).dropna(axis=1, how="all")
    if ("dni" in data) != ("dhi" in data):
        data = data.drop(columns=[c for c in ("dni", "dhi") if c in data])
    data.index.name = "timestamp"
    data.attrs["step"] = pd.Timedelta(hours=1)
    data.attrs["source"] = "weather cache"
    return data


def file_bytes(store: Store) -> int | None:
    """Size of the database file with its write-ahead log [bytes] (None: not a SQLite file)."""
    if store.path is None:
        return None
    return sum(os.path.getsize(f) for f in (store.path, Path(f"{store.path}-wal")) if os.path.exists(f))


def compact(store: Store, now: pd.Timestamp, days: int) -> dict[str, Any]:
    """Daily retention of what the forecasts keep (day-ahead forecasts older than ``days``), then give
    the freed pages back to the file system: ``PRAGMA incremental_vacuum`` and a WAL checkpoint that
    truncates the log. A database created without ``auto_vacuum=INCREMENTAL`` (before this version)
    is converted once by a full ``VACUUM`` (it rewrites the file: temporarily up to twice its size on
    disk). Nothing happens while the database refuses writes. Returns ``day_ahead`` rows removed,
    ``converted``, ``bytes_before``/``bytes_after`` (file + WAL) and ``error`` (None, or why the
    vacuum failed: the daemon goes on)."""
    out: dict[str, Any] = {"day_ahead": 0, "converted": False, "bytes_before": file_bytes(store), "bytes_after": None,
                           "error": None}
    cutoff = _iso(pd.Timestamp(now) - pd.Timedelta(days=days))
    with store._mutex:
        if store._pending:
            return out
        out["day_ahead"] = store._write(lambda con: con.execute(DAY_AHEAD.delete().where(DAY_AHEAD.c.target < cutoff)).rowcount,
                                        RECORDS, default=0)
        if store.engine.dialect.name != "sqlite" or store._pending:
            return out
        try:
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as con:
                if con.exec_driver_sql("PRAGMA auto_vacuum").scalar() != 2:
                    con.exec_driver_sql("PRAGMA auto_vacuum=INCREMENTAL")
                    con.exec_driver_sql("VACUUM")
                    out["converted"] = True
                else:   # sqlite3's execute() frees one page per step and stops; executescript runs it through
                    con.connection.driver_connection.executescript("PRAGMA incremental_vacuum;")
                con.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sa.exc.DBAPIError as exc:
            if not _storage_error(exc):
                raise
            out["error"] = _reason(exc)
            log.error("store compaction failed: %s", out["error"])
    out["bytes_after"] = file_bytes(store)
    return out
