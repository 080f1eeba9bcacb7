"""The README stays true: every config and tariff key is in its reference, its YAML examples load,
and it keeps the two set-up commands and the sections other issues fill in."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from ems.config import SiteConfig
from ems.tariff import Tariff
from ems.yamlio import parse_yaml, validate

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def models_in(model: type[BaseModel]) -> set[type[BaseModel]]:
    """``model`` and every model reachable through its field annotations."""
    found, todo = set(), [model]
    while todo:
        m = todo.pop()
        if m in found:
            continue
        found.add(m)
        for field in m.model_fields.values():
            stack = [field.annotation]
            while stack:
                a = stack.pop()
                if isinstance(a, type) and issubclass(a, BaseModel):
                    todo.append(a)
                stack.extend(typing.get_args(a))
    return found


@pytest.mark.parametrize("root", [SiteConfig, Tariff])
def test_every_key_is_in_the_reference(root):
    missing = sorted(f"{m.__name__}.{name}" for m in models_in(root) for name, f in m.model_fields.items()
                     if not f.exclude and f"| `{name}` |" not in README)
    assert missing == []


def test_tariff_examples_in_the_readme_are_valid():
    blocks = re.findall(r"```yaml\n(.*?)```", README[README.index("## Tariff files"):], re.S)
    whole, basic, blocks_only = blocks[:3]
    tariff = validate(Tariff, parse_yaml(whole, "README")[0], "README")
    assert tariff.name.startswith("Residential") and tariff.export.rate_per_kwh == 16.0
    demand = validate(Tariff, {"name": "d", **parse_yaml(basic, "README")[0], "blocks": [{"rate_per_kwh": 1}]}, "README")
    assert demand.basic.demand_rate() == pytest.approx(1614.86)
    blocks = validate(Tariff, {"name": "b", "basic": {"kind": "fixed", "amount_per_month": 0},
                               **parse_yaml(blocks_only, "README")[0]}, "README")
    assert blocks.block_energy_cost(300) == pytest.approx(10128.0)


def test_setup_commands_and_placeholder_sections():
    assert "make demo" in README and "make test" in README
    for section in ("## Planning", "## Forecasts", "## Devices and simulator", "## Daemon", "## Studies",
                    "## Architecture", "## How bills are computed", "## Tariff files"):
        assert section in README
