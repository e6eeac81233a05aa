"""``apdb-pipeline alerts FILE.avro``: a readable summary of an Avro alert file."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["configure_parser", "main"]

DEFAULT_LIMIT = 20


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb-pipeline alerts``."""
    parser.add_argument("path", type=Path, metavar="FILE.avro", help="an alert file")
    parser.add_argument(
        "--all", action="store_true", help=f"list every alert (default: the first {DEFAULT_LIMIT})"
    )


def main(args: argparse.Namespace) -> int:
    """Print the summary (alerts by increasing diaSourceId)."""
    from tasks.alerts.summary import summarize_alerts

    print(summarize_alerts(args.path, limit=None if args.all else DEFAULT_LIMIT))
    return 0
