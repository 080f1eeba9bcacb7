"""A *noisy office year*: the shipped office year with weather-driven cooling, occupancy noise and
surprise hot afternoons, deterministic from a seed. Nothing here is shipped: ``bench/noisy_office.py``
generates it into a temporary folder at bench time.

    .venv/bin/python configs/data/make_noisy_office.py --seed 1 --out /tmp/noisy-office-2024-30min.csv

Built on ``office-2024-30min.csv`` (see README.md here: BDEW G1 x 60 kW load, pvlib PV of the
office's arrays from pvlib's TMY3 year moved to Nagoya), at 30 minutes over 2024, Asia/Tokyo:

    load = base x occupancy + cooling + surprise        [kW];  PV unchanged

- ``base``: the shipped office load (the same BDEW G1 day per season and day type).
- ``occupancy``: multiplicative noise ``max(OCCUPANCY_FLOOR, 1 + d + e)``, where ``d`` ~ N(0,
  ``DAY_SIGMA``) once per day (how many came in) and ``e`` a half-hourly AR(1) series with standard
  deviation ``HALF_HOUR_SIGMA`` and lag-1 correlation ``HALF_HOUR_RHO`` (meetings, kitchens, lifts).
- ``cooling``: on working days (the tariff calendar's weekdays: not weekends, not Japanese holidays)
  from ``OCCUPIED`` 08:00 to 18:00, ``COOLING_UA_KW_PER_K x (T_air - COOLING_SETPOINT_C)+ / COOLING_COP``
  with ``T_air`` the TMY temperature behind the PV (the same transferred year, each half hour taking
  its hour's value, as the forecaster aligns hourly weather): about 1 kW of electricity per K above
  24 degC, up to 10-11 kW on the hottest afternoons. The building's other seasonal air conditioning
  is already in the BDEW profile; this is the part that follows the day's weather.
- ``surprise``: ``SURPRISES_PER_MONTH`` afternoons in each of ``SURPRISE_MONTHS`` (June-September)
  on distinct working days: an extra ``SURPRISE_KW`` 8-12 kW (uniform) for ``SURPRISE_HOURS`` 2-4 h
  (whole half hours) starting between ``SURPRISE_START`` 12:00 and 15:00 (whole half hours). Neither
  the history nor the temperature shows them coming (an unannounced event, a chiller fault): no
  forecast can, so they test the demand guard and the plan's margin.

Magnitudes are assumptions for a benchmark, not measurements of an office. Deterministic: every draw
comes from ``numpy.random.default_rng([seed, k])`` with a fixed ``k`` per component.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ems.config import load_site  # noqa: E402

YEAR = 2024
OFFICE_CSV = HERE / "office-2024-30min.csv"
OFFICE_CONFIG = ROOT / "configs" / "office-v2b.yaml"
COOLING_SETPOINT_C = 24.0
COOLING_UA_KW_PER_K = 3.0     # heat the building gains per K of outdoor air above the set point [kW thermal/K]
COOLING_COP = 3.0             # chillers' coefficient of performance: 1 kW of electricity per K
OCCUPIED = (8, 18)            # working-day hours the building is cooled (local, [start, end))
DAY_SIGMA = 0.05
HALF_HOUR_SIGMA = 0.08
HALF_HOUR_RHO = 0.6
OCCUPANCY_FLOOR = 0.5
SURPRISE_MONTHS = (6, 7, 8, 9)
SURPRISES_PER_MONTH = 2
SURPRISE_KW = (8.0, 12.0)
SURPRISE_HOURS = (2.0, 4.0)
SURPRISE_START = (12.0, 15.0)


@dataclass(frozen=True)
class Surprise:
    """One surprise hot afternoon: local start, hours, extra kW."""

    start: pd.Timestamp
    hours: float
    kw: float

    def as_dict(self) -> dict:
        return {"start": self.start.isoformat(), "hours": self.hours, "kw": round(self.kw, 3)}


@dataclass(frozen=True)
class NoisyYear:
    """The generated year: ``frame`` (local 30-min index) with ``load_kw``, ``pv_kw`` and the parts
    ``base_kw``, ``occupancy``, ``temp_air_c``, ``occupied``, ``cooling_kw``, ``surprise_kw``; the
    surprises; the seed."""

    frame: pd.DataFrame
    surprises: tuple[Surprise, ...]
    seed: int

    def write_csv(self, path: str | Path) -> Path:
        """``timestamp,load_kw,pv_kw`` (3 decimals), the shipped files' format."""
        f = self.frame
        text = ["timestamp,load_kw,pv_kw"] + [f"{t.isoformat()},{a:.3f},{b:.3f}" for t, a, b in
                                              zip(f.index, np.round(f["load_kw"], 3), np.round(f["pv_kw"], 3))]
        path = Path(path)
        path.write_text("\n".join(text) + "\n", encoding="utf-8")
        return path


