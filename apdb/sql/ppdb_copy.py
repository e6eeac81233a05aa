"""PostgreSQL to PostgreSQL: the replicator's binary COPY pipe from an APDB into a PPDB.

The APDB and the PPDB have the same tables (same columns, same types, same
order), so a table's rows leave the APDB as one ``COPY (SELECT ...) TO
STDOUT (FORMAT BINARY)`` and enter the PPDB as ``COPY ... FROM STDIN
(FORMAT BINARY)`` without being decoded.  The stream is *piped*: the reader
thread pushes blocks of the APDB's output into a `CopyStream` while the
writer is already sending the first blocks to the PPDB, so both servers work
at the same time on the same table.

Rows new to the PPDB (the normal case) cost one COPY into their table.
Rows that may be there already (DiaObject versions that a later chunk
closed, created by an earlier batch) are *superseded*: their keys are
deleted from the PPDB first (one ``DELETE ... USING unnest(...)``), then
the rows are COPYed in with their current values, in the same transaction
as the rest of the batch.  If a COPY still meets a row already there (a
batch copied again after a crash), it is rolled back to a savepoint and the
rows go through a temporary table and ``INSERT ... ON CONFLICT DO UPDATE``.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator

import numpy as np
import psycopg
import sqlalchemy as sa
from psycopg import sql as pgsql

from apdb.sql.pgcopy import PG_TYPES, ReadField, decode_rows
from apdb.sql.reads import _wait_readable, copy_out, finish_copy_out, start_copy_out

__all__ = [
    "CopyStream",
    "copy_query",
    "drop_fill_triggers",
    "insert_or_merge",
    "merge",
    "read_keys",
    "stream_copy_out",
    "supersede",
]

BLOCK_BYTES = 1 << 20
"""Bytes of COPY output handed to the writer at a time."""

_END = object()


class CopyStream:
    """Blocks of one binary COPY stream, from the reader thread to the writer.

    The reader calls `put` for each block, then `close` (or `fail` with its
    exception); the writer iterates over the blocks, which raises the
    reader's exception if it failed.
    """

    def __init__(self) -> None:
        self._blocks: queue.SimpleQueue = queue.SimpleQueue()

    def put(self, block: bytes) -> None:
        """Add a block."""
        self._blocks.put(block)

    def close(self) -> None:
        """Mark the stream complete."""
        self._blocks.put(_END)

    def fail(self, exc: BaseException) -> None:
        """Mark the stream broken: the writer raises ``exc``."""
        self._blocks.put(exc)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            block = self._blocks.get()
            if block is _END:
                return
            if isinstance(block, BaseException):
                raise block
            yield block


def copy_query(conn: sa.Connection, table: sa.Table, cols: list[str], where) -> str:
    """``COPY (SELECT cols FROM table WHERE where) TO STDOUT (FORMAT BINARY)``, bound."""
    stmt = sa.select(*[table.c[c] for c in cols]).where(where)
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    raw = conn.connection.driver_connection
    # COPY takes no server-side parameters: psycopg binds them client-side.
    select = psycopg.ClientCursor(raw).mogrify(compiled.string, compiled.params)
    query = pgsql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(pgsql.SQL(select))
    return query.as_string(raw)


def stream_copy_out(raw: psycopg.Connection, query: str, stream: CopyStream) -> None:
    """Run ``COPY ... TO STDOUT`` on ``raw`` and put its output on ``stream`` in blocks.

    Reads libpq's copy messages in a tight loop (binary COPY sends one
    message per row), waiting for the server in `select.select` (the GIL
    released), like `apdb.sql.reads.copy_out`.  The stream is closed at the
    end; on an error the error is raised (the caller fails the stream).
    """
    pgconn = raw.pgconn
    with raw.lock:
        start_copy_out(pgconn, query)
        chunks: list[bytes] = []
        size = 0
        get = pgconn.get_copy_data
        while True:
            nbytes, data = get(1)  # 1: never block; 0 means "wait for more"
            if nbytes == 0:
                pgconn.consume_input()
                nbytes, data = get(1)
                if nbytes == 0:
                    if size:  # the writer gets what is there while the server works
                        stream.put(b"".join(chunks))
                        chunks, size = [], 0
                    _wait_readable(pgconn)
                    continue
            if nbytes < 0:
                break
            chunks.append(bytes(data))
            size += nbytes
            if size >= BLOCK_BYTES:
                stream.put(b"".join(chunks))
                chunks, size = [], 0
        finish_copy_out(pgconn, nbytes)
    if size:
        stream.put(b"".join(chunks))
    stream.close()


def read_keys(
    conn: sa.Connection, table: sa.Table, keys: list[str], where
) -> dict[str, np.ndarray]:
    """Distinct ``keys`` of the rows of ``table`` matching ``where``.

    One binary COPY, decoded and made unique in numpy (the columns are
    fixed-width, not nullable).
    """
    fields = [ReadField(k, PG_TYPES[_datatype(table, k)][0]) for k in keys]
    data = copy_out(conn.connection.driver_connection, copy_query(conn, table, keys, where))
    columns = [decode_rows(data, fields)[k] for k in keys]
    if not len(columns[0]):
        return dict(zip(keys, columns, strict=True))
    order = np.lexsort(columns[::-1])
    columns = [c[order] for c in columns]
    # A key recorded in several chunks comes once (sorted: repeats are adjacent).
    first = np.ones(len(order), bool)
    first[1:] = np.any([c[1:] != c[:-1] for c in columns], axis=0)
    return {k: c[first] for k, c in zip(keys, columns, strict=True)}


def _datatype(table: sa.Table, column: str) -> str:
    kind = table.c[column].type
    if isinstance(kind, sa.BigInteger):
        return "long"
    if isinstance(kind, sa.Integer):
        return "int"
    if isinstance(kind, sa.Float):
        return "double"
    raise TypeError(f"{table.name}.{column}: not a fixed-width key column ({kind})")


def _copy_in(cur: psycopg.Cursor, table: str, cols: list[str], blocks) -> int:
    """Binary COPY the blocks into ``table``; return the row count."""
    names = pgsql.SQL(", ").join(map(pgsql.Identifier, cols))
    query = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        pgsql.Identifier(table), names
    )
    with cur.copy(query) as copy:
        for block in blocks:
            copy.write(block)
    return int(cur.rowcount)


def insert_or_merge(
    conn: sa.Connection, table: sa.Table, cols: list[str], stream: CopyStream | bytes
) -> int:
    """COPY the stream straight into ``table``; if a row is there already, `merge` instead.

    New rows cost one COPY, fed as the stream arrives; a batch copied again
    (its rows are there) rolls the COPY back to a savepoint and upserts.
    Returns the row count.
    """
    seen: list[bytes] = []
    source = iter([stream]) if isinstance(stream, bytes) else iter(stream)

    def blocks() -> Iterator[bytes]:
        for block in source:
            seen.append(block)
            yield block

    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute("SAVEPOINT ppdb_copy")
        try:
            n = _copy_in(cur, table.name, cols, blocks())
        except psycopg.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT ppdb_copy")
            n = -1
        cur.execute("RELEASE SAVEPOINT ppdb_copy")
    if n >= 0:
        return n
    seen.extend(source)  # the rest of the stream, if the COPY stopped early
    return merge(conn, table, cols, b"".join(seen))


def merge(conn: sa.Connection, table: sa.Table, cols: list[str], data: bytes) -> int:
    """Binary COPY ``data`` into a temporary table, then upsert it into ``table``."""
    stage = f"ppdb_stage_{table.name}"
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute(
            pgsql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(
                pgsql.Identifier(stage), pgsql.Identifier(table.name)
            )
        )
        n = _copy_in(cur, stage, cols, [data])
        keys = [c.name for c in table.primary_key.columns]
        others = [c for c in cols if c not in keys]
        sets = pgsql.SQL(", ").join(
            pgsql.SQL("{} = EXCLUDED.{}").format(pgsql.Identifier(c), pgsql.Identifier(c))
            for c in others
        )
        names = pgsql.SQL(", ").join(map(pgsql.Identifier, cols))
        cur.execute(
            pgsql.SQL(
                "INSERT INTO {t} ({cols}) SELECT {cols} FROM {s} "
                "ON CONFLICT ({keys}) DO UPDATE SET {sets}"
            ).format(
                t=pgsql.Identifier(table.name),
                cols=names,
                s=pgsql.Identifier(stage),
                keys=pgsql.SQL(", ").join(map(pgsql.Identifier, keys)),
                sets=sets,
            )
        )
        cur.execute(pgsql.SQL("DROP TABLE {}").format(pgsql.Identifier(stage)))
    return n


def supersede(conn: sa.Connection, table: sa.Table, keys: dict[str, np.ndarray]) -> int:
    """Delete the rows of ``table`` with these keys (rows about to be COPYed again).

    One ``DELETE ... USING unnest(...)``, an index probe per key; the key
    arrays go as array literals built in numpy (psycopg adapting one Python
    object per value costs more than the DELETE).  Returns the number of rows
    deleted.
    """
    if not len(next(iter(keys.values()))):
        return 0
    arrays, unnest = {}, []
    for name, values in keys.items():
        if values.dtype.kind in "iu":
            text, kind = ",".join(map(str, values.tolist())), "bigint"
        else:  # repr: the shortest string that reads back as the same double
            text, kind = ",".join(map(repr, values.tolist())), "double precision"
        arrays[name] = "{" + text + "}"
        unnest.append(
            pgsql.SQL("CAST({} AS {}[])").format(pgsql.Placeholder(name), pgsql.SQL(kind))
        )
    match = pgsql.SQL(" AND ").join(
        pgsql.SQL("t.{c} = k.{c}").format(c=pgsql.Identifier(name)) for name in keys
    )
    query = pgsql.SQL("DELETE FROM {t} AS t USING unnest({u}) AS k ({names}) WHERE {m}").format(
        t=pgsql.Identifier(table.name),
        u=pgsql.SQL(", ").join(unnest),
        names=pgsql.SQL(", ").join(map(pgsql.Identifier, keys)),
        m=match,
    )
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute(query, arrays)
        return int(cur.rowcount)


def drop_fill_triggers(conn: sa.Connection) -> list[str]:
    """Drop the ``partitionId`` fill triggers of a new PPDB's tables; return their names.

    Revision 0004 adds a ``BEFORE INSERT`` row trigger per partitioned table
    (``TR_<table>_partitionId_fill``) for APDB writers that predate the
    column.  A PPDB's only writer is the replicator, which always copies
    ``partitionId``: the trigger would only cost a PL/pgSQL call per row
    (and, being a row trigger, keep COPY from inserting rows in batches).
    """
    found = conn.execute(
        sa.text(
            "SELECT c.relname, t.tgname FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT t.tgisinternal AND c.relnamespace = CAST(current_schema() AS regnamespace) "
            "AND t.tgname = 'TR_' || c.relname || '_partitionId_fill'"
        )
    ).all()
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        for table, trigger in found:
            cur.execute(
                pgsql.SQL("DROP TRIGGER {} ON {}").format(
                    pgsql.Identifier(trigger), pgsql.Identifier(table)
                )
            )
    return [trigger for _, trigger in found]
