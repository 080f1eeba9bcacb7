"""The ``ems`` command line: one sub-command per module in :mod:`ems.commands`.

Each command module defines ``add_arguments(parser)`` and ``run(args) -> int``; its one-line help is
in :data:`COMMANDS` here, so that ``ems --help`` lists every command without importing any. Only the
module of the command given is imported, and the heavy libraries (pyomo, scipy, pvlib, pandas ...)
only by the commands that use them: ``ems --help`` and ``ems --version`` start in a fraction of
a second (``tests/ems/test_cli.py`` checks that they import none of them).

Exit status: 0 success, 2 invalid input (config or data errors, printed with file and line) or a
missing optional package (named with the extra that installs it), 130 interrupted (Ctrl-C, one
line, no traceback), 1 any other failure.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Iterable
from types import ModuleType

from ems.errors import InputError
from ems.extras import MissingExtra, from_import_error

#: every sub-command and its one-line help, in the order ``ems --help`` lists them
COMMANDS = {
    "check": "validate site configuration files; exit 0 if all are valid, 2 otherwise",
    "bill": "compute the utility bill of metered interval data under a tariff file",
    "plan": "compute one optimised charge/discharge schedule for a site and print or save it",
    "forecast": "print the PV and load forecast of a site, or backtest the forecasts on its history",
    "sim": "serve the site's simulated V2H units and meter over Modbus TCP (until Ctrl-C)",
    "run": "run the daemon: plan every step, dispatch setpoints, guard the demand peak, outage mode, store",
    "status": "show whether the daemon is running, the last plan, each unit and car (SOC, target, departure), the "
              "overrides in force, this month's peak and contract kW (with where each ratchet month's peak came from: "
              "bill history or metered), and recent events",
    "study": "simulate a year (or any span) of a site's data under tariffs and control strategies; write a report",
    "demo": "check the example configs, bill the example household year, run the daemon on the simulated sites for a day",
}


def version() -> str:
    """The installed distribution's version; the package's own when run from a source tree."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    try:
        return dist_version("v2h-ems")
    except PackageNotFoundError:
        from ems import __version__
        return __version__


class _VersionAction(argparse.Action):
    """``--version``: print ``ems <version>`` and exit (the metadata is read only when asked)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object):
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"ems {version()}")
        parser.exit()


def command_module(name: str) -> ModuleType:
    """The module of sub-command ``name`` (imported now, with what it needs)."""
    return importlib.import_module(f"ems.commands.{name}")


def command_named(argv: Iterable[str]) -> str | None:
    """The sub-command named in ``argv``: its first word that is not an option (the options before
    the command, ``-v`` and ``--version``, take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(full: Iterable[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The argument parser; the commands in ``full`` get their own arguments (which imports their
    modules), the others only their name and help."""
    full = set(full)
    parser = argparse.ArgumentParser(prog="ems", description="V2H/V2B energy-management optimizer")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, summary in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        if name in full:
            command_module(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ems`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    name = command_named(argv)
    try:
        args = build_parser([name] if name in COMMANDS else []).parse_args(argv)
        level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return int(command_module(args.command).run(args))
    except InputError as exc:
        print(f"error: {len(exc.problems)} problem(s):", file=sys.stderr)
        for line in exc.lines():
            print(f"  {line}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        missing = from_import_error(exc, f"ems {name}")
        if missing is None:
            raise
        print(f"error: {missing}", file=sys.stderr)
        return 2
    except MissingExtra as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ems{' ' + name if name in COMMANDS else ''}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
