"""Site configuration: the validated description of one site, loaded from YAML.

Every key carries its unit in its name (``max_discharge_kw``, ``capacity_kwh``, ``min_soc_pct``).
Unknown keys are errors with a "did you mean" hint; every error names the file, the line, the key
path, the bad value and what is allowed, and all errors of a file are reported together
(:func:`load_site`). Nothing here repairs a bad value.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ems.errors import ConfigError, DataError, Problem
from ems.paths import default_database
from ems.tariff import Tariff, load_tariff
from ems.yamlio import LineMap, line_of, load_yaml, validate

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^(?:(mon|tue|wed|thu|fri|sat|sun) )?([01]\d|2[0-3]):([0-5]\d)$")


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, values are not coerced silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def parse_clock(text: str) -> tuple[int | None, dt.time]:
    """Parse ``"HH:MM"`` or ``"mon HH:MM"`` into (weekday 0=Mon or None, time)."""
    m = _HHMM.match(text)
    if not m:
        raise ValueError(f"expected a time 'HH:MM' (24 h), optionally with a weekday 'mon 07:30'; got {text!r}")
    day = DAYS.index(m.group(1)) if m.group(1) else None
    return day, dt.time(int(m.group(2)), int(m.group(3)))


class SiteSection(Strict):
    """Where the site is: name, IANA time zone, position for the PV model."""

    name: str = Field(min_length=1)
    timezone: str = "Asia/Tokyo"
    latitude_deg: float = Field(ge=-90, le=90)
    longitude_deg: float = Field(ge=-180, le=180)
    altitude_m: float = Field(default=0.0, ge=-500, le=9000)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone; use an IANA name such as 'Asia/Tokyo'") from None
        return v


class GridSection(Strict):
    """The grid connection: import limit (contract or breaker) and export limit in kW."""

    import_limit_kw: float = Field(gt=0)
    export_limit_kw: float = Field(default=0.0, ge=0)
    vehicle_export_allowed: bool = False


class PvArray(Strict):
    """One PV array: DC size, orientation and losses (pvlib PVWatts-style model)."""

    name: str = Field(min_length=1)
    capacity_kwp: float = Field(gt=0, le=10000)
    tilt_deg: float = Field(ge=0, le=90)
    azimuth_deg: float = Field(ge=0, lt=360, description="0 = north, 90 = east, 180 = south")
    dc_loss_pct: float = Field(default=14.0, ge=0, lt=100)
    inverter_efficiency_pct: float = Field(default=96.0, gt=50, le=100)
    ac_capacity_kw: float | None = Field(default=None, gt=0)
    temperature_coefficient_pct_per_c: float = Field(default=-0.37, ge=-1, le=0)

    # Fractions for the code inside (the YAML keys stay in percent).
    @property
    def dc_loss(self) -> float:
        """DC losses as a fraction (``dc_loss_pct`` / 100)."""
        return self.dc_loss_pct / 100

    @property
    def inverter_efficiency(self) -> float:
        """Inverter efficiency as a fraction (``inverter_efficiency_pct`` / 100)."""
        return self.inverter_efficiency_pct / 100

    @property
    def temperature_coefficient_per_c(self) -> float:
        """Power temperature coefficient [1/degC] (``temperature_coefficient_pct_per_c`` / 100)."""
        return self.temperature_coefficient_pct_per_c / 100


class Circuit(Strict):
    """A critical circuit kept alive in an outage (Kobe model: chosen before the disaster)."""

    name: str = Field(min_length=1)
    watts: float = Field(gt=0, le=100000)


class LoadSection(Strict):
    """Building load: where its history comes from, and the critical circuits."""

    history_csv: str | None = None
    history_column: str = "load_kw"
    critical_circuits: list[Circuit] = Field(default_factory=list)

    @property
    def critical_kw(self) -> float:
        """Sum of the critical circuits [kW]."""
        return sum(c.watts for c in self.critical_circuits) / 1000.0


class SimulatorAdapter(Strict):
    """The built-in simulated V2H unit (a real Modbus TCP server started in-process)."""

    kind: Literal["simulator"]
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 = any free port")
    unit_id: int = Field(default=1, ge=1, le=247)
    profile: str = "sunspec"


class MeterTcp(Strict):
    """A real grid meter over Modbus TCP (SunSpec meter models 201-204, or a flat map)."""

    kind: Literal["modbus_tcp"]
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    profile: str = "sunspec-meter"
    timeout_s: float = Field(default=1.0, gt=0, le=60)


class MeterRtu(Strict):
    """A real grid meter over Modbus RTU (RS-485)."""

    kind: Literal["modbus_rtu"]
    serial_port: str = Field(min_length=1)
    baudrate: int = Field(default=19200, ge=1200, le=115200)
    parity: Literal["N", "E", "O"] = "E"
    unit_id: int = Field(default=1, ge=1, le=247)
    profile: str = "sunspec-meter"
    timeout_s: float = Field(default=1.0, gt=0, le=60)


class ModbusTcpAdapter(MeterTcp):
    """A real V2H/V2B unit over Modbus TCP: the meter's link settings plus the reversion timer."""

    profile: str = "sunspec"
    reversion_timeout_s: float = Field(default=60.0, ge=5, le=3600)


