"""History chunks on SQL: written by the store, read by history reads, rebuilt by updates.

The format and the filters are in `apdb.history_chunks`; this module is the
SQL around them:

- `write_batch`: the chunks of a store's DiaSource or DiaForcedSource batch,
  inserted in the store's transaction;
- `read_chunks`: the chunks of a region's cells and a time window;
- `patch_rows`: after an update operation changed rows (reassign,
  withdraw), their new values are copied into their chunks in the same
  transaction (`_rebuild_key` rewrites a chunk from the row tables when it
  lacks a row);
- `fill_missing`: the chunks of rows stored without them (revision 0008).
"""

from __future__ import annotations

import functools

import numpy as np
import sqlalchemy as sa
from psycopg import sql as psql

from apdb import history_chunks as hc
from apdb.frames import Batch
from apdb.schema import ColumnInfo, column_info
from apdb.sql.read_plan import read_plan
from apdb.sql.reads import id_filter

__all__ = [
    "CHUNKS_KEY",
    "HistoryWriter",
    "fill_missing",
    "patch_rows",
    "read_chunks",
    "write_batch",
]


CHUNKS_KEY = "history:chunks"
"""`metadata` key set to ``false`` in a database whose rows have no history
chunks (a PPDB: the replicator copies rows, not chunks); reads there use the rows."""


class HistoryWriter:
    """The chunk writes of one APDB: after stores and update operations.

    Parameters
    ----------
    md : `sqlalchemy.MetaData`
        The APDB schema (with `apdb.schema.CHUNK_TABLE`).
    index_order : `int`
        HEALPix order of the ``pixelId`` column.
    """

    def __init__(self, md: sa.MetaData, index_order: int):
        self.md = md
        self.chunks = md.tables[hc.CHUNK_TABLE]
        self.index_order = index_order

    def record_store(self, conn: sa.Connection, *batches: Batch) -> None:
        """Write the chunks of a store's DiaSource and DiaForcedSource batches."""
        for batch in batches:
            if batch.table in hc.HISTORY_TABLES:
                write_batch(conn, self.chunks, batch, self.index_order)

    def record_update(
        self,
        conn: sa.Connection,
        table: str,
        where: sa.ColumnElement[bool],
        columns: tuple[str, ...],
    ) -> None:
        """Bring the chunks of the rows of ``table`` matching ``where`` up to date.

        Called after an update operation changed ``columns`` of those rows,
        in its transaction (`patch_rows`).
        """
        if table in hc.HISTORY_TABLES:
            patch_rows(conn, self.chunks, self.md.tables[table], where, columns, self.index_order)


def _batch_columns(batch: Batch) -> hc.Columns:
    return {name: (vals, batch.nulls.get(name)) for name, vals in batch.values.items()}


def _insert(conn: sa.Connection, chunks: sa.Table, table: str, rows: list[hc.ChunkRow]) -> None:
    if rows:
        conn.execute(sa.insert(chunks), [r.row(table) for r in rows])


def write_batch(conn: sa.Connection, chunks: sa.Table, batch: Batch, index_order: int) -> None:
    """Insert the chunks of a stored batch (DiaSource or DiaForcedSource)."""
    if batch.n == 0:
        return
    _insert(
        conn, chunks, batch.table, hc.make_chunks(batch.table, _batch_columns(batch), index_order)
    )


