"""The ``ems`` command line: one sub-command per module in :mod:`ems.commands`.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Exit status: 0 success, 2 invalid input (config or data errors, printed with file and line),
1 any other failure.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ems.errors import InputError

COMMANDS = ("check", "bill", "plan", "forecast", "sim", "run", "status", "study", "demo")


def _load_commands() -> dict[str, object]:
    """Import the command modules that exist (each command lives in its own module)."""
    found = {}
    for name in COMMANDS:
        try:
            found[name] = importlib.import_module(f"ems.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ems.commands.{name}":
                raise
    return found


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    """The argument parser with every available sub-command."""
    commands = _load_commands()
    parser = argparse.ArgumentParser(prog="ems", description="V2H/V2B energy-management optimizer")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, mod in commands.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)  # type: ignore[attr-defined]
        mod.add_arguments(p)  # type: ignore[attr-defined]
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ems`` console script."""
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(commands[args.command].run(args))  # type: ignore[attr-defined]
    except InputError as exc:
        print(f"error: {len(exc.problems)} problem(s):", file=sys.stderr)
        for line in exc.lines():
            print(f"  {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