class ModbusRtuAdapter(MeterRtu):
    """A real V2H/V2B unit over Modbus RTU (RS-485): the meter's link settings plus the reversion timer."""

    profile: str = "sunspec"
    reversion_timeout_s: float = Field(default=60.0, ge=5, le=3600)


class EchonetLiteAdapter(Strict):
    """A unit or meter over ECHONET Lite (UDP): a V2H unit is class 0x027E, a smart meter 0x0288 or 0x028A.

    ``host``/``port``: the node; ``instance``: the object's instance code (1 for the first unit of
    its class on that node); ``local_port``: where this daemon receives answers and announcements
    (3610: real units answer and announce to that port; 0: any free port, e.g. for ``ems sim
    --protocol echonet`` on the same machine).
    """

    kind: Literal["echonet_lite"]
    host: str = Field(min_length=1)
    port: int = Field(default=3610, ge=1, le=65535)
    instance: int = Field(default=1, ge=1, le=127)
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    local_port: int = Field(default=3610, ge=0, le=65535, description="0 = any free port")


class MeterEchonetLite(EchonetLiteAdapter):
    """A smart meter over ECHONET Lite: ``meter_class`` low_voltage (0x0288, instantaneous power) or
    high_voltage (0x028A, power from its energy counter)."""

    meter_class: Literal["low_voltage", "high_voltage"] = "low_voltage"


Adapter = Annotated[SimulatorAdapter | ModbusTcpAdapter | ModbusRtuAdapter | EchonetLiteAdapter, Field(discriminator="kind")]


class MeterSimulated(Strict):
    """The simulated site meter, served by the in-process simulator beside the simulated chargers."""

    kind: Literal["simulator"]


MeterAdapterConfig = Annotated[MeterSimulated | MeterTcp | MeterRtu | MeterEchonetLite, Field(discriminator="kind")]


class MeterSection(Strict):
    """The site's grid meter at the connection point: import/export power [kW], energy counters, grid state.

    The daemon's demand guard and the month's metered peak come from it. Without this section a
    site whose chargers are simulated uses the simulated meter; a site with real chargers and no
    meter runs blind to the building load (the daemon logs a warning).
    """

    adapter: MeterAdapterConfig


class Charger(Strict):
    """A bidirectional V2H/V2B unit (e.g. Nichicon VCG-666CN7: 6 kW both ways)."""

    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    model: str = ""
    max_charge_kw: float = Field(gt=0, le=50)
    max_discharge_kw: float = Field(ge=0, le=50)
    charge_efficiency_pct: float = Field(default=95.0, gt=50, le=100)
    discharge_efficiency_pct: float = Field(default=95.0, gt=50, le=100)
    islanded_rating_kw: float = Field(default=0.0, ge=0, le=50)
    adapter: Adapter = Field(default_factory=lambda: SimulatorAdapter(kind="simulator"))

    @property
    def charge_efficiency(self) -> float:
        """Grid-to-battery efficiency as a fraction (``charge_efficiency_pct`` / 100)."""
        return self.charge_efficiency_pct / 100

    @property
    def discharge_efficiency(self) -> float:
        """Battery-to-grid efficiency as a fraction (``discharge_efficiency_pct`` / 100)."""
        return self.discharge_efficiency_pct / 100


