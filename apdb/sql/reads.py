"""Read queries: region, object-id and time-window selections.

Statements are built with SQLAlchemy Core.  On PostgreSQL the result is
streamed with ``COPY (SELECT ...) TO STDOUT (FORMAT BINARY)`` and decoded by
numpy (`apdb.sql.pgcopy`): no Python object per value.  On SQLite rows are
fetched through the DB-API.  Both end in `apdb.frames.to_frame`.
"""

from __future__ import annotations

import json
import select

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from apdb import schema
from apdb.frames import to_frame
from apdb.sky import Region
from apdb.sql.pgcopy import PG_TYPES, ReadField, decode_rows

__all__ = ["id_filter", "read_frame", "region_filter"]

# Strings are sent as fixed-width bytes: UTF-8 needs at most 4 bytes a character.
_UTF8_MAX = 4
_ASCII = np.array([chr(i) for i in range(128)], dtype=object)


def copy_out(raw: psycopg.Connection, query: str) -> bytes:
    """Run ``COPY ... TO STDOUT`` and return the whole stream.

    Reads libpq's copy messages in a tight loop: psycopg's `Copy` iterator
    costs tens of microseconds per message, and binary COPY sends one message
    per row.  The connection is left in its transaction, ready for more.
    """
    pgconn = raw.pgconn
    with raw.lock:
        pgconn.send_query(query.encode())
        # psycopg keeps libpq in non-blocking mode: push the query out.
        while pgconn.flush():
            select.select([], [pgconn.socket], [])
        result = pgconn.get_result()
        if result is None or result.status != psycopg.pq.ExecStatus.COPY_OUT:
            message = result.error_message.decode(errors="replace") if result else "no result"
            while pgconn.get_result() is not None:
                pass
            raise psycopg.errors.DatabaseError(message)
        chunks = []
        get = pgconn.get_copy_data
        while True:
            nbytes, data = get(0)
            if nbytes < 0:
                break
            chunks.append(bytes(data))
        error = None
        while (result := pgconn.get_result()) is not None:
            if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                error = result.error_message.decode(errors="replace")
        if error:
            raise psycopg.errors.DatabaseError(error)
    return b"".join(chunks)


def region_filter(table: sa.Table, ranges: np.ndarray) -> sa.ColumnElement[bool]:
    """OR'ed ``pixelId BETWEEN lo AND hi`` over the cover ranges."""
    if len(ranges) == 0:
        return sa.false()
    col = table.c.pixelId
    return sa.or_(*[col.between(int(lo), int(hi)) for lo, hi in ranges])


def id_filter(column: sa.ColumnElement, ids: np.ndarray, dialect: str) -> sa.ColumnElement[bool]:
    """``column`` is one of ``ids``, as one bound parameter whatever the count.

    PostgreSQL gets ``= ANY(:ids)`` with a BIGINT array; SQLite gets
    ``IN (SELECT value FROM json_each(:ids))``.
    """
    ids = np.unique(np.asarray(ids, dtype=np.int64))
    if dialect == "postgresql":
        # The explicit cast matters: given a list, psycopg would send small ids
        # as smallint[], and "bigint = ANY(smallint[])" cannot use the index.
        # One text parameter '{1,2,...}' cast to bigint[]: psycopg's array
        # dumper costs ~10 us per element, this costs a numpy join.
        text = "{" + ",".join(ids.astype(str).tolist()) + "}"
        array = postgresql.ARRAY(sa.BigInteger)
        # Rendered inline (a typed constant the planner can hash), not bound:
        # a bound text parameter is cast at run time and ANY() then scans the
        # array linearly for every row.
        param = sa.cast(sa.bindparam("ids", text, type_=sa.Text, literal_execute=True), array)
        return column == sa.any_(param)
    param = sa.bindparam("ids", json.dumps(ids.tolist()), type_=sa.String)
    each = sa.func.json_each(param).table_valued("value")
    return column.in_(sa.select(each.c.value))


