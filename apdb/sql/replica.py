"""Replica chunks on SQL: recording an APDB's changes and reading them back.

`ReplicaWriter` is called inside the write transactions of `apdb.sql.ApdbSql`
when ``config:replication.enabled`` is ``true``: a store records the keys of
the rows it inserted or modified (new DiaObject versions and the versions it
closed, DiaSources, SSSources, DiaForcedSources); an update operation records
one *update record* holding the resulting values of the columns it changed,
read back from the rows inside the same transaction.  Records carry values,
not deltas (``nDiaSources = 7``, not ``+1``), so applying a record twice
changes nothing.  Records are ordered by (``updateTimeNs``, ``updateOrder``):
two operations touching the same rows hold the same row/advisory locks, so
their wall-clock order after their writes is their commit order.

`ApdbReplicaSql` reads the chunks back (`get_replica_chunks`,
`get_table_data_chunks`, `get_update_record_chunks`) and deletes replicated
ones (`delete_replica_chunks`); see `apdb.replica` for the data classes.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid

import numpy as np
import pandas as pd
import sqlalchemy as sa
from psycopg import sql as pgsql
from sqlalchemy.dialects import postgresql, sqlite

from apdb import schema
from apdb.frames import Batch
from apdb.replica import ReplicaChunk, UpdateRecord
from apdb.replica_schema import ReplicaTables, chunk_key_columns, chunk_table_columns
from apdb.sql.citus import partition_filter
from apdb.sql.pgcopy import encode_rows, make_field
from apdb.sql.reads import id_filter, read_frame

__all__ = [
    "REPLICATED_TABLES",
    "ApdbReplicaSql",
    "ReplicaWriter",
    "read_batch",
    "read_update_records",
    "rows_in_chunks",
]

REPLICATED_TABLES = ("DiaObject", "DiaSource", "DiaForcedSource", "SSSource", "SSObject")
"""The tables whose rows replica chunks record (by key), in replication order."""


def _insert_ignore(conn: sa.Connection, table: sa.Table) -> sa.Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def copy_keys(conn: sa.Connection, table: sa.Table, columns: dict[str, np.ndarray]) -> None:
    """Insert key rows (integer columns): binary COPY on PostgreSQL, executemany on SQLite."""
    n = len(next(iter(columns.values())))
    if n == 0:
        return
    if conn.dialect.name == "postgresql":
        fields = [
            make_field(v.astype(np.int32), "int")
            if isinstance(table.c[name].type, sa.Integer)
            and not isinstance(table.c[name].type, sa.BigInteger)
            else make_field(v.astype(np.int64), "long")
            for name, v in columns.items()
        ]
        data = encode_rows(fields, n, [None] * len(fields))
        query = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            pgsql.Identifier(table.name), pgsql.SQL(", ").join(map(pgsql.Identifier, columns))
        )
        raw = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy(query) as copy:
            copy.write(data)
        return
    names = list(columns)
    rows = [
        dict(zip(names, r, strict=True))
        for r in zip(*[v.tolist() for v in columns.values()], strict=True)
    ]
    conn.execute(sa.insert(table), rows)


class ReplicaWriter:
    """Records the changes of write transactions into the current replica chunk.

    Parameters
    ----------
    md : `sqlalchemy.MetaData`
        The APDB schema (with the replica tables).
    chunk_seconds : `int`
        Length of a chunk.
    """

    def __init__(self, md: sa.MetaData, chunk_seconds: int):
        self._md = md
        self.chunk_seconds = int(chunk_seconds)
        self._order = itertools.count()
        self._writer_id = uuid.uuid4().hex[:24]

    def _table(self, name: str) -> sa.Table:
        return self._md.tables[name]

    def current_chunk(self, now: float | None = None) -> int:
        """Id of the chunk of ``now`` (Unix seconds; default: the clock)."""
        t = time.time() if now is None else now
        return int(t // self.chunk_seconds) * self.chunk_seconds

    def _open_chunk(self, conn: sa.Connection) -> int:
        chunk = self.current_chunk()
        table = self._table(ReplicaTables.ApdbReplicaChunks)
        conn.execute(_insert_ignore(conn, table).values(chunkId=chunk, createdTime=time.time()))
        return chunk

    def record_store(
        self,
        conn: sa.Connection,
        object_ids: np.ndarray,
        visit_mjd: float,
        sources: Batch,
        forced: Batch,
        ss_sources: Batch,
        partitions: np.ndarray | None = None,
    ) -> None:
        """Record the partitions and keys of the rows a store wrote (call after its writes).

        DiaObject: every version of the stored objects that starts at the
        visit (the new ones) or ends at it (the ones the store closed); on
        Citus ``partitions`` (those of the objects) prunes that read to their
        shards.
        """
        if not (len(object_ids) or sources.n or forced.n or ss_sources.n):
            return
        chunk = self._open_chunk(conn)
        dialect = conn.dialect.name
        if len(object_ids):
            obj = self._table("DiaObject")
            start, end = obj.c.validityStartMjdTai, obj.c.validityEndMjdTai
            cols = chunk_table_columns("DiaObject")
            select = sa.select(sa.literal(chunk, sa.BigInteger), *[obj.c[c] for c in cols]).where(
                id_filter(obj.c.diaObjectId, object_ids, dialect),
                sa.or_(start == visit_mjd, end == visit_mjd),
            )
            if partitions is not None:
                select = select.where(partition_filter(obj.c.partitionId, partitions))
            target = self._table(ReplicaTables.DiaObjectChunks)
            conn.execute(_insert_ignore(conn, target).from_select(["chunkId", *cols], select))
        found = [b for b in (sources, ss_sources) if b.n]
        if found:
            keys = np.unique(
                np.stack(
                    [
                        np.concatenate([b.values[c].astype(np.int64) for b in found])
                        for c in ("partitionId", "diaSourceId")
                    ],
                    axis=1,
                ),
                axis=0,
            )
            self._copy_chunk_keys(conn, "DiaSource", chunk, keys.T)
        if forced.n:
            keys = [forced.values[c].astype(np.int64) for c in ("partitionId", "diaForcedSourceId")]
            self._copy_chunk_keys(conn, "DiaForcedSource", chunk, keys)

    def _copy_chunk_keys(
        self, conn: sa.Connection, table: str, chunk: int, keys: list[np.ndarray] | np.ndarray
    ) -> None:
        name, _ = chunk_key_columns(table)
        cols = chunk_table_columns(table)
        values = {"chunkId": np.full(len(keys[0]), chunk, np.int64)}
        values.update(zip(cols, keys, strict=True))
        copy_keys(conn, self._table(name), values)

    def record_ss_objects(self, conn: sa.Connection, ss_object_ids: np.ndarray) -> None:
        """Record the ids of the SSObjects a `store_ss_objects` wrote (same transaction)."""
        ids = np.unique(np.asarray(ss_object_ids, np.int64))
        if ids.size == 0:
            return
        chunk = self._open_chunk(conn)
        # An SSObject written twice in a chunk is recorded once (few rows: no COPY).
        table = self._table(ReplicaTables.SSObjectChunks)
        conn.execute(
            _insert_ignore(conn, table), [{"chunkId": chunk, "ssObjectId": int(i)} for i in ids]
        )

    def record_update(
        self,
        conn: sa.Connection,
        kind: str,
        table_name: str,
        keys: tuple[str, ...],
        columns: tuple[str, ...],
        where: sa.ColumnElement[bool],
    ) -> int:
        """Record the current values of ``columns`` of the rows matching ``where``.

        Call inside the operation's transaction, after its writes.  Returns
        the number of rows recorded (no record when zero).
        """
        table = self._table(table_name)
        stmt = sa.select(*[table.c[c] for c in (*keys, *columns)]).where(where)
        rows = [list(r) for r in conn.execute(stmt)]
        if not rows:
            return 0
        payload = {"table": table_name, "keys": list(keys), "columns": list(columns), "rows": rows}
        chunk = self._open_chunk(conn)
        conn.execute(
            sa.insert(self._table(ReplicaTables.ApdbUpdateRecordChunks)).values(
                chunkId=chunk,
                updateTimeNs=time.time_ns(),
                updateOrder=next(self._order),
                uniqueId=f"{self._writer_id}-{os.getpid()}",
                kind=kind,
                payload=json.dumps(payload),
            )
        )
        return len(rows)


def _chunk_filter(column: sa.ColumnElement, chunk_ids: np.ndarray, dialect: str):
    return id_filter(column, np.asarray(chunk_ids, np.int64), dialect)


def rows_in_chunks(
    md: sa.MetaData, table_name: str, chunk_ids: np.ndarray, dialect: str
) -> sa.ColumnElement[bool]:
    """Filter on ``table_name`` for the rows whose keys are in the chunks.

    A semi-join (``(partitionId, keys) IN (SELECT ...)``): a row recorded in
    several of the chunks comes once.  With ``partitionId`` in it, it is the
    data table's primary key on Citus (where both tables are co-located, so
    the join runs on each shard).
    """
    chunk_name, _ = chunk_key_columns(table_name)
    cols = chunk_table_columns(table_name)
    chunks = md.tables[chunk_name]
    table = md.tables[table_name]
    inner = sa.select(*[chunks.c[k] for k in cols]).where(
        _chunk_filter(chunks.c.chunkId, chunk_ids, dialect)
    )
    if len(cols) == 1:
        return table.c[cols[0]].in_(inner)
    return sa.tuple_(*[table.c[k] for k in cols]).in_(inner)


def read_update_records(
    conn: sa.Connection, md: sa.MetaData, chunk_ids: np.ndarray
) -> list[UpdateRecord]:
    """Update records of the chunks on ``conn``, in order (chunk, time, order, writer)."""
    table = md.tables[ReplicaTables.ApdbUpdateRecordChunks]
    stmt = (
        sa.select(table)
        .where(_chunk_filter(table.c.chunkId, chunk_ids, conn.dialect.name))
        .order_by(table.c.chunkId, table.c.updateTimeNs, table.c.updateOrder, table.c.uniqueId)
    )
    return [
        UpdateRecord(
            chunk_id=int(r.chunkId),
            update_time_ns=int(r.updateTimeNs),
            update_order=int(r.updateOrder),
            unique_id=r.uniqueId,
            kind=r.kind,
            payload=json.loads(r.payload),
        )
        for r in conn.execute(stmt)
    ]


def read_batch(conn: sa.Connection, table: sa.Table, where: sa.ColumnElement[bool]) -> Batch:
    """Read every column of the rows matching ``where`` as a `Batch` (NULLs kept)."""
    frame = read_frame(conn, table, where)
    values: dict[str, np.ndarray] = {}
    nulls: dict[str, np.ndarray] = {}
    for info in schema.table_columns(table.name):
        series = frame[info.name]
        mask = series.isna().to_numpy()
        kind = info.numpy_dtype.kind
        if kind == "O":  # masked entries: a placeholder string
            values[info.name] = np.where(mask, "", series.to_numpy(dtype=object)).astype(object)
        elif kind == "f":
            values[info.name] = series.to_numpy(dtype=info.numpy_dtype, na_value=np.nan)
        else:
            values[info.name] = series.to_numpy(dtype=info.numpy_dtype, na_value=0)
        if mask.any():
            nulls[info.name] = mask
    return Batch(table.name, len(frame), values, nulls)


class ApdbReplicaSql:
    """Reading and deleting the replica chunks of one APDB.

    Parameters
    ----------
    engine : `sqlalchemy.Engine`
        The APDB engine.
    md : `sqlalchemy.MetaData`
        Its schema.
    chunk_seconds : `int`
        Chunk length (``config:replication.chunk_seconds``).
    """

    def __init__(self, engine: sa.Engine, md: sa.MetaData, chunk_seconds: int):
        self._engine = engine
        self._md = md
        self.chunk_seconds = int(chunk_seconds)

    def _table(self, name: str) -> sa.Table:
        return self._md.tables[name]

    def get_replica_chunks(self) -> list[ReplicaChunk]:
        """Every chunk that holds changes, oldest first."""
        table = self._table(ReplicaTables.ApdbReplicaChunks)
        stmt = sa.select(table.c.chunkId, table.c.createdTime).order_by(table.c.chunkId)
        with self._engine.connect() as conn:
            return [
                ReplicaChunk(int(r[0]), self.chunk_seconds, float(r[1])) for r in conn.execute(stmt)
            ]

    def get_table_data_chunks(self, table_name: str, chunk_ids: np.ndarray) -> pd.DataFrame:
        """Rows of ``table_name`` recorded in the chunks, with a ``chunkId`` column.

        A row recorded in several of the chunks appears once per chunk.  The
        values are the rows' current values.
        """
        chunk_name, keys = chunk_key_columns(table_name)
        ids = np.asarray(list(chunk_ids), np.int64)
        table = self._table(table_name)
        chunks = self._table(chunk_name)
        with self._engine.connect() as conn:
            dialect = conn.dialect.name
            if ids.size == 0:
                frame = read_frame(conn, table, sa.false())
            else:
                frame = read_frame(conn, table, rows_in_chunks(self._md, table_name, ids, dialect))
            stmt = sa.select(chunks.c.chunkId, *[chunks.c[k] for k in keys])
            stmt = stmt.where(
                sa.false() if ids.size == 0 else _chunk_filter(chunks.c.chunkId, ids, dialect)
            )
            mapping = pd.DataFrame(conn.execute(stmt).all(), columns=["chunkId", *keys])
        mapping = mapping.astype({"chunkId": "int64", **{k: frame[k].dtype for k in keys}})
        merged = frame.merge(mapping, on=list(keys), how="inner")
        return merged.sort_values(["chunkId", *keys], kind="stable").reset_index(drop=True)

    def get_update_record_chunks(self, chunk_ids: np.ndarray) -> list[UpdateRecord]:
        """Update records of the chunks, in order (chunk, time, order)."""
        ids = np.asarray(list(chunk_ids), np.int64)
        if ids.size == 0:
            return []
        with self._engine.connect() as conn:
            return read_update_records(conn, self._md, ids)

    def delete_replica_chunks(self, chunk_ids: np.ndarray) -> None:
        """Delete the chunks and everything recorded in them (one transaction)."""
        from apdb.sql.transaction import write_transaction

        ids = np.asarray(list(chunk_ids), np.int64)
        if ids.size == 0:
            return

        def work(conn: sa.Connection) -> None:
            for name in ReplicaTables:
                table = self._table(name)
                conn.execute(
                    sa.delete(table).where(id_filter(table.c.chunkId, ids, conn.dialect.name))
                )

        write_transaction(self._engine, work, what="delete_replica_chunks")