def read_chunks(
    conn: sa.Connection,
    chunks: sa.Table,
    table: str,
    cells: np.ndarray,
    start: float,
    end: float,
    partitions: sa.ColumnElement[bool] | None = None,
    min_rows_per_chunk: int = 0,
) -> list[bytes] | None:
    """Return the chunks of ``table`` in ``cells`` with rows that may fall in ``[start, end)``.

    With ``min_rows_per_chunk``, a first query counts the chunks and their
    rows; `None` is returned (read the rows instead) when they hold fewer
    rows than that on average (`apdb.history_chunks.MIN_ROWS_PER_CHUNK`).
    """
    if len(cells) == 0:
        return []
    if conn.dialect.name == "postgresql" and partitions is None:
        return _read_chunks_pg(conn, chunks, table, cells, start, end, min_rows_per_chunk)
    c = chunks.c
    where = [
        c.tableName == table,
        id_filter(c.cellId, cells, conn.dialect.name),
        c.midpointMaxMjdTai >= start,
        c.midpointMinMjdTai < end,
    ]
    if partitions is not None:
        where.append(partitions)
    if min_rows_per_chunk > 0:
        stats = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(c.nRows), 0))
        n, rows = conn.execute(stats.where(*where)).one()
        if n == 0:
            return []
        if rows < min_rows_per_chunk * n:
            return None
    stmt = sa.select(c.data).where(*where)
    if conn.dialect.name == "postgresql":
        # Binary results: the bytea values arrive as they are (no hex text).
        text = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        params = text.construct_params()
        cursor = conn.connection.driver_connection.cursor(binary=True)
        try:
            cursor.execute(str(text), params)
            return [bytes(r[0]) for r in cursor.fetchall()]
        finally:
            cursor.close()
    return [bytes(r[0]) for r in conn.execute(stmt)]


@functools.lru_cache(maxsize=16)
def _pg_chunk_queries(schema: str | None, name: str) -> tuple[psql.Composed, psql.Composed]:
    """Return the statistics and data queries of `read_chunks` on PostgreSQL (composed once)."""
    table = psql.Identifier(schema, name) if schema else psql.Identifier(name)
    where = psql.SQL(
        'WHERE "tableName" = %(t)s AND "cellId" = ANY(%(cells)s::integer[])'
        ' AND "midpointMaxMjdTai" >= %(start)s AND "midpointMinMjdTai" < %(end)s'
    )
    stats = psql.SQL('SELECT count(*), coalesce(sum("nRows"), 0) FROM {} ').format(table)
    data = psql.SQL("SELECT data FROM {} ").format(table)
    return stats + where, data + where


def _read_chunks_pg(
    conn: sa.Connection,
    chunks: sa.Table,
    table: str,
    cells: np.ndarray,
    start: float,
    end: float,
    min_rows_per_chunk: int,
) -> list[bytes] | None:
    """`read_chunks` on PostgreSQL: fixed statements, binary bytea results (no hex text)."""
    stats, data = _pg_chunk_queries(chunks.schema, chunks.name)
    params = {"t": table, "cells": cells.astype(int).tolist(), "start": start, "end": end}
    raw = conn.connection.driver_connection
    with raw.cursor(binary=True) as cursor:
        if min_rows_per_chunk > 0:
            n, rows = cursor.execute(stats, params).fetchone()
            if n == 0:
                return []
            if rows < min_rows_per_chunk * n:
                return None
        return [bytes(r[0]) for r in cursor.execute(data, params).fetchall()]


_ID_COLUMNS = {"DiaSource": "diaSourceId", "DiaForcedSource": "diaForcedSourceId"}


def _column_values(info: ColumnInfo, values: list) -> tuple[np.ndarray, np.ndarray | None]:
    """Return a column of DB-API values as ``(values, NULL mask)`` (NULL placeholders 0)."""
    obj = np.array(values, dtype=object)
    nulls = np.equal(obj, None)
    obj[nulls] = 0
    return obj.astype(info.numpy_dtype), nulls if nulls.any() else None


