"""``apdb current``: print the schema revision of an APDB."""

from __future__ import annotations

import argparse

from apdb.cli._common import add_database_args, engine_from_args

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``apdb current``."""
    add_database_args(parser)


def main(args: argparse.Namespace) -> int:
    """Print the current revision and whether it is the head."""
    from apdb import migrate

    engine = engine_from_args(args)
    try:
        with engine.connect() as conn:
            current = migrate.current_revision(conn)
    finally:
        engine.dispose()
    head = migrate.head_revision()
    print(f"{current} ({'head' if current == head else f'head is {head}'})")
    return 0
