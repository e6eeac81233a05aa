"""Rubin's daytime APDB operations on SQL: input checks and write transactions.

`ApdbSqlUpdates` backs the "Rubin operations" methods of `apdb.sql.ApdbSql`
(whose methods stay thin).  Input is checked before any transaction; writes
run under `apdb.sql.transaction.write_transaction` (SQLite ``BEGIN
IMMEDIATE``; PostgreSQL sorted advisory locks on the DiaObjects touched, the
same locks `ApdbSql.store` takes, and bounded retries); the SQL itself is in
`apdb.sql.operations`.  Semantics are documented on `apdb.Apdb`.

Each call is one transaction, whatever its size.  Advisory locks take one
slot each in PostgreSQL's shared lock table (``max_locks_per_transaction ×
max_connections``, 6,400 by default), so a call touching more than
`MAX_LOCKED_OBJECTS` DiaObjects takes none: it relies on row locks, and a
deadlock with a concurrent store is detected by the server and retried by
`write_transaction` like any other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import sqlalchemy as sa
from astropy.time import Time

from apdb.errors import (
    ApdbDatabaseError,
    ApdbInputError,
    ColumnTypeError,
    DuplicateIdError,
    MissingColumnsError,
)
from apdb.schema import ApdbTables
from apdb.sql import operations
from apdb.sql.history import HistoryWriter
from apdb.sql.metadata import ApdbMetadataSql
from apdb.sql.reads import id_filter
from apdb.sql.replica import ReplicaWriter
from apdb.sql.transaction import write_transaction

__all__ = [
    "DEDUP_KEY",
    "MAX_LOCKED_OBJECTS",
    "ApdbMetadataSql",
    "ApdbSqlUpdates",
    "column_ids",
    "id_pairs",
    "time_mjd",
]

DEDUP_KEY = "status:deduplication.json"
"""`metadata` key of the last deduplication time (Rubin's key)."""

MAX_LOCKED_OBJECTS = 1000
"""Most DiaObjects one call locks with advisory locks (see the module notes)."""

IdsLike = pd.DataFrame | Iterable[int] | np.ndarray


class ApdbSqlUpdates:
    """Deduplication, validity, withdrawal and metadata operations of one APDB.

    Parameters
    ----------
    engine : `sqlalchemy.Engine`
        The APDB engine.
    md : `sqlalchemy.MetaData`
        Its schema.
    """

    def __init__(
        self,
        engine: sa.Engine,
        md: sa.MetaData,
        replica: ReplicaWriter | None = None,
        history: HistoryWriter | None = None,
    ):
        self._engine = engine
        self._md = md
        self._replica = replica
        self._history = history

    def _table(self, name: ApdbTables) -> sa.Table:
        return self._md.tables[name.value]

    @property
    def metadata(self) -> ApdbMetadataSql:
        """The ``metadata`` key/value table."""
        return ApdbMetadataSql(self._engine, self._table(ApdbTables.metadata))

    # -- deduplication --------------------------------------------------------
    def get_dia_objects_for_dedup(self, since: Time | None) -> pd.DataFrame:
        """Latest DiaObjects started at or after ``since`` (default: last reset)."""
        since_mjd = (
            self._last_dedup_mjd() if since is None else time_mjd("DiaObject", "since", since)
        )
        with self._engine.connect() as conn:
            return operations.dedup_objects(conn, self._table(ApdbTables.DiaObject), since_mjd)

    def reset_dedup(self, dedup_time: Time | None) -> None:
        """Record the deduplication time (now by default) in `metadata`."""
        t = Time.now() if dedup_time is None else dedup_time
        mjd = time_mjd("metadata", "dedup_time", t)
        state = {"dedup_time_mjd_tai": mjd, "dedup_time_iso_tai": t.tai.iso}
        self.metadata.set(DEDUP_KEY, json.dumps(state), force=True)

    def _last_dedup_mjd(self) -> float | None:
        text = self.metadata.get(DEDUP_KEY)
        if text is None:
            return None
        try:
            state = json.loads(text)
            if "dedup_time_mjd_tai" in state:
                return float(state["dedup_time_mjd_tai"])
            # Rubin's APDB records only the ISO time.
            return float(Time(state["dedup_time_iso_tai"], format="iso", scale="tai").mjd)
        except (ValueError, KeyError, TypeError) as exc:
            raise ApdbDatabaseError(f"metadata {DEDUP_KEY!r} is malformed: {text!r}") from exc

    def get_dia_sources_for_dia_objects(
        self, objects: IdsLike, start_time: Time, max_dist_arcsec: float
    ) -> pd.DataFrame:
        """DiaSources of ``objects`` since ``start_time``, withdrawn ones included."""
        ids = column_ids("DiaObject", objects, "diaObjectId")
        start = time_mjd("DiaSource", "start_time", start_time)
        dist = max_dist_arcsec
        if isinstance(dist, bool) or not isinstance(dist, int | float | np.number):
            raise ColumnTypeError("DiaSource", "max_dist_arcsec", "float", type(dist).__name__)
        if not (np.isfinite(dist) and dist >= 0):
            raise ApdbInputError("DiaSource", f"max_dist_arcsec must be >= 0, got {dist}")
        with self._engine.connect() as conn:
            table = self._table(ApdbTables.DiaSource)
            return operations.sources_of_objects(conn, table, ids, start)

    # -- writes -----------------------------------------------------------------
    def reassign_dia_sources_to_dia_objects(
        self, id_map: Mapping[int, int] | pd.DataFrame, *, increment: bool, decrement: bool
    ) -> None:
        """Move DiaSources to other DiaObjects, moving ``nDiaSources`` counts."""
        src, obj = id_pairs(id_map, "diaSourceId", "diaObjectId")
        if src.size == 0:
            return
        sources = self._table(ApdbTables.DiaSource)
        objects = self._table(ApdbTables.DiaObject)
        # Lock the objects left as well as the targets, in one ascending pass.
        with self._engine.connect() as conn:
            stmt = sa.select(sources.c.diaObjectId).where(
                id_filter(sources.c.diaSourceId, src, conn.dialect.name),
                sources.c.diaObjectId.is_not(None),
            )
            left = np.array([r[0] for r in conn.execute(stmt)], dtype=np.int64)

        def work(conn: sa.Connection) -> None:
            changes = operations.reassign_to_objects(
                conn, sources, objects, src, obj, increment=increment, decrement=decrement
            )
            if self._history is not None:
                where = id_filter(sources.c.diaSourceId, src, conn.dialect.name)
                self._history.record_update(conn, "DiaSource", where, ("diaObjectId",))
            if self._replica is not None:
                dialect = conn.dialect.name
                self._replica.record_update(
                    conn,
                    "reassign_dia_sources_to_dia_objects",
                    "DiaSource",
                    ("diaSourceId",),
                    ("diaObjectId",),
                    id_filter(sources.c.diaSourceId, src, dialect),
                )
                if changes:
                    changed = np.fromiter(changes, dtype=np.int64, count=len(changes))
                    self._replica.record_update(
                        conn,
                        "n_dia_sources",
                        "DiaObject",
                        ("diaObjectId", "validityStartMjdTai"),
                        ("nDiaSources",),
                        sa.and_(
                            id_filter(objects.c.diaObjectId, changed, dialect),
                            objects.c.validityEndMjdTai.is_(None),
                        ),
                    )

        write_transaction(
            self._engine,
            work,
            what="reassign_dia_sources_to_dia_objects",
            object_ids=_lockable(np.concatenate([obj, left])),
        )

    def set_validity_end(self, objects: IdsLike, validity_end: Time, raise_on_missing: bool) -> int:
        """Close the open versions of ``objects``; return how many were closed."""
        ids = column_ids("DiaObject", objects, "diaObjectId")
        end = time_mjd("DiaObject", "validity_end", validity_end)
        if ids.size == 0:
            return 0
        table = self._table(ApdbTables.DiaObject)

        def work(conn: sa.Connection) -> int:
            closed = operations.set_validity_end(
                conn, table, ids, end, raise_on_missing_id=raise_on_missing
            )
            if self._replica is not None and closed:
                self._replica.record_update(
                    conn,
                    "set_validity_end",
                    "DiaObject",
                    ("diaObjectId", "validityStartMjdTai"),
                    ("validityEndMjdTai",),
                    sa.and_(
                        id_filter(table.c.diaObjectId, ids, conn.dialect.name),
                        table.c.validityEndMjdTai == end,
                    ),
                )
            return closed

        return write_transaction(
            self._engine, work, what="set_validity_end", object_ids=_lockable(ids)
        )

    def withdraw(self, name: ApdbTables, column: str, ids: IdsLike, when: Time | None) -> int:
        """Withdraw rows of ``name`` by ``column``; return how many were newly withdrawn."""
        values = column_ids(name.value, ids, column)
        mjd = time_mjd(name.value, "time_withdrawn", Time.now() if when is None else when)
        if values.size == 0:
            return 0
        table = self._table(name)

        def work(conn: sa.Connection) -> int:
            n = operations.withdraw(conn, table, column, values, mjd)
            if self._history is not None and n:
                where = id_filter(table.c[column], values, conn.dialect.name)
                self._history.record_update(conn, name.value, where, ("timeWithdrawnMjdTai",))
            if self._replica is not None and n:
                self._replica.record_update(
                    conn,
                    f"withdraw_{_SNAKE[name.value]}",
                    name.value,
                    _KEYS[name.value],
                    ("timeWithdrawnMjdTai",),
                    id_filter(table.c[column], values, conn.dialect.name),
                )
            return n

        return write_transaction(self._engine, work, what=f"withdraw {name.value}")


_SNAKE = {"DiaSource": "dia_sources", "DiaForcedSource": "dia_forced_sources"}
# Primary keys of the tables whose rows update records name.
_KEYS = {"DiaSource": ("diaSourceId",), "DiaForcedSource": ("diaObjectId", "visit", "detector")}


def _lockable(object_ids: np.ndarray) -> np.ndarray | None:
    """Return the ids to lock, or `None` when there are too many (row locks only)."""
    ids = np.unique(object_ids)
    return ids if ids.size <= MAX_LOCKED_OBJECTS else None


def time_mjd(table: str, name: str, t: object) -> float:
    """MJD TAI of a scalar `astropy.time.Time` argument (our error for anything else)."""
    if not isinstance(t, Time) or not t.isscalar:
        raise ColumnTypeError(table, name, "scalar astropy.time.Time", type(t).__name__)
    return float(t.tai.mjd)


def _checked_ids(table: str, column: str, values: object) -> np.ndarray:
    """Integer ids (integral floats accepted), none negative."""
    try:
        arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values)
    except (TypeError, ValueError) as exc:
        raise ColumnTypeError(table, column, "int64", type(values).__name__) from exc
    arr = arr.ravel()
    if arr.size and arr.dtype.kind not in "iu":
        integral = (
            arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
        )
        if not integral:
            raise ColumnTypeError(table, column, "int64", str(arr.dtype))
    if arr.size and arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise ApdbInputError(table, f"{column} does not fit in int64")
    ids = arr.astype(np.int64)
    if ids.size and ids.min() < 0:
        raise ApdbInputError(table, f"negative {column}: {sorted(set(ids[ids < 0].tolist()))[:10]}")
    return ids


