"""Writing a visit: validated `Batch` objects into the tables, in one transaction.

Two ways rows reach a table:

- PostgreSQL: binary ``COPY`` of a numpy-built buffer into a per-connection
  temporary staging table (``ON COMMIT DELETE ROWS``), then one set-based
  ``INSERT ... SELECT`` that turns the staging encoding (NaN, ``__null``
  flags, padded strings) into NULLs and trimmed strings;
- SQLite: one DB-API ``executemany`` of a compiled Core ``INSERT``.

DiaObject versioning is shared SQL: close the latest versions of the stored
objects (``validityEndMjdTai = visit time``), drop versions already written at
this same visit time (a re-association within the visit), insert the new ones.
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from psycopg import sql as pgsql

from apdb import schema
from apdb.frames import Batch
from apdb.sql.pgcopy import PG_TYPES, encode_rows, make_field
from apdb.sql.reads import id_filter

__all__ = ["insert_batch", "update_objects"]

_STAGE_KEY = "apdb_staging_tables"


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


def _staging_table(conn: sa.Connection, table: sa.Table) -> sa.Table:
    """Return the connection's temporary staging table for ``table``."""
    md = conn.connection.info.setdefault(_STAGE_KEY, sa.MetaData())
    name = f"apdb_stage_{table.name}"
    stage = md.tables.get(name)
    if stage is None:
        cols = []
        for c in schema.table_columns(table.name):
            kind = sa.Text() if c.datatype in ("char", "string", "text") else c.sa_type()
            cols.append(sa.Column(c.name, kind, nullable=True))
            if c.nullable and c.datatype not in ("double", "float"):
                cols.append(sa.Column(c.name + "__null", sa.Boolean(), nullable=True))
        stage = sa.Table(
            name, md, *cols, prefixes=["TEMPORARY"], postgresql_on_commit="DELETE ROWS"
        )
    # Checked every time: a rolled-back transaction also drops a new temp table.
    stage.create(conn, checkfirst=True)
    return stage


def _insert_postgres(conn: sa.Connection, table: sa.Table, batch: Batch) -> None:
    stage = _staging_table(conn, table)
    copy_cols: list[str] = []
    fields = []
    exprs = []
    for name, values in batch.values.items():
        info = schema.column_info(table.name, name)
        nulls = batch.null_mask(name)
        copy_cols.append(name)
        fields.append(make_field(values, info.datatype))
        expr: sa.ColumnElement = stage.c[name]
        if info.datatype in ("char", "string", "text"):
            expr = sa.func.rtrim(expr)
        if nulls is not None:
            if info.datatype in ("double", "float"):
                values = values.copy()
                values[nulls] = np.nan
                fields[-1] = make_field(values, info.datatype)
                expr = sa.func.nullif(expr, sa.literal_column("'NaN'", type_=expr.type))
            else:
                copy_cols.append(name + "__null")
                fields.append(make_field(nulls, "boolean"))
                expr = sa.case((stage.c[name + "__null"], sa.null()), else_=expr)
        exprs.append(sa.cast(expr, table.c[name].type) if nulls is not None else expr)
    data = encode_rows(fields, batch.n)
    raw = conn.connection.driver_connection
    query = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        pgsql.Identifier(stage.name), pgsql.SQL(", ").join(map(pgsql.Identifier, copy_cols))
    )
    with raw.cursor() as cur, cur.copy(query) as copy:
        copy.write(data)
    conn.execute(
        sa.insert(table).from_select(list(batch.values), sa.select(*exprs).select_from(stage))
    )


def pg_type_name(datatype: str) -> str:
    """PostgreSQL type name of a Felis datatype (for documentation/tests)."""
    return PG_TYPES[datatype][1]
