"""The site's smart meter over ECHONET Lite: 0x0288 low-voltage, 0x028A high-voltage.

0x0288 (the Japanese "smart meter" of a house or small shop, reached over Route B or a HEMS gateway):

=====  ==============================================================  =========================
EPC    property                                                        data
=====  ==============================================================  =========================
0xD3   coefficient                                                     unsigned 4 B (absent: 1)
0xD7   number of effective digits for cumulative energy                1 B (counters wrap at 10^n)
0xE0   measured cumulative energy, normal direction (import)          unsigned 4 B, x unit x coeff.
0xE1   unit for cumulative energy (normal and reverse)                 0x00 1 kWh, 0x01 0.1, 0x02 0.01,
                                                                       0x03 0.001, 0x04 0.0001, 0x0A 10,
                                                                       0x0B 100, 0x0C 1000, 0x0D 10000
0xE3   measured cumulative energy, reverse direction (export)         as 0xE0
0xE7   measured instantaneous electric power                           signed 4 B, W, + = import
0xEA   cumulative energy measured at fixed time, normal direction      7 B date-time (YYYY MM DD hh
0xEB   ... reverse direction                                           mm ss) + unsigned 4 B, at :00/:30
=====  ==============================================================  =========================

0x028A (high-voltage contracts, offices and factories) has no instantaneous power: its cumulative
active energy 0xE2 (unit 0xE6, same codes as 0xE1; coefficient 0xD3 times the multiplying factor
0xD4: 0x00 x1, 0x01 x0.1, 0x02 x0.01, 0x03 x0.001) is read, and the import power is the counter's
rate over at least ``rate_window_s`` (a power fault, UNKNOWN, until a reading that old exists); its
counters are typically 0.1 kWh steps, which is why the window is long. No export on 0x028A.

The counters feed the daemon's 30-minute demand windows (:mod:`ems.daemon.metering` takes the
counter's increase between ticks); :meth:`EchonetMeterAdapter.read_fixed_time` gives the meter's own
reading at the last :00/:30 boundary (0xEA/0xEB). Sentinels (0x7FFFFFFE no data, 0x7FFFFFFF
overflow, 0x80000000 underflow for 0xE7; 0xFFFFFFFE for counters) are unknown readings, never
numbers: a power fault (:attr:`MeterReading.faults`) or a counter of None.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.convention import from_device_w
from adapters.echonet.client import EchonetLink, EchonetObject, PropertyMaps, missing_abilities
from adapters.echonet.frame import signed, unsigned
from adapters.errors import AdapterError, CapabilityError
from adapters.link import RetryPolicy
from adapters.meter import MeterReading
from adapters.plausibility import METER_MAX_KW, ReadingFault, check_into

LOW_VOLTAGE, HIGH_VOLTAGE = 0x0288, 0x028A
UNIT_KWH = {0x00: 1.0, 0x01: 0.1, 0x02: 0.01, 0x03: 0.001, 0x04: 0.0001, 0x0A: 10.0, 0x0B: 100.0, 0x0C: 1000.0,
            0x0D: 10000.0}
MULTIPLIER = {0x00: 1.0, 0x01: 0.1, 0x02: 0.01, 0x03: 0.001}
POWER_SENTINELS = (0x7FFFFFFE, 0x7FFFFFFF, -0x80000000)
COUNTER_NO_DATA = 0xFFFFFFFE

# 0x0288
COEFFICIENT, DIGITS, IMPORT, UNIT, EXPORT, POWER, IMPORT_FIXED, EXPORT_FIXED = 0xD3, 0xD7, 0xE0, 0xE1, 0xE3, 0xE7, 0xEA, 0xEB
# 0x028A
HV_MULTIPLIER, HV_ENERGY, HV_UNIT = 0xD4, 0xE2, 0xE6

NAMES = {LOW_VOLTAGE: {COEFFICIENT: "coefficient", DIGITS: "effective digits", IMPORT: "cumulative energy (normal)",
                       UNIT: "unit for cumulative energy", EXPORT: "cumulative energy (reverse)",
                       POWER: "instantaneous electric power", IMPORT_FIXED: "cumulative energy at fixed time (normal)",
                       EXPORT_FIXED: "cumulative energy at fixed time (reverse)"},
         HIGH_VOLTAGE: {COEFFICIENT: "coefficient", HV_MULTIPLIER: "multiplying factor for coefficient",
                        HV_ENERGY: "cumulative active energy", HV_UNIT: "unit for cumulative active energy"}}


@dataclass(frozen=True)
class EchonetMeterParams:
    """How to reach the meter: ``class_code`` 0x0288 or 0x028A; ``rate_window_s``: 0x028A only, the
    least time over which its counter's rate is taken as the import power [s]."""

    name: str
    link: EchonetLink
    class_code: int = LOW_VOLTAGE
    rate_window_s: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.class_code not in (LOW_VOLTAGE, HIGH_VOLTAGE):
            raise ValueError(f"class_code is 0x0288 or 0x028A; got 0x{self.class_code:04X}")