class PlugWindow(Strict):
    """A weekly window in which a vehicle is plugged in.

    ``days`` are the days it arrives; ``arrive`` and ``depart`` are local clock times. A departure
    at or before the arrival time is on the next day; ``"mon 07:30"`` names the departure day
    (e.g. plugged in Friday evening, leaving Monday morning). At departure the vehicle must hold
    ``departure_soc_pct`` or enough for ``departure_range_km``. Energy used while away before this
    arrival is given as ``trip_km`` (converted with the vehicle's km/kWh) or as the expected
    ``arrival_soc_pct``.
    """

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(min_length=1)
    arrive: str
    depart: str
    departure_soc_pct: float | None = Field(default=None, ge=0, le=100)
    departure_range_km: float | None = Field(default=None, ge=0, le=2000)
    trip_km: float | None = Field(default=None, ge=0, le=2000)
    arrival_soc_pct: float | None = Field(default=None, ge=0, le=100)
    on_holidays: bool = Field(default=True, description="false: the window is skipped on public holidays (workplaces)")
    energy_neutral: bool = Field(default=False, description="true: the car leaves with at least the energy it arrived with "
                                                            "(and at least its departure target)")

    @field_validator("arrive")
    @classmethod
    def _arrive_clock(cls, v: str) -> str:
        day, _ = parse_clock(v)
        if day is not None:
            raise ValueError("arrive is a time 'HH:MM' on each of the listed days; put the days in 'days'")
        return v

    @field_validator("depart")
    @classmethod
    def _depart_clock(cls, v: str) -> str:
        parse_clock(v)
        return v

    @model_validator(mode="after")
    def _one_target(self) -> PlugWindow:
        if (self.departure_soc_pct is None) == (self.departure_range_km is None):
            raise ValueError("give exactly one of departure_soc_pct or departure_range_km")
        if self.trip_km is not None and self.arrival_soc_pct is not None:
            raise ValueError("give at most one of trip_km or arrival_soc_pct")
        return self

    def depart_offset(self, arrival_day: int) -> dt.timedelta:
        """Time from arrival (on weekday ``arrival_day``) to departure."""
        dday, dtime = parse_clock(self.depart)
        _, atime = parse_clock(self.arrive)
        a = dt.timedelta(hours=atime.hour, minutes=atime.minute)
        d = dt.timedelta(hours=dtime.hour, minutes=dtime.minute)
        if dday is None:
            return d - a if d > a else d - a + dt.timedelta(days=1)
        days = (dday - arrival_day) % 7
        off = d - a + dt.timedelta(days=days)
        return off if off > dt.timedelta(0) else off + dt.timedelta(days=7)


