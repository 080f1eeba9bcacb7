"""From a site configuration to device-layer parameters (adapters and the simulator).

The device layer (:mod:`adapters`) knows nothing of YAML or of :class:`~ems.config.SiteConfig`;
this module translates:

- :func:`sim_site`: the simulated site of a config (one Modbus server for all units and the
  meter), with vehicles plugged in following their configured windows (:func:`ems.vehicles.stays`,
  public holidays from the tariff's calendar) and the building load replayed from a history CSV;
- :func:`charger_params` / :func:`meter_params`: how the daemon reaches each charger and meter.

Rules (documented, not guessed at run time):

- Unit ids of simulated chargers: an explicit ``adapter.unit_id`` is kept; chargers that do not
  set one get the lowest free ids in config order (1, 2, 3 ... for the office example). Two
  explicit equal ids are an error. The simulated meter is unit :data:`METER_UNIT_ID`.
- A vehicle is plugged into the first charger it lists; a vehicle listing none takes the
  chargers in turn (vehicle k of those goes to charger k mod n).
- Each simulated vehicle starts at the middle of its SOC window unless ``initial_soc_pct`` is given.
- Replay: ``load_kw`` and (optional) ``pv_kw`` columns; an empty ``pv_kw`` cell is 0 kW (the shipped
  household data leaves PV empty at night), an empty ``load_kw`` cell repeats the last reading
  (sensor outages); the replay loops by whole weeks (52) past its end.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from adapters import ChargerParams, MeterParams, RegisterMapError, RtuLink, TcpLink, load_profile
from adapters.echonet import HIGH_VOLTAGE, LOW_VOLTAGE, EchonetChargerParams, EchonetLink, EchonetMeterParams
from adapters.factory import AnyChargerParams, AnyMeterParams
from adapters.sim import Replay, SimSiteParams, SimStay, SimUnitParams, SimVehicle, StaySource
from ems.config import (EchonetLiteAdapter, MeterEchonetLite, MeterRtu, MeterSimulated, MeterTcp, ModbusRtuAdapter,
                        ModbusTcpAdapter, SimulatorAdapter, SiteConfig, Vehicle)
from ems.errors import ConfigError, Problem
from ems.locks import LockHeld, claim, device_lock_path
from ems.yamlio import key_path, line_of, load_yaml

#: Modbus unit id of the simulated site meter (chargers take the low ids; 240 is well clear of them
#: and of the 248-255 range the Modbus specification reserves)
METER_UNIT_ID = 240
#: Reversion timeout written to simulated units [s] (the simulator's adapter section has no key for it)
SIM_REVERSION_TIMEOUT_S = 60.0
#: The chargers each simulator protocol serves: ``simulator`` ones over Modbus, ``echonet_lite`` ones as an ECHONET Lite node
SIMULATED = {"modbus": SimulatorAdapter, "echonet": EchonetLiteAdapter}
ECHONET_PORT = 3610


def _problem(cfg: SiteConfig, loc: tuple, value: object, message: str) -> Problem:
    """A Problem at key path ``loc`` of the config file (with its line when the file is known)."""
    line = None
    if cfg.source and Path(cfg.source).is_file():
        _, lines = load_yaml(cfg.source)
        line = line_of(lines, loc)
    return Problem(cfg.source or "<config>", line, key_path(loc), value, message)


def check_profiles(cfg: SiteConfig) -> None:
    """Every charger's ``adapter.profile`` names a shipped charger map or a valid map file."""
    problems = []
    wanted = [(("chargers", i, "adapter", "profile"), c.adapter.profile, "charger") for i, c in enumerate(cfg.chargers)
              if not isinstance(c.adapter, EchonetLiteAdapter)]   # ECHONET Lite objects have no register map
    if cfg.meter is not None and not isinstance(cfg.meter.adapter, (MeterSimulated, MeterEchonetLite)):
        wanted.append((("meter", "adapter", "profile"), cfg.meter.adapter.profile, "meter"))
    for path, prof, device in wanted:
        try:
            rmap = load_profile(_profile_path(cfg, prof))
        except RegisterMapError as exc:
            problems.append(_problem(cfg, path, prof, "; ".join(str(p) for p in exc.problems)))
            continue
        if rmap.device != device:
            problems.append(_problem(cfg, path, prof, f"is a {rmap.device} map; a {device} needs a {device} map"))
    problems += address_problems(cfg)
    if problems:
        raise ConfigError(problems)


