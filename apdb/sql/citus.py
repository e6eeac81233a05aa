"""The sky partition column and what a Citus APDB needs on top of PostgreSQL.

Every APDB (revision 0004) has a ``partitionId`` column on `DiaObject`,
`DiaSource`, `DiaForcedSource` and `SSSource`: the HEALPix NESTED pixel at the
coarse ``sky.partition_order`` of the DiaObject's position *when it was
created*.  New versions of an object keep it, its sources and forced
sources carry it, a source without an object uses its own position, an
SSSource its DiaSource's.  `assign_partitions` computes it for a store, on
every backend, so that the column means the same thing everywhere.

On a Citus APDB (``config:backend`` = ``citus``) those four tables are
distributed on ``partitionId`` and co-located: an object, its versions, its
sources and forced sources are on one shard group, so a store touches the
shard groups of its detector only.  A region read adds
``partitionId = ANY(<partitions of the region>)`` (`partition_filter`), which
Citus prunes to those shards (router or few-shard queries; see
`explain_tasks`).

The partitions of a region are those of its cover, padded by one HEALPix
pixel at ``partition_order + 4`` (≈ 3.4 arcmin at order 6): an object's
partition is that of its first position, and the mean position may since
have drifted (by arcseconds) into a neighbouring partition.  Likewise a
store looks up existing objects among the partitions within one partition
pixel of the rows' positions: an object whose mean position drifted further
than that from where it was created (≈ 0.9 deg at order 6; association
radii are about an arcsecond) would not be found there.
"""

from __future__ import annotations

import math

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from apdb.frames import Batch
from apdb.sky import Region, _hp, pixel_index

__all__ = [
    "effective_sqlstate",
    "explain_tasks",
    "has_citus",
    "object_partitions",
    "partition_filter",
    "refuse_ids_stored_elsewhere",
    "region_partitions",
    "assign_partitions",
]

# Region covers are padded at this many orders below partition_order.
_PAD_ORDERS = 4


# Errors a worker raised inside a Citus COPY reach the client as XX000
# (internal_error) carrying the worker's message: their real SQLSTATEs.
_WORKER_MESSAGES = {
    "duplicate key value violates unique constraint": "23505",
    "deadlock detected": "40P01",
    "could not serialize access": "40001",
    "canceling statement due to lock timeout": "55P03",
}


def effective_sqlstate(exc: BaseException) -> str | None:
    """SQLSTATE of a driver error, with Citus's re-raised worker errors undone.

    Parameters
    ----------
    exc : `BaseException`
        A psycopg error (or anything with ``sqlstate``).

    Returns
    -------
    sqlstate : `str` or `None`
        The worker's SQLSTATE when Citus reported it as ``XX000``, else the
        error's own.
    """
    state = getattr(exc, "sqlstate", None)
    if state == "XX000":
        text = str(exc)
        for prefix, real in _WORKER_MESSAGES.items():
            if text.startswith(prefix):
                return real
    return state


def has_citus(conn: sa.Connection) -> bool:
    """Whether the database has the ``citus`` extension."""
    if conn.dialect.name != "postgresql":
        return False
    stmt = sa.text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")
    return conn.execute(stmt).scalar() is not None


def _int_array(values: np.ndarray) -> sa.ColumnElement:
    """Return a constant ``integer[]`` (rendered inline: Citus prunes on constants)."""
    text = "{" + ",".join(np.unique(values).astype(np.int64).astype(str).tolist()) + "}"
    param = sa.bindparam("parts", text, type_=sa.Text, literal_execute=True, unique=True)
    return sa.cast(param, postgresql.ARRAY(sa.Integer))


def partition_filter(column: sa.ColumnElement, partitions: np.ndarray) -> sa.ColumnElement[bool]:
    """``column = ANY('{p1,p2,...}'::integer[])`` (PostgreSQL only)."""
    if len(partitions) == 0:
        return sa.false()
    return column == sa.any_(_int_array(np.asarray(partitions)))


