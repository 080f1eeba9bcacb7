"""The layout's import rules and declared dependencies, read from the source with ``ast``.

- ``models`` imports nothing from ``ems`` or ``adapters``; ``adapters`` nothing from ``models``;
- ``ems`` reaches ``models`` only through its package API (``from models import ...``);
- the daemon (``ems.daemon``) and the study (``ems.study``) never import each other;
- every third-party package the three packages import is a declared dependency in pyproject.toml:
  a core one, or for the optional packages of ``ems.extras.OPTIONAL`` (what ``ems study`` and the
  data scripts need) one of the extra that the map names.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from ems.extras import OPTIONAL

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ems", "models", "adapters")


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file; relative imports resolved against its package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                out.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            else:
                out.append((node.lineno, node.module))
    return out


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def offenders(package: str, bad) -> list[str]:
    """``file:line module`` of every import in ``package`` for which ``bad(module, path)`` holds."""
    return [f"{p.relative_to(ROOT)}:{line} {mod}" for p in sources(package) for line, mod in imports(p) if bad(mod, p)]


def test_models_import_nothing_from_the_application_or_the_devices():
    assert offenders("models", lambda m, p: m.split(".")[0] in ("ems", "adapters")) == []


def test_adapters_import_nothing_from_the_optimiser():
    assert offenders("adapters", lambda m, p: m.split(".")[0] == "models") == []


def test_the_application_reaches_models_only_through_its_package_api():
    assert offenders("ems", lambda m, p: m.startswith("models.")) == []


def test_the_daemon_and_the_study_never_import_each_other():
    def crosses(mod: str, path: Path) -> bool:
        part = path.relative_to(ROOT / "ems").parts[0]
        return (part == "daemon" and mod.startswith("ems.study")) or (part == "study" and mod.startswith("ems.daemon"))
    assert offenders("ems", crosses) == []


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def named(specs: list[str]) -> set[str]:
    """Distribution names requirement specs install, normalised (an extra such as
    ``dask[distributed]`` counts its named distribution too)."""
    out = set()
    for spec in specs:
        out.add(re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0])
        extras = re.search(r"\[([^\]]+)\]", spec)
        out |= set(extras.group(1).split(",")) if extras else set()
    return {name.strip().lower().replace("_", "-") for name in out}


def core() -> set[str]:
    """Distribution names the core dependencies install."""
    return named(PROJECT["dependencies"])


def extra(name: str) -> set[str]:
    """Distribution names the extra ``name`` of pyproject.toml installs."""
    return named(PROJECT["optional-dependencies"][name])


def providers(module: str) -> set[str]:
    """Normalised names of the installed distributions that provide the top-level ``module``."""
    return {d.lower().replace("_", "-") for d in packages_distributions().get(module, [])}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_imported_package_is_declared(package):
    missing = set()
    for path in sources(package):
        for line, mod in imports(path):
            top = mod.split(".")[0]
            if top in PACKAGES or top in sys.stdlib_module_names or top == "__future__":
                continue
            names = providers(top)
            if not names & (extra(OPTIONAL[top]) if top in OPTIONAL else core()):
                where = f"the extra {OPTIONAL[top]!r}" if top in OPTIONAL else "the core dependencies"
                missing.add(f"{path.relative_to(ROOT)}:{line} {top} (distribution {sorted(names) or 'unknown'}) not in {where}")
    assert sorted(missing) == [], "imported but not declared in pyproject.toml"


@pytest.mark.parametrize("module", sorted(OPTIONAL))
def test_an_optional_package_is_in_its_extra_and_not_in_the_core(module):
    # an extra make test does not install (``data``: demandlib) provides nothing here: its distribution
    # is named like the module
    names = providers(module) or {module.lower()}
    assert names & extra(OPTIONAL[module]), f"{module}: {sorted(names)} not in the extra {OPTIONAL[module]!r}"
    assert not names & core(), f"{module} is optional (ems.extras.OPTIONAL) but a core dependency"


def test_dev_installs_the_tests_and_the_study():
    assert PROJECT["optional-dependencies"]["dev"] == ["v2h-ems[test,study]"]


def test_the_rules_see_imports():
    """The checks above would catch a breach: the reader finds this file's own imports."""
    found = [m for _, m in imports(Path(__file__))]
    assert "ast" in found and "importlib.metadata" in found
