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
    parser.add_argument(
        "--backend",
        choices=("sql", "citus"),
        help="'citus': distribute the big tables on a Citus cluster (URL of the coordinator; "
        "the citus extension must be in the database on every node); default: the config's, "
        "else 'sql'",
    )


def main(args: argparse.Namespace) -> int:
    """Create the schema and report it."""
    from pydantic import ValidationError

    from apdb import Apdb, ApdbConfig
    from apdb.config import validation_reasons
    from apdb.errors import ApdbConfigError

    config = config_from_args(args)
    if args.backend:
        try:
            config = ApdbConfig.model_validate({**config.model_dump(), "backend": args.backend})
        except ValidationError as exc:
            raise ApdbConfigError(f"invalid APDB config: {validation_reasons(exc)}") from exc
    with Apdb.create(config, exist_ok=args.exist_ok) as db:
        print(f"APDB ready at {config.db_url} (schema revision {db.schema_version()})")
        for table, count in db.row_counts().items():
            print(f"  {table:<20s} {count:>10d} rows")
    if args.write_config:
        config.save(args.write_config)
        print(f"config written to {args.write_config}")
    return 0