def _host(host: str) -> str:
    """A host name as an address key: case folded, ``localhost`` as ``127.0.0.1``."""
    return host.lower().replace("localhost", "127.0.0.1")


def device_addresses(cfg: SiteConfig) -> list[tuple[tuple, tuple, str]]:
    """Each real device of the site as (config location, normalised address key, address as shown):
    Modbus TCP host:port and unit, serial port and unit, ECHONET Lite node and object. Simulated
    devices are left out (each daemon serves its own)."""
    devices: list[tuple[tuple, object]] = [(("chargers", i, "adapter"), c.adapter) for i, c in enumerate(cfg.chargers)]
    if cfg.meter is not None:
        devices.append((("meter", "adapter"), cfg.meter.adapter))
    out = []
    for loc, a in devices:
        if isinstance(a, MeterTcp):
            out.append((loc, ("tcp", _host(a.host), a.port, a.unit_id),
                        f"{a.host}:{a.port} unit {a.unit_id}"))
        elif isinstance(a, MeterRtu):
            out.append((loc, ("rtu", a.serial_port, a.unit_id), f"{a.serial_port} unit {a.unit_id}"))
        elif isinstance(a, EchonetLiteAdapter):   # a charger (0x027E) and a meter (0x0288/0x028A) are other objects
            out.append((loc, ("echonet", _host(a.host), a.port, loc[0], a.instance),
                        f"{a.host}:{a.port} instance {a.instance}"))
    return out


def address_problems(cfg: SiteConfig) -> list[Problem]:
    """Device addresses a controller cannot share: two chargers, or a charger and the meter, on one
    Modbus unit (the same ``host:port`` and ``unit_id`` over TCP, or the same serial port and
    ``unit_id`` over RTU) would fight over one setpoint; unit 0 over TCP is the broadcast address,
    which many gateways pass to every device on their bus (none answers). Simulated units: distinct
    ids and one simulator address (:func:`sim_unit_ids`, :func:`sim_address`)."""
    problems, seen = [], {}
    for loc, key, shown in device_addresses(cfg):
        if key[0] == "tcp" and key[3] == 0:
            problems.append(_problem(cfg, loc + ("unit_id",), 0, "unit 0 is the Modbus broadcast address (many TCP "
                                     "gateways send it to every device on their bus, and none answers); give the "
                                     "device's own unit id, 1-247 (255 for a device that ignores it)"))
        elif key in seen:
            problems.append(_problem(cfg, loc + ("unit_id",), shown, f"the same device address as {seen[key]}: two "
                                     "controllers of one unit would fight over its setpoint; give each device its own "
                                     "address (host:port and unit_id, or serial port and unit_id)"))
        else:
            seen[key] = key_path(loc[:-1])
    for check in (sim_unit_ids, sim_address):
        try:
            check(cfg)
        except ConfigError as exc:
            problems += exc.problems
    return problems


def claim_devices(cfg: SiteConfig) -> list[int]:
    """Hold one lock per real device address of the site (:mod:`ems.locks`) for this process's
    life; ConfigError naming the device and the pid of the daemon that already drives it."""
    found = device_addresses(cfg)
    try:
        return claim([(key, shown) for _, key, shown in found])
    except LockHeld as held:
        loc, _, shown = next(f for f in found if device_lock_path(f[1]) == held.path)
        raise ConfigError(_problem(cfg, loc, shown, f"is driven by another ems daemon on this machine (pid {held.holder}, "
                                   f"lock {held.path}): one controller per device; stop that daemon first")) from None


def _profile_path(cfg: SiteConfig, prof: str) -> str:
    """A shipped profile name as is, or a map file path made absolute relative to the config file."""
    if prof.endswith((".yaml", ".yml")) and cfg.source and not Path(prof).is_absolute():
        return str(Path(cfg.source).parent / prof)
    return prof


def sim_unit_ids(cfg: SiteConfig) -> dict[str, int]:
    """Unit id of each simulated charger (explicit ids kept, the others numbered from 1)."""
    sims = [(i, c) for i, c in enumerate(cfg.chargers) if isinstance(c.adapter, SimulatorAdapter)]
    explicit = {c.id: c.adapter.unit_id for _, c in sims if "unit_id" in c.adapter.model_fields_set}
    problems = []
    seen: dict[int, str] = {}
    for i, c in sims:
        uid = explicit.get(c.id)
        if uid is None:
            continue
        if uid in seen or uid == METER_UNIT_ID:
            other = seen.get(uid, "the simulated meter")
            problems.append(_problem(cfg, ("chargers", i, "adapter", "unit_id"), uid,
                                     f"already used by {other}; simulated units need distinct unit ids"))
        seen[uid] = c.id
    if problems:
        raise ConfigError(problems)
    out, free = dict(explicit), 1
    for _, c in sims:
        if c.id not in out:
            while free in seen or free == METER_UNIT_ID:
                free += 1
            seen[free], out[c.id] = c.id, free
    return out


