"""Read queries: region, object-id and time-window selections.

Statements are built with SQLAlchemy Core; the wide select list of each
table is compiled once (`apdb.sql.read_plan`), only the ``WHERE`` clause per
call.  On PostgreSQL the result is streamed with ``COPY (SELECT ...) TO STDOUT
(FORMAT BINARY)`` and decoded by numpy (`apdb.sql.pgcopy`): no Python object
per value.  On SQLite rows come from the raw `sqlite3` cursor and are turned
into columns by numpy.  Both end in `apdb.frames.to_frame`.
"""

from __future__ import annotations

import functools
import json
import numbers
import select
from collections.abc import Iterable

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from apdb.errors import InvalidTimeError, UnknownObjectError
from apdb.frames import Batch, to_frame
from apdb.sky import Region
from apdb.sql.read_plan import read_plan

__all__ = ["check_object_refs", "history_window", "id_filter", "read_frame", "region_filter"]

DAYS_PER_MONTH = 30.0


def copy_out(raw: psycopg.Connection, query: str) -> bytes:
    """Run ``COPY ... TO STDOUT`` and return the whole stream.

    ``query`` may hold ``SELECT`` statements before and after the COPY (one
    simple-protocol query, one round trip): their results are skipped.

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
        start_copy_out(pgconn, query)
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
        finish_copy_out(pgconn, nbytes)
    return b"".join(chunks)


def start_copy_out(pgconn: psycopg.pq.abc.PGconn, query: str) -> None:
    """Send ``query`` and wait until its ``COPY ... TO STDOUT`` starts sending rows.

    Results of statements before the COPY in the same query (planner
    settings) are skipped.

    Raises
    ------
    psycopg.Error
        The query failed before the COPY (class of its SQLSTATE).
    """
    pgconn.send_query(query.encode())
    # psycopg keeps libpq in non-blocking mode: push the query out.
    while pgconn.flush():
        select.select([], [pgconn.socket], [])
    result = _next_result(pgconn)
    while result is not None and result.status == psycopg.pq.ExecStatus.TUPLES_OK:
        result = _next_result(pgconn)
    if result is None or result.status != psycopg.pq.ExecStatus.COPY_OUT:
        error = _copy_error(pgconn, result)
        while _next_result(pgconn) is not None:
            pass
        raise error


def finish_copy_out(pgconn: psycopg.pq.abc.PGconn, nbytes: int) -> None:
    """After the last ``get_copy_data`` (which returned ``nbytes`` < 0): read the results.

    Raises
    ------
    psycopg.Error
        The COPY or a statement after it failed, or the stream broke
        (``nbytes`` == -2: `psycopg.OperationalError` when the connection is lost).
    """
    error = None
    if nbytes == -2:  # the stream broke (e.g. the server closed the connection)
        error = _copy_error(pgconn, None)
    while (result := _next_result(pgconn)) is not None:
        if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
            error = _copy_error(pgconn, result)
    if error is not None:
        raise error


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
    """OR'ed ``pixelId BETWEEN lo AND hi`` over the cover ranges.

    The clause is a text template with ``2 n`` bound parameters, built once
    per table and range count (`_ranges_template`): composing and compiling
    ``n`` SQLAlchemy ``BETWEEN`` expressions per read cost more client CPU
    than the rest of a detector-sized DiaObject read.
    """
    if len(ranges) == 0:
        return sa.false()
    bounds = np.asarray(ranges, dtype=np.int64).reshape(-1, 2)
    template = _ranges_template(table, len(bounds))
    values = {f"pix_{i}": int(v) for i, v in enumerate(bounds.ravel().tolist())}
    return template.bindparams(**values)


@functools.lru_cache(maxsize=512)
def _ranges_template(table: sa.Table, n: int) -> sa.TextClause:
    """``("T"."pixelId" BETWEEN :pix_0 AND :pix_1 OR ...)`` of ``n`` ranges (bigint binds)."""
    col = table.c.pixelId
    name = ".".join(x for x in (table.schema, table.name, col.name) if x)
    # The column's quoted name from SQLAlchemy (the same for every dialect we use).
    quoted = str(col.compile(compile_kwargs={"include_table": True}))
    assert quoted.replace('"', "") == name, quoted  # never free text
    text = " OR ".join(f"{quoted} BETWEEN :pix_{2 * i} AND :pix_{2 * i + 1}" for i in range(n))
    binds = [sa.bindparam(f"pix_{i}", type_=sa.BigInteger) for i in range(2 * n)]
    return sa.text(f"({text})").bindparams(*binds)


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
    columns = read_plan(table, conn.dialect).read(conn, where)
    if region is not None and "ra" in columns:
        keep = region.contains(columns["ra"][0], columns["dec"][0])
        if not keep.all():
            columns = {
                k: (v[keep], None if m is None else m[keep]) for k, (v, m) in columns.items()
            }
    return to_frame(table.name, columns)
