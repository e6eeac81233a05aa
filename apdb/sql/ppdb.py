"""The PPDB (Prompt Products Database) and the replicator that feeds it.

A PPDB is an APDB schema (same tables, the analyst views ``DiaObjectLatest``
and ``DiaLightCurve``, the read-only role ``apdb_reader``) that keeps
everything: no history window is applied when rows arrive, and the APDB's
replicated chunks are deleted from the APDB only.  One extra table,
``PpdbReplicaChunk``, lists the chunks already applied.

`replicate` copies the finished chunks, oldest first, several
(``chunks_per_transaction``) at a time:

1. the rows recorded in the chunks are read from the APDB in one snapshot
   (their current values, by the keys the chunks recorded: a semi-join, so a
   DiaObject version recorded in two of the chunks comes once), then the
   chunks' update records; a reader thread does this while the writer
   stores them in the PPDB;
2. in ONE PPDB transaction the rows are written (PostgreSQL: the APDB's
   binary ``COPY`` output piped block by block, undecoded, into the PPDB's
   ``COPY`` while it is being read, see `apdb.sql.ppdb_copy`; the DiaObject
   versions the chunks name are deleted from the PPDB first, since a
   version closed by these chunks may have been copied open by an earlier
   batch; a COPY that still meets a row already there (a batch copied
   again) falls back to ``INSERT ... ON CONFLICT (primary key) DO UPDATE``;
   SQLite: ``INSERT OR REPLACE``), the update records are applied in order
   (each sets values, so replaying changes nothing), and the chunks are
   inserted into ``PpdbReplicaChunk``;
3. then the chunks are deleted from the APDB.

A kill before the PPDB commit leaves the PPDB as it was (the next run does
the chunks again); a kill after it leaves the chunks in the APDB, and the
next run sees them in ``PpdbReplicaChunk`` and only deletes them.
Replicating a chunk twice writes the same values again.

``APDB_PPDB_CRASH_AT`` (``after_rows``, ``before_commit``, ``after_commit``)
makes the replicator kill itself (SIGKILL) at that point: the tests use it
to check the above.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import psycopg
import sqlalchemy as sa

from apdb import schema
from apdb.config import ApdbConfig
from apdb.errors import ApdbDatabaseError, ApdbError, ApdbNotFoundError
from apdb.frames import Batch
from apdb.replica import CHUNKS_PER_TRANSACTION, UpdateRecord
from apdb.replica_schema import chunk_key_columns
from apdb.sql.apdb_sql import ApdbSql
from apdb.sql.engine import WRITE
from apdb.sql.history import CHUNKS_KEY
from apdb.sql.pgcopy import encode_rows, make_field
from apdb.sql.ppdb_copy import (
    CopyStream,
    copy_query,
    drop_fill_triggers,
    insert_or_merge,
    merge,
    read_keys,
    stream_copy_out,
    supersede,
)
from apdb.sql.reads import id_filter
from apdb.sql.replica import (
    REPLICATED_TABLES,
    read_batch,
    read_update_records,
    rows_in_chunks,
)

__all__ = [
    "PPDB_CHUNK_TABLE",
    "ReplicationStats",
    "create_ppdb",
    "open_ppdb",
    "replicate",
    "replicate_chunk",
    "replicate_chunks",
]

PPDB_CHUNK_TABLE = "PpdbReplicaChunk"
_SWITCH_INTERVAL = 0.0002
"""GIL switch interval (s) while replicating (see `replicate`)."""
CRASH_ENV = "APDB_PPDB_CRASH_AT"


def _chunk_table(md: sa.MetaData) -> sa.Table:
    if PPDB_CHUNK_TABLE in md.tables:
        return md.tables[PPDB_CHUNK_TABLE]
    return sa.Table(
        PPDB_CHUNK_TABLE,
        md,
        sa.Column("chunkId", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("replicaTime", sa.Double, nullable=False),
        sa.Column("nRows", sa.BigInteger, nullable=False),
        sa.Column("nUpdateRecords", sa.Integer, nullable=False),
    )


def create_ppdb(url: str) -> ApdbSql:
    """Create a PPDB at ``url`` and return it opened.

    On PostgreSQL the APDB's ``partitionId`` fill triggers (revision 0004,
    for APDB writers older than the column) are dropped: the replicator
    always copies ``partitionId`` (`apdb.sql.ppdb_copy.drop_fill_triggers`).

    Raises
    ------
    ApdbError
        The database already holds an APDB or a PPDB, or cannot be reached.
    """
    db = ApdbSql.create_database(ApdbConfig(db_url=url))
    try:
        with db.engine.begin() as conn:
            _chunk_table(db.schema_metadata).create(conn)
            # No history chunks here: history reads on a PPDB read the rows.
            md_table = db.schema_metadata.tables["metadata"]
            conn.execute(sa.insert(md_table).values(name=CHUNKS_KEY, value="false"))
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text(f'GRANT SELECT ON "{PPDB_CHUNK_TABLE}" TO apdb_reader'))
                drop_fill_triggers(conn)
    except sa.exc.SQLAlchemyError as exc:
        db.close()
        raise ApdbDatabaseError(f"create the PPDB failed: {_one_line(exc)}") from exc
    db.read_history_chunks = False  # opened before the key was written
    return db


def open_ppdb(url: str) -> ApdbSql:
    """Open a PPDB.

    Raises
    ------
    ApdbNotFoundError
        The database holds no PPDB (an APDB without ``PpdbReplicaChunk``).
    """
    db = ApdbSql(ApdbConfig(db_url=url))
    with db.engine.connect() as conn:
        is_ppdb = sa.inspect(conn).has_table(PPDB_CHUNK_TABLE)
    if not is_ppdb:
        db.close()
        raise ApdbNotFoundError(f"{url} is not a PPDB; create one with `apdb ppdb create URL`")
    _chunk_table(db.schema_metadata)
    return db


@dataclass
class ReplicationStats:
    """What a `replicate` run did."""

    chunks: int = 0
    rows: int = 0
    update_records: int = 0
    already_done: int = 0
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        """Rows copied per second of the run."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def replicate(
    apdb: ApdbSql,
    ppdb: ApdbSql,
    *,
    grace: float | None = None,
    max_chunks: int | None = None,
    chunks_per_transaction: int = CHUNKS_PER_TRANSACTION,
) -> ReplicationStats:
    """Replicate every finished chunk of ``apdb`` into ``ppdb``, oldest first.

    Parameters
    ----------
    apdb, ppdb : `ApdbSql`
        The source APDB (with replication enabled) and the PPDB (`open_ppdb`).
    grace : `float`, optional
        A chunk is finished once it ended ``grace`` seconds ago (default: the
        chunk length, so that a transaction that started in the chunk has
        long committed).
    max_chunks : `int`, optional
        Stop after this many chunks.
    chunks_per_transaction : `int`, optional
        Chunks copied in one PPDB transaction (consecutive ones, oldest
        first): fewer round trips, and a DiaObject version recorded in
        several of them (created in one, closed in a later one) is copied
        once.

    Raises
    ------
    ApdbError
        ``chunks_per_transaction`` < 1, or a database error.
    """
    if chunks_per_transaction < 1:
        raise ApdbError(f"chunks_per_transaction must be >= 1, got {chunks_per_transaction}")
    start = time.perf_counter()
    chunks = apdb.get_replica_chunks()
    wait = float(chunks[0].seconds if chunks and grace is None else grace or 0.0)
    now = time.time()
    ids = [c.id for c in itertools.takewhile(lambda c: c.is_finished(wait, now), chunks)]
    ids = ids[:max_chunks] if max_chunks is not None else ids
    stats = ReplicationStats()
    done = _done_chunks(ppdb, ids)
    if done:  # copied by an earlier run that stopped before deleting them
        apdb.delete_replica_chunks(sorted(done))
        stats.already_done = len(done)
    todo = [i for i in ids if i not in done]
    # On PostgreSQL a batch's chunks are deleted from the APDB (after the PPDB
    # commit, as always) while the next batch is copied.
    deleter = _Deleter(apdb, background=apdb.engine.dialect.name == "postgresql")
    switch = sys.getswitchinterval()
    # The reader thread loops in Python over one libpq message per row and
    # holds the GIL while rows keep coming; the writer thread needs it each
    # time the PPDB's socket has room again.  With the default 5 ms interval
    # the PPDB's COPY waits for its data (measured: 600,000 rows in 7.7 s,
    # 5.6 s at 0.2 ms).  Restored when done.
    sys.setswitchinterval(min(switch, _SWITCH_INTERVAL))
    try:
        for k in range(0, len(todo), chunks_per_transaction):
            batch = todo[k : k + chunks_per_transaction]
            rows, records = _copy_batch(apdb, ppdb, batch)
            deleter.delete(batch)
            stats.rows += rows
            stats.update_records += records
            stats.chunks += len(batch)
    finally:
        sys.setswitchinterval(switch)
        deleter.wait()
    stats.seconds = time.perf_counter() - start
    return stats


