"""Read queries: region, object-id and time-window selections.

Statements are built with SQLAlchemy Core.  On PostgreSQL the result is
streamed with ``COPY (SELECT ...) TO STDOUT (FORMAT BINARY)`` and decoded by
numpy (`apdb.sql.pgcopy`): no Python object per value.  On SQLite rows are
fetched through the DB-API.  Both end in `apdb.frames.to_frame`.
"""

from __future__ import annotations

import json
import numbers
import select
from collections.abc import Iterable

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from apdb import schema
from apdb.errors import InvalidTimeError, UnknownObjectError
from apdb.frames import Batch, to_frame
from apdb.sky import Region
from apdb.sql.pgcopy import PG_TYPES, ReadField, decode_rows

__all__ = ["check_object_refs", "history_window", "id_filter", "read_frame", "region_filter"]

DAYS_PER_MONTH = 30.0

# Strings are sent as fixed-width bytes: UTF-8 needs at most 4 bytes a character.
_UTF8_MAX = 4
_ASCII = np.array([chr(i) for i in range(128)], dtype=object)


def copy_out(raw: psycopg.Connection, query: str) -> bytes:
    """Run ``COPY ... TO STDOUT`` and return the whole stream.

    Reads libpq's copy messages in a tight loop: psycopg's `Copy` iterator
    costs tens of microseconds per message, and binary COPY sends one message
    per row.  Waiting for the server (a query blocked on a lock, a slow
    plan, the next network packet) happens in `select.select`, which releases
    the GIL: libpq's blocking calls would hold it and freeze every thread of
    the process.  The connection is left in its transaction, ready for more.

    Raises
    ------
    psycopg.Error
        The server's error (class of its SQLSTATE), or `psycopg.OperationalError`
        when the connection is lost.
    """
    pgconn = raw.pgconn
    with raw.lock:
        pgconn.send_query(query.encode())
        # psycopg keeps libpq in non-blocking mode: push the query out.
        while pgconn.flush():
            select.select([], [pgconn.socket], [])
        result = _next_result(pgconn)
        if result is None or result.status != psycopg.pq.ExecStatus.COPY_OUT:
            error = _copy_error(pgconn, result)
            while _next_result(pgconn) is not None:
                pass
            raise error
        chunks = []
        get = pgconn.get_copy_data
        while True:
            nbytes, data = get(1)  # 1: never block; 0 means "wait for more"
            if nbytes > 0:
                chunks.append(bytes(data))
            elif nbytes == 0:
                # Read what the socket already holds; wait only when it is empty.
                pgconn.consume_input()
                nbytes, data = get(1)
                if nbytes > 0:
                    chunks.append(bytes(data))
                elif nbytes == 0:
                    _wait_readable(pgconn)
                else:
                    break
            else:
                break
        error = None
        if nbytes == -2:  # the stream broke (e.g. the server closed the connection)
            error = _copy_error(pgconn, None)
        while (result := _next_result(pgconn)) is not None:
            if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                error = _copy_error(pgconn, result)
        if error is not None:
            raise error
    return b"".join(chunks)


def _wait_readable(pgconn: psycopg.pq.abc.PGconn) -> None:
    """Wait (GIL released) until the server sends something, and read it in."""
    select.select([pgconn.socket], [], [])
    pgconn.consume_input()


def _next_result(pgconn: psycopg.pq.abc.PGconn) -> psycopg.pq.abc.PGresult | None:
    """`PGconn.get_result` without blocking in libpq."""
    pgconn.consume_input()
    while pgconn.is_busy():
        _wait_readable(pgconn)
    return pgconn.get_result()


def _copy_error(pgconn: psycopg.pq.abc.PGconn, result: object | None) -> psycopg.Error:
    """Return the psycopg exception of a failed COPY, with the class of its SQLSTATE.

    A lost connection (no result, or a result without SQLSTATE) is a
    `psycopg.OperationalError`, as psycopg itself raises it.
    """
    if result is None:
        message = pgconn.get_error_message().decode(errors="replace").strip()
        return psycopg.OperationalError(message or "the connection was lost during COPY")
    message = result.error_message.decode(errors="replace").strip()
    state = result.error_field(psycopg.pq.DiagnosticField.SQLSTATE)
    if not state:
        return psycopg.OperationalError(message)
    cls = psycopg.errors.lookup(state.decode())
    return cls(message)


def history_window(
    table: str, visit_mjd: float, months: object, start_mjd: float | None = None
) -> tuple[float, float]:
    """Return the ``[start, end)`` MJD TAI window of a history read.

    Parameters
    ----------
    table : `str`
        Table read (for messages).
    visit_mjd : `float`
        Visit time: the window's end.
    months : `int`
        Window length in months of `DAYS_PER_MONTH` days (used when
        ``start_mjd`` is `None`).
    start_mjd : `float`, optional
        Explicit window start; overrides ``months``.

    Raises
    ------
    InvalidTimeError
        ``months`` is negative or not an integer, or ``start_mjd`` is after
        the visit time.
    """
    if start_mjd is not None:
        if not np.isfinite(start_mjd) or start_mjd > visit_mjd:
            raise InvalidTimeError(
                table,
                f"history window start {start_mjd:.6f} is after the visit time {visit_mjd:.6f}",
            )
        return float(start_mjd), visit_mjd
    if isinstance(months, bool) or not isinstance(months, numbers.Integral):
        raise InvalidTimeError(table, f"history window months must be an integer, got {months!r}")
    if months < 0:
        raise InvalidTimeError(table, f"history window of {months} months is negative")
    return visit_mjd - DAYS_PER_MONTH * int(months), visit_mjd


def check_object_refs(
    conn: sa.Connection, objects: sa.Table, batches: Iterable[Batch], known: np.ndarray
) -> None:
    """Refuse sources whose ``diaObjectId`` is neither stored nor in ``known``.

    Run inside the store's transaction, so that the answer holds when the
    sources are written.  Any stored version of an object counts.

    Parameters
    ----------
    conn : `sqlalchemy.Connection`
        Connection of the write transaction.
    objects : `sqlalchemy.Table`
        The DiaObject table.
    batches : iterable of `apdb.frames.Batch`
        Source batches (DiaSource, DiaForcedSource) to check; NULL
        ``diaObjectId`` values (sources of Solar System objects) are skipped.
    known : `numpy.ndarray`
        ``diaObjectId`` values of the DiaObjects stored by the same call.

    Raises
    ------
    UnknownObjectError
        Ids found neither in ``known`` nor in the table; names the first
        table that has them.
    """
    wanted: dict[str, np.ndarray] = {}
    for batch in batches:
        if batch.n == 0 or "diaObjectId" not in batch.values:
            continue
        ids = batch.values["diaObjectId"]
        nulls = batch.null_mask("diaObjectId")
        if nulls is not None:
            ids = ids[~nulls]
        ids = np.setdiff1d(ids.astype(np.int64), np.asarray(known, dtype=np.int64))
        if ids.size:
            wanted[batch.table] = ids
    if not wanted:
        return
    needed = np.unique(np.concatenate(list(wanted.values())))
    column = objects.c.diaObjectId
    stmt = sa.select(column).distinct().where(id_filter(column, needed, conn.dialect.name))
    found = np.fromiter((r[0] for r in conn.execute(stmt)), dtype=np.int64)
    for table, ids in wanted.items():
        missing = np.setdiff1d(ids, found)
        if missing.size:
            raise UnknownObjectError(table, missing.tolist())


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
