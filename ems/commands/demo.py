"""``ems demo``: check the example configs, bill the example household year, then run the real
daemon against the in-process simulated site for a simulated day of each example site.

Part 1, the bill: the shipped household year (``ems/data/household-2024-30min.csv``, a real house;
see ``ems/data/README.md``) billed under the home site's tariff, without any optimisation: meter
import = max(load - PV, 0), export = max(PV - load, 0) (:func:`demo_bill`).

Part 2, the daemon: ``ems run``'s service (APScheduler jobs, receding-horizon plans, dispatch with
the demand guard, the SQLite store in a temporary directory) drives the simulated V2H/V2B units
and meter over loopback Modbus TCP on a simulated clock (2400x by default): the office on a working
day 08:00-18:30 (three driver-owned cars, a demand charge) and the home from Monday 17:00 to
Tuesday 08:00 (one car, time-of-use), then prints what a decision maker asks first and then the
rest (:mod:`ems.daemon.outcome`): for the office the contract kW with the EMS and without it and
the yen per month net of the drivers' settlement, each amount named by whose money it is; for the
home the night's energy bill and whether V2H pays at that tariff at all.

The office day is where V2B can do its job: the month's peak for the building alone, with that peak
inside the cars' plug-in hours (:func:`pick_office_day`: of the summer months' building-peak days
whose peak falls while a car is plugged in, the one with the most room between that peak and the
highest half hour with no car plugged in that day and the next, which the planner's 48 h horizon
holds against). Computed from the office's data; ``test_demo`` checks that the day below is it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ems.commands.argtypes import SPEED
from ems.billing import Bill, compute_bill
from ems.config import load_site, summary
from ems.errors import ConfigError, DataError, Problem
from ems.paths import example_configs
from ems.tariff import Tariff
from ems.timegrid import WINDOW, month_of, whole_months
from ems.timegrid import months as local_months
from ems.timeseries import read_series_csv

NAME = "demo"
HELP = "check the example configs, bill the example household year, run the daemon on the simulated sites for a day"

PACKAGE = Path(__file__).resolve().parents[1]  # the ems package (ems.__file__ is None if installed as a namespace)
CONFIGS = example_configs()  # the checkout's configs/, or the installed package's ems/examples (a wheel)
HOUSEHOLD_CSV = PACKAGE / "data" / "household-2024-30min.csv"
HOME_SITE = "home-v2h.yaml"
FILL_MAX_DAYS = 7  # look at most a week away for the same clock time; the file's longest gap is 47 steps
#: The simulated periods: site file, start, end, what the period is called. The office: Wednesday
#: 3 July 2024, July's peak day for the building alone (:func:`pick_office_day`); the home: a Monday
#: evening to Tuesday morning in July 2024.
DAYS = {
    "office": ("office-v2b.yaml", "2024-07-03T08:00+09:00", "2024-07-03T18:30+09:00", "this day"),
    "home": ("home-v2h.yaml", "2024-07-08T17:00+09:00", "2024-07-09T08:00+09:00", "this night"),
}
DEMO_SPEED = 2400.0   # an hour in 1.5 s: both periods in about 45 s
SUMMER = (7, 8, 9)    # the office tariff's summer season: the months pick_office_day looks at


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments: where the example configs are (default: the checkout's configs/, or an installed wheel's copy)."""
    p.add_argument("--configs", type=Path, default=CONFIGS, help=f"directory of example site files (default {CONFIGS})")
    p.add_argument("--site", choices=sorted(DAYS), action="append", help="run the daemon for this site only (repeatable)")
    p.add_argument("--speed", type=SPEED, default=DEMO_SPEED, help=f"simulated seconds per real second (default {DEMO_SPEED:g})")


def check_configs(configs_dir: Path) -> tuple[bool, str]:
    """Validate every ``*.yaml`` site file in ``configs_dir``; return (all valid, report text)."""
    paths = sorted(configs_dir.glob("*.yaml"))
    if not paths:
        return False, f"{configs_dir}: no *.yaml site files found"
    out, ok = [], True
    for path in paths:
        try:
            out += [f"{path.name}: OK", summary(load_site(path))]
        except ConfigError as exc:
            ok = False
            out += [f"{path.name}: INVALID, {len(exc.problems)} problem(s)"] + [f"  {p}" for p in exc.problems]
    return ok, "\n".join(out)


