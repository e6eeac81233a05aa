"""Arguments shared by the ``apdb`` subcommands."""

from __future__ import annotations

import argparse
import os

import sqlalchemy as sa

from apdb.config import ApdbConfig
from apdb.errors import ApdbConfigError, ApdbNotFoundError

__all__ = ["add_database_args", "config_from_args", "engine_from_args"]


def add_database_args(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """Add ``URL`` (optional unless ``required``: ``$APDB_URL``) and ``--config FILE``."""
    parser.add_argument(
        "url",
        nargs=None if required else "?",
        help="database URL, e.g. sqlite:///apdb.sqlite3 or "
        "postgresql+psycopg://user@host:5432/apdb (default: $APDB_URL, or the config's)",
    )
    parser.add_argument("--config", metavar="FILE", help="APDB config YAML file")


def config_from_args(args: argparse.Namespace) -> ApdbConfig:
    """Return the ``--config`` config with the URL argument (or $APDB_URL) applied."""
    config = ApdbConfig.load(args.config) if args.config else None
    url = args.url or os.environ.get("APDB_URL")
    if config is None:
        if not url:
            raise ApdbConfigError("give a database URL, --config FILE, or set APDB_URL")
        return ApdbConfig(db_url=url)
    return config.model_copy(update={"db_url": url}) if url else config


def engine_from_args(args: argparse.Namespace) -> sa.Engine:
    """Return an engine on the database (for migration commands; no schema check).

    Database errors of the engine are raised as `apdb.errors.ApdbError`
    subclasses (`apdb.sql.errors_map`), so a command reports them in one line.

    Raises
    ------
    ApdbNotFoundError
        The URL names an SQLite file that does not exist (it is not created).
    """
    from sqlalchemy import event

    from apdb.sql.engine import make_engine, sqlite_path
    from apdb.sql.errors_map import database_error

    engine = make_engine(config_from_args(args))
    path = sqlite_path(engine.url)
    if path is not None and not os.path.isfile(path):
        engine.dispose()
        raise ApdbNotFoundError(
            f"SQLite file {path} does not exist, so it holds no APDB; create it with `apdb create`"
        )
    what = getattr(args, "command", None) or "database"

    @event.listens_for(engine, "handle_error")
    def _translate(context) -> None:
        exc = context.original_exception
        raise database_error(exc, what) from exc

    return engine