def column_ids(table: str, values: object, column: str) -> np.ndarray:
    """Distinct ids from a frame's ``column`` or from an array-like of ints."""
    if isinstance(values, pd.DataFrame):
        if column not in values.columns:
            raise MissingColumnsError(table, [column])
        values = values[column].to_numpy()
    elif isinstance(values, str | bytes) or not isinstance(values, Iterable | np.ndarray):
        raise ColumnTypeError(table, column, "array of int64", type(values).__name__)
    return np.unique(_checked_ids(table, column, values))


def id_pairs(
    id_map: Mapping[int, int] | pd.DataFrame, key: str, value: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, values)`` of an id map given as a mapping or a two-column frame.

    Raises
    ------
    DuplicateIdError
        A key appears twice (in a frame).
    """
    if isinstance(id_map, pd.DataFrame):
        missing = [c for c in (key, value) if c not in id_map.columns]
        if missing:
            raise MissingColumnsError("DiaSource", missing)
        keys, values = id_map[key].to_numpy(), id_map[value].to_numpy()
    elif isinstance(id_map, Mapping):
        keys, values = list(id_map.keys()), list(id_map.values())
    else:
        raise ColumnTypeError("DiaSource", key, "mapping or DataFrame", type(id_map).__name__)
    k = _checked_ids("DiaSource", key, keys)
    v = _checked_ids("DiaObject", value, values)
    uniq, counts = np.unique(k, return_counts=True)
    if (counts > 1).any():
        raise DuplicateIdError("DiaSource", key, uniq[counts > 1].tolist())
    return k, v
