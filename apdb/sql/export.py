"""Reads for catalog exports (`apdb.hats_export`): latest objects and their measurements."""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa

from apdb.sql.apdb_sql import ApdbSql
from apdb.sql.reads import id_filter, read_frame

__all__ = ["read_export_frames"]


def read_export_frames(db: ApdbSql) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return every latest DiaObject and its measurements.

    ``(objects, sources, forced)``: every DiaSource and DiaForcedSource of
    those objects, whatever their time, withdrawn ones included (with their
    ``timeWithdrawnMjdTai``), as in the ``DiaLightCurve`` view.
    """
    md = db.schema_metadata
    obj, src, frc = (md.tables[n] for n in ("DiaObject", "DiaSource", "DiaForcedSource"))
    with db.engine.connect() as conn:
        objects = read_frame(conn, obj, obj.c.validityEndMjdTai.is_(None))
        ids = objects["diaObjectId"].to_numpy(np.int64)
        dialect = conn.dialect.name
        frames = []
        for table in (src, frc):
            where = id_filter(table.c.diaObjectId, ids, dialect) if ids.size else sa.false()
            frames.append(read_frame(conn, table, where))
    return objects, frames[0], frames[1]
