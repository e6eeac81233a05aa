"""``apdb downgrade``: migrate an APDB back to a revision."""

from __future__ import annotations

import argparse

from apdb.cli._common import add_database_args, migrate_to

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb downgrade``."""
    add_database_args(parser, required=True)
    parser.add_argument("revision", help="target revision ('base' removes every table)")


def main(args: argparse.Namespace) -> int:
    """Downgrade and print the new revision."""
    return migrate_to(args, "downgrade")
