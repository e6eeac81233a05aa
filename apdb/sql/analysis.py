"""Analyst reads through the ``DiaLightCurve`` view: light curves and the busiest objects.

The view (alembic revision 0002) holds one row per measurement of a
DiaObject: its DiaSources (``kind`` = 'detection') and DiaForcedSources
(``kind`` = 'forced').  Statements are SQLAlchemy Core; values come back with
the schema's dtypes (`apdb.schema.ColumnInfo.pandas_dtype`), so a light curve
reads the same on PostgreSQL and SQLite.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa

from apdb import schema
from apdb.errors import ApdbDatabaseError

__all__ = ["LIGHT_CURVE_COLUMNS", "busiest_dia_objects", "light_curve"]

LIGHT_CURVE_VIEW = "DiaLightCurve"

LIGHT_CURVE_COLUMNS: tuple[str, ...] = (
    "diaObjectId",
    "kind",
    "measurementId",
    "visit",
    "detector",
    "band",
    "midpointMjdTai",
    "ra",
    "dec",
    "psfFlux",
    "psfFluxErr",
    "scienceFlux",
    "scienceFluxErr",
)
"""Columns of the ``DiaLightCurve`` view (``kind`` is 'detection' or 'forced')."""


def _column_infos() -> list[schema.ColumnInfo]:
    """Column descriptions of the view: DiaSource's, plus ``kind`` and ``measurementId``."""
    source = {c.name: c for c in schema.table_columns("DiaSource")}
    extra = {
        "kind": schema.ColumnInfo("kind", "string", False, 16),
        "measurementId": schema.ColumnInfo("measurementId", "long", False),
    }
    return [extra.get(name) or source[name] for name in LIGHT_CURVE_COLUMNS]


_INFOS = _column_infos()
_VIEW = sa.table(LIGHT_CURVE_VIEW, *(sa.column(c.name, c.sa_type()) for c in _INFOS))


def light_curve(conn: sa.Connection, dia_object_id: int) -> pd.DataFrame:
    """Return every measurement of one DiaObject, ordered by time, kind and id.

    Parameters
    ----------
    conn : `sqlalchemy.Connection`
        Connection to an APDB at revision 0002 or later.
    dia_object_id : `int`
        The object.

    Returns
    -------
    curve : `pandas.DataFrame`
        `LIGHT_CURVE_COLUMNS` with the schema's dtypes (fluxes ``float32``
        in nJy, NULL read as NaN); empty for an unknown object.

    Raises
    ------
    ApdbDatabaseError
        The view cannot be read.
    """
    query = (
        sa.select(_VIEW)
        .where(_VIEW.c.diaObjectId == sa.bindparam("oid", int(dia_object_id), sa.BigInteger))
        .order_by(_VIEW.c.midpointMjdTai, _VIEW.c.kind, _VIEW.c.measurementId)
    )
    try:
        rows = conn.execute(query).all()
    except sa.exc.SQLAlchemyError as exc:
        raise ApdbDatabaseError(
            f"cannot read the light curve of DiaObject {dia_object_id}: {exc}"
        ) from exc
    return _typed_frame(rows)


def busiest_dia_objects(conn: sa.Connection, n: int) -> pd.DataFrame:
    """Return the ``n`` DiaObjects with the most measurements.

    Parameters
    ----------
    conn : `sqlalchemy.Connection`
        Connection to an APDB at revision 0002 or later.
    n : `int`
        How many objects.

    Returns
    -------
    objects : `pandas.DataFrame`
        ``diaObjectId`` and ``nMeasurements`` (detections plus forced
        measurements), most measured first, ties by increasing id.

    Raises
    ------
    ApdbDatabaseError
        The view cannot be read.
    """
    count = sa.func.count().label("nMeasurements")
    query = (
        sa.select(_VIEW.c.diaObjectId, count)
        .group_by(_VIEW.c.diaObjectId)
        .order_by(count.desc(), _VIEW.c.diaObjectId)
        .limit(sa.bindparam("n", int(n), sa.Integer))
    )
    try:
        rows = conn.execute(query).all()
    except sa.exc.SQLAlchemyError as exc:
        raise ApdbDatabaseError(f"cannot list the busiest DiaObjects: {exc}") from exc
    return pd.DataFrame(
        {
            "diaObjectId": np.array([r[0] for r in rows], dtype=np.int64),
            "nMeasurements": np.array([r[1] for r in rows], dtype=np.int64),
        }
    )


def _typed_frame(rows: list[sa.Row]) -> pd.DataFrame:
    """Rows of the view as a frame with the schema's dtypes.

    Floats go through their column's numpy dtype: a ``REAL`` value comes
    back from PostgreSQL as its shortest decimal text and from SQLite as a
    double, and both round to the same ``float32``.
    """
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(_INFOS)
    data = {}
    for info, values in zip(_INFOS, columns, strict=True):
        obj = np.array(values, dtype=object)
        nulls = np.equal(obj, None)
        if info.datatype in ("double", "float"):
            obj[nulls] = np.nan
            data[info.name] = obj.astype(info.numpy_dtype)
        elif info.numpy_dtype.kind == "O":
            data[info.name] = pd.Series(obj, dtype=object)
        else:
            series = pd.Series(np.where(nulls, 0, obj).astype(info.numpy_dtype))
            data[info.name] = (
                series.astype(info.pandas_dtype).mask(nulls) if nulls.any() else series
            )
    return pd.DataFrame(data, columns=list(LIGHT_CURVE_COLUMNS))
