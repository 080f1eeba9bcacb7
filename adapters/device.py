"""A Modbus device described by a register map: resolve points, read and write them by name.

:class:`ModbusDevice` is the common part of the charger and meter adapters. It connects, runs
SunSpec discovery for SunSpec maps (so points are found wherever the device put its models),
groups the points asked for into as few read requests as possible (at most 125 registers each;
gaps are read through only inside a SunSpec model chain, where every register is readable), and
writes each contiguous run of points in one FC16 request, then reads it back and compares.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from adapters.errors import AdapterError
from adapters.link import ModbusLink, RetryPolicy, RtuLink, TcpLink
from adapters.plausibility import FaultKind, ReadingFault, is_number, judge
from adapters.registers import MAX_READ, Located, RegisterMap, decode, encode, load_profile, locate
from adapters.sunspec import ModelHeader, discover

log = logging.getLogger(__name__)

Span = tuple[int, int, tuple[Located, ...]]  # start address, register count, points inside


class ModbusDevice:
    """One unit on one link, read and written through its register map."""

    def __init__(self, name: str, link: TcpLink | RtuLink, profile: str | RegisterMap,
                 retry: RetryPolicy = RetryPolicy()):
        self.name = name
        self.map = profile if isinstance(profile, RegisterMap) else load_profile(profile)
        self.io = ModbusLink(name, link, retry)
        self.located: dict[str, Located] = {}
        self.models: list[ModelHeader] = []
        self.sf: dict[str, int | None] = {}
        self._chain = (0, 0)
        self._mapped: set[int] = set()
        self._sf_names = {p.sf for p in self.map.points.values() if p.sf}
        self._plans: dict[tuple[str, ...], list[Span]] = {}

    async def open(self) -> None:
        """Connect and resolve every point's address (SunSpec: discover the model chain)."""
        await self.io.connect()
        self.located = locate(self.map) if self.map.kind != "sunspec" else await self._discover()
        self._mapped = {a for lc in self.located.values() for a in range(lc.address, lc.address + lc.point.size)}
        self._plans.clear()

    async def _discover(self) -> dict[str, Located]:
        """Points of a SunSpec device, located through its model chain."""
        base, self.models = await discover(self.io.read, self.name)
        end = self.models[-1].address + self.models[-1].length + 2 if self.models else base + 2
        self._chain = (base, end)
        first = {}
        for h in self.models:
            first.setdefault(h.id, h)
        located = {}
        for name, loc in locate(self.map, {m: h.address for m, h in first.items()}).items():
            if loc.point.model:
                header = next(first[m] for m in loc.point.model if m in first)
                if (loc.point.offset or 0) + loc.point.size > header.length + 2:
                    log.warning("%s: model %d is only %d long; point %s left out", self.name, header.id,
                                header.length, name)
                    continue
            located[name] = loc
        return located

    async def close(self) -> None:
        """Close the connection."""
        await self.io.close()

    def available(self, name: str) -> bool:
        """True if the device has point ``name`` (in the map and, for SunSpec, in its chain)."""
        return name in self.located

    def require(self, names: Iterable[str]) -> None:
        """AdapterError naming the first point the device lacks (e.g. a missing SunSpec model)."""
        for n in names:
            if n not in self.located:
                p = self.map.points.get(n)
                where = f"model {'/'.join(map(str, p.model))}" if p is not None and p.model else "the map"
                found = [h.id for h in self.models]
                raise AdapterError(self.name, n, None, f"the device does not provide this point ({where}; "
                                   f"models found: {found or 'n/a'})")

    def _readable(self, start: int, stop: int) -> bool:
        """True if every register in [start, stop) may be read: inside the SunSpec chain, or
        belonging to a point of the map (vendor maps may answer exception 02 in their gaps)."""
        if self._chain[0] <= start and stop <= self._chain[1]:
            return True
        return all(a in self._mapped for a in range(start, stop))

    def _plan(self, names: tuple[str, ...]) -> list[Span]:
        """Read requests covering the named points and their scale-factor points."""
        if names in self._plans:
            return self._plans[names]
        wanted: dict[str, Located] = {}
        for n in names:
            loc = self.located.get(n)
            if loc is None:
                continue
            wanted[n] = loc
            if loc.point.sf and loc.point.sf in self.located:
                wanted[loc.point.sf] = self.located[loc.point.sf]
        spans: list[list[Any]] = []
        for loc in sorted(wanted.values(), key=lambda x: x.address):
            end = loc.address + loc.point.size
            if spans:
                start, stop, members = spans[-1]
                contiguous = loc.address <= stop or self._readable(stop, loc.address)
                if contiguous and max(stop, end) - start <= MAX_READ:
                    spans[-1] = [start, max(stop, end), members + [loc]]
                    continue
            spans.append([loc.address, end, [loc]])
        plan = [(s, e - s, tuple(m)) for s, e, m in spans]
        self._plans[names] = plan
        return plan

    async def read(self, names: Iterable[str]) -> dict[str, Any]:
        """Values of the named points in their units (None: not provided, not implemented or implausible)."""
        return (await self.read_checked(names))[0]

    async def read_checked(self, names: Iterable[str]) -> tuple[dict[str, Any], dict[str, ReadingFault]]:
        """Values of the named points in their units, and the faults of those the map's own bounds reject.

        A value that is not finite (float32 +-inf) or outside the point's ``range`` is None in the
        values and a :class:`~adapters.plausibility.ReadingFault` (NOT_FINITE, MAP_RANGE) under its name.
        A not-implemented sentinel is None without a fault here: whether the point is needed is the
        adapter's call."""
        names = tuple(names)
        raw: dict[str, list[int]] = {}
        for start, count, members in self._plan(names):
            label = ",".join(m.point.name for m in members[:3]) + ("..." if len(members) > 3 else "") + f"@{start}+{count}"
            regs = await self.io.read(start, count, label)
            for m in members:
                raw[m.point.name] = regs[m.address - start:m.address - start + m.point.size]
        for n, regs in raw.items():
            if n in self._sf_names:
                self.sf[n] = decode(self.map.points[n], regs)  # type: ignore[assignment]
        out: dict[str, Any] = {}
        faults: dict[str, ReadingFault] = {}
        for n in names:
            loc = self.located.get(n)
            value = None if loc is None else decode(loc.point, raw[n], self.sf.get(loc.point.sf or ""))
            if loc is not None and value is not None and is_number(value):
                lo, hi = loc.point.range or (-math.inf, math.inf)
                fault = judge(self.name, n, value, lo, hi, FaultKind.MAP_RANGE, loc.point.unit)
                if fault is not None:
                    faults[n], value = fault, None
            out[n] = value
        return out, faults

    async def write(self, values: dict[str, Any], verify: bool = True) -> None:
        """Write named points; each contiguous run is ONE FC16 request, then read back and compared."""
        self.require(values)
        locs = sorted((self.located[n] for n in values), key=lambda x: x.address)
        missing_sf = [lc.point.sf for lc in locs if lc.point.sf and self.sf.get(lc.point.sf) is None]
        if missing_sf:
            await self.read(missing_sf)
        runs: list[list[tuple[Located, list[int]]]] = []
        for loc in locs:
            p, value = loc.point, values[loc.point.name]
            if not p.writable:
                raise AdapterError(self.name, loc.label(), value, "the register map marks this point read-only")
            try:
                regs = encode(p, value, self.sf.get(p.sf or ""))
            except ValueError as exc:
                raise AdapterError(self.name, loc.label(), value, f"cannot encode: {exc}") from None
            if runs and runs[-1][-1][0].address + runs[-1][-1][0].point.size == loc.address:
                runs[-1].append((loc, regs))
            else:
                runs.append([(loc, regs)])
        for run in runs:
            start = run[0][0].address
            regs = [r for _, chunk in run for r in chunk]
            label = ",".join(lc.label() for lc, _ in run)
            shown = {lc.point.name: values[lc.point.name] for lc, _ in run}
            await self.io.write(start, regs, label, shown)
            if verify:
                back = await self.io.read(start, len(regs), label)
                if back != regs:
                    raise AdapterError(self.name, label, shown, f"read back registers {back} after writing {regs}")
