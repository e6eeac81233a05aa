"""``apdb upgrade``: migrate an APDB forward."""

from __future__ import annotations

import argparse

from apdb.cli._common import add_database_args, migrate_to

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb upgrade``."""
    add_database_args(parser, required=True)
    parser.add_argument(
        "revision", nargs="?", default="head", help="target revision (default: head)"
    )


def main(args: argparse.Namespace) -> int:
    """Upgrade and print the new revision."""
    return migrate_to(args, "upgrade")
