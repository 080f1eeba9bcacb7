"""Tariffs: the file format and the per-interval prices it implies.

A tariff file describes how the utility bills a site. This module holds the validated model and the
price lookups (energy rate, adders, export credit per interval) that both the bill
(:mod:`ems.billing`) and the planner use, so that both price every kWh the same way.

Day types: ``weekday``, ``saturday``, ``sunday`` and ``holiday`` (public holidays of
``holidays_country`` from the ``holidays`` package, plus the tariff's ``extra_holidays`` such as the
year-end days many Japanese utilities treat as holidays). A holiday on a Saturday counts as
``holiday``. Time-of-use periods are matched first to last; the first whose seasons, days and clock
range contain the interval's start sets its rate. Every 15-minute slot of every season and day type
must be covered, which is checked when the file is loaded.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zoneinfo
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import holidays as holidays_pkg
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ems.yamlio import load_yaml, validate

if TYPE_CHECKING:  # pandas is imported by the price lookups' callers; loading a tariff (ems check) needs none
    import pandas as pd

DayType = Literal["weekday", "saturday", "sunday", "holiday"]
DAY_TYPES: tuple[str, ...] = ("weekday", "saturday", "sunday", "holiday")
_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_MMDD = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _minutes(text: str) -> int:
    """Minutes after midnight of ``"HH:MM"`` (``"24:00"`` allowed as the end of the day)."""
    m = _CLOCK.match(text)
    if not m or (m.group(1) == "24" and m.group(2) != "00"):
        raise ValueError(f"expected a clock time 'HH:MM' from 00:00 to 24:00; got {text!r}")
    return int(m.group(1)) * 60 + int(m.group(2))


class Season(_Strict):
    """A named set of calendar months (1-12)."""

    name: str = Field(min_length=1)
    months: list[int] = Field(min_length=1)

    @field_validator("months")
    @classmethod
    def _month_numbers(cls, v: list[int]) -> list[int]:
        bad = [m for m in v if not 1 <= m <= 12]
        if bad:
            raise ValueError(f"months are numbers 1-12; got {bad}")
        return v


class Period(_Strict):
    """A time-of-use period: a rate [currency/kWh] on some seasons, day types and clock range.

    ``start``/``end`` are local clock times; an ``end`` at or before ``start`` wraps past midnight
    (``23:00``-``07:00``); ``00:00``-``24:00`` (the default) is the whole day. Empty ``seasons`` or
    ``days`` mean all. Times must fall on 15-minute boundaries.
    """

    name: str = Field(min_length=1)
    rate_per_kwh: float = Field(ge=-1000, le=1000)
    seasons: list[str] = Field(default_factory=list)
    days: list[DayType] = Field(default_factory=list)
    start: str = "00:00"
    end: str = "24:00"

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, v: str) -> str:
        if _minutes(v) % 15:
            raise ValueError(f"period boundaries fall on 15-minute steps (:00, :15, :30, :45); got {v!r}")
        return v

    @field_validator("start")
    @classmethod
    def _start_in_day(cls, v: str) -> str:
        if _minutes(v) == 1440:  # 24:00 - 24:00 would silently mean the whole day
            raise ValueError("a period starts at 00:00-23:45; 24:00 is only an end")
        return v

    def covers_minute(self, minute: np.ndarray) -> np.ndarray:
        """Which minutes-after-midnight fall inside this period's clock range."""
        s, e = _minutes(self.start), _minutes(self.end)
        if s == e or (s == 0 and e == 1440):
            return np.ones_like(minute, dtype=bool)
        if s < e:
            return (minute >= s) & (minute < e)
        return (minute >= s) | (minute < e)


class Block(_Strict):
    """An increasing block: the rate for monthly kWh up to ``up_to_kwh`` (None = the rest)."""

    up_to_kwh: float | None = Field(default=None, gt=0)
    rate_per_kwh: float = Field(ge=0, le=1000)