def fill_from_other_days(values: pd.Series, max_days: int = FILL_MAX_DAYS) -> tuple[pd.Series, int, int]:
    """Fill gaps with the value at the same clock time on the nearest earlier day that has one
    (up to ``max_days`` back); gaps with no earlier value (the file's first day) take the nearest
    later day's. Return (filled, number filled from earlier days, number from later days).

    ``values`` must be on a regular grid whose step divides a day.
    """
    step = values.index[1] - values.index[0]
    per_day = int(pd.Timedelta(days=1) / step)
    out = values.copy()
    n_back = n_fwd = 0
    for sign in (1, -1):
        for k in range(1, max_days + 1):
            gap = out.isna()
            if not gap.any():
                break
            donor = out.shift(sign * k * per_day)
            take = gap & donor.notna()
            out[take] = donor[take]
            if sign == 1:
                n_back += int(take.sum())
            else:
                n_fwd += int(take.sum())
    if out.isna().any():
        first = out.index[out.isna()][0]
        raise DataError(Problem(str(values.name), None, "timestamp", first.isoformat(),
                                f"no value at this clock time within {max_days} days either side"))
    return out, n_back, n_fwd


def household_meter(path: Path = HOUSEHOLD_CSV, zone: str = "Asia/Tokyo") -> tuple[pd.DataFrame, list[str]]:
    """The shipped household year as a meter frame (whole local months), and notes on every rule used.

    The file is in UTC from a house outside Japan; its UTC clock reading is reused as the ``zone``
    clock reading (2024-02-28T21:00Z becomes 2024-02-28T21:00+09:00), so the midday PV peak stays at
    midday and Japanese holidays fall on the right days.
    """
    raw = read_series_csv(path, ["load_kw", "pv_kw"], allow_empty=True)
    raw.index = raw.index.tz_convert(None).tz_localize(zone)
    load, n_back, n_fwd = fill_from_other_days(raw["load_kw"].rename(str(path)))
    pv_empty = int(raw["pv_kw"].isna().sum())
    pv = raw["pv_kw"].fillna(0.0)
    day_pv_empty = int((raw["pv_kw"].isna() & (raw.index.hour >= 9) & (raw.index.hour < 15)).sum())
    keep = whole_months(raw.index, zone)
    billed = local_months(raw.index[keep], zone)
    first, last = billed[0], billed[-1]
    meter = pd.DataFrame({"import_kw": np.maximum(load - pv, 0.0), "export_kw": np.maximum(pv - load, 0.0)},
                         index=raw.index)[keep]
    notes = [
        f"Example year: {path.name} (a real household, 30-minute averages; see ems/data/README.md).",
        f"  Time: the file's UTC clock readings are used as {zone} clock time "
        f"({raw.index[0]:%Y-%m-%dT%H:%M}Z -> {raw.index[0].isoformat()}), so midday PV stays at midday.",
        f"  Load gaps: {n_back + n_fwd} of {len(raw)} half hours empty; each filled with the same clock time on the "
        f"nearest earlier day that has a value ({n_back} filled), or, with none within {FILL_MAX_DAYS} days "
        f"(the file's start), the nearest later day ({n_fwd} filled).",
        f"  PV: {pv_empty} empty cells counted as 0 kW (the sensor reports nothing at night; {day_pv_empty} of "
        "them fall between 09:00 and 15:00, sensor outages billed as if there were no PV).",
        "  Meter: import = max(load - PV, 0), export = max(PV - load, 0); no vehicle, no optimisation.",
        f"  Billed: the whole local months {first} to {last} (the file's partial first and last months are left out).",
    ]
    return meter, notes


def demo_bill(configs_dir: Path = CONFIGS) -> tuple[Bill, Tariff, list[str]]:
    """Bill the example household year under the home site's tariff; return (bill, tariff, notes)."""
    site = load_site(configs_dir / HOME_SITE)
    meter, notes = household_meter(zone=site.tariff.timezone)
    notes.append(f"  Tariff: the one of {HOME_SITE} ({site.tariff.name}).")
    return compute_bill(meter, site.tariff), site.tariff, notes