@dataclass(frozen=True)
class FixedTimeReading:
    """The meter's counters at its last :00/:30 boundary (0xEA/0xEB): its local clock time (naive) and
    import/export energy [kWh] (None: no data)."""

    time: dt.datetime
    import_kwh: float | None
    export_kwh: float | None


def _fixed_time(edt: bytes) -> tuple[dt.datetime, int]:
    """0xEA/0xEB: (date-time, raw counter)."""
    if len(edt) != 11:
        raise ValueError(f"expected 11 bytes (7 date-time + 4 value); got {len(edt)}")
    return dt.datetime(unsigned(edt[0:2]), *edt[2:7]), unsigned(edt[7:11])


class EchonetMeterAdapter:
    """One smart meter (see the module docstring); satisfies :class:`~adapters.protocol.MeterDevice`."""

    def __init__(self, params: EchonetMeterParams, *, clock: Callable[[], float] = time.monotonic):
        self.params = params
        self.obj = EchonetObject(params.name, params.link, params.class_code, NAMES[params.class_code], params.retry)
        self.maps: PropertyMaps | None = None
        self.kwh_per_count = 1.0
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque()   # 0x028A: (clock s, counter kWh)

    async def __aenter__(self) -> EchonetMeterAdapter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def low_voltage(self) -> bool:
        """True for 0x0288."""
        return self.params.class_code == LOW_VOLTAGE

    async def start(self) -> None:
        """Open, read the property maps (CapabilityError if the meter gives no power, resp. no counter)
        and the counters' scale (coefficient x unit [x multiplier])."""
        await self.obj.open()
        try:
            self.maps = maps = await self.obj.property_maps()
            need = [POWER] if self.low_voltage else [HV_ENERGY, HV_UNIT]
            missing = missing_abilities(maps, need, (), self.obj.names)
            if missing:
                raise CapabilityError(self.params.name, missing, "The daemon cannot see the site's import through it: "
                                      "nothing is read from this meter")
            unit = UNIT if self.low_voltage else HV_UNIT
            scale = [e for e in (COEFFICIENT, unit, HV_MULTIPLIER) if e in maps.get and (e != HV_MULTIPLIER or not self.low_voltage)]
            v = await self.obj.get(scale)
            self.kwh_per_count = 0.0   # no unit: the counters are not known
            if unit in v:
                if v[unit][0] not in UNIT_KWH:
                    raise AdapterError(self.params.name, f"0x{unit:02X} unit", v[unit].hex(), "not a unit code of the standard")
                coefficient = unsigned(v[COEFFICIENT]) if COEFFICIENT in v else 1
                multiplier = MULTIPLIER.get(v[HV_MULTIPLIER][0], 1.0) if HV_MULTIPLIER in v else 1.0
                self.kwh_per_count = coefficient * UNIT_KWH[v[unit][0]] * multiplier
        except BaseException:
            await self.obj.close()
            raise
        self._samples.clear()

    async def stop(self) -> None:
        """Close."""
        await self.obj.close()

    def _kwh(self, edt: bytes | None) -> float | None:
        """A counter's EDT in kWh (None: not read, no data, or no unit)."""
        return self._scaled(None if edt is None else unsigned(edt))

    def _scaled(self, raw: int | None) -> float | None:
        """A raw counter in kWh (None: not read, no data, or no unit)."""
        if raw is None or raw == COUNTER_NO_DATA or not self.kwh_per_count:
            return None
        return raw * self.kwh_per_count

    async def read(self) -> MeterReading:
        """One reading: power (0x0288: 0xE7; 0x028A: the counter's rate), counters [kWh]; an unknown or
        implausible power is a fault with 0 kW placeholders."""
        assert self.maps is not None, "read before start()"
        bad: dict[str, ReadingFault] = {}
        limit_w = METER_MAX_KW * 1000.0
        if self.low_voltage:
            v = await self.obj.get(e for e in (POWER, IMPORT, EXPORT) if e in self.maps.get)
            raw = signed(v[POWER])
            power_w: float | None = None if raw in POWER_SENTINELS else float(raw)
            imp_kwh, exp_kwh = self._kwh(v.get(IMPORT)), self._kwh(v.get(EXPORT))
        else:
            v = await self.obj.get([HV_ENERGY])
            imp_kwh, exp_kwh = self._kwh(v[HV_ENERGY]), None
            power_w = self._rate_w(imp_kwh)
        check_into(bad, self.params.name, "power_w", power_w, -limit_w, limit_w, "W")
        imp, exp = from_device_w(0.0 if "power_w" in bad else power_w or 0.0, "import_positive")
        return MeterReading(self.params.name, imp, exp, imp_kwh, exp_kwh, None, None, tuple(bad.values()))

    def _rate_w(self, kwh: float | None) -> float | None:
        """0x028A: the counter's rate [W] since the newest sample at least ``rate_window_s`` old (None before)."""
        now = self._clock()
        if kwh is None:
            return None
        self._samples.append((now, kwh))
        window = self.params.rate_window_s
        while len(self._samples) > 2 and now - self._samples[1][0] >= window:
            self._samples.popleft()
        t0, k0 = self._samples[0]
        if now - t0 < window or kwh < k0:
            if kwh < k0:          # the counter wrapped or was replaced: start again
                self._samples = deque([(now, kwh)])
            return None
        return (kwh - k0) / ((now - t0) / 3600.0) * 1000.0

    async def read_fixed_time(self) -> FixedTimeReading:
        """0x0288's counters at the last :00/:30 boundary (0xEA, and 0xEB when the meter has it)."""
        assert self.maps is not None, "read_fixed_time before start()"
        if not self.low_voltage or IMPORT_FIXED not in self.maps.get:
            raise AdapterError(self.params.name, "0xEA cumulative energy at fixed time", None,
                               "this meter does not give its fixed-time readings")
        v = await self.obj.get(e for e in (IMPORT_FIXED, EXPORT_FIXED) if e in self.maps.get)
        try:
            t, raw = _fixed_time(v[IMPORT_FIXED])
            exp = self._scaled(_fixed_time(v[EXPORT_FIXED])[1]) if EXPORT_FIXED in v else None
        except ValueError as exc:
            raise AdapterError(self.params.name, "0xEA/0xEB", v[IMPORT_FIXED].hex(), f"malformed fixed-time reading: {exc}") from None
        return FixedTimeReading(t, self._scaled(raw), exp)


__all__ = ["EchonetMeterAdapter", "EchonetMeterParams", "FixedTimeReading", "HIGH_VOLTAGE", "LOW_VOLTAGE"]
