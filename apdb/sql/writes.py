"""Writing a visit: validated `Batch` objects into the tables, in one transaction.

Two ways rows reach a table:

- PostgreSQL: one binary ``COPY`` of a numpy-built buffer straight into the
  table, inside the visit's transaction (`apdb.sql.pgcopy.encode_pieces`, sent piece by piece);
  a staging table is not needed because every write is a plain insert:
  object versioning is done by the set-based UPDATE/DELETE below;
- SQLite: one DB-API ``executemany`` of a compiled Core ``INSERT``.

DiaObject versioning is shared, set-based SQL (a fixed number of statements
whatever the number of objects), so that stores may arrive in any order:

1. drop versions already written at this same visit time (the later store of
   a visit replaces that visit's version);
2. end every version that started before the visit and was still valid at it
   (``validityEndMjdTai`` NULL or later than the visit) at the visit time: for
   an in-order store that closes the latest version, for a late store it
   shortens the version the new one is inserted after;
3. read the start of the next newer version of each object (late stores
   only; usually no row) and insert the new versions with that as their
   ``validityEndMjdTai`` (NULL when none is newer: the new latest version).

Concurrent writers of the same objects are serialized by the caller
(`apdb.sql.transaction.write_transaction`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psycopg
import sqlalchemy as sa
from psycopg import sql as pgsql

from apdb import schema
from apdb.frames import Batch
from apdb.sql.citus import effective_sqlstate, partition_filter
from apdb.sql.pgcopy import encode_pieces, encode_rows, make_field
from apdb.sql.reads import id_filter

__all__ = ["COPY_PIECE_ROWS", "ENCODE_AHEAD_ROWS", "insert_batch", "update_objects"]

# Rows per piece of a COPY stream (~0.3-1.5 MB at the APDB's row widths).
COPY_PIECE_ROWS = 2048
# DiaObject versions from which their encoding overlaps the version fix-up.
ENCODE_AHEAD_ROWS = 2048


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


def update_objects(
    conn: sa.Connection,
    table: sa.Table,
    batch: Batch,
    visit_mjd: float,
    partitions: np.ndarray | None = None,
) -> int:
    """Insert new DiaObject versions at ``visit_mjd`` into each object's history.

    Parameters
    ----------
    conn : `sqlalchemy.Connection`
        Connection inside the store's transaction.
    table : `sqlalchemy.Table`
        The DiaObject table.
    batch : `Batch`
        New versions (``validityStartMjdTai`` = ``visit_mjd``); not modified.
    visit_mjd : `float`
        Visit time (MJD TAI).
    partitions : `numpy.ndarray`, optional
        ``partitionId`` values of the objects (Citus): the statements on
        existing versions are limited to them, so Citus runs them on those
        shards only instead of on every shard.

    Returns
    -------
    n_late : `int`
        Number of versions inserted before a newer existing version (late
        stores of an older visit); they are not the latest versions.
    """
    if batch.n == 0:
        return 0
    ids = batch.values["diaObjectId"]
    dialect = conn.dialect.name
    if dialect == "postgresql" and partitions is None:
        if batch.n < ENCODE_AHEAD_ROWS:
            newer = _fix_versions_postgres(conn, table, ids, visit_mjd)
        else:
            # Encode the new versions as the latest ones (validityEndMjdTai
            # NULL) in a thread while the server runs the fix-up: numpy and the
            # driver's wait release the GIL.  Used unless a late store found
            # newer versions (then re-encoded with their ends below).
            with ThreadPoolExecutor(max_workers=1) as pool:
                ahead = pool.submit(_encode, table, batch)
                newer = _fix_versions_postgres(conn, table, ids, visit_mjd)
                data = ahead.result()
            if not newer:
                _copy_pieces(conn, table, tuple(batch.columns), [data])
                return 0
    else:
        ours = id_filter(table.c.diaObjectId, ids, dialect)
        if partitions is not None:
            ours = sa.and_(partition_filter(table.c.partitionId, np.unique(partitions)), ours)
        start, end = table.c.validityStartMjdTai, table.c.validityEndMjdTai
        replaced = sa.delete(table).where(ours, start == visit_mjd)
        closed = (
            sa.update(table)
            .where(ours, start < visit_mjd, sa.or_(end.is_(None), end > visit_mjd))
            .values(validityEndMjdTai=visit_mjd)
        )
        find_newer = (
            sa.select(table.c.diaObjectId, sa.func.min(start))
            .where(ours, start > visit_mjd)
            .group_by(table.c.diaObjectId)
        )
        conn.execute(replaced)
        conn.execute(closed)
        newer = conn.execute(find_newer).all()
    insert_batch(conn, table, _with_ends(batch, newer))
    return len(newer)


def _fix_versions_postgres(
    conn: sa.Connection, table: sa.Table, ids: np.ndarray, visit_mjd: float
) -> list[tuple[int, float]]:
    """Run steps 1-3 of the module docstring on PostgreSQL, in one statement.

    The DELETE and the UPDATE are data-modifying CTEs of the SELECT of newer
    versions.  They touch disjoint rows (start = visit vs start < visit), and
    the SELECT (start > visit) reads rows neither changes, so the shared
    snapshot gives the same answer as three statements.  (Not on Citus: it
    plans such CTEs across shards poorly.)  The statement text is composed
    once per table (`_fix_versions_query`); per call only the id array is
    added, as a constant the planner can hash, and the visit time is bound.
    """
    unique = np.unique(np.asarray(ids, dtype=np.int64))
    literal = pgsql.Literal("{" + ",".join(unique.astype(str).tolist()) + "}")
    query = _fix_versions_query(table.schema, table.name)
    raw = conn.connection.driver_connection
    text = query.format(ids=literal).as_string(raw)
    return [tuple(r) for r in conn.exec_driver_sql(text, {"visit": float(visit_mjd)})]


@functools.lru_cache(maxsize=16)
def _fix_versions_query(schema_name: str | None, table: str) -> pgsql.Composed:
    """Return the version fix-up statement of ``table``, with an ``{ids}`` placeholder."""
    target = pgsql.Identifier(schema_name, table) if schema_name else pgsql.Identifier(table)
    template = pgsql.SQL(
        "WITH replaced AS (DELETE FROM {t} WHERE {id} = ANY({{ids}}::bigint[]) "
        "AND {start} = %(visit)s RETURNING 1), "
        "closed AS (UPDATE {t} SET {end} = %(visit)s WHERE {id} = ANY({{ids}}::bigint[]) "
        "AND {start} < %(visit)s AND ({end} IS NULL OR {end} > %(visit)s) RETURNING 1) "
        "SELECT {id}, min({start}) FROM {t} WHERE {id} = ANY({{ids}}::bigint[]) "
        "AND {start} > %(visit)s GROUP BY {id}"
    ).format(
        t=target,
        id=pgsql.Identifier("diaObjectId"),
        start=pgsql.Identifier("validityStartMjdTai"),
        end=pgsql.Identifier("validityEndMjdTai"),
    )
    return pgsql.SQL(template.as_string(None))


def _with_ends(batch: Batch, newer: list[tuple[int, float]]) -> Batch:
    """``batch`` plus ``validityEndMjdTai``: the next newer start, or NULL."""
    if not newer:
        return batch
    found = np.array([r[0] for r in newer], dtype=np.int64)
    starts = np.array([r[1] for r in newer], dtype=np.float64)
    ids = batch.values["diaObjectId"].astype(np.int64)
    order = np.argsort(found)
    pos = np.searchsorted(found[order], ids)
    pos = np.minimum(pos, len(found) - 1)
    hit = found[order][pos] == ids
    ends = np.where(hit, starts[order][pos], np.nan)
    values = dict(batch.values)
    values["validityEndMjdTai"] = ends
    nulls = dict(batch.nulls)
    nulls["validityEndMjdTai"] = ~hit
    return Batch(batch.table, batch.n, values, nulls)


def _insert_generic(conn: sa.Connection, table: sa.Table, batch: Batch) -> None:
    cols = batch.columns
    stmt = sa.insert(table).values({c: sa.bindparam(c) for c in cols})
    compiled = stmt.compile(dialect=conn.dialect)
    # Positional order of the compiled statement's parameters.
    order = compiled.positiontup or cols
    if list(order) != cols:  # columns put in that order before the rows are built
        batch = Batch(batch.table, batch.n, {c: batch.values[c] for c in order}, batch.nulls)
    conn.exec_driver_sql(compiled.string, batch.records())


def _insert_postgres(conn: sa.Connection, table: sa.Table, batch: Batch) -> None:
    """Binary COPY of the batch straight into ``table``.

    Each piece of the stream is sent before the next is encoded, so the
    server inserts the rows it has while the client encodes the next ones.
    """
    fields, nulls = _fields(table, batch)
    pieces = encode_pieces(fields, batch.n, nulls, COPY_PIECE_ROWS)
    _copy_pieces(conn, table, tuple(batch.columns), pieces)


def _fields(table: sa.Table, batch: Batch) -> tuple[list, list[np.ndarray | None]]:
    """COPY fields and NULL masks of the batch's columns, in batch order."""
    types = _datatypes(table.name)
    names = batch.columns
    return [make_field(batch.values[c], types[c]) for c in names], [
        batch.null_mask(c) for c in names
    ]


