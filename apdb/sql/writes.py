"""Writing a visit: validated `Batch` objects into the tables, in one transaction.

Two ways rows reach a table:

- PostgreSQL: one binary ``COPY`` of a numpy-built buffer straight into the
  table, inside the visit's transaction (`apdb.sql.pgcopy.encode_rows`);
  a staging table is not needed because every write is a plain insert:
  object versioning is done by the set-based UPDATE/DELETE below;
- SQLite: one DB-API ``executemany`` of a compiled Core ``INSERT``.

DiaObject versioning is shared SQL: close the latest versions of the stored
objects (``validityEndMjdTai = visit time``), drop versions already written at
this same visit time (a re-association within the visit), insert the new ones.
"""

from __future__ import annotations

import psycopg
import sqlalchemy as sa
from psycopg import sql as pgsql

from apdb import schema
from apdb.frames import Batch
from apdb.sql.pgcopy import PG_TYPES, encode_rows, make_field
from apdb.sql.reads import id_filter

__all__ = ["insert_batch", "update_objects"]


def insert_batch(conn: sa.Connection, table: sa.Table, batch: Batch) -> None:
    """Insert every row of ``batch`` into ``table`` (no conflict handling).

    Raises
    ------
    sqlalchemy.exc.IntegrityError
        A row's key already exists.
    """
    if batch.n == 0:
        return
    if conn.dialect.name == "postgresql":
        _insert_postgres(conn, table, batch)
    else:
        _insert_generic(conn, table, batch)


def update_objects(conn: sa.Connection, table: sa.Table, batch: Batch, visit_mjd: float) -> None:
    """Store new DiaObject versions, closing the previous latest ones."""
    if batch.n == 0:
        return
    ids = batch.values["diaObjectId"]
    dialect = conn.dialect.name
    conn.execute(
        sa.update(table)
        .where(
            id_filter(table.c.diaObjectId, ids, dialect),
            table.c.validityEndMjdTai.is_(None),
            table.c.validityStartMjdTai < visit_mjd,
        )
        .values(validityEndMjdTai=visit_mjd)
    )
    conn.execute(
        sa.delete(table).where(
            id_filter(table.c.diaObjectId, ids, dialect),
            table.c.validityStartMjdTai == visit_mjd,
        )
    )
    insert_batch(conn, table, batch)


def _insert_generic(conn: sa.Connection, table: sa.Table, batch: Batch) -> None:
    cols = batch.columns
    stmt = sa.insert(table).values({c: sa.bindparam(c) for c in cols})
    compiled = stmt.compile(dialect=conn.dialect)
    # Positional order of the compiled statement's parameters.
    order = compiled.positiontup or cols
    index = [cols.index(name) for name in order]
    records = batch.records()
    if index != list(range(len(cols))):
        records = [tuple(r[i] for i in index) for r in records]
    conn.exec_driver_sql(compiled.string, records)


def _insert_postgres(conn: sa.Connection, table: sa.Table, batch: Batch) -> None:
    """Binary COPY of the batch straight into ``table``."""
    names = batch.columns
    fields = [
        make_field(batch.values[c], schema.column_info(table.name, c).datatype) for c in names
    ]
    nulls = [batch.null_mask(c) for c in names]
    data = encode_rows(fields, batch.n, nulls)
    target = pgsql.Identifier(table.name)
    if table.schema:
        target = pgsql.Identifier(table.schema, table.name)
    query = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        target, pgsql.SQL(", ").join(map(pgsql.Identifier, names))
    )
    raw = conn.connection.driver_connection
    try:
        with raw.cursor() as cur, cur.copy(query) as copy:
            copy.write(data)
    except psycopg.errors.IntegrityError as exc:
        raise sa.exc.IntegrityError(str(query.as_string(raw)), None, exc) from exc
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError(str(query.as_string(raw)), None, exc) from exc


def pg_type_name(datatype: str) -> str:
    """PostgreSQL type name of a Felis datatype (for documentation/tests)."""
    return PG_TYPES[datatype][1]