class _Deleter:
    """Deletes replicated chunks from the APDB, one batch at a time, maybe in a thread."""

    def __init__(self, apdb: ApdbSql, background: bool):
        self._apdb = apdb
        self._background = background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _run(self, ids: list[int]) -> None:
        try:
            self._apdb.delete_replica_chunks(ids)
        except BaseException as exc:  # raised by `wait`
            self._error = exc

    def delete(self, ids: list[int]) -> None:
        """Delete ``ids`` (after the previous batch's delete has finished)."""
        self.wait()
        if not self._background:
            self._apdb.delete_replica_chunks(ids)
            return
        self._thread = threading.Thread(target=self._run, args=(list(ids),), daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Wait for the running delete; raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _done_chunks(ppdb: ApdbSql, chunk_ids: list[int]) -> set[int]:
    """Those of ``chunk_ids`` that the PPDB has already applied."""
    if not chunk_ids:
        return set()
    table = _chunk_table(ppdb.schema_metadata)
    stmt = sa.select(table.c.chunkId).where(table.c.chunkId.in_([int(i) for i in chunk_ids]))
    try:
        with ppdb.engine.connect() as conn:
            return {int(r[0]) for r in conn.execute(stmt)}
    except sa.exc.SQLAlchemyError as exc:
        raise ApdbDatabaseError(f"reading the PPDB's chunks failed: {_one_line(exc)}") from exc


def replicate_chunks(apdb: ApdbSql, ppdb: ApdbSql, chunk_ids: list[int]) -> tuple[int, int]:
    """Copy chunks into the PPDB in one transaction, mark them done, delete them from the APDB.

    The caller checks that the PPDB does not have them yet (`replicate`);
    copying them again anyway writes the same values again.

    Returns
    -------
    rows, update_records : `int`
        Rows written and update records applied.
    """
    rows, records = _copy_batch(apdb, ppdb, chunk_ids)
    apdb.delete_replica_chunks(sorted(int(i) for i in chunk_ids))
    return rows, records


def _copy_batch(apdb: ApdbSql, ppdb: ApdbSql, chunk_ids: list[int]) -> tuple[int, int]:
    """`replicate_chunks` but the APDB delete."""
    ids = np.asarray(sorted(int(i) for i in chunk_ids), np.int64)
    try:
        rows, records = _copy_chunks(apdb, ppdb, ids)
        _crash_point("after_commit")
    except ApdbError:
        raise
    except (sa.exc.SQLAlchemyError, psycopg.Error) as exc:
        raise ApdbDatabaseError(
            f"replicate chunks {ids.tolist()} failed: {_one_line(exc)}"
        ) from exc
    return rows, records


def replicate_chunk(apdb: ApdbSql, ppdb: ApdbSql, chunk_id: int) -> tuple[int, int, bool]:
    """Copy one chunk (unless the PPDB has it), then delete it from the APDB.

    Returns
    -------
    rows, update_records : `int`
        Rows written and update records applied.
    already_done : `bool`
        The PPDB already had the chunk (only the APDB delete was done).
    """
    if _done_chunks(ppdb, [int(chunk_id)]):
        apdb.delete_replica_chunks([int(chunk_id)])
        return 0, 0, True
    rows, records = replicate_chunks(apdb, ppdb, [int(chunk_id)])
    return rows, records, False


_END = object()
_READ_ORDER = ("SSObject", "DiaForcedSource", "DiaSource", "SSSource", "DiaObject")
_SUPERSEDED = ("DiaObject",)
"""Tables whose rows in a batch may be in the PPDB already (see `_read_chunks`)."""


def _read_chunks(apdb: ApdbSql, ids: np.ndarray, raw: bool, out: queue.SimpleQueue) -> None:
    """Put each table's rows in the chunks, then their update records, on ``out``.

    One APDB snapshot for all of them.  Runs in a thread (its waits release
    the GIL), so the PPDB writes a table while it is read.  Items:
    ``(table, how, data)`` (``raw``: ``"supersede"`` with the keys of rows to
    delete first, or ``"insert"`` with a `CopyStream` being filled, see
    `_write`) or a `Batch`; then ``list[UpdateRecord]``; then `_END`; an
    exception instead if the reads fail.
    """
    amd = apdb.schema_metadata
    try:
        with apdb.engine.connect() as conn, conn.begin():
            dialect = conn.dialect.name
            if dialect == "postgresql":
                conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            # The narrowest rows first: the writer starts as early as it can.
            for name in sorted(REPLICATED_TABLES, key=_READ_ORDER.index):
                table = amd.tables[name]
                where = rows_in_chunks(amd, name, ids, dialect)
                if not raw:
                    out.put(read_batch(conn, table, where))
                    continue
                if name in _SUPERSEDED:
                    # Versions that a later chunk closed may be in the PPDB
                    # (copied open by an earlier batch): every version the
                    # chunks name is deleted from the PPDB first, then copied
                    # with its current values.  (One the APDB no longer has,
                    # replaced by a store of the same visit, stays deleted.)
                    chunk_name, keys = chunk_key_columns(name)
                    chunks = amd.tables[chunk_name]
                    in_batch = id_filter(chunks.c.chunkId, ids, dialect)
                    out.put((name, "supersede", read_keys(conn, chunks, list(keys), in_batch)))
                stream = CopyStream()
                out.put((name, "insert", stream))
                cols = [c.name for c in schema.table_columns(name)]
                try:
                    stream_copy_out(
                        conn.connection.driver_connection,
                        copy_query(conn, table, cols, where),
                        stream,
                    )
                except BaseException as exc:
                    stream.fail(exc)
                    raise
            out.put(read_update_records(conn, amd, ids))
        out.put(_END)
    except BaseException as exc:  # handed to the writer, which raises it
        out.put(exc)


def _copy_chunks(apdb: ApdbSql, ppdb: ApdbSql, ids: np.ndarray) -> tuple[int, int]:
    pmd = ppdb.schema_metadata
    done = _chunk_table(pmd)
    # PostgreSQL to PostgreSQL: the binary COPY stream of the APDB's rows goes
    # into the PPDB's COPY unchanged (same columns, same types, same order).
    raw = apdb.engine.dialect.name == ppdb.engine.dialect.name == "postgresql"
    items: queue.SimpleQueue = queue.SimpleQueue()
    reader = threading.Thread(target=_read_chunks, args=(apdb, ids, raw, items), daemon=True)
    reader.start()
    n_rows = 0
    try:
        with ppdb.engine.connect() as pconn:
            pconn = pconn.execution_options(**{WRITE: True})
            with pconn.begin():
                while isinstance(item := items.get(), tuple | Batch):
                    n_rows += _write(pconn, pmd, item)
                if isinstance(item, BaseException):
                    raise item
                updates: list[UpdateRecord] = item
                _crash_point("after_rows")
                for record in updates:
                    _apply(pconn, pmd, record)
                now = time.time()
                pconn.execute(
                    sa.insert(done),
                    [
                        {
                            "chunkId": int(c),
                            "replicaTime": now,
                            "nRows": n_rows,
                            "nUpdateRecords": len(updates),
                        }
                        for c in ids
                    ],
                )
                _crash_point("before_commit")
                last = items.get()  # the reader's end: its transaction closed
                if isinstance(last, BaseException):
                    raise last
    finally:
        reader.join()
    return n_rows, len(updates)


def _write(conn: sa.Connection, md: sa.MetaData, item: tuple | Batch) -> int:
    """Write one table's rows into the PPDB; return how many."""
    if isinstance(item, Batch):
        _upsert(conn, md.tables[item.table], item)
        return item.n
    name, how, data = item
    if how == "supersede":  # keys of rows about to be copied again
        supersede(conn, md.tables[name], data)
        return 0
    cols = [c.name for c in schema.table_columns(name)]
    return insert_or_merge(conn, md.tables[name], cols, data)


def _upsert(conn: sa.Connection, table: sa.Table, batch: Batch) -> None:
    """Insert the rows, replacing those with the same primary key."""
    if batch.n == 0:
        return
    cols = batch.columns
    if conn.dialect.name != "postgresql":
        stmt = sa.insert(table).prefix_with("OR REPLACE")
        conn.execute(stmt, [dict(zip(cols, r, strict=True)) for r in batch.records()])
        return
    fields = [make_field(batch.values[c], schema.column_info(table.name, c).datatype) for c in cols]
    merge(conn, table, cols, encode_rows(fields, batch.n, [batch.null_mask(c) for c in cols]))


def _apply(conn: sa.Connection, md: sa.MetaData, record: UpdateRecord) -> None:
    """Set the record's column values on its rows (a no-op for rows not in the PPDB)."""
    payload = record.payload
    table = md.tables[payload["table"]]
    keys, columns = payload["keys"], payload["columns"]
    stmt = (
        sa.update(table)
        .where(*[table.c[k] == sa.bindparam(f"k_{k}") for k in keys])
        .values({c: sa.bindparam(f"v_{c}") for c in columns})
    )
    params = []
    for row in payload["rows"]:
        p = {f"k_{k}": v for k, v in zip(keys, row[: len(keys)], strict=True)}
        p.update({f"v_{c}": v for c, v in zip(columns, row[len(keys) :], strict=True)})
        params.append(p)
    if params:
        conn.execute(stmt, params)
