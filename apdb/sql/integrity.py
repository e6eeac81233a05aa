"""Consistency checks of an APDB's tables (for tests, benchmarks and operators).

`check_integrity` runs a few set-based queries and counts what should never
happen, whatever the order or concurrency of the stores:

- ``objects_without_latest``: DiaObjects with no open version
  (``validityEndMjdTai IS NULL``);
- ``objects_with_several_latest``: DiaObjects with more than one;
- ``broken_chains``: versions whose ``validityEndMjdTai`` is not the start of
  the object's next version (a gap or an overlap), or a last version that is
  closed;
- ``duplicate_dia_sources``, ``duplicate_forced_sources``,
  ``duplicate_visit_detectors``: repeated keys.

The queries use only column names shared with Rubin's schema, so they also
work on a database written by ``lsst-dax-apdb`` (pass its table names).
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

__all__ = ["INTEGRITY_CHECKS", "check_integrity", "dia_object_versions", "table_counts"]

INTEGRITY_CHECKS = (
    "objects_without_latest",
    "objects_with_several_latest",
    "broken_chains",
    "duplicate_dia_sources",
    "duplicate_forced_sources",
    "duplicate_visit_detectors",
)


def _table(name: str, *columns: str, schema: str | None = None) -> sa.TableClause:
    return sa.table(name, *[sa.column(c) for c in columns], schema=schema)


def dia_object_versions(
    conn: sa.Connection, *, table: str = "DiaObject", schema: str | None = None
) -> pd.DataFrame:
    """Every DiaObject version: id, start, end (NaN when open), ``nDiaSources``.

    Sorted by ``diaObjectId`` then ``validityStartMjdTai``.
    """
    t = _table(
        table,
        "diaObjectId",
        "validityStartMjdTai",
        "validityEndMjdTai",
        "nDiaSources",
        schema=schema,
    )
    stmt = sa.select(
        t.c.diaObjectId, t.c.validityStartMjdTai, t.c.validityEndMjdTai, t.c.nDiaSources
    ).order_by(t.c.diaObjectId, t.c.validityStartMjdTai)
    rows = conn.execute(stmt).all()
    frame = pd.DataFrame(
        rows, columns=["diaObjectId", "validityStartMjdTai", "validityEndMjdTai", "nDiaSources"]
    )
    return frame.astype(
        {
            "diaObjectId": "int64",
            "validityStartMjdTai": "float64",
            "validityEndMjdTai": "float64",
            "nDiaSources": "int64",
        }
    )


def check_integrity(
    conn: sa.Connection,
    *,
    schema: str | None = None,
    tables: dict[str, str] | None = None,
) -> dict[str, int]:
    """Count integrity violations (all zero on a healthy APDB).

    Parameters
    ----------
    conn : `sqlalchemy.Connection`
        Connection to the APDB.
    schema : `str`, optional
        Database schema (namespace) of the tables.
    tables : `dict` [`str`, `str`], optional
        Table names when they differ from ours (keys ``DiaObject``,
        ``DiaSource``, ``DiaForcedSource``, ``ApdbVisitDetector``; a
        missing or `None` entry skips that table's check).

    Returns
    -------
    counts : `dict` [`str`, `int`]
        One count per name of `INTEGRITY_CHECKS`.
    """
    names = {
        "DiaObject": "DiaObject",
        "DiaSource": "DiaSource",
        "DiaForcedSource": "DiaForcedSource",
        "ApdbVisitDetector": "ApdbVisitDetector",
    }
    names.update(tables or {})
    out = dict.fromkeys(INTEGRITY_CHECKS, 0)
    obj = _table(
        names["DiaObject"],
        "diaObjectId",
        "validityStartMjdTai",
        "validityEndMjdTai",
        schema=schema,
    )
    is_open = sa.case((obj.c.validityEndMjdTai.is_(None), 1), else_=0)
    per_object = (
        sa.select(obj.c.diaObjectId, sa.func.sum(is_open).label("n_open"))
        .group_by(obj.c.diaObjectId)
        .subquery()
    )
    row = conn.execute(
        sa.select(
            sa.func.count().filter(per_object.c.n_open == 0),
            sa.func.count().filter(per_object.c.n_open > 1),
        )
    ).one()
    out["objects_without_latest"], out["objects_with_several_latest"] = map(int, row)
    following = (
        sa.func.lead(obj.c.validityStartMjdTai)
        .over(partition_by=obj.c.diaObjectId, order_by=obj.c.validityStartMjdTai)
        .label("next_start")
    )
    chain = sa.select(obj.c.validityEndMjdTai.label("end"), following).subquery()
    broken = sa.or_(
        sa.and_(chain.c.next_start.is_(None), chain.c.end.is_not(None)),
        sa.and_(
            chain.c.next_start.is_not(None),
            sa.or_(chain.c.end.is_(None), chain.c.end != chain.c.next_start),
        ),
    )
    out["broken_chains"] = int(
        conn.execute(sa.select(sa.func.count()).select_from(chain).where(broken)).scalar()
    )
    out["duplicate_dia_sources"] = _duplicates(conn, names["DiaSource"], ("diaSourceId",), schema)
    out["duplicate_forced_sources"] = _duplicates(
        conn, names["DiaForcedSource"], ("diaObjectId", "visit", "detector"), schema
    )
    out["duplicate_visit_detectors"] = _duplicates(
        conn, names["ApdbVisitDetector"], ("visit", "detector"), schema
    )
    return out


def table_counts(
    conn: sa.Connection, names: tuple[str, ...], *, schema: str | None = None
) -> dict[str, int]:
    """Return the number of rows of each table in ``names``."""
    out = {}
    for name in names:
        stmt = sa.select(sa.func.count()).select_from(sa.table(name, schema=schema))
        out[name] = int(conn.execute(stmt).scalar())
    return out


def _duplicates(
    conn: sa.Connection, name: str | None, key: tuple[str, ...], schema: str | None
) -> int:
    """Rows beyond the first of each ``key`` value."""
    if name is None:
        return 0
    t = _table(name, *key, schema=schema)
    groups = (
        sa.select(sa.func.count().label("n"))
        .select_from(t)
        .group_by(*[t.c[k] for k in key])
        .having(sa.func.count() > 1)
        .subquery()
    )
    extra = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(groups.c.n - 1), 0))).scalar()
    return int(extra)
