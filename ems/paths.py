"""Where the project's files are: the example sites, and the daemon's state directory.

- :func:`example_configs`: the example site files with their tariffs and data. An installed wheel
  carries the repository's ``configs/`` as the package data ``ems/examples`` (``setup.py``); a
  source checkout (also an editable install) has them in ``configs/`` next to the package.
- :func:`state_dir` and :func:`default_database`: the daemon's database when the site file names
  none (``daemon.database``): a file named after the site in ``$STATE_DIRECTORY`` (what systemd
  sets for ``StateDirectory=``, ``/var/lib/ems`` in ``deploy/ems.service``), else
  ``$XDG_STATE_HOME/ems``, else ``~/.local/state/ems``; never the working directory (``/`` under a
  service manager). The store creates the directory when it opens the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path


def example_configs(package: Traversable | None = None) -> Path:
    """The directory of the example site files: ``ems/examples`` of the installed package, else the
    source checkout's ``configs/``. ``package``: the ``ems`` package directory (default: this one)."""
    package = resources.files("ems") if package is None else package
    installed = package / "examples"
    if installed.is_dir():
        return Path(str(installed))
    return Path(str(package)).resolve().parent / "configs"


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """The daemon's state directory (not created here); ``env`` defaults to the process environment."""
    env = os.environ if env is None else env
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])  # systemd lists one per StateDirectory= entry
    xdg = env.get("XDG_STATE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state"  # a relative one is ignored (XDG spec)
    return base / "ems"


def site_slug(name: str) -> str:
    """A file name from a site name: ``"Office V2B (Nagoya)"`` -> ``"office-v2b-nagoya"`` (letters of any
    script kept: ``"名古屋 本社"`` -> ``"名古屋-本社"``)."""
    return re.sub(r"[\W_]+", "-", name.lower()).strip("-") or "site"


def default_database(site_name: str, env: Mapping[str, str] | None = None) -> str:
    """The database of a site whose file names none: ``<state dir>/<site slug>.sqlite``."""
    return str(state_dir(env) / f"{site_slug(site_name)}.sqlite")
