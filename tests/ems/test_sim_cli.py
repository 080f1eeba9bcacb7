"""``ems sim`` as a user runs it: a separate process serving Modbus TCP on 127.0.0.1."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from ems.cli import main

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]


def ems(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ems.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_sim_serves_the_configured_site(configs_dir):
    p = ems("sim", "--config", str(configs_dir / "shelter.yaml"), "--port", "0", "--speed", "60",
            "--duration", "2", "--status-every", "0.5", "--start", "2025-01-06T18:00+09:00")
    try:
        first = p.stdout.readline()
        m = re.match(r"simulator listening on 127\.0\.0\.1:(\d+) \(unit 1 = v2h1, unit 240 = meter\); speed x60$",
                     first.strip())
        assert m, first
        client = ModbusTcpClient("127.0.0.1", port=int(m.group(1)), timeout=2)
        try:
            assert client.connect()
            rr = client.read_holding_registers(40000, count=4, device_id=1)
            assert rr.registers == [0x5375, 0x6E53, 1, 66]
            rr = client.read_holding_registers(40375, count=1, device_id=1)
            assert rr.registers == [3]  # 802 State CONNECTED: the municipal car is plugged in (Monday 17:00 onwards)
        finally:
            client.close()
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    status = [line for line in out.splitlines() if line.startswith("Mon 2025-01-06 ")]
    assert status and re.match(r"Mon 2025-01-06 18:0\d:\d\d JST \| grid up \| meter [+-]\d+\.\d\d kW \| "
                               r"v2h1\[1\] municipal 55\.0 % discharge 0\.00 kW$", status[0]), status
    assert out.strip().endswith("simulator stopped (meter unit 240)")


def test_sim_bad_profile_exits_2_naming_file_and_line(tmp_path, configs_dir, capsys):
    text = (configs_dir / "shelter.yaml").read_text().replace("adapter: {kind: simulator}",
                                                               "adapter: {kind: simulator, profile: sunspek}")
    path = tmp_path / "shelter.yaml"
    path.write_text(text.replace("tariff: tariffs/", f"tariff: {configs_dir}/tariffs/")
                    .replace("history_csv: data/", f"history_csv: {configs_dir}/data/"))
    assert main(["sim", "--config", str(path), "--port", "0", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "sunspek" in t)
    assert f"{path}:{line}: chargers[0].adapter.profile = 'sunspek':" in err
    assert "did you mean 'sunspec'?" in err


def test_sim_reports_a_busy_port(configs_dir, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["sim", "--config", str(configs_dir / "shelter.yaml"), "--port", str(port), "--duration", "1"]) == 1
    assert f"error: cannot serve 127.0.0.1:{port}:" in capsys.readouterr().err


def test_sim_rejects_a_bad_speed(configs_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sim", "--config", str(configs_dir / "shelter.yaml"), "--speed", "0"])
    assert exc.value.code == 2 and "argument --speed: must be a finite number > 0" in capsys.readouterr().err
