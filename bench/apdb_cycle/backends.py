"""The two implementations under test, behind one small interface.

`ReferenceBackend` drives Rubin's ``lsst-dax-apdb`` (``ApdbSql``, the
``bench`` extra) and `OursBackend` drives this project's `apdb`.  Each one
owns a database on the same PostgreSQL server, receives the same
`~bench.apdb_cycle.workload.VisitData` and is timed by the caller phase by
phase.  Only the columns each implementation's table defines are passed to
``store`` (both follow Rubin's ``apdb.yaml``, so in practice all of them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import astropy.time
import numpy as np
import pandas as pd

from bench.apdb_cycle.workload import VisitData, WorkloadConfig


class Backend(ABC):
    """One APDB implementation on its own database."""

    name: str = ""

    def __init__(self, url: str, config: WorkloadConfig):
        self.url = url
        self.config = config
        self._columns: dict[str, list[str]] = {}

    @abstractmethod
    def table_columns(self, table: str) -> list[str]:
        """Column names of ``table`` in this implementation."""

    def subset(self, table: str, df: pd.DataFrame) -> pd.DataFrame:
        """Restrict ``df`` to the columns this implementation stores."""
        if table not in self._columns:
            have = set(self.table_columns(table))
            self._columns[table] = [c for c in df.columns if c in have]
        return df[self._columns[table]]

    def prepare(self, vd: VisitData) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """Frames to store for one visit (not timed)."""
        return (
            self.subset("DiaObject", vd.dia_objects),
            self.subset("DiaSource", vd.dia_sources),
            self.subset("DiaForcedSource", vd.dia_forced_sources),
        )

    @staticmethod
    def visit_time(vd: VisitData) -> astropy.time.Time:
        """The visit's midpoint as an astropy time (TAI)."""
        return astropy.time.Time(vd.mjd, format="mjd", scale="tai")

    @abstractmethod
    def read_objects(self, vd: VisitData) -> pd.DataFrame:
        """DiaObjects in the padded field."""

    @abstractmethod
    def read_sources(self, vd: VisitData, object_ids: np.ndarray) -> pd.DataFrame:
        """12-month DiaSource history of ``object_ids``."""

    @abstractmethod
    def read_forced_sources(self, vd: VisitData, object_ids: np.ndarray) -> pd.DataFrame:
        """12-month DiaForcedSource history of ``object_ids``."""

    @abstractmethod
    def store(
        self, vd: VisitData, objects: pd.DataFrame, sources: pd.DataFrame, forced: pd.DataFrame
    ) -> None:
        """Store one visit (one transaction)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class ReferenceBackend(Backend):
    """Rubin's ``lsst-dax-apdb`` ``ApdbSql`` on PostgreSQL (psycopg2 driver).

    Parameters
    ----------
    url : `str`
        ``postgresql+psycopg2://`` URL of an empty database.
    config : `WorkloadConfig`
        Workload (for the field geometry).
    dia_object_index : `str`
        ``ApdbSql``'s DiaObject indexing mode: ``last_object_table`` (a
        separate narrow table of the latest versions, its fastest mode for
        reads) or ``baseline``.
    """

    name = "lsst-dax-apdb"

    def __init__(self, url: str, config: WorkloadConfig, dia_object_index: str):
        super().__init__(url, config)
        from lsst.dax.apdb import Apdb
        from lsst.dax.apdb.sql import ApdbSql

        cfg = ApdbSql.init_database(url, dia_object_index=dia_object_index)
        self.apdb = Apdb.from_config(cfg)
        self.dia_object_index = dia_object_index
        self.name = f"{ReferenceBackend.name} [{dia_object_index}]"
        self.region = self._cone(config.radius_deg + config.margin_arcsec / 3600.0)

    def _cone(self, radius_deg: float):
        from lsst.sphgeom import Angle, Circle, LonLat, UnitVector3d

        center = UnitVector3d(LonLat.fromDegrees(self.config.ra0, self.config.dec0))
        return Circle(center, Angle.fromDegrees(radius_deg))

    def table_columns(self, table: str) -> list[str]:
        from lsst.dax.apdb import ApdbTables

        return [c.name for c in self.apdb.tableDef(ApdbTables[table]).columns]

    def read_objects(self, vd: VisitData) -> pd.DataFrame:
        return self.apdb.getDiaObjects(self.region)

    def read_sources(self, vd: VisitData, object_ids: np.ndarray) -> pd.DataFrame:
        return self.apdb.getDiaSources(self.region, object_ids, self.visit_time(vd))

    def read_forced_sources(self, vd: VisitData, object_ids: np.ndarray) -> pd.DataFrame:
        return self.apdb.getDiaForcedSources(self.region, object_ids, self.visit_time(vd))

    def store(self, vd, objects, sources, forced) -> None:
        self.apdb.store(self.visit_time(vd), objects, sources, forced)

    def close(self) -> None:
        engine = getattr(self.apdb, "_engine", None)
        if engine is not None:
            engine.dispose()


class OursBackend(Backend):
    """This project's `apdb` on PostgreSQL (psycopg 3).

    Parameters
    ----------
    url : `str`
        ``postgresql+psycopg://`` URL of an empty database (or ``sqlite:///`` of a
        new file).
    config : `WorkloadConfig`
        Workload (for the field geometry).
    name : `str`, optional
        Name in the report (default ``apdb (ours)``).
    """

    name = "apdb (ours)"

    def __init__(
        self, url: str, config: WorkloadConfig, name: str | None = None, chunks: bool = True
    ):
        super().__init__(url, config)
        from apdb import Apdb

        if name is not None:
            self.name = name
        from apdb.sky import Cone

        self.apdb = Apdb.create(url)
        # History reads from the history chunks (the default) or from the row tables.
        self.apdb.read_history_chunks = chunks
        radius = config.radius_deg + config.margin_arcsec / 3600.0
        self.region = Cone(config.ra0, config.dec0, radius)

    def table_columns(self, table: str) -> list[str]:
        from apdb.schema import table_columns

        return [c.name for c in table_columns(table)]

    def read_objects(self, vd: VisitData) -> pd.DataFrame:
        return self.apdb.get_dia_objects(self.region)

    # The region and the object ids, as the reference is called (Rubin's API).
    def read_sources(self, vd: VisitData, object_ids: np.ndarray) -> pd.DataFrame:
        t = self.visit_time(vd)
        return self.apdb.get_dia_sources(t, region=self.region, object_ids=object_ids)

    def read_forced_sources(self, vd: VisitData, object_ids: np.ndarray) -> pd.DataFrame:
        t = self.visit_time(vd)
        return self.apdb.get_dia_forced_sources(t, region=self.region, object_ids=object_ids)

    def store(self, vd, objects, sources, forced) -> None:
        self.apdb.store(self.visit_time(vd), objects, sources, forced)

    def close(self) -> None:
        close = getattr(self.apdb, "close", None)
        if close is not None:
            close()
