"""The two implementations, opened in a worker process on an existing database.

Each adapter does the three reads of a cycle in a cone and the store.  The
reference is Rubin's ``lsst-dax-apdb`` ``ApdbSql`` (as in
`bench.apdb_cycle.backends`, its ``last_object_table`` mode by default);
ours is `apdb.Apdb`.
"""

from __future__ import annotations

import astropy.time
import numpy as np
import pandas as pd

__all__ = ["OursCycleBackend", "ReferenceCycleBackend", "create_database"]


def _time(mjd: float) -> astropy.time.Time:
    return astropy.time.Time(mjd, format="mjd", scale="tai")


class OursCycleBackend:
    """This project's `apdb` on an existing database."""

    name = "apdb (ours)"

    def __init__(self, url: str):
        from apdb import Apdb

        self.apdb = Apdb.from_url(url)

    def read_objects(self, ra: float, dec: float, radius: float) -> pd.DataFrame:
        from apdb.sky import Cone

        self._region = Cone(ra, dec, radius)
        return self.apdb.get_dia_objects(self._region)

    # With the region of the objects' read, as the reference is called (Rubin's API):
    # the history comes from the history chunks.
    def read_sources(self, mjd: float, ids: np.ndarray) -> pd.DataFrame:
        return self.apdb.get_dia_sources(_time(mjd), region=self._region, object_ids=ids)

    def read_forced(self, mjd: float, ids: np.ndarray) -> pd.DataFrame:
        return self.apdb.get_dia_forced_sources(_time(mjd), region=self._region, object_ids=ids)

    def store(self, mjd: float, objects, sources, forced) -> None:
        self.apdb.store(_time(mjd), objects, sources, forced)

    def close(self) -> None:
        self.apdb.close()


class ReferenceCycleBackend:
    """Rubin's ``lsst-dax-apdb`` ``ApdbSql`` on an existing database."""

    name = "lsst-dax-apdb"

    def __init__(self, config: object):
        from lsst.dax.apdb import Apdb

        self.apdb = Apdb.from_config(config)
        self._columns: dict[str, list[str]] = {}

    def _subset(self, table: str, df: pd.DataFrame) -> pd.DataFrame:
        from lsst.dax.apdb import ApdbTables

        if table not in self._columns:
            have = {c.name for c in self.apdb.tableDef(ApdbTables[table]).columns}
            self._columns[table] = [c for c in df.columns if c in have]
        return df[self._columns[table]]

    @staticmethod
    def _cone(ra: float, dec: float, radius: float):
        from lsst.sphgeom import Angle, Circle, LonLat, UnitVector3d

        return Circle(UnitVector3d(LonLat.fromDegrees(ra, dec)), Angle.fromDegrees(radius))

    def read_objects(self, ra: float, dec: float, radius: float) -> pd.DataFrame:
        self._region = self._cone(ra, dec, radius)
        return self.apdb.getDiaObjects(self._region)

    def read_sources(self, mjd: float, ids: np.ndarray) -> pd.DataFrame:
        return self.apdb.getDiaSources(self._region, ids, _time(mjd))

    def read_forced(self, mjd: float, ids: np.ndarray) -> pd.DataFrame:
        return self.apdb.getDiaForcedSources(self._region, ids, _time(mjd))

    def store(self, mjd: float, objects, sources, forced) -> None:
        self.apdb.store(
            _time(mjd),
            self._subset("DiaObject", objects),
            self._subset("DiaSource", sources),
            self._subset("DiaForcedSource", forced),
        )

    def close(self) -> None:
        engine = getattr(self.apdb, "_engine", None)
        if engine is not None:
            engine.dispose()


def create_database(kind: str, url: str, ref_index: str = "last_object_table") -> object:
    """Create the schema; return what a worker needs to open it (URL or config)."""
    if kind == "ours":
        from apdb import Apdb

        Apdb.create(url).close()
        return url
    from lsst.dax.apdb.sql import ApdbSql

    return ApdbSql.init_database(url, dia_object_index=ref_index)


def open_backend(kind: str, handle: object):
    """Open a worker's backend from `create_database`'s handle."""
    if kind == "ours":
        return OursCycleBackend(handle)  # type: ignore[arg-type]
    return ReferenceCycleBackend(handle)
