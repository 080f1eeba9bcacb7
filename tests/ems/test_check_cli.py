"""`ems check` on the shipped examples and on a broken file."""

from __future__ import annotations

import shutil

from ems.cli import main


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
