"""`ems check` on the shipped examples and on a broken file."""

from __future__ import annotations

import shutil
from pathlib import Path

from ems.cli import main
from tests.ems.daemon_helpers import site_copy


def test_example_configs_are_valid(configs_dir, capsys):
    paths = sorted(str(p) for p in configs_dir.glob("*.yaml"))
    assert len(paths) >= 3
    assert main(["check", *paths]) == 0
    out = capsys.readouterr().out
    assert out.count(": OK") == len(paths)


def test_broken_config_exit_2_with_line(configs_dir, tmp_path, capsys):
    shutil.copytree(configs_dir / "tariffs", tmp_path / "tariffs")
    text = (configs_dir / "office-v2b.yaml").read_text().replace("import_limit_kw: 120", "import_limit_kwh: 120")
    bad = tmp_path / "office.yaml"
    bad.write_text(text)
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "import_limit_kwh" in row)
    assert f"office.yaml:{line}: grid.import_limit_kwh: unknown key; did you mean 'import_limit_kw'?" in err


def test_device_addresses_distinct_pass_shared_or_broadcast_are_refused_by_check_and_run(tmp_path, capsys):
    """Two controllers of one Modbus unit would fight over its setpoint; unit 0 over TCP is a broadcast."""
    def site(name: str, meter_unit: int) -> Path:
        (tmp_path / name).mkdir()
        return site_copy(tmp_path / name, **{r"adapter: \{kind: simulator\}": (
            "adapter: {kind: modbus_tcp, host: 192.0.2.10, unit_id: 1}\n"
            f"meter:\n  adapter: {{kind: modbus_tcp, host: 192.0.2.10, port: 502, unit_id: {meter_unit}}}")})
    assert main(["check", str(site("ok", 2))]) == 0
    capsys.readouterr()
    for name, unit, message in (("shared", 1, "the same device address as chargers[0]"), ("broadcast", 0, "broadcast")):
        path = site(name, unit)
        assert main(["check", str(path)]) == 2
        err = capsys.readouterr().err
        line = next(i for i, row in enumerate(path.read_text().splitlines(), 1) if row.startswith("  adapter:"))
        assert f"{path}:{line}: meter.adapter.unit_id" in err and message in err
        assert main(["run", "--config", str(path)]) == 2             # the daemon refuses it too, before any work
        assert message in capsys.readouterr().err
        assert not (tmp_path / name / "ems.sqlite").exists()
