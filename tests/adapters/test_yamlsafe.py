"""The bounded YAML reader: what plain YAML keeps working, what is refused, in bounded time and memory."""

from __future__ import annotations

import os
import time
import tracemalloc

import pytest

from adapters.yamlsafe import MAX_BYTES, InputFileError, parse, read_text

BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))


def test_plain_yaml_anchors_merge_keys_integer_keys_and_str_tags_still_read():
    node, data = parse("base: &b {x: 1}\nmore: {<<: *b, y: 2}\nenum: {0: OFF, 1: 'ON'}\nclock: !!str 18:30\n"
                       "list: [*b, *b]\n", "f.yaml")
    assert data == {"base": {"x": 1}, "more": {"x": 1, "y": 2}, "enum": {0: False, 1: "ON"}, "clock": "18:30",
                    "list": [{"x": 1}, {"x": 1}]}
    assert node.start_mark.line == 0


@pytest.mark.parametrize("text, line, message", [
    (BOMB, 6, "alias bomb"),
    ("a: &a {x: 1, y: 2}\n" + "".join(f"{chr(98 + i)}: &{chr(98 + i)} {{<<: [*{chr(97 + i)}, *{chr(97 + i)}]}}\n"
                                      for i in range(20)), None, "more than 100,000 values"),
    ("a: &a [1, *a]\n", 1, "recursive alias"),
    ("a: " + "[" * 100_000, 1, "nested deeper than 64 levels"),
    ("a: &a " + "[" * 40 + "1" + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n", 2, "through aliases"),
    ("a: &a 1\nb: [" + ",".join(["*a"] * 101) + "]\n", 2, "more than 100 aliases"),
    ("a: !!python/object/apply:os.system ['true']\n", 1, "python/object/apply"),
    ("a: !custom x\n", 1, "'!custom'"),
    ("a: !!timestamp 2024-01-01\n", 1, "timestamp"),
    ("? [a, b]\n: 1\n", 1, "a key must be a plain value"),
    ("a: 2024-02-30\n", 1, "'2024-02-30'"),
    ("a: " + "7" * 5000 + "\n", 1, "4300 digits"),
    ("a: {<<: 3}\n", 1, "merging"),
    ("a: b\x07\n", 1, "U+0007"),
    ("a: 1\n---\nb: 2\n", 2, "YAML syntax error"),
])
def test_hostile_yaml_is_refused_at_its_line_fast_and_in_little_memory(text, line, message):
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(InputFileError) as err:
            parse(text, "f.yaml")
        took, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message in err.value.message and err.value.where == "f.yaml"
    if line is not None:
        assert err.value.line == line
    assert took < 1.0 and peak < 50 * 2**20


def test_only_regular_files_of_bounded_size_are_read(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.yaml"
    big.write_text("a: 1\n" + "#" * MAX_BYTES)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"a: 1\nb: caf\xe9\n")
    for path, message in ((fifo, "not a regular file"), ("/dev/zero", "not a regular file"), (tmp_path, "a directory"),
                          (big, "larger than 256 KiB"), (tmp_path / "nope.yaml", "file not found"),
                          (bad, "not UTF-8")):
        with pytest.raises(InputFileError, match=message) as err:
            read_text(path)
        assert err.value.where == str(path)
    with pytest.raises(InputFileError) as err:
        read_text(bad)
    assert err.value.line == 2 and "0xe9" in err.value.message
    ok = tmp_path / "ok.yaml"
    ok.write_text("a: 1\n")
    assert read_text(ok) == "a: 1\n"