def region_partitions(region: Region, order: int) -> np.ndarray:
    """Partitions (pixels at ``order``) that may hold rows inside ``region``.

    The region's cover at ``order + 4`` grown by one ring of neighbours, then
    taken to ``order``; regions larger than a few partition pixels are covered
    at ``order`` and grown by one ring there.
    """
    hp = _hp()
    pixel_deg = math.degrees(math.sqrt(4.0 * math.pi / (12 * 4**order)))
    fine = order + _PAD_ORDERS if region.size_deg < 4.0 * pixel_deg else order
    pixels = np.asarray(region.cover_pixels(fine), dtype=np.int64)
    if pixels.size == 0:
        return pixels
    ring = hp.get_all_neighbours(1 << fine, pixels, nest=True).ravel()
    pixels = np.union1d(pixels, ring[ring >= 0])
    return np.unique(pixels >> (2 * (fine - order)))


def object_partitions(
    conn: sa.Connection, objects: sa.Table, ids: np.ndarray, order: int
) -> np.ndarray:
    """Partitions that may hold the sources of DiaObjects ``ids`` (for shard pruning).

    A source carries the partition of the object it was stored with; one
    moved by `reassign_dia_sources_to_dia_objects` (deduplication merges
    objects an arcsecond apart) keeps its old object's, which was created
    near the new object's position.  So: the objects' own partitions, and
    those within one HEALPix pixel at ``order + 4`` (≈ 3.4 arcmin at order 6)
    of any version's position, the padding `region_partitions` uses.  One
    small query over DiaObject (every shard); an id with no DiaObject
    contributes nothing.
    """
    from apdb.sql.reads import id_filter

    ids = np.asarray(ids, dtype=np.int64)
    stmt = (
        sa.select(objects.c.partitionId, objects.c.ra, objects.c.dec)
        .distinct()
        .where(id_filter(objects.c.diaObjectId, ids, "postgresql"))
    )
    rows = conn.execute(stmt).all()
    if not rows:
        return np.zeros(0, dtype=np.int64)
    own, ra, dec = (np.asarray(column) for column in zip(*rows, strict=True))
    fine = order + _PAD_ORDERS
    pixels = _neighbourhood(pixel_index(ra.astype(float), dec.astype(float), fine), fine)
    return np.union1d(own.astype(np.int64), pixels >> (2 * _PAD_ORDERS))


def refuse_ids_stored_elsewhere(
    conn: sa.Connection, tables: dict[str, sa.Table], batches: list[Batch]
) -> None:
    """Citus: refuse DiaSource/DiaForcedSource ids already stored in any partition.

    On PostgreSQL and SQLite the primary key (``diaSourceId``) and the
    ``diaForcedSourceId`` unique constraint refuse a reused id; on Citus both
    start with ``partitionId`` (the distribution column), so an id reused
    under another partition would be accepted.  This query, in the store's
    transaction before the inserts, reads every shard through the id
    indexes of revision 0007.  Two concurrent stores reusing one id in two
    partitions can both pass it (no cross-shard unique key).

    Raises
    ------
    apdb.errors.AlreadyStoredError
        Some ids are stored (the same error as the other backends raise).
    """
    from apdb.errors import AlreadyStoredError
    from apdb.sql.reads import id_filter

    keys = {"DiaSource": "diaSourceId", "DiaForcedSource": "diaForcedSourceId"}
    for batch in batches:
        key = keys.get(batch.table)
        if key is None or batch.n == 0 or key not in batch.values:
            continue
        column = tables[batch.table].c[key]
        ids = np.asarray(batch.values[key], dtype=np.int64)
        stmt = sa.select(column).where(id_filter(column, ids, "postgresql"))
        found = sorted(r[0] for r in conn.execute(stmt))
        if found:
            raise AlreadyStoredError(batch.table, key, found)


def _neighbourhood(pixels: np.ndarray, order: int) -> np.ndarray:
    """``pixels`` (at ``order``) and their 8 neighbours."""
    pixels = np.unique(pixels)
    if pixels.size == 0:
        return pixels
    ring = _hp().get_all_neighbours(1 << order, pixels, nest=True).ravel()
    return np.union1d(pixels, ring[ring >= 0])


