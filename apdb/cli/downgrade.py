"""``apdb downgrade``: migrate an APDB back to a revision, or print the SQL."""

from __future__ import annotations

import argparse

from apdb.cli._common import add_database_args
from apdb.cli.upgrade import add_migration_args, run_migration

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb downgrade``."""
    add_database_args(parser)
    parser.add_argument(
        "revision",
        nargs="?",
        help="target revision ('base' removes every table); with --sql, FROM:TO "
        "(FROM defaults to head)",
    )
    add_migration_args(parser)


def main(args: argparse.Namespace) -> int:
    """Downgrade (or print the SQL) and print the new revision."""
    return run_migration(args, "downgrade")