class Vehicle(Strict):
    """An EV or PHEV: usable capacity, SOC limits, efficiency, and its weekly plug-in windows."""

    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    model: str = ""
    capacity_kwh: float = Field(gt=0, le=300)
    min_soc_pct: float = Field(default=20.0, ge=0, le=100)
    max_soc_pct: float = Field(default=100.0, gt=0, le=100)
    efficiency_km_per_kwh: float = Field(default=6.0, gt=0, le=20)
    max_charge_kw: float | None = Field(default=None, gt=0)
    max_discharge_kw: float | None = Field(default=None, ge=0)
    wear_cost_per_kwh: float = Field(
        default=8.7, ge=0,
        description="battery wear per kWh discharged: 139 USD/kWh pack (BNEF 2023) / (3,000 cycles x 80 % DoD) at 150 JPY/USD",
    )
    chargers: list[str] = Field(default_factory=list, description="chargers it may use; empty = any")
    windows: list[PlugWindow] = Field(default_factory=list)
    owner: Literal["site", "driver"] = Field(
        default="site", description="whose energy is in the car: the site's (a fleet car) or the driver's (settled per stay)")
    energy_price_per_kwh: float | None = Field(
        default=None, ge=0, le=1000,
        description="driver-owned cars (required then): the price per kWh at which each stay's net energy is settled "
                    "with the driver; the site pays it for energy taken, the driver for energy added")

    @model_validator(mode="after")
    def _owner_price(self) -> Vehicle:
        if self.owner == "driver" and self.energy_price_per_kwh is None:
            raise ValueError("a driver-owned car (owner: driver) needs energy_price_per_kwh: the price per kWh at which "
                             "the site settles each stay's net energy with the driver")
        if self.owner == "site" and self.energy_price_per_kwh is not None:
            raise ValueError(f"energy_price_per_kwh ({self.energy_price_per_kwh:g}) applies to driver-owned cars only; "
                             "set owner: driver, or remove it (the site's own car is not settled)")
        return self

    @property
    def settlement_price_per_kwh(self) -> float | None:
        """Price per kWh of the driver settlement [currency/kWh]; None for the site's own car."""
        return self.energy_price_per_kwh if self.owner == "driver" else None

    # Energies for the code inside (the YAML keys stay in percent of capacity_kwh).
    def pct_kwh(self, pct: float) -> float:
        """Energy [kWh] of ``pct`` percent of this vehicle's capacity: the one percent-to-kWh conversion."""
        return pct / 100 * self.capacity_kwh

    @property
    def min_soc_kwh(self) -> float:
        """The driver's minimum SOC [kWh] (``min_soc_pct`` of ``capacity_kwh``)."""
        return self.pct_kwh(self.min_soc_pct)

    @property
    def max_soc_kwh(self) -> float:
        """The maximum SOC [kWh] (``max_soc_pct`` of ``capacity_kwh``)."""
        return self.pct_kwh(self.max_soc_pct)

    def arrival_kwh(self, window: PlugWindow) -> float | None:
        """Energy expected on arrival in ``window`` [kWh] (``arrival_soc_pct``), None when not given."""
        return None if window.arrival_soc_pct is None else self.pct_kwh(window.arrival_soc_pct)

    @model_validator(mode="after")
    def _soc_order(self) -> Vehicle:
        if self.min_soc_pct >= self.max_soc_pct:
            raise ValueError(f"min_soc_pct ({self.min_soc_pct}) must be below max_soc_pct ({self.max_soc_pct})")
        max_kwh = self.max_soc_kwh
        for i, w in enumerate(self.windows):
            need = self.target_kwh(w)
            if need > max_kwh + 1e-9:
                raise ValueError(f"windows[{i}]: the departure target ({need:.1f} kWh) is above max_soc_pct "
                                 f"{self.max_soc_pct:g} % of {self.capacity_kwh:g} kWh ({max_kwh:.1f} kWh); "
                                 "the car could never be ready: lower the target or raise max_soc_pct")
        return self

    def target_kwh(self, window: PlugWindow) -> float:
        """Energy the vehicle must hold at the window's departure [kWh] (never above max SOC: validated)."""
        if window.departure_soc_pct is not None:
            need = self.pct_kwh(window.departure_soc_pct)
        else:
            need = self.min_soc_kwh + (window.departure_range_km or 0) / self.efficiency_km_per_kwh
        return need


class OutageSection(Strict):
    """Energy held back in plugged-in vehicles to carry the critical load through an outage."""

    reserve_hours: float = Field(default=0.0, ge=0, le=24 * 14)
    mode: Literal["hard", "soft"] = "hard"
    soft_penalty_per_kwh: float = Field(default=100.0, ge=0, description="cost of each kWh of reserve shortfall (soft mode)")
    value_of_lost_load_per_kwh: float = Field(default=1000.0, ge=0, description="cost of each kWh of critical load not served in an outage")


