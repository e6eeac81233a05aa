"""The public interface of the APDB: the abstract `Apdb` class.

Tasks use only this interface; `apdb.sql.ApdbSql` implements it on
PostgreSQL and SQLite.  DataFrames in and out use Rubin's APDB column names
(see `apdb.schema`); floats read back with NULL as NaN, nullable integers and
booleans as pandas masked dtypes (``Int64``, ``boolean``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from apdb.config import ApdbConfig

if TYPE_CHECKING:
    from astropy.time import Time

    from apdb.sky import Region

__all__ = ["Apdb"]


class Apdb(ABC):
    """Alert Production Database: DiaObjects, their sources, Solar System objects."""

    # -- construction -------------------------------------------------------
    @classmethod
    def create(cls, config: ApdbConfig | str, *, exist_ok: bool = False) -> Apdb:
        """Create the schema (at the newest revision) and return the database.

        Parameters
        ----------
        config : `ApdbConfig` or `str`
            Configuration, or a database URL (``sqlite:///path``,
            ``postgresql+psycopg://...``).
        exist_ok : `bool`, optional
            Open the database if it already holds an APDB instead of raising.

        Raises
        ------
        ApdbError
            The database already has an APDB (and not ``exist_ok``), or cannot
            be reached.
        """
        from apdb.sql import ApdbSql

        return ApdbSql.create_database(_as_config(config), exist_ok=exist_ok)

    @classmethod
    def from_config(cls, config: ApdbConfig) -> Apdb:
        """Open an existing APDB.

        Raises
        ------
        ApdbNotFoundError
            The database holds no APDB.
        ApdbSchemaVersionError
            Its schema revision is not this code's head revision.
        ApdbConfigMismatchError
            ``config`` disagrees with the settings frozen in the database.
        """
        from apdb.sql import ApdbSql

        return ApdbSql(config)

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> Apdb:
        """Open an existing APDB given its URL (other config fields as keywords)."""
        return cls.from_config(ApdbConfig(db_url=url, **kwargs))

    @property
    @abstractmethod
    def config(self) -> ApdbConfig:
        """The configuration."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Apdb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads ------------------------------------------------------------------
    @abstractmethod
    def get_dia_objects(self, region: Region) -> pd.DataFrame:
        """Return the latest version of every DiaObject inside ``region``.

        Parameters
        ----------
        region : `apdb.sky.Region`
            Sky region (e.g. `apdb.sky.footprint_region` of a detector).

        Returns
        -------
        objects : `pandas.DataFrame`
            One row per object, every DiaObject column (plus ``pixelId``).
        """

    @abstractmethod
    def get_dia_sources(
        self,
        visit_time: Time,
        region: Region | None = None,
        object_ids: Iterable[int] | np.ndarray | None = None,
        months: int | None = None,
    ) -> pd.DataFrame:
        """Return DiaSources observed in a window before ``visit_time``.

        The window is ``[visit_time - 30 * months days, visit_time)``.

        Parameters
        ----------
        visit_time : `astropy.time.Time`
            Time of the current visit.
        region : `apdb.sky.Region`, optional
            Sources inside this region.
        object_ids : array-like of `int`, optional
            Sources of these DiaObjects.  With ``region`` as well, both must
            hold; with neither, every source in the window is returned.
        months : `int`, optional
            Window length in 30-day months (default from the config, 12).

        Returns
        -------
        sources : `pandas.DataFrame`
        """

    @abstractmethod
    def get_dia_forced_sources(
        self,
        visit_time: Time,
        region: Region | None = None,
        object_ids: Iterable[int] | np.ndarray | None = None,
        months: int | None = None,
    ) -> pd.DataFrame:
        """Return DiaForcedSources in a window before ``visit_time``.

        Same parameters and window as `get_dia_sources`.
        """

    @abstractmethod
    def get_ss_objects(self) -> pd.DataFrame:
        """Return every SSObject."""

    @abstractmethod
    def contains_visit_detector(self, visit: int, detector: int) -> bool:
        """Whether anything of this visit/detector has been stored."""

    @abstractmethod
    def count_unassociated_objects(self) -> int:
        """Return the number of latest DiaObjects with exactly one DiaSource."""

    # -- analyst reads (the DiaLightCurve view) -------------------------------
    @abstractmethod
    def get_light_curve(self, dia_object_id: int) -> pd.DataFrame:
        """Return every measurement of a DiaObject: detections and forced photometry.

        Parameters
        ----------
        dia_object_id : `int`
            The object.

        Returns
        -------
        curve : `pandas.DataFrame`
            One row per measurement, ordered by time, then ``kind``
            ('detection' or 'forced'), then ``measurementId`` (the
            diaSourceId or diaForcedSourceId); columns ``diaObjectId, kind,
            measurementId, visit, detector, band, midpointMjdTai, ra, dec,
            psfFlux, psfFluxErr, scienceFlux, scienceFluxErr`` with the
            schema's dtypes (fluxes in nJy).  Empty for an unknown object.
        """

    @abstractmethod
    def get_busiest_dia_objects(self, n: int = 5) -> pd.DataFrame:
        """Return the ``n`` DiaObjects with the most measurements.

        Returns
        -------
        objects : `pandas.DataFrame`
            ``diaObjectId`` and ``nMeasurements`` (detections plus forced
            measurements), most measured first, ties by increasing id.
        """

    # -- writes -------------------------------------------------------------------
    @abstractmethod
    def store(
        self,
        visit_time: Time,
        dia_objects: pd.DataFrame | None,
        dia_sources: pd.DataFrame | None = None,
        dia_forced_sources: pd.DataFrame | None = None,
        ss_sources: pd.DataFrame | None = None,
    ) -> None:
        """Store one visit-detector's catalogs in one transaction.

        ``dia_objects`` are new or updated DiaObjects: each becomes the latest
        version (``validityStartMjdTai = visit_time``) and closes the previous
        one.  Input is validated first; any error leaves the database as it
        was.  Missing optional columns are stored as NULL (or the documented
        defaults, `apdb.schema.store_defaults`); ``pixelId`` is computed.

        Parameters
        ----------
        visit_time : `astropy.time.Time`
            Midpoint of the visit.
        dia_objects, dia_sources, dia_forced_sources, ss_sources : `pandas.DataFrame`
            Rows to store; `None` or empty for nothing.

        Raises
        ------
        ApdbInputError
            Bad input (missing columns, bad coordinates, duplicate ids,
            unknown bands, wrong types, SQL-looking strings), or the
            visit/detector or ids are already stored.
        """

    @abstractmethod
    def store_ss_objects(self, ss_objects: pd.DataFrame) -> None:
        """Insert or replace SSObjects (keyed by ``ssObjectId``)."""

    @abstractmethod
    def reassign_dia_sources(self, id_map: Mapping[int, int] | pd.DataFrame) -> None:
        """Move DiaSources from their DiaObject to a Solar System object.

        Parameters
        ----------
        id_map : mapping or `pandas.DataFrame`
            ``{diaSourceId: ssObjectId}``, or a frame with those two columns.
            The sources get ``ssObjectId``, a NULL ``diaObjectId`` and
            ``ssObjectReassocTimeMjdTai`` = now.

        Raises
        ------
        ApdbInputError
            Unknown ``diaSourceId`` values; nothing is changed.
        """

    # -- administration --------------------------------------------------------
    @abstractmethod
    def row_counts(self) -> dict[str, int]:
        """Return the number of rows of each table."""

    @abstractmethod
    def schema_version(self) -> str | None:
        """Return the alembic revision of the database."""

    @abstractmethod
    def metadata_values(self) -> dict[str, str]:
        """Return the ``metadata`` table: schema versions and the frozen settings."""


def _as_config(config: ApdbConfig | str) -> ApdbConfig:
    if isinstance(config, ApdbConfig):
        return config
    return ApdbConfig(db_url=str(config))
