"""The ECHONET Lite frame codec: round trips (hypothesis), property maps in both forms, and every
malformed datagram a FrameError (never another exception)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.echonet.frame import (EOJ, ESV, Frame, FrameError, Property, decode_property_map, encode_property_map,
                                    s32, signed, u32, unsigned)

byte = st.integers(0, 0xFF)
eojs = st.builds(EOJ, byte, byte, byte)
props = st.builds(Property, byte, st.binary(max_size=40))
frames = st.builds(Frame, st.integers(0, 0xFFFF), eojs, eojs,
                   st.sampled_from([e.value for e in ESV]), st.lists(props, max_size=12).map(tuple))


@given(frames)
def test_frame_round_trip(frame):
    assert Frame.decode(frame.encode()) == frame


@given(st.sets(st.integers(0x80, 0xFF)))
def test_property_map_round_trip_as_list_or_bitmap(epcs):
    edt = encode_property_map(epcs)
    assert len(edt) == (1 + len(epcs) if len(epcs) < 16 else 17)
    assert decode_property_map(edt) == frozenset(epcs)


def test_property_map_bitmap_layout():
    """Bit j of byte i (after the count) is EPC 0x80 + 0x10 j + i, as the standard (and pychonet) read it."""
    epcs = set(range(0x80, 0x90))   # 16 EPCs: the bitmap form
    edt = encode_property_map(epcs)
    assert edt[0] == 16 and all(b == 0x01 for b in edt[1:])
    assert decode_property_map(bytes([2, 0xE4, 0x80])) == {0x80, 0xE4}


def test_known_get_frame_bytes():
    """Get of 0x80 and 0xE4 from the controller 0x05FF01 to the V2H unit 0x027E01, TID 1."""
    frame = Frame(1, EOJ(0x05, 0xFF, 0x01), EOJ.of(0x027E, 1), ESV.GET, (Property(0x80), Property(0xE4)))
    assert frame.encode().hex() == "1081" "0001" "05ff01" "027e01" "62" "02" "8000" "e400"


@given(st.binary(max_size=64))
def test_any_datagram_parses_or_is_a_frame_error(data):
    try:
        frame = Frame.decode(data)
    except FrameError:
        return
    assert frame.encode() == data


@pytest.mark.parametrize("data, why", [
    (b"\x10\x81\x00", "shorter than the 12-byte header"),
    (bytes.fromhex("1082000105ff01027e016201"), "EHD 0x1082"),
    (bytes.fromhex("1081000105ff01027e01620280"), "ends inside property 1"),
    (bytes.fromhex("1081000105ff01027e0172018004"), "runs past the end"),
    (bytes.fromhex("1081000105ff01027e017201800130ff"), "1 bytes after the last property"),
    (bytes.fromhex("1081000105ff01027e016e00"), "SetGet"),
])
def test_malformed_frames_say_why(data, why):
    with pytest.raises(FrameError, match=why):
        Frame.decode(data)


def test_numbers_and_bad_property_maps():
    assert signed(s32(-2500)) == -2500 and unsigned(u32(0xFFFFFFFE)) == 0xFFFFFFFE
    with pytest.raises(FrameError, match="expected 3"):
        decode_property_map(bytes([2, 0x80]))
    with pytest.raises(FrameError, match="its bitmap has 1"):
        decode_property_map(bytes([20, 1]) + bytes(15))
    with pytest.raises(ValueError, match="0x80..0xFF"):
        encode_property_map([0x10])