class PlannerSection(Strict):
    """The optimisation: step, horizon, solver limits."""

    step_minutes: Literal[15, 30] = 30
    horizon_hours: float = Field(default=48.0, ge=1, le=24 * 31)
    solver_time_limit_s: float = Field(default=10.0, gt=0, le=3600)
    mip_gap_pct: float = Field(default=0.01, ge=0, le=50)
    require_final_soc_at_least_initial: bool = False
    terminal_value_per_kwh: float | None = Field(
        default=None, ge=0, description="value of energy left in the cars at the horizon end; default: the horizon's mean import price",
    )
    peak_quantile_pct: float | None = Field(
        default=None, ge=50, lt=100,
        description="price the demand windows after the current one at this quantile of the site's own net import "
                    "forecast error (backtest of the last 6 weeks), so car energy is held for the load that may come; "
                    "null: the point forecast",
    )

    peak_hedge_pct: float = Field(
        default=25.0, ge=0, le=100,
        description="price the highest 30-minute average of the next peak_hedge_hours (this month) again at this "
                    "percentage of the demand rate, above the month's metered peak, and have the guard hold that level: "
                    "a later forecast peak does not make a peak now free (0: off)",
    )
    peak_hedge_hours: float = Field(
        default=24.0, gt=0, le=168,
        description="how far ahead the near-term peak of peak_hedge_pct looks [h]",
    )

    @property
    def peak_hedge(self) -> float:
        """``peak_hedge_pct`` as a fraction of the demand rate."""
        return self.peak_hedge_pct / 100

    @property
    def mip_gap(self) -> float:
        """The solver's relative MIP gap as a fraction (``mip_gap_pct`` / 100)."""
        return self.mip_gap_pct / 100

    @property
    def peak_quantile(self) -> float | None:
        """``peak_quantile_pct`` as a fraction (None: the point forecast)."""
        return None if self.peak_quantile_pct is None else self.peak_quantile_pct / 100

    @model_validator(mode="after")
    def _whole_steps(self) -> PlannerSection:
        steps = self.horizon_hours * 60 / self.step_minutes
        if abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"horizon_hours ({self.horizon_hours}) must be a whole number of {self.step_minutes}-minute steps")
        return self


#: Days of raw dispatch ticks (and plans, events) the store keeps by default (``daemon.retention_days``).
#: The office's three units at a 5-s tick write 5.7 MB of them a day (bench/store.py), so two weeks keep
#: a year's store near 86 MB (35 days would be 204 MB); bills and forecasts need only the 30-minute
#: aggregates, kept for ever. README "Store size".
RETENTION_DAYS = 14
#: Open-Meteo's forecast endpoint (no key needed); ``daemon.weather.url`` may name another (a mirror, a test server).
OPEN_METEO_URL = "https://api.open-meteo.com/v1/forecast"


class WeatherSection(Strict):
    """The daemon's weather forecast (``daemon.weather``): an Open-Meteo fetch every ``every_hours``
    real hours on the wall clock (never on a simulated clock: the forecast is for the real now), each
    request given up after ``timeout_s`` seconds per connect and per read. ``models``: Open-Meteo's
    model (``jma_seamless``: JMA MSM + GSM, for Japan); ``forecast_days``/``past_days``: the span
    asked for (the past day is the model's view of the hours just gone). Offline, the PV forecast
    falls back to clear sky x clearness (a ``weather-fallback`` event, ``weather-recovered`` when a
    fetch works again)."""

    fetch: bool = True
    every_hours: float = Field(default=3.0, ge=0.25, le=24)
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    url: str = Field(default=OPEN_METEO_URL, pattern=r"^https?://")
    models: str = Field(default="jma_seamless", pattern=r"^[a-z0-9_,]+$")
    forecast_days: int = Field(default=3, ge=1, le=16)
    past_days: int = Field(default=1, ge=0, le=7)