def _encode(table: sa.Table, batch: Batch) -> bytes:
    """Return the whole binary COPY stream of the batch."""
    fields, nulls = _fields(table, batch)
    return encode_rows(fields, batch.n, nulls)


def _copy_pieces(
    conn: sa.Connection, table: sa.Table, names: tuple[str, ...], pieces: Iterable
) -> None:
    """Run ``COPY table (names) FROM STDIN`` of the stream ``pieces`` in the transaction."""
    query = _copy_in_query(table.schema, table.name, names)
    raw = conn.connection.driver_connection
    try:
        with raw.cursor() as cur, cur.copy(query) as copy:
            for piece in pieces:
                copy.write(piece)
    except psycopg.errors.IntegrityError as exc:
        raise sa.exc.IntegrityError(query, None, exc) from exc
    except psycopg.Error as exc:
        if effective_sqlstate(exc) == "23505":  # a Citus worker's unique violation
            raise sa.exc.IntegrityError(query, None, exc) from exc
        raise sa.exc.DBAPIError(query, None, exc) from exc


@functools.lru_cache(maxsize=32)
def _datatypes(table: str) -> dict[str, str]:
    """``{column: Felis datatype}`` of ``table``."""
    return {c.name: c.datatype for c in schema.table_columns(table)}


@functools.lru_cache(maxsize=256)
def _copy_in_query(schema_name: str | None, table: str, names: tuple[str, ...]) -> str:
    """``COPY table (columns) FROM STDIN (FORMAT BINARY)``, composed once per column set."""
    target = pgsql.Identifier(schema_name, table) if schema_name else pgsql.Identifier(table)
    query = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        target, pgsql.SQL(", ").join(map(pgsql.Identifier, names))
    )
    return query.as_string(None)