def read_frame(
    conn: sa.Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool] | None,
    region: Region | None = None,
) -> pd.DataFrame:
    """Select every column of ``table`` where ``where`` holds.

    Parameters
    ----------
    conn : `sqlalchemy.Connection`
        Connection (any backend).
    table : `sqlalchemy.Table`
        Table to read.
    where : `sqlalchemy.ColumnElement`, optional
        Filter.
    region : `apdb.sky.Region`, optional
        Exact filter applied to the rows' (ra, dec) after the query.

    Returns
    -------
    frame : `pandas.DataFrame`
        Schema dtypes (`apdb.schema.ColumnInfo.pandas_dtype`).
    """
    infos = schema.table_columns(table.name)
    if conn.dialect.name == "postgresql":
        columns = _read_postgres(conn, table, infos, where)
    else:
        columns = _read_generic(conn, table, infos, where)
    if region is not None and "ra" in columns:
        keep = region.contains(columns["ra"][0], columns["dec"][0])
        if not keep.all():
            columns = {
                k: (v[keep], None if m is None else m[keep]) for k, (v, m) in columns.items()
            }
    return to_frame(table.name, columns)


def _read_generic(conn, table, infos, where) -> dict:
    stmt = sa.select(*[table.c[c.name] for c in infos])
    if where is not None:
        stmt = stmt.where(where)
    rows = conn.execute(stmt).fetchall()
    out = {}
    if not rows:
        for c in infos:
            out[c.name] = (np.zeros(0, dtype=c.numpy_dtype), None)
        return out
    cols = list(zip(*rows, strict=True))
    for c, values in zip(infos, cols, strict=True):
        obj = np.array(values, dtype=object)
        nulls = np.equal(obj, None)
        if c.numpy_dtype.kind == "O":
            out[c.name] = (obj, nulls if nulls.any() else None)
            continue
        if nulls.any():
            obj[nulls] = 0
        out[c.name] = (obj.astype(c.numpy_dtype), nulls if nulls.any() else None)
    return out


def _read_postgres(conn, table, infos, where) -> dict:
    exprs: list[sa.ColumnElement] = []
    fields: list[ReadField] = []
    for c in infos:
        col = table.c[c.name]
        if c.datatype in ("double", "float"):
            nan = sa.literal_column("'NaN'", type_=col.type)
            exprs.append(sa.func.coalesce(col, sa.cast(nan, col.type)))
            fields.append(ReadField(c.name, PG_TYPES[c.datatype][0]))
            continue
        if c.datatype == "char" and c.length == 1:
            # One ASCII character (bands): its code as a smallint, 0 for NULL.
            exprs.append(sa.cast(sa.func.coalesce(sa.func.ascii(col), 0), sa.SmallInteger))
            fields.append(ReadField(c.name, ">i2"))
            continue
        if c.datatype in ("char", "string", "text"):
            width = _UTF8_MAX * (c.length or 256)
            raw = sa.func.convert_to(sa.func.coalesce(sa.cast(col, sa.Text), ""), "UTF8")
            hexed = sa.func.rpad(sa.func.encode(raw, "hex"), 2 * width, "0")
            exprs.append(sa.func.decode(hexed, "hex"))
            fields.append(ReadField(c.name, f"S{width}"))
        elif c.nullable:
            exprs.append(sa.func.coalesce(col, sa.false() if c.datatype == "boolean" else 0))
            fields.append(ReadField(c.name, PG_TYPES[c.datatype][0]))
        else:
            exprs.append(col)
            fields.append(ReadField(c.name, PG_TYPES[c.datatype][0]))
        if c.nullable:
            exprs.append(col.is_(None))
            fields.append(ReadField(c.name + "__null", "u1"))
    stmt = sa.select(*exprs)
    if where is not None:
        stmt = stmt.where(where)
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    raw = conn.connection.driver_connection
    # COPY takes no server-side parameters: psycopg binds them client-side.
    select = psycopg.ClientCursor(raw).mogrify(compiled.string, compiled.params)
    decoded = decode_rows(copy_out(raw, f"COPY ({select}) TO STDOUT (FORMAT BINARY)"), fields)
    out = {}
    for c in infos:
        vals = decoded[c.name]
        nulls = decoded.get(c.name + "__null")
        nulls = nulls.astype(bool) if nulls is not None and nulls.any() else None
        if c.datatype in ("double", "float"):
            nan = np.isnan(vals)
            nulls = nan if nan.any() else None
        elif c.datatype == "boolean":
            vals = vals.astype(bool)
        elif c.datatype == "char" and c.length == 1:
            nulls = vals == 0 if np.any(vals == 0) else None
            vals = _ASCII[np.clip(vals, 0, 127)]
        elif c.datatype in ("char", "string", "text"):
            vals = np.array([b.decode("utf-8") for b in vals], dtype=object)
        out[c.name] = (vals, nulls)
    return out
