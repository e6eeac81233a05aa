"""``apdb info``: row counts, schema revision and frozen config of an APDB."""

from __future__ import annotations

import argparse

from apdb.cli._common import add_database_args, config_from_args

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb info``."""
    add_database_args(parser)


def main(args: argparse.Namespace) -> int:
    """Open the APDB (checking revision and config) and describe it."""
    from apdb import Apdb

    config = config_from_args(args)
    with Apdb.from_config(config) as db:
        print(f"database: {config.db_url}")
        print(f"schema revision: {db.schema_version()}")
        for name, value in db.metadata_values().items():
            print(f"  {name}: {value}")
        print("rows:")
        for table, count in db.row_counts().items():
            print(f"  {table:<20s} {count:>10d}")
        print("config:")
        print("  " + config.to_yaml().strip().replace("\n", "\n  "))
    return 0
