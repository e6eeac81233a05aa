"""SQL of Rubin's daytime APDB operations (deduplication, validity, withdrawal).

Every function takes a connection inside the caller's transaction (writes run
under `apdb.sql.transaction.write_transaction`, which locks the DiaObjects
they touch in ascending id order on PostgreSQL).  Checks come first: an
unknown id raises `apdb.errors.UnknownIdError` before anything is written, so
the transaction rolls back with nothing changed.  Semantics are documented on
the `apdb.Apdb` methods that call these.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import sqlalchemy as sa

from apdb.errors import ApdbInputError, UnknownIdError
from apdb.sql.reads import id_filter, read_frame

__all__ = [
    "DEDUP_COLUMNS",
    "dedup_objects",
    "open_objects",
    "reassign_to_objects",
    "set_validity_end",
    "sources_of_objects",
    "withdraw",
]

DEDUP_COLUMNS: tuple[str, ...] = (
    "diaObjectId",
    "validityStartMjdTai",
    "ra",
    "dec",
    "nDiaSources",
    "firstDiaSourceMjdTai",
)
"""DiaObject columns returned for deduplication (Rubin's default subset)."""


def _latest(table: sa.Table) -> sa.ColumnElement[bool]:
    return table.c.validityEndMjdTai.is_(None)


def dedup_objects(conn: sa.Connection, table: sa.Table, since_mjd: float | None) -> pd.DataFrame:
    """Latest DiaObject versions with ``validityStartMjdTai >= since_mjd``.

    Returns the `DEDUP_COLUMNS`, ordered by ``diaObjectId``.
    """
    where = _latest(table)
    if since_mjd is not None:
        where = sa.and_(where, table.c.validityStartMjdTai >= since_mjd)
    frame = read_frame(conn, table, where)
    frame = frame.loc[:, list(DEDUP_COLUMNS)].sort_values("diaObjectId", kind="stable")
    return frame.reset_index(drop=True)


def sources_of_objects(
    conn: sa.Connection, table: sa.Table, object_ids: np.ndarray, start_mjd: float
) -> pd.DataFrame:
    """DiaSources of ``object_ids`` with ``midpointMjdTai >= start_mjd`` (withdrawn too)."""
    if object_ids.size == 0:
        return read_frame(conn, table, sa.false())
    where = sa.and_(
        id_filter(table.c.diaObjectId, object_ids, conn.dialect.name),
        table.c.midpointMjdTai >= start_mjd,
    )
    return read_frame(conn, table, where)


def open_objects(conn: sa.Connection, table: sa.Table, object_ids: np.ndarray) -> dict[int, float]:
    """``{diaObjectId: validityStartMjdTai}`` of the latest versions among ``object_ids``."""
    if object_ids.size == 0:
        return {}
    stmt = sa.select(table.c.diaObjectId, table.c.validityStartMjdTai).where(
        _latest(table), id_filter(table.c.diaObjectId, object_ids, conn.dialect.name)
    )
    return {int(r[0]): float(r[1]) for r in conn.execute(stmt)}


def reassign_to_objects(
    conn: sa.Connection,
    sources: sa.Table,
    objects: sa.Table,
    source_ids: np.ndarray,
    object_ids: np.ndarray,
    *,
    increment: bool,
    decrement: bool,
) -> dict[int, int]:
    """Point DiaSources at other DiaObjects and move their ``nDiaSources`` counts.

    Parameters
    ----------
    conn : `sqlalchemy.Connection`
        Connection in a write transaction.
    sources, objects : `sqlalchemy.Table`
        ``DiaSource`` and ``DiaObject``.
    source_ids, object_ids : `numpy.ndarray`
        Distinct ``diaSourceId`` values and the ``diaObjectId`` each moves to.
    increment, decrement : `bool`
        Add one to the target's latest version per source moved to it; take
        one from the latest version of the object it leaves.

    Returns
    -------
    changes : `dict` [`int`, `int`]
        ``{diaObjectId: change of nDiaSources}`` applied (non-zero only).

    Raises
    ------
    UnknownIdError
        A source is not stored, or a target has no open version.
    """
    dialect = conn.dialect.name
    stmt = sa.select(sources.c.diaSourceId, sources.c.diaObjectId).where(
        id_filter(sources.c.diaSourceId, source_ids, dialect)
    )
    previous = {int(r[0]): (None if r[1] is None else int(r[1])) for r in conn.execute(stmt)}
    missing = sorted(set(source_ids.tolist()) - set(previous))
    if missing:
        raise UnknownIdError("DiaSource", "diaSourceId", missing)
    targets = np.unique(object_ids)
    missing = sorted(set(targets.tolist()) - set(open_objects(conn, objects, targets)))
    if missing:
        raise UnknownIdError("DiaObject", "diaObjectId (open version)", missing)

    order = np.argsort(source_ids, kind="stable")
    conn.execute(
        sa.update(sources)
        .where(sources.c.diaSourceId == sa.bindparam("src"))
        .values(diaObjectId=sa.bindparam("obj")),
        [{"src": int(source_ids[i]), "obj": int(object_ids[i])} for i in order],
    )
    counts: Counter[int] = Counter()
    if increment:
        counts.update(int(o) for o in object_ids)
    if decrement:
        counts.subtract(o for o in (previous[int(s)] for s in source_ids) if o is not None)
    changes = {k: v for k, v in sorted(counts.items()) if v != 0}
    if changes:
        n = objects.c.nDiaSources
        conn.execute(
            sa.update(objects)
            .where(objects.c.diaObjectId == sa.bindparam("oid"), _latest(objects))
            .values(nDiaSources=n + sa.bindparam("delta", type_=sa.Integer)),
            [{"oid": k, "delta": v} for k, v in changes.items()],
        )
    return changes


def set_validity_end(
    conn: sa.Connection,
    table: sa.Table,
    object_ids: np.ndarray,
    end_mjd: float,
    *,
    raise_on_missing_id: bool,
) -> int:
    """Close the open version of each DiaObject; return how many were closed.

    Raises
    ------
    UnknownIdError
        ``raise_on_missing_id`` and some ids have no open version.
    ApdbInputError
        ``end_mjd`` is before the ``validityStartMjdTai`` of a version to close.
    """
    found = open_objects(conn, table, object_ids)
    if raise_on_missing_id:
        missing = sorted(set(object_ids.tolist()) - set(found))
        if missing:
            raise UnknownIdError("DiaObject", "diaObjectId (open version)", missing)
    if not found:
        return 0
    early = sorted(k for k, start in found.items() if start > end_mjd)
    if early:
        raise ApdbInputError(
            "DiaObject",
            f"validity_end (MJD TAI {end_mjd}) is before validityStartMjdTai of "
            f"diaObjectId {early[:10]}; nothing was changed",
        )
    ids = np.fromiter(found, dtype=np.int64, count=len(found))
    stmt = (
        sa.update(table)
        .where(id_filter(table.c.diaObjectId, ids, conn.dialect.name), _latest(table))
        .values(validityEndMjdTai=end_mjd)
    )
    return int(conn.execute(stmt).rowcount)


def withdraw(
    conn: sa.Connection, table: sa.Table, id_column: str, ids: np.ndarray, time_mjd: float
) -> int:
    """Set ``timeWithdrawnMjdTai`` on rows not yet withdrawn; return how many.

    Raises
    ------
    UnknownIdError
        Some ids are not stored.
    """
    if ids.size == 0:
        return 0
    column = table.c[id_column]
    where = id_filter(column, ids, conn.dialect.name)
    found = {int(r[0]) for r in conn.execute(sa.select(column).where(where))}
    missing = sorted(set(ids.tolist()) - found)
    if missing:
        raise UnknownIdError(table.name, id_column, missing)
    stmt = (
        sa.update(table)
        .where(where, table.c.timeWithdrawnMjdTai.is_(None))
        .values(timeWithdrawnMjdTai=time_mjd)
    )
    return int(conn.execute(stmt).rowcount)