def _lookup(
    conn: sa.Connection,
    table: sa.Table,
    key: str,
    ids: np.ndarray,
    candidates: np.ndarray | None,
) -> dict[int, int]:
    """``{id: partitionId}`` of stored rows whose ``key`` is in ``ids``."""
    from apdb.sql.reads import id_filter

    ids = np.unique(ids)
    if ids.size == 0:
        return {}
    clauses = [id_filter(table.c[key], ids, conn.dialect.name)]
    if candidates is not None:
        clauses.append(partition_filter(table.c.partitionId, candidates))
    stmt = sa.select(table.c[key], table.c.partitionId).where(*clauses).distinct()
    return {int(k): int(p) for k, p in conn.execute(stmt)}


def _lookup_arrays(
    conn: sa.Connection,
    table: sa.Table,
    key: str,
    ids: np.ndarray,
    candidates: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """`_lookup` as two arrays (ids, their ``partitionId``), without a dict per row."""
    from apdb.sql.reads import id_filter

    ids = np.unique(ids)
    if ids.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)

    def query(wanted: np.ndarray, latest: bool) -> np.ndarray:
        clauses = [id_filter(table.c[key], wanted, conn.dialect.name)]
        if candidates is not None:
            clauses.append(partition_filter(table.c.partitionId, candidates))
        if latest:
            clauses.append(table.c.validityEndMjdTai.is_(None))
        stmt = sa.select(table.c[key], table.c.partitionId).where(*clauses).distinct()
        # Plain tuples: numpy probes a SQLAlchemy Row for array attributes (an
        # exception per row).
        rows = list(map(tuple, conn.execute(stmt)))
        return np.array(rows, dtype=np.int64).reshape(-1, 2)

    if "validityEndMjdTai" in table.c:
        # DiaObject: the open versions first (one row per object, from the partial
        # index; every version has the same partition), then all versions of the
        # objects with none open.  An SQLite store of 10,000 objects with 15
        # versions each otherwise reads 150,000 wide rows.
        pairs = query(ids, latest=True)
        rest = np.setdiff1d(ids, pairs[:, 0])
        if rest.size:
            pairs = np.concatenate([pairs, query(rest, latest=False)])
    else:
        pairs = query(ids, latest=False)
    return pairs[:, 0], pairs[:, 1]


def _map_known(
    keys: np.ndarray,
    nulls: np.ndarray | None,
    known: tuple[np.ndarray, np.ndarray],
    own: np.ndarray,
) -> np.ndarray:
    """`_from_map` with the known pairs as arrays: ``own`` where a key is unknown or NULL.

    Where ``known`` holds a key twice, its last pair wins (as a dict would).
    """
    out = own.astype(np.int64).copy()
    known_keys, known_parts = known
    if known_keys.size == 0 or keys.size == 0:
        return out
    # The last occurrence of each key: unique over the reversed arrays.
    uniq, first_rev = np.unique(known_keys[::-1], return_index=True)
    parts = known_parts[::-1][first_rev]
    keys = keys.astype(np.int64)
    pos = np.minimum(np.searchsorted(uniq, keys), uniq.size - 1)
    hit = uniq[pos] == keys
    if nulls is not None:
        hit &= ~nulls
    out[hit] = parts[pos[hit]]
    return out


def _from_map(
    keys: np.ndarray, nulls: np.ndarray | None, known: dict[int, int], own: np.ndarray
) -> np.ndarray:
    out = own.astype(np.int64).copy()
    for i, k in enumerate(keys.tolist()):
        if nulls is not None and nulls[i]:
            continue
        p = known.get(k)
        if p is not None:
            out[i] = p
    return out