def building_frame(cfg) -> pd.DataFrame:
    """The building alone over the site's data (``load.history_csv``, what the simulator replays), per
    30-minute demand window on the local clock: ``kw`` = mean of max(load - PV, 0) (no car), and
    ``plugged``: some car is plugged in for the whole window (the configured stays)."""
    from ems.study.site import make_fleet, read_span
    span = read_span(cfg, cfg.load.history_csv)
    fleet = make_fleet(cfg, span, 0.0)
    local = span.index.tz_convert(cfg.tariff.zone)
    steps = pd.DataFrame({"kw": np.maximum(span.load_kw - span.pv_kw, 0.0),
                          "plugged": fleet.plugged.any(axis=0) if len(cfg.vehicles) else np.zeros(len(local), bool)},
                         index=local)
    grouped = steps.groupby(local.floor(WINDOW))
    return pd.DataFrame({"kw": grouped["kw"].mean(), "plugged": grouped["plugged"].all()})


@dataclass(frozen=True)
class PeakDay:
    """A month's peak day for the building alone: when and how high its peak is, whether a car is
    plugged in then; the month's highest half hour with no car plugged in (the floor no car can
    lower); the room the cars have that day (the peak above the highest half hour with no car
    plugged in that day and the next)."""

    day: pd.Timestamp
    peak_kw: float
    peak_at: pd.Timestamp
    in_window: bool
    floor_kw: float
    floor_at: pd.Timestamp
    room_kw: float

    @property
    def month(self) -> str:
        return self.day.strftime("%B")


def peak_days(frame: pd.DataFrame) -> list[PeakDay]:
    """Each month's peak day for the building alone (:func:`building_frame`)."""
    out = []
    for _, g in frame.groupby(local_months(frame.index, frame.index.tz)):
        at = g["kw"].idxmax()
        day = at.normalize()
        free = g["kw"][~g["plugged"]]
        near = frame[(frame.index >= day) & (frame.index < day + pd.Timedelta(days=2)) & ~frame["plugged"]]["kw"]
        out.append(PeakDay(day, float(g["kw"].max()), at, bool(g["plugged"][at]), float(free.max()), free.idxmax(),
                           float(g["kw"].max() - near.max())))
    return out


def pick_office_day(frame: pd.DataFrame, months: tuple[int, ...] = SUMMER) -> PeakDay:
    """Of the building's monthly peak days in ``months`` whose peak falls while a car is plugged in,
    the one with the most room for the cars (:attr:`PeakDay.room_kw`)."""
    found = [d for d in peak_days(frame) if d.in_window and d.day.month in months]
    if not found:
        raise DataError(Problem("office data", None, "load_kw", None, "no month's peak falls while a car is plugged in",
                                has_value=False))
    return max(found, key=lambda d: d.room_kw)


def the_day(frame: pd.DataFrame, day: pd.Timestamp) -> PeakDay | None:
    """The PeakDay of ``day`` if it is its month's peak day for the building alone, else None."""
    return next((d for d in peak_days(frame) if d.day == day.normalize()), None)


def days_topping(frame: pd.DataFrame, day: pd.Timestamp, kw: float) -> tuple[int, int]:
    """(days of ``day``'s month on which the building alone tops ``kw`` while a car is plugged in, days
    with a car plugged in at all)."""
    g = frame[local_months(frame.index, frame.index.tz) == month_of(day, frame.index.tz)]
    with_cars = g[g["plugged"]]
    by_day = with_cars["kw"].groupby(with_cars.index.normalize()).max()
    return int((by_day > kw + 1e-9).sum()), len(by_day)


