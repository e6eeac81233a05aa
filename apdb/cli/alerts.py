"""``apdb alerts FILE.avro``: a readable summary of an Avro alert file."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb alerts``."""
    parser.add_argument("path", type=Path, metavar="FILE.avro", help="an alert file")
    parser.add_argument("--all", action="store_true", help="list every alert (default: 20)")


def main(args: argparse.Namespace) -> int:
    """Print the summary."""
    from apdb.analysis import summarize_alerts

    print(summarize_alerts(args.path, limit=None if args.all else 20))
    return 0