def office_temperature(index: pd.DatetimeIndex) -> np.ndarray:
    """Air temperature [degC] on ``index`` (30 min, local): the TMY year behind the office's PV moved
    to the site (``ems.study.weather.tmy_weather``), each half hour taking its hour's value."""
    from ems.study.weather import tmy_weather
    site = load_site(OFFICE_CONFIG).site
    w = tmy_weather(site.latitude_deg, site.longitude_deg, site.altitude_m, site.timezone, (YEAR,))
    hours = index.tz_convert("UTC").floor("h")
    return w["temp_air"].reindex(hours).to_numpy()


def noisy_office_year(seed: int = 0) -> NoisyYear:
    """The noisy office year for ``seed`` (module docstring)."""
    shipped = pd.read_csv(OFFICE_CSV)
    cfg = load_site(OFFICE_CONFIG)
    zone = cfg.site.timezone
    index = pd.DatetimeIndex(pd.to_datetime(shipped["timestamp"], utc=True)).tz_convert(zone)
    base = shipped["load_kw"].to_numpy(dtype=float)
    pv = shipped["pv_kw"].to_numpy(dtype=float)
    n = len(index)
    days = np.asarray(index.normalize().asi8)
    day_ids, day_of = np.unique(days, return_inverse=True)
    # occupancy: a factor per day and a half-hourly AR(1) series
    d = np.random.default_rng([seed, 1]).normal(0.0, DAY_SIGMA, len(day_ids))[day_of]
    rng = np.random.default_rng([seed, 2])
    e = np.empty(n)
    e[0] = rng.normal()
    shocks = rng.normal(size=n)
    for t in range(1, n):
        e[t] = HALF_HOUR_RHO * e[t - 1] + np.sqrt(1 - HALF_HOUR_RHO ** 2) * shocks[t]
    occupancy = np.maximum(OCCUPANCY_FLOOR, 1.0 + d + HALF_HOUR_SIGMA * e)
    # cooling while occupied on working days
    temp = office_temperature(index)
    working = cfg.tariff.day_types(index) == "weekday"
    hour = np.asarray(index.hour)
    occupied = working & (hour >= OCCUPIED[0]) & (hour < OCCUPIED[1])
    cooling = np.where(occupied, COOLING_UA_KW_PER_K * np.maximum(temp - COOLING_SETPOINT_C, 0.0) / COOLING_COP, 0.0)
    # surprise afternoons
    rng = np.random.default_rng([seed, 3])
    surprise = np.zeros(n)
    events = []
    local_date = pd.Series(index.date)
    for month in SURPRISE_MONTHS:
        candidates = np.unique(np.asarray(local_date[(np.asarray(index.month) == month) & working]))
        for day in sorted(rng.choice(candidates, size=min(SURPRISES_PER_MONTH, len(candidates)), replace=False)):
            start_h = SURPRISE_START[0] + 0.5 * rng.integers(0, int((SURPRISE_START[1] - SURPRISE_START[0]) * 2) + 1)
            hours = 0.5 * rng.integers(int(SURPRISE_HOURS[0] * 2), int(SURPRISE_HOURS[1] * 2) + 1)
            kw = rng.uniform(*SURPRISE_KW)
            start = pd.Timestamp(day).tz_localize(zone) + pd.Timedelta(hours=start_h)
            sel = (index >= start) & (index < start + pd.Timedelta(hours=hours))
            surprise[sel] += kw
            events.append(Surprise(start, float(hours), float(kw)))
    load = base * occupancy + cooling + surprise
    frame = pd.DataFrame({"load_kw": load, "pv_kw": pv, "base_kw": base, "occupancy": occupancy, "temp_air_c": temp,
                          "occupied": occupied, "cooling_kw": cooling, "surprise_kw": surprise}, index=index)
    if frame[["load_kw", "temp_air_c"]].isna().any().any():
        raise RuntimeError("missing values in the noisy office year")
    return NoisyYear(frame, tuple(events), seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="CSV to write (timestamp,load_kw,pv_kw)")
    args = ap.parse_args()
    year = noisy_office_year(args.seed)
    print(f"wrote {year.write_csv(args.out)}; {len(year.surprises)} surprise afternoons; "
          f"cooling {year.frame['cooling_kw'].sum() / 2:,.0f} kWh; peak load {year.frame['load_kw'].max():.1f} kW")


if __name__ == "__main__":
    main()
