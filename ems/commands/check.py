"""``ems check CONFIG...``: validate site files and print a short summary of each."""

from __future__ import annotations

import argparse
import sys

from ems.config import load_site, summary
from ems.devices import check_profiles
from ems.errors import ConfigError

NAME = "check"
HELP = "validate site configuration files; exit 0 if all are valid, 2 otherwise"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments: one or more config paths."""
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="site YAML file(s)")


def run(args: argparse.Namespace) -> int:
    """Check every file; print summaries of the valid ones and all problems of the others."""
    status = 0
    for path in args.configs:
        try:
            cfg = load_site(path)
            check_profiles(cfg)  # register maps named by chargers and meter exist and fit the device
        except ConfigError as exc:
            status = 2
            print(f"{path}: INVALID, {len(exc.problems)} problem(s)", file=sys.stderr)
            for line in exc.lines():
                print(f"  {line}", file=sys.stderr)
            continue
        print(f"{path}: OK")
        print(summary(cfg))
    return status