class BasicCharge(_Strict):
    """The monthly basic charge.

    kinds: ``fixed`` (``amount_per_month``), ``per_ampere`` (``rate_per_ampere_month`` x
    ``contract_amperes``), ``per_kva`` (``rate_per_kva_month`` x ``contract_kva``) or ``demand``
    (``rate_per_kw_month`` x contract kW, the largest 30-minute average import of this month and the
    previous ``ratchet_months`` months). The power-factor adjustment multiplies a demand charge by
    (185 - ``power_factor_pct``)/100: 85 % is neutral, each point above lowers it 1 %.
    """

    kind: Literal["fixed", "per_ampere", "per_kva", "demand"]
    amount_per_month: float | None = Field(default=None, ge=0)
    rate_per_ampere_month: float | None = Field(default=None, ge=0)
    contract_amperes: float | None = Field(default=None, gt=0)
    rate_per_kva_month: float | None = Field(default=None, ge=0)
    contract_kva: float | None = Field(default=None, gt=0)
    rate_per_kw_month: float | None = Field(default=None, ge=0)
    ratchet_months: int = Field(default=11, ge=0, le=24)
    power_factor_pct: float = Field(default=85.0, ge=0, le=100)
    minimum_contract_kw: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _fields_for_kind(self) -> BasicCharge:
        need = {
            "fixed": ["amount_per_month"],
            "per_ampere": ["rate_per_ampere_month", "contract_amperes"],
            "per_kva": ["rate_per_kva_month", "contract_kva"],
            "demand": ["rate_per_kw_month"],
        }[self.kind]
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"basic charge of kind {self.kind!r} needs {', '.join(missing)}")
        others = {"amount_per_month", "rate_per_ampere_month", "contract_amperes", "rate_per_kva_month",
                  "contract_kva", "rate_per_kw_month"} - set(need)
        extra = sorted(k for k in others if getattr(self, k) is not None)
        if extra:
            raise ValueError(f"basic charge of kind {self.kind!r} does not use {', '.join(extra)}")
        return self

    @property
    def pf_factor(self) -> float:
        """Power-factor multiplier of a demand charge, (185 - PF)/100."""
        return (185.0 - self.power_factor_pct) / 100.0

    def fixed_amount(self) -> float:
        """The monthly basic charge of a non-demand tariff [currency]."""
        if self.kind == "fixed":
            return float(self.amount_per_month)  # type: ignore[arg-type]
        if self.kind == "per_ampere":
            return float(self.rate_per_ampere_month * self.contract_amperes)  # type: ignore[operator]
        if self.kind == "per_kva":
            return float(self.rate_per_kva_month * self.contract_kva)  # type: ignore[operator]
        raise ValueError("a demand basic charge depends on the metered peak")

    def demand_rate(self) -> float:
        """Effective rate per kW-month after the power-factor adjustment [currency/kW-month]."""
        return float(self.rate_per_kw_month or 0.0) * self.pf_factor if self.kind == "demand" else 0.0


class Adder(_Strict):
    """A per-kWh adder that varies by month (fuel-cost adjustment, renewable-energy levy).

    ``monthly`` maps ``"YYYY-MM"`` to the rate [currency/kWh]; months not listed use
    ``default_per_kwh``. Rates may be negative (fuel-cost adjustments often are).
    """

    name: str = Field(min_length=1)
    default_per_kwh: float = Field(default=0.0, ge=-100, le=100)
    monthly: dict[str, float] = Field(default_factory=dict)

    @field_validator("monthly")
    @classmethod
    def _month_keys(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k in v if not _MONTH.match(str(k))]
        if bad:
            raise ValueError(f"monthly keys are 'YYYY-MM' strings (quote them in YAML); got {bad}")
        return v

    def rate(self, month: str) -> float:
        """Rate for the billing month ``"YYYY-MM"`` [currency/kWh]."""
        return self.monthly.get(month, self.default_per_kwh)


class Export(_Strict):
    """Credit for PV surplus sold to the grid: a flat rate or time-of-use periods."""

    rate_per_kwh: float | None = Field(default=None, ge=0, le=1000)
    periods: list[Period] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_form(self) -> Export:
        if (self.rate_per_kwh is None) == (not self.periods):
            raise ValueError("give exactly one of rate_per_kwh or periods")
        return self


