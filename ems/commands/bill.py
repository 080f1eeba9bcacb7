"""``ems bill --tariff T.yaml --meter METER.csv [--peaks-history H.csv] [--json]``: the bill of metered data."""

from __future__ import annotations

import argparse
import json

from ems.billing import check_history_up_to, compute_bill, format_bill, read_meter_csv, read_peaks_history_csv
from ems.tariff import load_tariff
from ems.timegrid import month_of

NAME = "bill"
HELP = "compute the utility bill of metered interval data under a tariff file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments: tariff, meter CSV, optional monthly peaks history, --json."""
    p.add_argument("--tariff", required=True, metavar="T.yaml", help="tariff file (see README 'Tariff files')")
    p.add_argument("--meter", required=True, metavar="METER.csv",
                   help="CSV with timestamp (ISO 8601 with UTC offset, interval start), import_kw and optional "
                        "export_kw; any step that divides 30 minutes")
    p.add_argument("--peaks-history", metavar="H.csv",
                   help="CSV month,peak_kw: the site's real monthly peaks before the data (demand ratchet)")
    p.add_argument("--json", action="store_true", help="print the bill as JSON")


def run(args: argparse.Namespace) -> int:
    """Compute and print the bill; input errors propagate to the CLI (exit 2)."""
    tariff = load_tariff(args.tariff)
    meter = read_meter_csv(args.meter)
    history = read_peaks_history_csv(args.peaks_history) if args.peaks_history else None
    if history:   # past bills: a month after the meter data is a wrong file, not a history
        check_history_up_to(history, month_of(meter.index[-1], tariff.timezone), args.peaks_history,
                            "the meter data's last month")
    bill = compute_bill(meter, tariff, history)
    if args.json:
        print(json.dumps(bill.to_json(), indent=2))
    else:
        step = meter.attrs["step"]
        print(f"Meter: {args.meter}, {meter.index[0].tz_convert(tariff.zone):%Y-%m-%d %H:%M} to "
              f"{(meter.index[-1] + step).tz_convert(tariff.zone):%Y-%m-%d %H:%M} ({tariff.timezone}), "
              f"{step.total_seconds() / 60:g}-minute steps")
        print(format_bill(bill, tariff))
    return 0
