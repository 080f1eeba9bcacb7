"""The command line's footprint: ``--version``, lazy imports (``ems --help`` and ``ems check`` load no
solver, forecast or data-frame library), Ctrl-C (exit 130, one line, no traceback, also from the
daemon's worker process) and the optional extras (a clear error naming the extra, exit 2)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ems
import ems.commands.check
from ems.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
#: what a gateway's commands load only when they need it (the planner, forecasts, the store, devices, the study)
HEAVY = ("pyomo", "scipy", "pvlib", "pandas", "dask", "distributed", "highspy", "matplotlib", "sqlalchemy", "tqdm")


def loaded_after(code: str) -> list[str]:
    """The HEAVY modules a fresh interpreter has loaded after running ``code`` (SystemExit ignored)."""
    script = (f"import json, sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\n"
              f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_version_prints_the_installed_distributions_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"ems {importlib.metadata.version('v2h-ems')}\n"


def test_version_falls_back_to_the_packages_own_when_not_installed(capsys, monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out == f"ems {ems.__version__}\n"


def test_every_command_module_is_listed_and_every_listed_command_exists():
    modules = {p.stem for p in (ROOT / "ems" / "commands").glob("*.py")} - {"__init__", "argtypes"}
    assert set(COMMANDS) == modules


def test_help_and_version_import_no_heavy_library():
    assert loaded_after("from ems.cli import main; main(['--help'])") == []
    assert loaded_after("from ems.cli import main; main(['--version'])") == []


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_commands_help_imports_no_solver_nor_forecast_library(command):
    assert not {"pyomo", "scipy", "pvlib", "highspy", "dask", "matplotlib"} & set(
        loaded_after(f"from ems.cli import main; main([{command!r}, '--help'])"))


def test_check_validates_the_examples_without_pandas_nor_the_solver():
    configs = [str(p) for p in sorted(CONFIGS.glob("*.yaml"))]
    assert loaded_after(f"from ems.cli import main; assert main(['check', *{configs!r}]) == 0") == []


def test_a_keyboard_interrupt_in_a_command_exits_130_with_one_line(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(ems.commands.check, "run", interrupted)
    assert main(["check", str(CONFIGS / "home-v2h.yaml")]) == 130
    out = capsys.readouterr()
    assert out.err == "ems check: interrupted\n" and out.out == ""


def test_ctrl_c_during_the_demos_daemon_is_one_line_and_exit_130():
    """A real SIGINT to the whole process group (what Ctrl-C sends) while the daemon starts its solver
    process: the command says one line, and the worker, still importing, prints no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "ems.cli", "demo", "--site", "home"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in proc.stdout:   # the bill is printed; the daemon and its solver process start now
            if line.startswith("The daemon (ems run)"):
                break
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130
    assert err == "ems demo: interrupted\n"


def test_study_without_its_extra_stops_before_any_work_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # not installed, as in a core install
    out = tmp_path / "study"
    assert main(["study", "--config", str(CONFIGS / "home-v2h.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'matplotlib'" in err and "pip install 'v2h-ems[study]'" in err and "Traceback" not in err
    assert not out.exists()


def test_an_import_of_an_optional_package_anywhere_is_reported_with_its_extra(capsys, monkeypatch):
    def imports_dask(args):
        raise ModuleNotFoundError("No module named 'distributed'", name="distributed")
    monkeypatch.setattr(ems.commands.check, "run", imports_dask)
    assert main(["check", "x.yaml"]) == 2
    assert capsys.readouterr().err == ("error: ems check needs the optional package 'distributed', not installed: "
                                       "pip install 'v2h-ems[study]'\n")


def test_a_missing_core_module_is_not_mistaken_for_an_extra(monkeypatch):
    def broken(args):
        raise ModuleNotFoundError("No module named 'pandas'", name="pandas")
    monkeypatch.setattr(ems.commands.check, "run", broken)
    with pytest.raises(ModuleNotFoundError):
        main(["check", "x.yaml"])
