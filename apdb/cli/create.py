"""``apdb create``: create an APDB."""

from __future__ import annotations

import argparse

from apdb.cli._common import add_database_args, config_from_args

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb create``."""
    add_database_args(parser)
    parser.add_argument(
        "--exist-ok", action="store_true", help="open an existing APDB instead of failing"
    )
    parser.add_argument("--write-config", metavar="FILE", help="save the config as YAML")


def main(args: argparse.Namespace) -> int:
    """Create the schema and report it."""
    from apdb import Apdb

    config = config_from_args(args)
    with Apdb.create(config, exist_ok=args.exist_ok) as db:
        print(f"APDB ready at {config.db_url} (schema revision {db.schema_version()})")
        for table, count in db.row_counts().items():
            print(f"  {table:<20s} {count:>10d} rows")
    if args.write_config:
        config.save(args.write_config)
        print(f"config written to {args.write_config}")
    return 0