def vehicle_homes(cfg: SiteConfig) -> dict[str, list[Vehicle]]:
    """Vehicles per charger id: the first charger a vehicle lists, else the chargers in turn."""
    homes: dict[str, list[Vehicle]] = {c.id: [] for c in cfg.chargers}
    if not cfg.chargers:
        return homes
    anywhere = 0
    for v in cfg.vehicles:
        if v.chargers:
            homes[v.chargers[0]].append(v)
        else:
            homes[cfg.chargers[anywhere % len(cfg.chargers)].id].append(v)
            anywhere += 1
    return homes


def holiday_test(cfg: SiteConfig) -> Callable[[dt.date], bool]:
    """``is_holiday(date)`` from the tariff's calendar (public holidays and its extra days)."""
    import pandas as pd  # here and below: checking a site's devices (ems check) needs no pandas

    @lru_cache(maxsize=4096)
    def is_holiday(day: dt.date) -> bool:
        noon = pd.DatetimeIndex([pd.Timestamp(dt.datetime.combine(day, dt.time(12)), tz=cfg.zone)])
        return bool(cfg.tariff.day_types(noon)[0] == "holiday")
    return is_holiday


def stay_source(cfg: SiteConfig, vehicles: list[Vehicle]) -> StaySource:
    """The simulator's plug-in schedule for these vehicles, from their configured windows."""
    import pandas as pd

    from ems.vehicles import stays
    is_holiday = holiday_test(cfg)

    def source(start: dt.datetime, end: dt.datetime) -> list[SimStay]:
        out = []
        for v in vehicles:
            for s in stays(v, pd.Timestamp(start), pd.Timestamp(end), cfg.zone, is_holiday):
                out.append(SimStay(v.id, s.arrive.to_pydatetime(), s.depart.to_pydatetime(), s.arrival_kwh, s.trip_kwh))
        return out
    return source


def load_replay(path: str | Path) -> Replay:
    """Load and PV to replay from a history CSV (see the module docstring for empty cells)."""
    import numpy as np

    from ems.timeseries import read_series_csv
    df = read_series_csv(path, ["load_kw"], optional=["pv_kw"], allow_empty=True)
    load = df["load_kw"].ffill().bfill().fillna(0.0).to_numpy(dtype=float)
    pv = df["pv_kw"].fillna(0.0).to_numpy(dtype=float) if "pv_kw" in df else np.zeros(len(df))
    start = df.index[0].to_pydatetime()
    return Replay(start, df.attrs["step"].total_seconds(), load, pv)


def sim_site(cfg: SiteConfig, *, replay: str | Path | None = None, speed: float = 1.0,
             start: dt.datetime | None = None, initial_soc_pct: float | None = None,
             ramp_pct_per_s: float = 20.0, protocol: str = "modbus") -> SimSiteParams:
    """The simulated site of ``cfg``: every charger whose adapter is ``simulator`` (``protocol``
    ``echonet``: every ``echonet_lite`` charger, its ``instance`` as its unit id), and the meter.

    ``replay`` defaults to the site's ``load.history_csv`` (no history: 0 kW load and PV).
    """
    check_profiles(cfg)
    ids = sim_unit_ids(cfg) if protocol == "modbus" else \
        {c.id: c.adapter.instance for c in cfg.chargers if isinstance(c.adapter, EchonetLiteAdapter)}
    homes = vehicle_homes(cfg)
    units = []
    for c in cfg.chargers:
        if not isinstance(c.adapter, SIMULATED[protocol]):
            continue
        vehicles = homes[c.id]
        sim_vehicles = tuple(SimVehicle(
            v.id, v.capacity_kwh, v.min_soc_pct, v.max_soc_pct, v.max_charge_kw, v.max_discharge_kw,
            initial_soc_pct if initial_soc_pct is not None else (v.min_soc_pct + v.max_soc_pct) / 2) for v in vehicles)
        units.append(SimUnitParams(
            c.id, ids[c.id], c.max_charge_kw, c.max_discharge_kw, c.charge_efficiency,
            c.discharge_efficiency, c.islanded_rating_kw, ramp_pct_per_s,
            _profile_path(cfg, getattr(c.adapter, "profile", "sunspec")), sim_vehicles, stay_source(cfg, vehicles),
            c.model or "V2H simulator"))
    source = replay if replay is not None else cfg.load.history_csv
    return SimSiteParams(tuple(units), METER_UNIT_ID, "sunspec-meter", cfg.load.critical_kw,
                         load_replay(source) if source else None, start=start, speed=speed)


