"""Number flags: NaN, infinities, out-of-range and non-numbers end in argparse's error, exit 2, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from ems.cli import main

HOME = str(Path(__file__).resolve().parents[2] / "configs" / "home-v2h.yaml")

CASES = [
    (["plan", "--config", HOME, "--hours", "nan"], "--hours", "'nan'"),
    (["plan", "--config", HOME, "--hours", "0"], "--hours", "> 0"),
    (["plan", "--config", HOME, "--hours", "1e9"], "--hours", "<= 744"),
    (["forecast", "--config", HOME, "--hours", "inf"], "--hours", "'inf'"),
    (["forecast", "--config", HOME, "--stride-hours", "-6"], "--stride-hours", "'-6'"),
    (["sim", "--config", HOME, "--port", "70000"], "--port", "<= 65535"),
    (["sim", "--config", HOME, "--initial-soc", "500"], "--initial-soc", "<= 100"),
    (["sim", "--config", HOME, "--status-every", "nan"], "--status-every", "'nan'"),
    (["run", "--config", HOME, "--speed", "inf"], "--speed", "'inf'"),
    (["run", "--config", HOME, "--speed", "1e9"], "--speed", "<= 100000"),
    (["run", "--config", HOME, "--dispatch-interval", "0"], "--dispatch-interval", "> 0"),
    (["status", "--config", HOME, "--events", "1e20"], "--events", "'1e20'"),
    (["study", "--config", HOME, "--workers", "0"], "--workers", ">= 1"),
    (["demo", "--speed", "-1"], "--speed", "> 0"),
]


@pytest.mark.parametrize("argv, flag, shown", CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES])
def test_a_bad_number_flag_is_refused_before_any_work(argv, flag, shown, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # nothing may be written: the working directory stays empty
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert f"argument {flag}:" in err and shown in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
