"""Creating, checking and describing an APDB database."""

from __future__ import annotations

import datetime
import os

import sqlalchemy as sa

from apdb import migrate
from apdb.config import ApdbConfig
from apdb.errors import (
    ApdbConfigError,
    ApdbConfigMismatchError,
    ApdbError,
    ApdbNotFoundError,
    ApdbSchemaVersionError,
)
from apdb.schema import RUBIN_SCHEMA_VERSION, ApdbTables
from apdb.sql import citus
from apdb.sql.engine import sqlite_path
from apdb.sql.errors_map import database_error, translate_errors

__all__ = ["check_database", "create_schema", "has_apdb", "read_metadata", "row_counts"]


def has_apdb(conn: sa.Connection) -> bool:
    """Whether the database holds APDB tables."""
    insp = sa.inspect(conn)
    return insp.has_table(ApdbTables.metadata.value) or insp.has_table(ApdbTables.DiaObject.value)


def create_schema(engine: sa.Engine, md: sa.MetaData, config: ApdbConfig) -> None:
    """Create every table at the head revision and record the frozen settings.

    Raises
    ------
    ApdbError
        The database already holds an APDB.
    """
    try:
        with engine.begin() as conn:
            if has_apdb(conn):
                raise ApdbError(f"{engine.url.render_as_string()} already holds an APDB")
            if config.backend == "citus":
                check_citus(conn)
            # Through the migrations, so that every database is a migrated one.  The
            # frozen settings are recorded right after the first revision (which
            # creates the metadata table): later ones read them (0004: partition
            # order, Citus distribution).
            migrate.upgrade(conn, "0001")
            rows = {
                "version:rubin_schema": RUBIN_SCHEMA_VERSION,
                "created": datetime.datetime.now(datetime.UTC).isoformat(),
                **config.creation_settings(),
            }
            conn.execute(
                sa.insert(md.tables[ApdbTables.metadata.value]),
                [{"name": k, "value": v} for k, v in rows.items()],
            )
            migrate.upgrade(conn, "head")
    except sa.exc.SQLAlchemyError as exc:
        raise database_error(exc, "create the APDB") from exc


def check_citus(conn: sa.Connection) -> None:
    """Refuse to create a Citus APDB in a database without the citus extension.

    Raises
    ------
    ApdbConfigError
        Not PostgreSQL, or no ``citus`` extension in the database.
    """
    if conn.dialect.name != "postgresql":
        raise ApdbConfigError("backend 'citus' needs a PostgreSQL URL (the Citus coordinator)")
    if not citus.has_citus(conn):
        raise ApdbConfigError(
            f"backend 'citus': the database {conn.engine.url.database!r} has no citus "
            f"extension; run CREATE EXTENSION citus in it on every node and register the "
            f"workers (citus_add_node) first"
        )


def read_metadata(conn: sa.Connection, md: sa.MetaData) -> dict[str, str]:
    """Return the ``metadata`` table as a dict."""
    table = md.tables[ApdbTables.metadata.value]
    return {r.name: r.value for r in conn.execute(sa.select(table.c.name, table.c.value))}


def check_database(engine: sa.Engine, md: sa.MetaData, config: ApdbConfig) -> dict[str, str]:
    """Refuse a database that is missing, at another revision, or configured otherwise.

    Returns
    -------
    metadata : `dict` [`str`, `str`]
        The ``metadata`` table (frozen settings such as ``config:backend``).

    Raises
    ------
    ApdbNotFoundError
        No such SQLite file, or no APDB in the database.
    ApdbSchemaVersionError, ApdbConfigMismatchError
        Other revision or settings.
    ApdbDatabaseError, ApdbPermissionError
        The database cannot be read (server down, not a database, no privilege).
    """
    path = sqlite_path(engine.url)
    if path is not None and not os.path.isfile(path):
        raise ApdbNotFoundError(
            f"SQLite file {path} does not exist, so it holds no APDB (opening never creates "
            f"it); create it with `apdb create` or Apdb.create()"
        )
    with translate_errors("open the APDB"), engine.connect() as conn:
        if not has_apdb(conn):
            raise ApdbNotFoundError(
                f"{engine.url.render_as_string()} holds no APDB; create it with "
                f"`apdb create` or Apdb.create()"
            )
        current = migrate.current_revision(conn)
        head = migrate.head_revision()
        if current != head:
            raise ApdbSchemaVersionError(current, head)
        stored = read_metadata(conn, md)
    diff = {
        k: (v, stored.get(k)) for k, v in config.frozen_settings().items() if stored.get(k) != v
    }
    if diff:
        raise ApdbConfigMismatchError(diff)
    return stored


def row_counts(conn: sa.Connection, md: sa.MetaData) -> dict[str, int]:
    """Rows per table, plus ``DiaObject(latest)`` for the latest object versions."""
    counts = {}
    for name in ApdbTables:
        table = md.tables[name.value]
        counts[name.value] = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
    obj = md.tables[ApdbTables.DiaObject.value]
    counts["DiaObject(latest)"] = conn.execute(
        sa.select(sa.func.count()).where(obj.c.validityEndMjdTai.is_(None))
    ).scalar()
    return counts