#: Where the daemon's web page and JSON API listen by default (``daemon.http``): this machine only.
HTTP_LISTEN, HTTP_PORT = "127.0.0.1", 8080


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP address or ``localhost``) reaches this machine only."""
    return address == "localhost" or ipaddress.ip_address(address).is_loopback


class HttpSection(Strict):
    """The daemon's web page, JSON API and Prometheus metrics (``daemon.http``; ems/web).

    ``listen``: an IP address (``127.0.0.1``, ``::1``, ``0.0.0.0`` for every interface ...) or
    ``localhost``; ``port`` 0 takes a free port (logged at start). ``token``: the bearer token every
    write needs (and every read from another machine); without one the API is read-only, and a
    listen address other than loopback is refused (the page and the overrides would be open to the
    network)."""

    enabled: bool = True
    listen: str = HTTP_LISTEN
    port: int = Field(default=HTTP_PORT, ge=0, le=65535)
    token: str | None = Field(default=None, min_length=16, max_length=256, pattern=r"^[!-~]+$", validate_default=True)

    @field_validator("listen")
    @classmethod
    def _address(cls, v: str) -> str:
        try:
            is_loopback(v)
        except ValueError:
            raise ValueError("expected an IP address (127.0.0.1, ::1, 0.0.0.0, 192.168.1.10 ...) or localhost") from None
        return v

    @field_validator("token")
    @classmethod
    def _token_off_loopback(cls, v: str | None, info: ValidationInfo) -> str | None:
        listen = info.data.get("listen")
        if v is None and listen is not None and not is_loopback(listen):
            raise ValueError(f"required when daemon.http.listen ({listen}) is not a loopback address: anyone on the "
                             "network could change the overrides; set a token of 16+ printable characters "
                             "(e.g. `openssl rand -hex 24`), or listen on 127.0.0.1")
        return v


class DaemonSection(Strict):
    """The gateway daemon: intervals, the store and its retention, the weather fetch."""

    dispatch_interval_s: float = Field(default=5.0, ge=0.5, le=300)
    heartbeat_interval_s: float = Field(default=10.0, ge=1, le=600)
    forecast_refresh_minutes: float = Field(default=30.0, ge=1, le=1440)
    database: str | None = Field(
        default=None, description="SQLite file or SQLAlchemy URL; None: the site's file in the state directory, "
                                  "filled in by SiteConfig (ems.paths.default_database)")
    retention_days: int = Field(default=RETENTION_DAYS, ge=1, le=3650, description=(
        "raw dispatch ticks (telemetry), plans, events and day-ahead forecasts are kept this long; the 30-minute "
        "aggregates (demand windows, site energy), monthly peaks and the weather cache are kept for ever"))
    peak_guard_margin_kw: float = Field(default=0.5, ge=0, le=1000)
    weather: WeatherSection = Field(default_factory=WeatherSection)
    http: HttpSection = Field(default_factory=HttpSection)


class SiteConfig(Strict):
    """A whole site. ``tariff`` is a file path (relative to this file) or an inline mapping."""

    site: SiteSection
    grid: GridSection
    tariff: Tariff
    pv: list[PvArray] = Field(default_factory=list)
    load: LoadSection = Field(default_factory=LoadSection)
    chargers: list[Charger] = Field(default_factory=list)
    meter: MeterSection | None = None
    vehicles: list[Vehicle] = Field(default_factory=list)
    outage: OutageSection = Field(default_factory=OutageSection)
    planner: PlannerSection = Field(default_factory=PlannerSection)
    daemon: DaemonSection = Field(default_factory=DaemonSection, validate_default=True)
    peaks_history_csv: str | None = Field(
        default=None, description="CSV month,peak_kw: the site's monthly peaks from past bills (the demand ratchet), "
                                  "so plans and the daemon know the contract from day one; relative to the site file")
    source: str = Field(default="", exclude=True, description="the file this config came from")

    @field_validator("chargers", "vehicles")
    @classmethod
    def _unique_ids(cls, items: list[Charger] | list[Vehicle], info: ValidationInfo) -> list[Charger] | list[Vehicle]:
        # a field validator (not a model validator) so it runs, at the section's line, even when
        # other sections have errors
        ids = [item.id for item in items]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            where = "; ".join(f"{d!r} at " + " and ".join(f"{info.field_name}[{k}]" for k, i in enumerate(ids) if i == d)
                              for d in dupes)
            raise ValueError(f"ids must be unique: {where}")
        return items

    @field_validator("daemon")
    @classmethod
    def _database_in_state_dir(cls, daemon: DaemonSection, info: ValidationInfo) -> DaemonSection:
        # no daemon.database given: the site's file in the state directory, never the working directory
        site = info.data.get("site")
        if daemon.database is None and site is not None:
            return daemon.model_copy(update={"database": default_database(site.name)})
        return daemon

    @field_validator("meter")
    @classmethod
    def _simulated_meter_needs_simulator(cls, meter: MeterSection | None, info: ValidationInfo) -> MeterSection | None:
        chargers = info.data.get("chargers") or []
        if meter is not None and isinstance(meter.adapter, MeterSimulated) and \
                not any(isinstance(c.adapter, SimulatorAdapter) for c in chargers):
            raise ValueError("adapter kind 'simulator' needs at least one charger with adapter kind 'simulator' "
                             "(the simulated meter is served by the simulator); use modbus_tcp, modbus_rtu or echonet_lite "
                             "for a real meter")
        return meter

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The site's time zone."""
        return zoneinfo.ZoneInfo(self.site.timezone)

    def charger(self, charger_id: str) -> Charger:
        """The charger with this id."""
        return next(c for c in self.chargers if c.id == charger_id)


