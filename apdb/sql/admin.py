"""Creating, checking and describing an APDB database."""

from __future__ import annotations

import datetime

import sqlalchemy as sa

from apdb import migrate
from apdb.config import ApdbConfig
from apdb.errors import (
    ApdbConfigMismatchError,
    ApdbDatabaseError,
    ApdbError,
    ApdbNotFoundError,
    ApdbSchemaVersionError,
)
from apdb.schema import RUBIN_SCHEMA_VERSION, ApdbTables

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
            # Through the migrations, so that every database is a migrated one.
            migrate.upgrade(conn, "head")
            rows = {
                "version:rubin_schema": RUBIN_SCHEMA_VERSION,
                "created": datetime.datetime.now(datetime.UTC).isoformat(),
                **config.frozen_settings(),
            }
            conn.execute(
                sa.insert(md.tables[ApdbTables.metadata.value]),
                [{"name": k, "value": v} for k, v in rows.items()],
            )
    except sa.exc.SQLAlchemyError as exc:
        raise ApdbDatabaseError(f"cannot create the APDB: {exc}") from exc


def read_metadata(conn: sa.Connection, md: sa.MetaData) -> dict[str, str]:
    """Return the ``metadata`` table as a dict."""
    table = md.tables[ApdbTables.metadata.value]
    return {r.name: r.value for r in conn.execute(sa.select(table.c.name, table.c.value))}


def check_database(engine: sa.Engine, md: sa.MetaData, config: ApdbConfig) -> None:
    """Refuse a database that is missing, at another revision, or configured otherwise.

    Raises
    ------
    ApdbNotFoundError, ApdbSchemaVersionError, ApdbConfigMismatchError
    """
    try:
        with engine.connect() as conn:
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
    except sa.exc.OperationalError as exc:
        raise ApdbDatabaseError(f"cannot connect to the APDB: {exc}") from exc
    diff = {
        k: (v, stored.get(k)) for k, v in config.frozen_settings().items() if stored.get(k) != v
    }
    if diff:
        raise ApdbConfigMismatchError(diff)


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