class Tariff(_Strict):
    """A whole tariff: basic charge, energy rates (periods or blocks), adders, export credit."""

    name: str = Field(min_length=1)
    currency: str = "JPY"
    timezone: str = "Asia/Tokyo"
    holidays_country: str | None = "JP"
    extra_holidays: list[str] = Field(default_factory=list, description="'MM-DD' days billed as holidays every year")
    basic: BasicCharge
    seasons: list[Season] = Field(default_factory=lambda: [Season(name="all", months=list(range(1, 13)))])
    energy: list[Period] = Field(default_factory=list)
    blocks: list[Block] = Field(default_factory=list)
    adders: list[Adder] = Field(default_factory=list)
    export: Export | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone; use an IANA name such as 'Asia/Tokyo'") from None
        return v

    @field_validator("holidays_country")
    @classmethod
    def _country(cls, v: str | None) -> str | None:
        if v is not None and v not in holidays_pkg.list_supported_countries():
            raise ValueError("unknown country code for public holidays; use an ISO code such as 'JP' (or null)")
        return v

    @field_validator("extra_holidays")
    @classmethod
    def _mmdd(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if not _MMDD.match(str(d))]
        if bad:
            raise ValueError(f"extra_holidays are 'MM-DD' strings; got {bad}")
        return v

    # Checks across keys are field validators where they can be (fields validate in order, so
    # ``seasons`` is known when ``energy`` is checked): the error then points at the key's line.

    @field_validator("seasons")
    @classmethod
    def _every_month_once(cls, v: list[Season]) -> list[Season]:
        months = sorted(m for s in v for m in s.months)
        if months != list(range(1, 13)):
            raise ValueError(f"seasons must cover each month 1-12 exactly once; they cover {months}")
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError(f"season names must be unique; got {names}")
        return v

    @field_validator("energy")
    @classmethod
    def _energy_periods(cls, v: list[Period], info: ValidationInfo) -> list[Period]:
        if "seasons" in info.data:  # otherwise the seasons' own error is reported
            check_periods(v, info.data["seasons"], "")
        return v

    @field_validator("blocks")
    @classmethod
    def _increasing_blocks(cls, v: list[Block]) -> list[Block]:
        if v:
            caps = [b.up_to_kwh for b in v]
            if caps[-1] is not None or any(c is None for c in caps[:-1]):
                raise ValueError("every block but the last needs up_to_kwh; the last has none")
            finite = [c for c in caps if c is not None]
            if finite != sorted(set(finite)):
                raise ValueError(f"up_to_kwh must increase; got {finite}")
        return v

    @field_validator("export")
    @classmethod
    def _export_periods(cls, v: Export | None, info: ValidationInfo) -> Export | None:
        if v is not None and v.periods and "seasons" in info.data:
            check_periods(v.periods, info.data["seasons"], "periods: ")
        return v

    @model_validator(mode="after")
    def _one_energy_form(self) -> Tariff:
        if bool(self.energy) == bool(self.blocks):
            raise ValueError("give exactly one of energy (time-of-use periods) or blocks (increasing block rates)")
        return self

    # ----- lookups on a time index -------------------------------------------------------------

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The tariff's time zone (billing months and clock periods are local to it)."""
        return zoneinfo.ZoneInfo(self.timezone)

    def local(self, index: pd.DatetimeIndex) -> pd.DatetimeIndex:
        """Convert an aware index to the tariff's local time."""
        if index.tz is None:
            raise ValueError("timestamps must carry a time zone or UTC offset")
        return index.tz_convert(self.zone)

    def months(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Billing month ``"YYYY-MM"`` of each interval."""
        from ems.timegrid import months as local_months
        return local_months(self.local(index), self.zone)

    def day_types(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Day type of each interval: weekday, saturday, sunday or holiday."""
        loc = self.local(index)
        dates = loc.date
        hol = _holiday_set(self.holidays_country, tuple(self.extra_holidays), int(loc.year.min()), int(loc.year.max()))
        wd = np.asarray(loc.day_of_week)  # Monday = 0 (DatetimeIndex.weekday is deprecated in pandas 3)
        out = np.where(wd == 5, "saturday", np.where(wd == 6, "sunday", "weekday")).astype(object)
        is_hol = np.fromiter((d in hol for d in dates), dtype=bool, count=len(dates))
        out[is_hol] = "holiday"
        return out

    def seasons_of(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Season name of each interval."""
        by_month = {m: s.name for s in self.seasons for m in s.months}
        return np.array([by_month[m] for m in self.local(index).month], dtype=object)

    def _match(self, periods: list[Period], index: pd.DatetimeIndex) -> np.ndarray:
        """Index into ``periods`` of the first period matching each interval."""
        loc = self.local(index)
        minute = np.asarray(loc.hour * 60 + loc.minute)
        seasons = self.seasons_of(index)
        days = self.day_types(index)
        which = np.full(len(index), -1)
        for i, p in enumerate(periods):
            ok = (which < 0) & p.covers_minute(minute)
            if p.seasons:
                ok &= np.isin(seasons, p.seasons)
            if p.days:
                ok &= np.isin(days, p.days)
            which[ok] = i
        return which

    def period_names(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Name of the energy period of each interval (``block`` for block tariffs)."""
        if self.blocks:
            return np.full(len(index), "block", dtype=object)
        names = np.array([p.name for p in self.energy], dtype=object)
        return names[self._match(self.energy, index)]

    def energy_rate(self, index: pd.DatetimeIndex, month_kwh: float = 0.0) -> np.ndarray:
        """Energy rate of each interval [currency/kWh], adders excluded.

        For block tariffs this is the marginal rate of the block that ``month_kwh`` (consumption
        already metered this month) falls in: the rate the next kWh costs.
        """
        if self.blocks:
            return np.full(len(index), self.block_rate(month_kwh))
        rates = np.array([p.rate_per_kwh for p in self.energy])
        return rates[self._match(self.energy, index)]

    def block_rate(self, month_kwh: float) -> float:
        """Marginal block rate after ``month_kwh`` of monthly consumption [currency/kWh]."""
        for b in self.blocks:
            if b.up_to_kwh is None or month_kwh < b.up_to_kwh:
                return b.rate_per_kwh
        return self.blocks[-1].rate_per_kwh

    def block_energy_cost(self, month_kwh: float) -> float:
        """Energy charge of ``month_kwh`` in one month under increasing blocks [currency]."""
        cost, lower = 0.0, 0.0
        for b in self.blocks:
            upper = float("inf") if b.up_to_kwh is None else b.up_to_kwh
            cost += max(0.0, min(month_kwh, upper) - lower) * b.rate_per_kwh
            lower = upper
            if month_kwh <= upper:
                break
        return cost

    def adder_rate(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Sum of all per-kWh adders of each interval [currency/kWh]."""
        months = self.months(index)
        out = np.zeros(len(index))
        for a in self.adders:
            out += np.array([a.rate(m) for m in months]) if a.monthly else a.default_per_kwh
        return out

    def export_rate(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Credit per kWh exported in each interval [currency/kWh] (0 without an export section)."""
        if self.export is None:
            return np.zeros(len(index))
        if self.export.rate_per_kwh is not None:
            return np.full(len(index), self.export.rate_per_kwh)
        rates = np.array([p.rate_per_kwh for p in self.export.periods])
        return rates[self._match(self.export.periods, index)]

    def import_price(self, index: pd.DatetimeIndex, month_kwh: float = 0.0) -> np.ndarray:
        """What one more kWh imported costs in each interval: energy rate + adders [currency/kWh]."""
        return self.energy_rate(index, month_kwh) + self.adder_rate(index)

    def describe_basic(self) -> str:
        """One line about the basic charge, for summaries."""
        b = self.basic
        if b.kind == "demand":
            return (f"demand {b.rate_per_kw_month:,.2f} {self.currency}/kW-month, ratchet {b.ratchet_months} months, "
                    f"PF {b.power_factor_pct:g} %")
        return f"{b.kind} {b.fixed_amount():,.2f} {self.currency}/month"


def check_periods(periods: list[Period], seasons: list[Season], what: str) -> None:
    """Periods name only defined seasons, and every 15-minute slot of every season x day type
    matches one; ValueError (prefixed with ``what``) otherwise."""
    if not periods:
        return  # a block tariff has no energy periods
    names = {s.name for s in seasons}
    for p in periods:
        unknown = [s for s in p.seasons if s not in names]
        if unknown:
            raise ValueError(f"{what}period {p.name!r} names unknown season(s) {unknown}; defined: {sorted(names)}")
    slots = np.arange(0, 1440, 15)
    for season in seasons:
        for day in DAY_TYPES:
            hit = np.zeros(slots.size, dtype=bool)
            for p in periods:
                if (not p.seasons or season.name in p.seasons) and (not p.days or day in p.days):
                    hit |= p.covers_minute(slots)
            if not hit.all():
                first = int(slots[~hit][0])
                raise ValueError(f"{what}no period covers season {season.name!r}, {day}, "
                                 f"{first // 60:02d}:{first % 60:02d}; add a period or widen one")


@functools.lru_cache(maxsize=64)
def _holiday_set(country: str | None, extra: tuple[str, ...], y0: int, y1: int) -> frozenset[dt.date]:
    """Public holidays of ``country`` plus the 'MM-DD' extras for the years y0..y1."""
    days: set[dt.date] = set()
    if country:
        days.update(holidays_pkg.country_holidays(country, years=range(y0, y1 + 1)).keys())
    for y in range(y0, y1 + 1):
        for mmdd in extra:
            mm, dd = map(int, mmdd.split("-"))
            try:
                days.add(dt.date(y, mm, dd))
            except ValueError:
                pass  # 02-29 in a non-leap year: no such day, nothing to add
    return frozenset(days)


def load_tariff(path: str | Path) -> Tariff:
    """Load and validate a tariff YAML file; ConfigError names file, line, key and value."""
    data, lines = load_yaml(path)
    return validate(Tariff, data, str(path), lines)