def _resolve_paths(data: dict[str, Any], base: Path, where: str, lines: LineMap) -> list[Problem]:
    """Replace the tariff file reference by its content; make relative paths absolute."""
    problems: list[Problem] = []
    tariff = data.get("tariff")
    if isinstance(tariff, str):
        tpath = (base / tariff).resolve()
        try:
            data["tariff"] = load_tariff(tpath).model_dump()
        except ConfigError as exc:
            problems.extend(exc.problems)
            data["tariff"] = None
            problems.append(Problem(where, line_of(lines, ("tariff",)), "tariff", tariff,
                                    "the tariff file it names is missing or invalid (its problems are listed below)"))
    load = data.get("load")
    if isinstance(load, dict) and isinstance(load.get("history_csv"), str):
        hist = (base / load["history_csv"]).resolve()
        if not hist.is_file():
            problems.append(Problem(where, line_of(lines, ("load", "history_csv")), "load.history_csv",
                                    load["history_csv"], f"no such file ({hist}); give a path relative to this file"))
        load["history_csv"] = str(hist)
    if isinstance(data.get("peaks_history_csv"), str):
        problems += _check_peaks_history(data, base, where, lines)
    daemon = data.get("daemon")
    if isinstance(daemon, dict) and isinstance(daemon.get("database"), str) and "://" not in daemon["database"]:
        daemon["database"] = str((base / daemon["database"]).resolve())
    return problems


def _check_peaks_history(data: dict[str, Any], base: Path, where: str, lines: LineMap) -> list[Problem]:
    """``peaks_history_csv``: made absolute; the file must exist and read as a peaks history (its
    own problems are listed with its own rows)."""
    given = data["peaks_history_csv"]
    path = (base / given).resolve()
    data["peaks_history_csv"] = str(path)
    line = line_of(lines, ("peaks_history_csv",))
    if not path.is_file():
        return [Problem(where, line, "peaks_history_csv", given, f"no such file ({path}); give a path relative to this file")]
    try:
        _read_peaks_history(path)
    except DataError as exc:
        return [Problem(where, line, "peaks_history_csv", given,
                        "the peaks history it names is invalid (its problems are listed below)"), *exc.problems]
    return []


def _read_peaks_history(path: str | Path) -> dict[str, float]:
    """:func:`ems.billing.read_peaks_history_csv`, imported only for a site with a peaks history (the
    billing module needs pandas; loading a site, as ``ems check`` does, needs none)."""
    from ems.billing import read_peaks_history_csv
    return read_peaks_history_csv(path)


def peaks_history(cfg: SiteConfig, override: str | None = None) -> tuple[dict[str, float], str] | None:
    """The site's monthly peaks from past bills and the file they came from: ``override`` (a
    ``--peaks-history`` option, relative to the working directory) or else the config's
    ``peaks_history_csv``; None when neither is given. DataError for a missing or invalid file."""
    path = override or cfg.peaks_history_csv
    if not path:
        return None
    return _read_peaks_history(path), str(path)


