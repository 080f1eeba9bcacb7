"""Optional packages: the extras of pyproject.toml that install them, and a clear error without them.

The core install is what the gateway needs (``ems run``, ``plan``, ``check``, ``bill``, ``sim``,
``forecast``, ``status``, ``demo``). ``ems study`` needs the extra ``study`` (Dask, Matplotlib,
tqdm); ``configs/data/make_site_data.py`` needs ``data`` (demandlib). A command that needs a
missing one stops before any work with :class:`MissingExtra` (exit 2), naming the pip command.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from ems.errors import EmsError

#: import name -> the extra of pyproject.toml that installs it (``tests/test_layout.py`` checks these)
OPTIONAL = {"dask": "study", "distributed": "study", "matplotlib": "study", "tqdm": "study", "demandlib": "data"}


class MissingExtra(EmsError):
    """An optional package is not installed; the message names the extra that installs it."""

    def __init__(self, module: str, needed_by: str):
        self.module, self.extra = module, OPTIONAL[module]
        super().__init__(f"{needed_by} needs the optional package {module!r}, not installed: "
                         f"pip install 'v2h-ems[{self.extra}]'")


def missing(modules: Iterable[str]) -> list[str]:
    """The top-level modules of ``modules`` that cannot be imported (not installed)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require(modules: Iterable[str], needed_by: str) -> None:
    """Raise :class:`MissingExtra` for the first of ``modules`` (keys of :data:`OPTIONAL`) not installed."""
    for module in missing(modules):
        raise MissingExtra(module, needed_by)


def from_import_error(exc: ModuleNotFoundError, needed_by: str) -> MissingExtra | None:
    """The :class:`MissingExtra` of an import that failed on an optional package, else None."""
    top = (exc.name or "").split(".")[0]
    return MissingExtra(top, needed_by) if top in OPTIONAL else None
