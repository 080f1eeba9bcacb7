"""Register maps as data, and the one encode/decode path for Modbus values.

A register map (a YAML file in ``adapters/registers/``) lists *points* by logical name
(``soc_pct``, ``power_w``, ``setpoint_w`` ...). Each point gives where it lives (an absolute
``address``, or a SunSpec ``model`` and the ``offset`` from that model's ID register), its
``type`` (u16, s16, u32, acc32, s32, float32, string), ``word_order`` for 32-bit values, a fixed
``scale`` multiplier or an ``sf`` scale-factor point (value = raw x 10^sf), its ``unit`` and
``access`` (R or RW). The charger and meter adapters and the simulator all read the same files,
so the device and its client cannot drift apart.

Every value goes through :func:`decode` / :func:`encode`, which call pymodbus's
``convert_from_registers`` / ``convert_to_registers``; nothing else in the project packs
registers by hand. Raw values equal to the point's not-implemented sentinel (SunSpec: 0xFFFF for
u16, 0x8000 for s16, 0 for acc32, 0xFFFFFFFF / 0x80000000 for u32 / s32, NaN for float32) decode to
``None`` ("unknown"), never to 0; so does a value whose scale factor is unknown (0x8000) or outside
SunSpec's -10..10. Whether a decoded number is plausible is :mod:`adapters.plausibility`'s question.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pymodbus.client.mixin import ModbusClientMixin

from adapters.errors import MapProblem, RegisterMapError
from adapters.yamlsafe import InputFileError, parse, read_text

DT = ModbusClientMixin.DATATYPE
PROFILE_DIR = Path(__file__).resolve().parent / "registers"

#: type name -> (pymodbus data type, registers; 0 = given by ``size``)
TYPES: dict[str, tuple[Any, int]] = {
    "u16": (DT.UINT16, 1), "s16": (DT.INT16, 1), "u32": (DT.UINT32, 2), "s32": (DT.INT32, 2),
    "acc32": (DT.UINT32, 2), "float32": (DT.FLOAT32, 2), "string": (DT.STRING, 0),
}
#: integer range of each integer type (acc32: SunSpec's 32-bit accumulator, an unsigned counter)
INT_RANGE = {"u16": (0, 0xFFFF), "s16": (-0x8000, 0x7FFF), "u32": (0, 0xFFFFFFFF), "acc32": (0, 0xFFFFFFFF),
             "s32": (-0x80000000, 0x7FFFFFFF)}
#: SunSpec "not implemented" raw values (float32: NaN; an accumulator that is not implemented reads 0)
SUNSPEC_NA = {"u16": 0xFFFF, "s16": -0x8000, "u32": 0xFFFFFFFF, "acc32": 0, "s32": -0x80000000}
#: SunSpec scale factors lie in -10..10; anything else (0x8000 included) leaves the value unknown
SF_RANGE = (-10, 10)
MAX_READ = 125  # registers per Modbus read request (FC3)

SIGNS = ("discharge_positive", "charge_positive", "import_positive", "export_positive")
REQUIRED = {
    "charger": ("soc_pct", "power_w", "setpoint_w", "setpoint_enable", "plug_state", "grid_connection"),
    "meter": ("power_w",),
}
#: enum names the adapters and the simulator rely on, per logical point (``plug_state``: PLUGGED = a
#: vehicle connected and usable, UNPLUGGED = none; any other name, e.g. SunSpec 802's INITIALIZING, is
#: neither: nothing is commanded; several raw values may share a name)
ENUM_NAMES = {
    "plug_state": ("PLUGGED", "UNPLUGGED"), "grid_connection": ("CONNECTED", "DISCONNECTED"),
    "setpoint_enable": ("ENABLED", "DISABLED"), "reversion_enable": ("ENABLED", "DISABLED"), "setpoint_mode": ("WATTS",),
    "inverter_state": ("RUNNING", "STANDBY"), "storage_status": ("OK",),
    "local_remote": ("REMOTE", "LOCAL"), "grid_present": ("UP", "DOWN"),
}
_TOP_KEYS = {"name", "kind", "device", "sign", "not_implemented", "models", "points", "description"}
_POINT_KEYS = {"address", "model", "offset", "type", "size", "word_order", "scale", "sf", "unit", "access",
               "enum", "bits", "range", "not_implemented", "simulated", "sunspec", "description"}


@dataclass(frozen=True)
class Point:
    """One register point. ``size`` is in registers; ``scale`` or ``sf`` turn raw into units."""

    name: str
    type: str
    size: int
    address: int | None = None
    model: tuple[int, ...] = ()
    offset: int | None = None
    word_order: Literal["big", "little"] = "big"
    scale: float | None = None
    sf: str | None = None
    unit: str = ""
    access: Literal["R", "RW"] = "R"
    enum: Mapping[int, str] | None = None
    bits: Mapping[int, str] | None = None
    range: tuple[float, float] | None = None
    not_implemented: int | None = None
    simulated: Any = None
    line: int | None = None

    @property
    def writable(self) -> bool:
        """True if the controller may write this point."""
        return self.access == "RW"


@dataclass(frozen=True)
class RegisterMap:
    """A validated register map: ``kind`` sunspec or flat, ``models`` (SunSpec id -> length L)."""

    name: str
    kind: Literal["sunspec", "flat"]
    device: Literal["charger", "meter"]
    sign: str
    models: Mapping[int, int]
    points: Mapping[str, Point]
    source: str = ""

    def has(self, name: str) -> bool:
        """True if the map defines point ``name``."""
        return name in self.points


@dataclass(frozen=True)
class Located:
    """A point with its absolute register address resolved (after SunSpec discovery)."""

    point: Point
    address: int

    def label(self) -> str:
        """``name@address`` for error messages (0-based protocol address)."""
        return f"{self.point.name}@{self.address}"


def locate(rmap: RegisterMap, model_addresses: Mapping[int, int] | None = None) -> dict[str, Located]:
    """Resolve every point to an absolute address.

    ``model_addresses`` maps a SunSpec model id to the address of its ID register (from discovery);
    points of models the device does not have are left out. A point listing several models (a meter
    point valid in 201 or 203) takes the first one present.
    """
    out: dict[str, Located] = {}
    for name, p in rmap.points.items():
        if p.address is not None:
            out[name] = Located(p, p.address)
            continue
        for m in p.model:
            if model_addresses and m in model_addresses:
                out[name] = Located(p, model_addresses[m] + (p.offset or 0))
                break
    return out


# ----------------------------------------------------------------------------- codec

def decode_raw(p: Point, regs: list[int]) -> int | float | str | None:
    """Raw value of ``p`` from its registers (None = the not-implemented sentinel)."""
    dtype, _ = TYPES[p.type]
    raw = ModbusClientMixin.convert_from_registers(regs, dtype, word_order=p.word_order)
    if p.type == "float32":
        return None if math.isnan(raw) else float(raw)  # type: ignore[arg-type]
    if p.not_implemented is not None and raw == p.not_implemented:
        return None
    return raw  # type: ignore[return-value]


def encode_raw(p: Point, raw: int | float | str) -> list[int]:
    """Registers of ``p`` holding ``raw``; ValueError if it does not fit the type."""
    dtype, n = TYPES[p.type]
    if p.type == "string":
        data = str(raw).encode("utf-8")
        if len(data) > 2 * p.size:
            raise ValueError(f"string of {len(data)} bytes does not fit {p.size} registers")
        regs = ModbusClientMixin.convert_to_registers(str(raw), dtype) if data else []
        return regs + [0] * (p.size - len(regs))
    if p.type in INT_RANGE:
        lo, hi = INT_RANGE[p.type]
        if not isinstance(raw, int) or not lo <= raw <= hi:
            raise ValueError(f"raw value {raw!r} outside the {p.type} range [{lo}, {hi}]")
    return ModbusClientMixin.convert_to_registers(raw, dtype, word_order=p.word_order)


def multiplier(p: Point, sf: int | None) -> float | None:
    """Units per raw count: ``scale``, or 10^sf for a scale-factor point (None if sf is unknown or
    outside SunSpec's -10..10)."""
    if p.sf is not None:
        return None if sf is None or not SF_RANGE[0] <= sf <= SF_RANGE[1] else 10.0 ** sf
    return p.scale if p.scale is not None else 1.0


def decode(p: Point, regs: list[int], sf: int | None = None) -> int | float | str | None:
    """Value of ``p`` in its unit (None if not implemented or its scale factor is)."""
    raw = decode_raw(p, regs)
    if raw is None or isinstance(raw, str):
        return raw
    mult = multiplier(p, sf)
    if mult is None:
        return None
    if mult == 1.0 and p.type != "float32":
        return raw
    return raw * mult


def to_raw(p: Point, value: float | int | str, sf: int | None = None) -> int | float | str:
    """Raw value for ``value`` in the point's unit; ValueError if it cannot be represented."""
    if p.type == "string":
        return str(value)
    mult = multiplier(p, sf)
    if mult is None:
        raise ValueError(f"scale factor {p.sf} of {p.name} is not known (not implemented or not read)")
    raw = float(value) / mult
    if p.type == "float32":
        return raw
    return int(round(raw))


def encode(p: Point, value: float | int | str, sf: int | None = None) -> list[int]:
    """Registers for ``value`` (in the point's unit); ValueError if out of the type's range."""
    return encode_raw(p, to_raw(p, value, sf))


def enum_name(p: Point, raw: int | None) -> str | None:
    """Name of an enum value (None if unknown or not implemented)."""
    return None if raw is None else (p.enum or {}).get(int(raw))


def enum_code(p: Point, name: str) -> int:
    """Raw value of enum entry ``name``; KeyError naming the point if the map lacks it."""
    for k, v in (p.enum or {}).items():
        if v == name:
            return k
    raise KeyError(f"point {p.name} has no enum value {name!r}; it has {sorted((p.enum or {}).values())}")


def bit_names(p: Point, raw: int | None) -> tuple[str, ...]:
    """Names of the bits set in a bitfield value (unnamed bits as ``bitN``)."""
    if raw is None:
        return ()
    names = p.bits or {}
    return tuple(names.get(i, f"bit{i}") for i in range(32) if int(raw) >> i & 1)


# ----------------------------------------------------------------------------- loading

def profile_path(name: str) -> Path:
    """The file of a shipped profile (``sunspec`` -> adapters/registers/sunspec.yaml) or a path."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        return p
    return PROFILE_DIR / f"{name}.yaml"


def shipped_profiles() -> list[str]:
    """Names of the register maps shipped with the package."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


_CACHE: dict[tuple, RegisterMap] = {}


def load_profile(name: str) -> RegisterMap:
    """Load a shipped profile by name or a map file by path (cached by resolved path and the file's
    modification time and size: an edited map is read again)."""
    path = profile_path(name)
    if not path.is_file() and path.parent == PROFILE_DIR:
        hint = difflib.get_close_matches(name, shipped_profiles(), n=1)
        raise RegisterMapError(MapProblem(name, None, "profile", name,
                                          f"no such register map; shipped: {shipped_profiles()}"
                                          + (f"; did you mean {hint[0]!r}?" if hint else "")))
    try:
        st = path.stat()
        key: tuple = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:   # missing: load_map names the file
        key = (str(path),)
    if key not in _CACHE:
        _CACHE[key] = load_map(path)
    return _CACHE[key]


def _lines(node: yaml.Node, key: tuple, out: dict[tuple, int]) -> None:
    """Record the 1-based line of every key path under ``node`` (keys as strings)."""
    out.setdefault(key, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            out[key + (str(k.value),)] = k.start_mark.line + 1
            _lines(v, key + (str(k.value),), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _lines(v, key + (str(i),), out)


def load_map(path: str | Path) -> RegisterMap:
    """Read and validate a register-map file; RegisterMapError lists every problem."""
    where = str(path)
    try:   # bounded: regular files only, size, aliases, depth, no tags (adapters.yamlsafe)
        node, data = parse(read_text(path), where)
    except InputFileError as exc:
        raise RegisterMapError(MapProblem(where, exc.line, "", None, exc.message)) from None
    lines: dict[tuple, int] = {}
    if node is not None:
        _lines(node, (), lines)
    return _MapChecker(where, lines).build(data)


@dataclass
class _MapChecker:
    """Validates the parsed YAML of one map file, collecting every problem before raising."""

    where: str
    lines: dict[tuple, int]
    problems: list[MapProblem] = field(default_factory=list)

    def bad(self, key: tuple, value: Any, message: str) -> None:
        """Record one problem at key path ``key``."""
        path = tuple(str(k) for k in key)
        line = next((self.lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in self.lines), None)
        self.problems.append(MapProblem(self.where, line, ".".join(str(k) for k in key), value, message))

    def unknown_keys(self, data: Mapping, allowed: set[str], key: tuple) -> None:
        """Unknown keys are errors, with a "did you mean" hint."""
        for k in data:
            if k not in allowed:
                hint = difflib.get_close_matches(str(k), sorted(allowed), n=1)
                self.bad(key + (k,), data[k], "unknown key" + (f"; did you mean {hint[0]!r}?" if hint else
                                                               f"; allowed: {sorted(allowed)}"))

    def choice(self, data: Mapping, key: str, allowed: tuple, default: Any, path: tuple) -> Any:
        """``data[key]`` if it is one of ``allowed`` (missing: ``default``, None = required)."""
        if key not in data:
            if default is None:
                self.bad(path + (key,), None, f"required; one of {list(allowed)}")
            return default
        if data[key] not in allowed:
            self.bad(path + (key,), data[key], f"must be one of {list(allowed)}")
            return default
        return data[key]

    def build(self, data: Any) -> RegisterMap:
        """The RegisterMap, or RegisterMapError with all problems."""
        if not isinstance(data, dict):
            raise RegisterMapError(MapProblem(self.where, 1, "", data, "a register map is a mapping with keys "
                                              f"{sorted(_TOP_KEYS)}"))
        self.unknown_keys(data, _TOP_KEYS, ())
        kind = self.choice(data, "kind", ("sunspec", "flat"), None, ())
        device = self.choice(data, "device", ("charger", "meter"), None, ())
        sign = self.choice(data, "sign", SIGNS, None, ())
        na = self.choice(data, "not_implemented", ("sunspec", "none"), "none", ())
        name = data.get("name")
        if not isinstance(name, str) or not name:
            self.bad(("name",), name, "required: a non-empty string naming the map")
        models = self.models(data.get("models"), kind)
        points_data = data.get("points")
        points: dict[str, Point] = {}
        if not isinstance(points_data, dict) or not points_data:
            self.bad(("points",), points_data, "required: a mapping of point name -> definition")
        else:
            for pname, pdata in points_data.items():
                p = self.point(str(pname), pdata, models, na == "sunspec")
                if p is not None:
                    points[str(pname)] = p
            self.cross_checks(points, device, set(map(str, points_data)))
        if self.problems:
            raise RegisterMapError(self.problems)
        return RegisterMap(name, kind, device, sign, models, points, self.where)

    def models(self, data: Any, kind: str) -> dict[int, int]:
        """SunSpec model id -> length L (registers after ID and L)."""
        if kind != "sunspec":
            if data is not None:
                self.bad(("models",), data, "only a sunspec map lists models")
            return {}
        if not isinstance(data, dict) or not data:
            self.bad(("models",), data, "required for kind sunspec: model id -> length L, e.g. {1: 66, 701: 153}")
            return {}
        out = {}
        for mid, length in data.items():
            if not isinstance(mid, int) or not 1 <= mid < 0xFFFF or not isinstance(length, int) or not 0 < length < 0xFFFF:
                self.bad(("models", mid), length, "model id and length must be integers in 1..65534")
            else:
                out[mid] = length
        return out

    def point(self, name: str, d: Any, models: dict[int, int], sunspec_na: bool) -> Point | None:
        """One validated point (None if it has problems; they are recorded)."""
        key = ("points", name)
        n0 = len(self.problems)
        if not isinstance(d, dict):
            self.bad(key, d, "a point is a mapping with type, access and address or model+offset")
            return None
        self.unknown_keys(d, _POINT_KEYS, key)
        ptype = self.choice(d, "type", tuple(TYPES), None, key)
        size = TYPES[ptype][1] if ptype in TYPES else 1
        if ptype == "string":
            size = d.get("size")
            if not isinstance(size, int) or not 1 <= size <= MAX_READ:
                self.bad(key + ("size",), size, f"a string needs its size in registers (1..{MAX_READ})")
                size = 1
        elif "size" in d:
            self.bad(key + ("size",), d["size"], f"size is implied by type {ptype}; give it for strings only")
        address, model, offset = self.location(d, key, size, models)
        scale, sf = d.get("scale"), d.get("sf")
        if scale is not None and sf is not None:
            self.bad(key + ("scale",), scale, "give scale or sf, not both")
        if scale is not None and (not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale == 0
                                  or not math.isfinite(scale)):
            self.bad(key + ("scale",), scale, "scale must be a finite non-zero number (units per raw count)")
        if sf is not None and not isinstance(sf, str):
            self.bad(key + ("sf",), sf, "sf names the scale-factor point, e.g. w_sf")
        enum, bits = self.labels(d, key, "enum", 0xFFFF), self.labels(d, key, "bits", 31)
        rng = d.get("range")
        if rng is not None and not (isinstance(rng, list) and len(rng) == 2
                                    and all(isinstance(x, (int, float)) for x in rng) and rng[0] < rng[1]):
            self.bad(key + ("range",), rng, "range is [lowest, highest] in the point's unit")
        if "not_implemented" in d:
            na = d["not_implemented"]
            if na is not None and not isinstance(na, int):
                self.bad(key + ("not_implemented",), na, "the raw sentinel value (an integer) or null")
        else:
            na = SUNSPEC_NA.get(ptype) if sunspec_na else None
        word_order = self.choice(d, "word_order", ("big", "little"), "big", key)
        access = self.choice(d, "access", ("R", "RW"), None, key)
        if not isinstance(d.get("unit", ""), str):
            self.bad(key + ("unit",), d.get("unit"), "unit is a string such as W, Pct, Wh, Secs")
        if len(self.problems) > n0:
            return None
        return Point(name, ptype, size, address, model, offset, word_order, scale, sf, d.get("unit", ""), access,
                     enum, bits, tuple(rng) if rng else None, na, d.get("simulated"),
                     self.lines.get(key))

    def location(self, d: dict, key: tuple, size: int, models: dict[int, int]) -> tuple[int | None, tuple[int, ...], int | None]:
        """Either an absolute address, or SunSpec model(s) and an offset within the model."""
        if "address" in d:
            a = d["address"]
            if "model" in d or "offset" in d:
                self.bad(key + ("address",), a, "give address, or model and offset, not both")
            if not isinstance(a, int) or not 0 <= a or a + size > 0x10000:
                self.bad(key + ("address",), a, "address is a 0-based register number in 0..65535 (manual '40001' = 40000)")
                return None, (), None
            return a, (), None
        model, offset = d.get("model"), d.get("offset")
        mlist = model if isinstance(model, list) else [model]
        if model is None or offset is None:
            self.bad(key, None, "needs address, or model and offset")
            return None, (), None
        for m in mlist:
            if m not in models:
                self.bad(key + ("model",), m, f"not a model of this map; listed: {sorted(models)}")
                return None, (), None
            if not isinstance(offset, int) or offset < 2 or offset + size > models[m] + 2:
                self.bad(key + ("offset",), offset, f"offset from the model's ID register must be in "
                                                    f"2..{models[m] + 2 - size} for model {m} (L = {models[m]})")
                return None, (), None
        return None, tuple(mlist), offset

    def labels(self, d: dict, key: tuple, what: str, top: int) -> dict[int, str] | None:
        """An ``enum`` (raw value -> name) or ``bits`` (bit number -> name) table."""
        table = d.get(what)
        if table is None:
            return None
        if not isinstance(table, dict) or not all(isinstance(k, int) and 0 <= k <= top and isinstance(v, str)
                                                  for k, v in table.items()):
            self.bad(key + (what,), table, f"{what} maps integers 0..{top} to names")
            return None
        return dict(table)

    def cross_checks(self, points: dict[str, Point], device: str | None, named: set[str]) -> None:
        """Scale-factor references resolve, points do not overlap, required points exist."""
        for p in points.values():
            if p.sf is None:
                continue
            sfp = points.get(p.sf)
            if sfp is None:
                hint = difflib.get_close_matches(p.sf, list(points), n=1)
                self.bad(("points", p.name, "sf"), p.sf, "no such point" + (f"; did you mean {hint[0]!r}?" if hint else ""))
            elif sfp.type != "s16" or sfp.sf or sfp.scale:
                self.bad(("points", p.name, "sf"), p.sf, "a scale-factor point is an s16 without scale or sf")
            elif sfp.model != p.model:
                self.bad(("points", p.name, "sf"), p.sf, f"the scale factor must be in the same model {p.model}")
        spans: dict[tuple, list[tuple[int, int, str]]] = {}
        for p in points.values():
            space = p.model if p.address is None else ()
            start = p.address if p.address is not None else p.offset
            spans.setdefault(space, []).append((start, start + p.size, p.name))  # type: ignore[operator]
        for items in spans.values():
            items.sort()
            for (a0, a1, n0), (b0, _b1, n1) in zip(items, items[1:]):
                if b0 < a1:
                    self.bad(("points", n1), b0, f"overlaps point {n0} (registers {a0}..{a1 - 1})")
        for p in points.values():
            missing = [n for n in ENUM_NAMES.get(p.name, ()) if n not in (p.enum or {}).values()]
            if missing:
                self.bad(("points", p.name, "enum"), p.enum, f"must name {list(ENUM_NAMES[p.name])} (missing {missing})")
        for req in REQUIRED.get(device or "", ()):
            if req not in named:
                self.bad(("points", req), None, f"missing: a {device} map must define this point")