def _check_vehicle_refs(cfg_data: dict[str, Any], where: str, lines: LineMap) -> list[Problem]:
    """Vehicles may only name chargers that exist."""
    problems = []
    ids = {c.get("id") for c in cfg_data.get("chargers") or [] if isinstance(c, dict)}
    for i, v in enumerate(cfg_data.get("vehicles") or []):
        if not isinstance(v, dict):
            continue
        for j, cid in enumerate(v.get("chargers") or []):
            if cid not in ids:
                loc = ("vehicles", i, "chargers", j)
                problems.append(Problem(where, line_of(lines, loc), f"vehicles[{i}].chargers[{j}]", cid,
                                        f"no charger with this id; defined: {sorted(map(str, ids))}"))
    return problems


def load_site(path: str | Path) -> SiteConfig:
    """Load and validate a site YAML file; raise ConfigError listing every problem."""
    path = Path(path)
    where = str(path)
    data, lines = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(Problem(where, 1, "", data, "a site file is a mapping with keys site, grid, tariff, ..."))
    data = dict(data)
    problems = _resolve_paths(data, path.parent, where, lines)
    tariff_failed = any(p.path == "tariff" for p in problems)
    problems += _check_vehicle_refs(data, where, lines)
    try:
        cfg = validate(SiteConfig, data, where, lines)
    except ConfigError as exc:
        # a tariff file that failed was replaced by None: its own problems are listed already
        problems += [p for p in exc.problems if not (tariff_failed and p.path == "tariff")]
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.where != where, p.where, p.line or 0)))
    return cfg.model_copy(update={"source": where})


def meter_summary(cfg: SiteConfig) -> str:
    """Where the site's grid meter readings come from, in words."""
    if cfg.meter is not None and not isinstance(cfg.meter.adapter, MeterSimulated):
        m = cfg.meter.adapter
        if isinstance(m, MeterEchonetLite):
            return f"{m.kind} {m.host}:{m.port} {m.meter_class.replace('_', '-')} meter instance {m.instance}"
        where = f"{m.host}:{m.port}" if isinstance(m, MeterTcp) else m.serial_port
        return f"{m.kind} {where} unit {m.unit_id} ({m.profile})"
    if any(isinstance(c.adapter, SimulatorAdapter) for c in cfg.chargers):
        return "simulated (in-process simulator)"
    return "none (the daemon sees only the chargers' own power)"


def summary(cfg: SiteConfig) -> str:
    """A short human summary of a valid site."""
    pv = sum(a.capacity_kwp for a in cfg.pv)
    lines = [
        f"{cfg.site.name} ({cfg.site.timezone}, {cfg.site.latitude_deg:.3f}N {cfg.site.longitude_deg:.3f}E)",
        f"  grid: import <= {cfg.grid.import_limit_kw:g} kW, export <= {cfg.grid.export_limit_kw:g} kW, "
        f"vehicle export {'allowed' if cfg.grid.vehicle_export_allowed else 'not allowed'}",
        f"  tariff: {cfg.tariff.name} ({cfg.tariff.describe_basic()})",
        f"  PV: {len(cfg.pv)} array(s), {pv:g} kWp",
        "  chargers: " + (", ".join(f"{c.id} {c.max_charge_kw:g}/{c.max_discharge_kw:g} kW ({c.adapter.kind})"
                                    for c in cfg.chargers) or "none"),
        f"  meter: {meter_summary(cfg)}",
        "  vehicles: " + (", ".join(f"{v.id} {v.capacity_kwh:g} kWh, {len(v.windows)} window(s), " + (
            f"driver's, settled at {v.energy_price_per_kwh:g}/kWh" if v.owner == "driver" else "the site's")
            for v in cfg.vehicles) or "none"),
        f"  critical load: {cfg.load.critical_kw:g} kW; outage reserve {cfg.outage.reserve_hours:g} h ({cfg.outage.mode})",
        f"  planner: {cfg.planner.step_minutes} min steps, {cfg.planner.horizon_hours:g} h horizon",
    ]
    if cfg.peaks_history_csv:
        hist = _read_peaks_history(cfg.peaks_history_csv)
        top = max(hist, key=lambda m: (hist[m], m))
        lines.append(f"  peaks history: {len(hist)} month(s) {min(hist)}..{max(hist)} from {cfg.peaks_history_csv}, "
                     f"highest {hist[top]:g} kW ({top})")
    return "\n".join(lines)
