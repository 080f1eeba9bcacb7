"""Register maps as data: shipped maps load, the codec round-trips, bad maps name file/line/key, and the
SunSpec maps hold standard points only, each where pysunspec2's model definitions put it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.errors import RegisterMapError
from adapters.registers import (INT_RANGE, Point, decode, decode_raw, encode, encode_raw, load_map, load_profile,
                                locate, shipped_profiles)


def test_shipped_profiles_load():
    assert shipped_profiles() == ["flat-meter", "flat-v2h", "sunspec", "sunspec-meter"]
    sunspec = load_profile("sunspec")
    assert sunspec.kind == "sunspec" and sunspec.sign == "discharge_positive"
    assert dict(sunspec.models) == {1: 66, 701: 153, 702: 50, 704: 65, 713: 7, 802: 62}
    # offsets checked against DEVICE-NOTES / pysunspec2's model files
    p = sunspec.points
    assert (p["power_w"].model, p["power_w"].offset, p["w_sf"].offset) == ((701,), 10, 116)
    assert (p["setpoint_w"].offset, p["setpoint_w"].type, p["wset_sf"].offset) == (24, "s32", 55)
    assert (p["reversion_timeout_s"].offset, p["soc_pct"].offset, p["controller_heartbeat"].offset) == (31, 4, 19)
    assert load_profile("flat-v2h").sign == "charge_positive"


def test_locate_resolves_model_offsets():
    rmap = load_profile("sunspec")
    loc = locate(rmap, {701: 40070, 704: 40277})
    assert loc["power_w"].address == 40080
    assert loc["setpoint_w"].address == 40301
    assert "soc_pct" not in loc                         # model 713 absent on this device
    assert "plug_state" not in loc                      # 802 State: model 802 absent
    assert locate(rmap, {802: 40353})["plug_state"].address == 40375


#: pysunspec2 point types -> register-map types (enums and bitfields are unsigned, scale factors s16)
SUNSPEC_TYPES = {"uint16": "u16", "int16": "s16", "enum16": "u16", "bitfield16": "u16", "sunssf": "s16", "count": "u16",
                 "uint32": "u32", "int32": "s32", "enum32": "u32", "bitfield32": "u32", "acc32": "acc32",
                 "float32": "float32", "string": "string"}


def sunspec_model(model_id: int) -> tuple[int, dict[str, tuple[int, dict]]]:
    """pysunspec2's definition of a model: its length L and its top-level points as name -> (offset, point)."""
    sunspec2 = pytest.importorskip("sunspec2")
    group = json.loads((Path(sunspec2.__file__).parent / "models" / "json" / f"model_{model_id}.json").read_text())["group"]
    points, offset = {}, 0
    for pt in group["points"]:
        points[pt["name"]] = (offset, pt)
        offset += pt["size"]
    for sub in group.get("groups", []):    # fixed groups after the points (704's power-factor pairs)
        assert sub.get("count", 1) == 1 and not sub.get("groups"), (model_id, sub["name"])
        offset += sum(pt["size"] for pt in sub["points"])
    return offset - 2, points


@pytest.mark.parametrize("profile", ["sunspec", "sunspec-meter"])
def test_sunspec_maps_hold_standard_points_only_at_their_standard_offsets(profile):
    """No vendor block, no invented point: every point names its SunSpec point (``sunspec:``) and sits at
    that point's offset with its type, size, scale factor and symbols, in every model it lists."""
    rmap = load_profile(profile)
    declared = yaml.safe_load(Path(rmap.source).read_text())["points"]
    for mid, length in rmap.models.items():
        assert length == sunspec_model(mid)[0], mid
    for name, p in rmap.points.items():
        assert p.address is None and p.model, f"{name}: an absolute address is no SunSpec point"
        for mid in p.model:
            offset, spec = sunspec_model(mid)[1][declared[name]["sunspec"]]
            assert (p.offset, p.type, p.size) == (offset, SUNSPEC_TYPES[spec["type"]], spec["size"]), (name, mid)
            assert (declared[p.sf]["sunspec"] if p.sf else None) == spec.get("sf"), (name, mid)
            symbols = {sym["value"] for sym in spec.get("symbols", [])}
            assert set(p.enum or {}) <= symbols and set(p.bits or {}) <= symbols, (name, mid)
    if profile == "sunspec":
        assert sorted(rmap.models) == [1, 701, 702, 704, 713, 802]


def _pt(ptype: str, **kw) -> Point:
    size = kw.pop("size", {"u16": 1, "s16": 1}.get(ptype, 2))
    return Point("x", ptype, size, address=0, **kw)


def test_scale_factor_and_fixed_scale_by_hand():
    soc = _pt("u16", sf="pct_sf")
    assert decode(soc, [563], sf=-1) == pytest.approx(56.3)
    assert encode(soc, 56.3, sf=-1) == [563]
    rating = _pt("u16", sf="w_sf")
    assert decode(rating, [600], sf=1) == 6000.0
    power = _pt("s16", scale=10)
    assert decode(power, [0xFF06]) == -2500  # -250 x 10 W
    assert decode(soc, [563], sf=None) is None  # scale factor unknown: value unknown