def day_context(cfg, start: pd.Timestamp, contract_kw: float) -> list[str]:
    """Why this day (the building alone, from the site's data): the month's peak day, its peak inside
    the plug-in hours, the month's floor, the days that need the cars too. Empty for a day that is
    not its month's peak day or a site without a demand charge."""
    if cfg.tariff.basic.kind != "demand" or not cfg.vehicles:
        return []
    frame = building_frame(cfg)
    d = the_day(frame, start.tz_convert(cfg.tariff.zone))
    if d is None:
        return []
    n, of = days_topping(frame, d.day, contract_kw)
    return [f"  the day: {d.month}'s peak day for the building alone ({d.peak_kw:.2f} kW at {d.peak_at:%H:%M}, "
            f"{'while the cars are plugged in' if d.in_window else 'with no car plugged in'}); {d.month}'s highest half hour "
            f"with no car plugged in is {d.floor_kw:.2f} kW ({d.floor_at:%Y-%m-%d %H:%M}), the lowest contract the cars "
            f"could reach; the building alone tops {contract_kw:.2f} kW on {n} of {d.month}'s {of} days with cars: the "
            "month's figure holds if the EMS holds each of them as it held this one"]


def daemon_day(configs_dir: Path, site: str, speed: float = DEMO_SPEED) -> list[str]:
    """Run the daemon for the site's simulated period (store in a temporary directory); the report
    lines: what the period is, the headline (contract kW and money by whose it is), why this day,
    what the daemon did, the details."""
    from ems.clock import SimClock
    from ems.daemon import Service
    from ems.daemon.outcome import detail_lines, headline_lines, outcome
    from ems.store import Store

    name, start, until, period = DAYS[site]
    cfg = load_site(configs_dir / name)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ems-demo-") as tmp:
        database = str(Path(tmp) / "demo.sqlite")

        async def day():
            async with Service(cfg, clock=SimClock(pd.Timestamp(start), speed), database=database,
                               solver_process=True) as svc:  # as ems run does by default
                await svc.serve(pd.Timestamp(until))
                return svc.daemon, dict(svc.sim.sim.model.energy_kwh)
        daemon, energy = asyncio.run(day())
        with Store(database) as store:
            telemetry = store.telemetry()
            events = store.events(limit=10000)
    left = {}
    for v in cfg.vehicles:
        w = v.windows[0]
        left[v.id] = (100 * energy[v.id] / v.capacity_kwh, 100 * v.target_kwh(w) / v.capacity_kwh)
    o = outcome(cfg, telemetry, list(daemon.windows), daemon.dispatch_interval_s, left)
    s = daemon.stats
    kinds = sorted({e["kind"] for e in events})
    cur = cfg.tariff.currency
    head = [f"{cfg.site.name}: {start} to {until}, simulated at {speed:g}x in {time.perf_counter() - t0:.1f} s"]
    ran = [f"  the daemon made {s.plans} plans ({', '.join(f'{n} on {k}' for k, n in sorted(s.replans.items())) or 'none early'}), "
           f"{s.ticks} dispatch ticks every {daemon.dispatch_interval_s:g} simulated s over Modbus TCP; "
           f"events: {', '.join(kinds)}"]
    return (head + headline_lines(o, cur, period) + day_context(cfg, pd.Timestamp(start), o.contract_kw) + ran
            + detail_lines(o, cur))


def bill_table(bill: Bill) -> str:
    """One line per billing month (import/export kWh, peak kW, total) and the total; the line
    items are what ``ems bill`` prints."""
    cur = bill.currency
    rows = [f"{'month':<9}{'import kWh':>12}{'export kWh':>12}{'peak kW':>9}{'total ' + cur:>14}"]
    rows += [f"{m.month:<9}{m.import_kwh:>12,.1f}{m.export_kwh:>12,.1f}{m.peak_kw:>9.2f}{m.total:>14,.2f}" for m in bill.months]
    rows.append(f"TOTAL over {len(bill.months)} month(s){bill.total:>35,.2f} {cur}  "
                "(line items per month: ems bill --tariff T.yaml --meter METER.csv)")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    """Check the example configs, print the example year's bill, run the daemon on the simulated sites."""
    ok, report = check_configs(args.configs)
    print(f"Example configs in {args.configs}:")
    print(report)
    if not ok:
        print("demo stopped: fix the configs above", file=sys.stderr)
        return 2
    bill, tariff, notes = demo_bill(args.configs)
    print()
    print("\n".join(notes))
    print()
    print(bill_table(bill))
    print()
    print("The daemon (ems run) against the simulated sites, real Modbus over loopback, a simulated period each:")
    for site in args.site or list(DAYS):
        print("\n".join(daemon_day(args.configs, site, args.speed)), flush=True)
    return 0
