"""``apdb-pipeline run DATA_DIR``: the whole per-visit chain over a data directory."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["configure_parser", "main", "DEFAULT_APDB_URL"]

DEFAULT_APDB_URL = "sqlite:///apdb.sqlite3"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb-pipeline run``."""
    parser.add_argument("data_dir", type=Path, help="data directory (layout: docs/data_layout.md)")
    parser.add_argument(
        "--apdb-url",
        default=DEFAULT_APDB_URL,
        help=f"APDB database URL, created if empty (default: {DEFAULT_APDB_URL}, "
        "a SQLite file in the working directory)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where outputs and alerts go (default: DATA_DIR/outputs)",
    )
    parser.add_argument(
        "--visit", type=int, action="append", default=None, help="process only this visit"
    )
    parser.add_argument(
        "--kafka",
        action="store_true",
        help="also produce alerts to Kafka (AP_KAFKA_SERVER, AP_KAFKA_TOPIC, ...)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")


def open_apdb(url: str):
    """Open the APDB at ``url``, creating its schema when the database is empty."""
    from apdb import Apdb

    return Apdb.create(url, exist_ok=True)


def main(args: argparse.Namespace) -> int:
    """Run the pipeline; exit status 1 if any visit failed or none can run, 2 on bad arguments."""
    from apdb.errors import ApdbError
    from tasks.data.layout import DataLayout
    from tasks.pipeline.check import layout_report
    from tasks.pipeline.runner import run_pipeline
    from tasks.pipeline.visit import ProcessVisitConfig

    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not args.data_dir.is_dir():
        print(f"error: {args.data_dir} is not a directory", file=sys.stderr)
        return 2
    layout = DataLayout(args.data_dir, output_root=args.output_dir)
    report = layout_report(layout)
    if not report.runnable:
        print(report.format(), file=sys.stderr)
        print(f"error: nothing in {args.data_dir} can run", file=sys.stderr)
        return 1
    config = ProcessVisitConfig()
    config.packageAlerts.alertWriteLocation = str(layout.output_root / "alerts")
    config.packageAlerts.doProduceAlerts = bool(args.kafka)
    try:
        apdb = open_apdb(args.apdb_url)
    except ApdbError as exc:
        print(f"error: cannot open the APDB {args.apdb_url}: {exc}", file=sys.stderr)
        return 2
    with apdb:
        summary = run_pipeline(
            layout, apdb, config, visits=args.visit, progress=not args.no_progress
        )
    print(summary.format())
    print(f"alerts: {config.packageAlerts.alertWriteLocation}")
    print(f"APDB:   {args.apdb_url}")
    return 1 if summary.failed else 0