def patch_rows(
    conn: sa.Connection,
    chunks: sa.Table,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    columns: tuple[str, ...],
    index_order: int,
) -> int:
    """Copy the current ``columns`` of the rows matching ``where`` into their chunks.

    The rows' new values are read (a narrow select), the chunks holding
    them are decoded, changed and written back (`apdb.history_chunks.patch`):
    an update operation costs the bytes of the chunks it touches, not a
    read of their rows.  A chunk that lacks one of the rows is rebuilt from
    the rows; a visit-detector without chunks (stored before revision 0008,
    see `fill_missing`) is left alone.  Returns the number of chunks written.
    """
    key = _ID_COLUMNS[table.name]
    t = table.c
    stmt = sa.select(
        t.partitionId, t.pixelId, t.visit, t.detector, t[key], *[t[c] for c in columns]
    )
    rows = conn.execute(stmt.where(where)).fetchall()
    if not rows:
        return 0
    cols = list(zip(*rows, strict=True))
    keys = np.array(cols[:4], dtype=np.int64).T
    keys[:, 1] = hc.cells_of(keys[:, 1], index_order)
    ids = np.array(cols[4], dtype=np.int64)
    values = {
        name: _column_values(column_info(table.name, name), list(cols[5 + i]))
        for i, name in enumerate(columns)
    }
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    c = chunks.c
    near = (
        c.tableName == table.name,
        # (two id_filter clauses would share one parameter name)
        c.visit.in_(np.unique(uniq[:, 2]).tolist()),
        c.cellId.in_(np.unique(uniq[:, 1]).tolist()),
    )
    # Lock the chunks first (a no-op update): a concurrent update operation
    # patching the same chunk waits, then reads this one's result.
    conn.execute(sa.update(chunks).where(*near).values(nRows=c.nRows))
    stmt = sa.select(c.partitionId, c.cellId, c.visit, c.detector, c.data).where(*near)
    found = conn.execute(stmt).fetchall()
    blobs = {tuple(r[:4]): bytes(r[4]) for r in found}
    updated = []
    for g, k in enumerate(map(tuple, uniq.tolist())):
        if k not in blobs:
            continue
        sel = inverse == g
        changes = {n: (v[sel], None if m is None else m[sel]) for n, (v, m) in values.items()}
        data = hc.patch(table.name, blobs[k], key, ids[sel], changes)
        if data is None:
            _rebuild_key(conn, chunks, table, k, index_order)
        else:
            updated.append(dict(zip(("p", "c", "v", "d"), k, strict=True), new_data=data))
    if updated:
        stmt = (
            sa.update(chunks)
            .where(
                c.partitionId == sa.bindparam("p"),
                c.tableName == table.name,
                c.cellId == sa.bindparam("c"),
                c.visit == sa.bindparam("v"),
                c.detector == sa.bindparam("d"),
            )
            .values(data=sa.bindparam("new_data"))
        )
        conn.execute(stmt, updated)
    return len(uniq)


def _rebuild_key(
    conn: sa.Connection,
    chunks: sa.Table,
    table: sa.Table,
    key: tuple[int, int, int, int],
    index_order: int,
) -> None:
    partition, cell, visit, detector = key
    c = chunks.c
    conn.execute(
        sa.delete(chunks).where(
            c.partitionId == partition,
            c.tableName == table.name,
            c.cellId == cell,
            c.visit == visit,
            c.detector == detector,
        )
    )
    lo, hi = hc.cell_range(cell, index_order)
    t = table.c
    columns = read_plan(table, conn.dialect).read(
        conn,
        sa.and_(
            t.partitionId == partition,
            t.visit == visit,
            t.detector == detector,
            t.pixelId.between(lo, hi),
        ),
    )
    _insert(conn, chunks, table.name, hc.make_chunks(table.name, columns, index_order))


def fill_missing(conn: sa.Connection, md: sa.MetaData, index_order: int) -> int:
    """Write the chunks of every visit-detector that has rows but no chunk; return their number.

    A store writes its rows and chunks in one transaction, so a visit-detector
    has either all its chunks or none: the ones without are those stored
    before revision 0008, or by the previous code while it ran.  One
    visit-detector at a time, so memory stays that of one visit.
    """
    chunks = md.tables[hc.CHUNK_TABLE]
    n = 0
    for name in hc.HISTORY_TABLES:
        table = md.tables[name]
        pairs = conn.execute(sa.select(table.c.visit, table.c.detector).distinct()).fetchall()
        done = conn.execute(
            sa.select(chunks.c.visit, chunks.c.detector)
            .distinct()
            .where(chunks.c.tableName == name)
        ).fetchall()
        for visit, detector in sorted(set(map(tuple, pairs)) - set(map(tuple, done))):
            where = sa.and_(table.c.visit == visit, table.c.detector == detector)
            columns = read_plan(table, conn.dialect).read(conn, where)
            rows = hc.make_chunks(name, columns, index_order)
            _insert(conn, chunks, name, rows)
            n += len(rows)
    return n