def test_word_order_and_types_by_hand():
    assert encode(_pt("u32"), 0x00010002) == [0x0001, 0x0002]
    assert encode(_pt("u32", word_order="little"), 0x00010002) == [0x0002, 0x0001]
    assert encode(_pt("s32", word_order="little"), -2500) == [0xF63C, 0xFFFF]
    assert decode(_pt("s32"), [0xFFFF, 0xF63C]) == -2500
    assert decode(_pt("float32"), [0x4261, 0x3333]) == pytest.approx(56.3, abs=1e-5)
    assert decode(_pt("string", size=4), [0x5375, 0x6E53, 0, 0]) == "SunS"
    assert encode(_pt("string", size=4), "SunS") == [0x5375, 0x6E53, 0, 0]


def test_sunspec_not_implemented_sentinels():
    na = {"u16": 0xFFFF, "s16": -0x8000, "u32": 0xFFFFFFFF, "s32": -0x80000000}
    for t, raw in na.items():
        p = _pt(t, not_implemented=raw)
        assert decode_raw(p, encode_raw(p, raw)) is None
    assert decode_raw(_pt("s16", not_implemented=-0x8000), [0x8000]) is None
    assert decode(_pt("float32"), encode_raw(_pt("float32"), math.nan)) is None
    sunspec = load_profile("sunspec")
    assert sunspec.points["soc_pct"].not_implemented == 0xFFFF
    assert sunspec.points["alarms"].not_implemented is None  # a bitfield may be all ones


def test_encode_rejects_values_outside_the_type():
    with pytest.raises(ValueError, match="outside the u16 range"):
        encode(_pt("u16"), 70000)
    with pytest.raises(ValueError, match="outside the s16 range"):
        encode(_pt("s16", sf="w_sf"), 40000, sf=0)
    with pytest.raises(ValueError, match="does not fit"):
        encode(_pt("string", size=2), "too long")


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(sorted(INT_RANGE)), st.sampled_from(["big", "little"]), st.data())
def test_integer_round_trip(ptype, order, data):
    lo, hi = INT_RANGE[ptype]
    raw = data.draw(st.integers(lo, hi))
    p = _pt(ptype, word_order=order)
    regs = encode_raw(p, raw)
    assert all(0 <= r <= 0xFFFF for r in regs) and len(regs) == p.size
    assert decode_raw(p, regs) == raw


@settings(max_examples=50, deadline=None)
@given(st.integers(-3, 2), st.integers(-30000, 30000))
def test_scaled_round_trip(sf, raw):
    p = _pt("s16", sf="sf")
    value = decode(p, [raw & 0xFFFF], sf=sf)
    assert encode(p, value, sf=sf) == [raw & 0xFFFF]


BAD_MAP = """\
name: broken
kind: flat
device: charger
sign: discharge_positive
points:
  soc_pct: {address: 10, type: u16, acess: R}
  power_w: {address: 10, type: s16, sf: w_sff, access: R}
  setpoint_w: {address: 20, type: s33, access: RW}
  setpoint_enable: {address: 22, type: u16, access: RW, enum: {0: "OFF", 1: ENABLED}}
  plug_state: {address: 70000, type: u16, access: R}
"""


def test_bad_map_lists_every_problem_with_file_line_key(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text(BAD_MAP)
    with pytest.raises(RegisterMapError) as err:
        load_map(path)
    text = str(err.value)
    lines = text.splitlines()
    assert f"{path}:6: points.soc_pct.acess = 'R': unknown key; did you mean 'access'?" in lines
    assert f"{path}:6: points.soc_pct.access: required; one of ['R', 'RW']" in lines
    assert f"{path}:8: points.setpoint_w.type = 's33': must be one of ['u16', 's16', 'u32', 's32', 'acc32', 'float32', 'string']" in lines
    assert any(line.startswith(f"{path}:10: points.plug_state.address = 70000: address is a 0-based register") for line in lines)
    assert f"{path}:7: points.power_w.sf = 'w_sff': no such point" in lines
    assert f"{path}:5: points.grid_connection: missing: a charger map must define this point" in lines
    assert f"{path}:9: points.setpoint_enable.enum = {{0: 'OFF', 1: 'ENABLED'}}: must name ['ENABLED', 'DISABLED'] " \
           "(missing ['DISABLED'])" in lines
    assert len(lines) == 7  # soc_pct is defined (wrongly): not reported missing as well


def test_sunspec_offsets_are_checked_against_model_length(tmp_path: Path):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nkind: sunspec\ndevice: meter\nsign: import_positive\nmodels: {203: 105}\n"
                    "points:\n  power_w: {model: 203, offset: 107, type: s16, access: R}\n"
                    "  extra: {model: 999, offset: 2, type: u16, access: R}\n")
    with pytest.raises(RegisterMapError) as err:
        load_map(path)
    assert f"{path}:7: points.power_w.offset = 107: offset from the model's ID register must be in 2..106" in str(err.value)
    assert f"{path}:8: points.extra.model = 999: not a model of this map; listed: [203]" in str(err.value)


def test_unknown_profile_name_has_a_hint():
    with pytest.raises(RegisterMapError, match=r"no such register map.*did you mean 'sunspec'\?"):
        load_profile("sunspek")


def test_yaml_syntax_error_names_the_line(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\npoints:\n  a: {address: 1\n")
    with pytest.raises(RegisterMapError, match=rf"{path}:\d+: YAML syntax error"):
        load_map(path)
