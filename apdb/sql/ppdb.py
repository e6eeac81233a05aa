"""The PPDB (Prompt Products Database) and the replicator that feeds it.

A PPDB is an APDB schema (same tables, the analyst views ``DiaObjectLatest``
and ``DiaLightCurve``, the read-only role ``apdb_reader``) that keeps
everything: no history window is applied when rows arrive, and the APDB's
replicated chunks are deleted from the APDB only.  One extra table,
``PpdbReplicaChunk``, lists the chunks already applied.

`replicate_chunk` copies one finished chunk:

1. in ONE PPDB transaction: the chunk's rows (their current values, read from
   the APDB by the keys the chunk recorded) are upserted (PostgreSQL: binary
   ``COPY`` into a temporary table, then ``INSERT ... ON CONFLICT (primary
   key) DO UPDATE``, the APDB's binary COPY stream passed through unchanged
   when both are PostgreSQL; SQLite: ``INSERT OR REPLACE``), the chunk's update
   records are applied in order (each sets values, so replaying changes
   nothing), and the chunk is inserted into ``PpdbReplicaChunk``;
2. then the chunk is deleted from the APDB.

A kill before the PPDB commit leaves the PPDB as it was (the next run does
the chunk again); a kill after it leaves the chunk in the APDB, and the next
run sees it in ``PpdbReplicaChunk`` and only deletes it.  Replicating a
chunk twice writes the same values again.

``APDB_PPDB_CRASH_AT`` (``after_rows``, ``before_commit``, ``after_commit``)
makes the replicator kill itself (SIGKILL) at that point: the tests use it
to check the above.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import numpy as np
import psycopg
import sqlalchemy as sa
from psycopg import sql as pgsql

from apdb import schema
from apdb.config import ApdbConfig
from apdb.errors import ApdbDatabaseError, ApdbError, ApdbNotFoundError
from apdb.frames import Batch
from apdb.replica import UpdateRecord
from apdb.sql.apdb_sql import ApdbSql
from apdb.sql.engine import WRITE
from apdb.sql.pgcopy import encode_rows, make_field
from apdb.sql.replica import read_batch, rows_in_chunks

__all__ = [
    "PPDB_CHUNK_TABLE",
    "ReplicationStats",
    "create_ppdb",
    "open_ppdb",
    "replicate",
    "replicate_chunk",
]

PPDB_CHUNK_TABLE = "PpdbReplicaChunk"
CRASH_ENV = "APDB_PPDB_CRASH_AT"
_DATA_TABLES = ("DiaObject", "DiaSource", "DiaForcedSource", "SSSource")


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

    Raises
    ------
    ApdbError
        The database already holds an APDB or a PPDB, or cannot be reached.
    """
    db = ApdbSql.create_database(ApdbConfig(db_url=url))
    try:
        with db.engine.begin() as conn:
            _chunk_table(db.schema_metadata).create(conn)
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text(f'GRANT SELECT ON "{PPDB_CHUNK_TABLE}" TO apdb_reader'))
    except sa.exc.SQLAlchemyError as exc:
        db.close()
        raise ApdbDatabaseError(f"create the PPDB failed: {_one_line(exc)}") from exc
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
    """
    start = time.perf_counter()
    chunks = apdb.get_replica_chunks()
    wait = float(chunks[0].seconds if chunks and grace is None else grace or 0.0)
    stats = ReplicationStats()
    now = time.time()
    for chunk in chunks:
        if not chunk.is_finished(wait, now):
            break
        if max_chunks is not None and stats.chunks + stats.already_done >= max_chunks:
            break
        rows, records, done = replicate_chunk(apdb, ppdb, chunk.id)
        stats.rows += rows
        stats.update_records += records
        if done:
            stats.already_done += 1
        else:
            stats.chunks += 1
    stats.seconds = time.perf_counter() - start
    return stats


def replicate_chunk(apdb: ApdbSql, ppdb: ApdbSql, chunk_id: int) -> tuple[int, int, bool]:
    """Copy one chunk into the PPDB, mark it done there, delete it from the APDB.

    Returns
    -------
    rows, update_records : `int`
        Rows upserted and update records applied.
    already_done : `bool`
        The PPDB already had the chunk (only the APDB delete was done).
    """
    done_table = _chunk_table(ppdb.schema_metadata)
    try:
        with ppdb.engine.connect() as conn:
            already = conn.execute(
                sa.select(sa.func.count()).where(done_table.c.chunkId == int(chunk_id))
            ).scalar()
        rows = records = 0
        if not already:
            rows, records = _copy_chunk(apdb, ppdb, int(chunk_id), done_table)
            _crash_point("after_commit")
    except ApdbError:
        raise
    except sa.exc.SQLAlchemyError as exc:
        raise ApdbDatabaseError(f"replicate chunk {chunk_id} failed: {_one_line(exc)}") from exc
    apdb.delete_replica_chunks([int(chunk_id)])
    return rows, records, bool(already)


def _copy_chunk(apdb: ApdbSql, ppdb: ApdbSql, chunk_id: int, done: sa.Table) -> tuple[int, int]:
    amd, pmd = apdb.schema_metadata, ppdb.schema_metadata
    updates = apdb.get_update_record_chunks([chunk_id])
    ids = np.array([chunk_id], np.int64)
    n_rows = 0
    # PostgreSQL to PostgreSQL: the binary COPY stream of the APDB's rows goes
    # into the PPDB's COPY unchanged (same columns, same types, same order).
    raw = apdb.engine.dialect.name == ppdb.engine.dialect.name == "postgresql"
    with apdb.engine.connect() as aconn, aconn.begin():
        if aconn.dialect.name == "postgresql":  # one snapshot for every table
            aconn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        dialect = aconn.dialect.name
        read = _read_raw if raw else read_batch
        batches = [
            read(aconn, amd.tables[name], rows_in_chunks(amd, name, ids, dialect))
            for name in _DATA_TABLES
        ]
    with ppdb.engine.connect() as pconn:
        pconn = pconn.execution_options(**{WRITE: True})
        with pconn.begin():
            for batch in batches:
                if isinstance(batch, Batch):
                    _upsert(pconn, pmd.tables[batch.table], batch)
                    n_rows += batch.n
                else:
                    name, data, n = batch
                    if n:
                        cols = [c.name for c in schema.table_columns(name)]
                        _merge(pconn, pmd.tables[name], cols, data)
                    n_rows += n
            _crash_point("after_rows")
            for record in updates:
                _apply(pconn, pmd, record)
            pconn.execute(
                sa.insert(done).values(
                    chunkId=chunk_id,
                    replicaTime=time.time(),
                    nRows=n_rows,
                    nUpdateRecords=len(updates),
                )
            )
            _crash_point("before_commit")
    return n_rows, len(updates)


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
    _merge(conn, table, cols, encode_rows(fields, batch.n, [batch.null_mask(c) for c in cols]))


def _read_raw(conn: sa.Connection, table: sa.Table, where: sa.ColumnElement[bool]):
    """``(table name, binary COPY stream, row count)`` of every column, schema order."""
    cols = [c.name for c in schema.table_columns(table.name)]
    stmt = sa.select(*[table.c[c] for c in cols]).where(where)
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    raw = conn.connection.driver_connection
    # COPY takes no server-side parameters: psycopg binds them client-side.
    select = psycopg.ClientCursor(raw).mogrify(compiled.string, compiled.params)
    parts = []
    with raw.cursor() as cur:
        query = pgsql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(pgsql.SQL(select))
        with cur.copy(query) as copy:
            for data in copy:
                parts.append(bytes(data))
        n = cur.rowcount
    return table.name, b"".join(parts), int(n)


def _merge(conn: sa.Connection, table: sa.Table, cols: list[str], data: bytes) -> None:
    """Binary COPY ``data`` into a temporary table, then upsert it into ``table``."""
    stage = f"ppdb_stage_{table.name}"
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute(
            pgsql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(
                pgsql.Identifier(stage), pgsql.Identifier(table.name)
            )
        )
        names = pgsql.SQL(", ").join(map(pgsql.Identifier, cols))
        copy_sql = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            pgsql.Identifier(stage), names
        )
        with cur.copy(copy_sql) as copy:
            copy.write(data)
        keys = [c.name for c in table.primary_key.columns]
        others = [c for c in cols if c not in keys]
        sets = pgsql.SQL(", ").join(
            pgsql.SQL("{} = EXCLUDED.{}").format(pgsql.Identifier(c), pgsql.Identifier(c))
            for c in others
        )
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