def sim_address(cfg: SiteConfig, protocol: str = "modbus") -> tuple[str, int]:
    """Where a simulator listens: the simulated chargers' ``host`` and ``port`` (port 0 = any free port;
    ``protocol`` ``echonet``: the ``echonet_lite`` chargers', default port 3610). They must agree, as one
    server (one node) presents every simulated unit."""
    sims = [(i, c.adapter) for i, c in enumerate(cfg.chargers) if isinstance(c.adapter, SIMULATED[protocol])]
    if not sims:
        return "127.0.0.1", 0 if protocol == "modbus" else ECHONET_PORT
    first = (sims[0][1].host, sims[0][1].port)
    problems = [_problem(cfg, ("chargers", i, "adapter"), f"{a.host}:{a.port}",
                         f"differs from {first[0]}:{first[1]} (chargers[{sims[0][0]}]); one simulator serves "
                         "every simulated unit: give them the same host and port")
                for i, a in sims[1:] if (a.host, a.port) != first]
    if problems:
        raise ConfigError(problems)
    return first


def charger_params(cfg: SiteConfig, *, sim_host: str = "127.0.0.1", sim_port: int | None = None) -> list[AnyChargerParams]:
    """How to reach and drive each charger (Modbus or ECHONET Lite). Simulated ones are at ``sim_host:sim_port``."""
    check_profiles(cfg)
    ids = sim_unit_ids(cfg)
    out = []
    for c in cfg.chargers:
        a = c.adapter
        if isinstance(a, SimulatorAdapter):
            if sim_port is None:
                raise ValueError(f"charger {c.id} is simulated: give the simulator's port (sim_port)")
            link: TcpLink | RtuLink = TcpLink(sim_host, sim_port, ids[c.id], timeout_s=1.0)
            timeout = SIM_REVERSION_TIMEOUT_S
        elif isinstance(a, ModbusTcpAdapter):
            link, timeout = TcpLink(a.host, a.port, a.unit_id, a.timeout_s), a.reversion_timeout_s
        elif isinstance(a, EchonetLiteAdapter):
            out.append(EchonetChargerParams(c.id, echonet_link(a), c.max_charge_kw, c.max_discharge_kw))
            continue
        else:
            assert isinstance(a, ModbusRtuAdapter)
            link = RtuLink(a.serial_port, a.baudrate, a.parity, a.unit_id, a.timeout_s)
            timeout = a.reversion_timeout_s
        out.append(ChargerParams(c.id, link, c.max_charge_kw, c.max_discharge_kw, _profile_path(cfg, c.adapter.profile), timeout))
    return out


def echonet_link(a: EchonetLiteAdapter) -> EchonetLink:
    """The ECHONET Lite link of an ``echonet_lite`` adapter section."""
    return EchonetLink(a.host, a.instance, a.port, a.timeout_s, local_port=a.local_port)


def meter_params(cfg: SiteConfig, *, sim_host: str = "127.0.0.1", sim_port: int | None = None) -> AnyMeterParams | None:
    """The site meter: the configured real one, else the simulated one when the simulator runs
    (``sim_port`` given and a charger simulated), else None (no meter)."""
    m = cfg.meter.adapter if cfg.meter is not None else None
    if isinstance(m, MeterEchonetLite):
        return EchonetMeterParams("meter", echonet_link(m), HIGH_VOLTAGE if m.meter_class == "high_voltage" else LOW_VOLTAGE)
    if isinstance(m, MeterTcp):
        return MeterParams("meter", TcpLink(m.host, m.port, m.unit_id, m.timeout_s), _profile_path(cfg, m.profile))
    if isinstance(m, MeterRtu):
        return MeterParams("meter", RtuLink(m.serial_port, m.baudrate, m.parity, m.unit_id, m.timeout_s),
                           _profile_path(cfg, m.profile))
    if sim_port is None or not any(isinstance(c.adapter, SimulatorAdapter) for c in cfg.chargers):
        return None
    return MeterParams("meter", TcpLink(sim_host, sim_port, METER_UNIT_ID))