def assign_partitions(
    conn: sa.Connection,
    tables: dict[str, sa.Table],
    objects: Batch,
    sources: Batch,
    forced: Batch,
    ss_sources: Batch,
    *,
    index_order: int,
    partition_order: int,
    citus: bool,
) -> None:
    """Add the ``partitionId`` column to the batches of one store.

    Runs inside the store's transaction, after its DiaObject locks: an
    existing object keeps the partition it was created in (one query on
    ``DiaObject``, limited on Citus to the partitions around the rows'
    positions); a new one gets that of its position; sources and forced
    sources take their object's, or their own position's without one;
    SSSources take their DiaSource's (this call's, or the stored one), or
    their own position's (from ``galLon``/``galLat``).

    Parameters
    ----------
    conn : `sqlalchemy.Connection`
        The store's connection.
    tables : `dict` [`str`, `sqlalchemy.Table`]
        ``DiaObject`` and ``DiaSource`` tables.
    objects, sources, forced, ss_sources : `apdb.frames.Batch`
        Prepared batches (``pixelId`` computed); modified in place.
    index_order, partition_order : `int`
        HEALPix orders of ``pixelId`` and ``partitionId``.
    citus : `bool`
        Whether the database is a Citus cluster (lookups pruned by partition).
    """
    shift = 2 * (index_order - partition_order)

    def own(batch: Batch) -> np.ndarray:
        return (batch.values["pixelId"] >> shift).astype(np.int64)

    ref_ids = [b.values["diaObjectId"][~_nulls(b, "diaObjectId")] for b in (sources, forced) if b.n]
    if objects.n:
        ref_ids.append(objects.values["diaObjectId"])
    ids = np.concatenate(ref_ids) if ref_ids else np.zeros(0, np.int64)
    candidates = None
    if citus:
        here = [own(b) for b in (objects, sources, forced) if b.n]
        candidates = _neighbourhood(np.concatenate(here), partition_order) if here else None
    known = _lookup_arrays(conn, tables["DiaObject"], "diaObjectId", ids, candidates)
    if objects.n:
        parts = _map_known(objects.values["diaObjectId"], None, known, own(objects))
        objects.values["partitionId"] = parts.astype(np.int32)
        known = (
            np.concatenate([known[0], objects.values["diaObjectId"].astype(np.int64)]),
            np.concatenate([known[1], parts]),
        )
    for batch in (sources, forced):
        if batch.n:
            parts = _map_known(
                batch.values["diaObjectId"], batch.nulls.get("diaObjectId"), known, own(batch)
            )
            batch.values["partitionId"] = parts.astype(np.int32)
    if ss_sources.n:
        _assign_ss(conn, tables["DiaSource"], sources, ss_sources, partition_order)


def _nulls(batch: Batch, name: str) -> np.ndarray:
    mask = batch.nulls.get(name)
    return np.zeros(batch.n, bool) if mask is None else mask


def _assign_ss(
    conn: sa.Connection, table: sa.Table, sources: Batch, ss: Batch, partition_order: int
) -> None:
    known: dict[int, int] = {}
    if sources.n:
        known = dict(
            zip(
                sources.values["diaSourceId"].tolist(),
                sources.values["partitionId"].tolist(),
                strict=True,
            )
        )
    ids = ss.values["diaSourceId"]
    missing = np.array([i for i in ids.tolist() if i not in known], dtype=np.int64)
    if missing.size:
        known.update(_lookup(conn, table, "diaSourceId", missing, None))
    own = np.full(ss.n, -1, np.int64)
    absent = np.array([i not in known for i in ids.tolist()], dtype=bool)
    if absent.any():
        ra, dec = galactic_to_icrs(ss.values["galLon"][absent], ss.values["galLat"][absent])
        own[absent] = pixel_index(ra, dec, partition_order)
    ss.values["partitionId"] = _from_map(ids, None, known, own).astype(np.int32)


def galactic_to_icrs(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ICRS (ra, dec) in degrees of galactic (l, b) in degrees."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    icrs = SkyCoord(l=np.asarray(lon) * u.deg, b=np.asarray(lat) * u.deg, frame="galactic").icrs
    return icrs.ra.deg, icrs.dec.deg


def explain_tasks(conn: sa.Connection, stmt: sa.Select) -> tuple[int, list[str]]:
    """Return the number of Citus tasks (shard queries) of a SELECT, and its EXPLAIN.

    Parameters
    ----------
    conn : `sqlalchemy.Connection`
        Connection to the coordinator.
    stmt : `sqlalchemy.Select`
        The query (its parameters are rendered as literals).

    Returns
    -------
    tasks : `int`
        ``Task Count`` of the distributed plan (1: a router query).
    plan : `list` [`str`]
        The EXPLAIN lines.
    """
    compiled = stmt.compile(
        dialect=conn.dialect, compile_kwargs={"literal_binds": True, "render_postcompile": True}
    )
    lines = [r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}").fetchall()]
    counts = [int(line.split(":")[1]) for line in lines if line.strip().startswith("Task Count:")]
    return (sum(counts) if counts else 0), lines
