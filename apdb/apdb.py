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
from apdb.metadata import ApdbMetadata

if TYPE_CHECKING:
    from astropy.time import Time

    from apdb.replica import ReplicaChunk, UpdateRecord
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
        start_time: Time | None = None,
        *,
        include_withdrawn: bool = False,
    ) -> pd.DataFrame:
        """Return DiaSources observed in a window before ``visit_time``.

        The window is ``[visit_time - 30 * months days, visit_time)``, or
        ``[start_time, visit_time)`` when ``start_time`` is given.  Withdrawn
        sources (`withdraw_dia_sources`) are left out unless
        ``include_withdrawn``.

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
        start_time : `astropy.time.Time`, optional
            Explicit start of the window (inclusive), overriding the months
            setting; not together with ``months``.
        include_withdrawn : `bool`, optional
            Also return withdrawn sources (``timeWithdrawnMjdTai`` set), as
            Rubin's APDB does.

        Returns
        -------
        sources : `pandas.DataFrame`

        Raises
        ------
        ApdbInputError
            Both ``months`` and ``start_time``, or ``start_time`` after
            ``visit_time``.
        """

    @abstractmethod
    def get_dia_forced_sources(
        self,
        visit_time: Time,
        region: Region | None = None,
        object_ids: Iterable[int] | np.ndarray | None = None,
        months: int | None = None,
        start_time: Time | None = None,
        *,
        include_withdrawn: bool = False,
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

        ``dia_objects`` are new or updated DiaObjects: each becomes a version
        starting at ``visit_time`` (``validityStartMjdTai``).  Stores may come
        in any order and concurrently: the version valid at ``visit_time``
        ends there, and the new one ends at the start of the object's next
        newer version, or is the latest (open) one when none is newer.  A
        late store of an older visit thus slots into the history and never
        hides the newer versions; its ``nDiaSources`` and summary columns are
        the values its task computed, and newer versions are not recomputed.
        A second store at the same visit time replaces that visit's version.
        Input is validated first; any error leaves the database as it
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
        ApdbConcurrencyError
            Concurrent writers of the same objects kept colliding after a
            bounded number of retries; nothing was written.
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

    # -- Rubin operations (daytime: deduplication, validity, withdrawal) ----------
    @property
    @abstractmethod
    def metadata(self) -> ApdbMetadata:
        """The ``metadata`` key/value table (`apdb.metadata.ApdbMetadata`).

        Schema versions, the frozen settings and the creation time are
        read-only through it; other keys are free (Rubin's ``Apdb.metadata``).
        """

    @abstractmethod
    def get_dia_objects_for_dedup(self, since: Time | None = None) -> pd.DataFrame:
        """Return the DiaObjects created or updated since the last deduplication.

        Parameters
        ----------
        since : `astropy.time.Time`, optional
            Earliest ``validityStartMjdTai``; by default the time recorded by
            the last `reset_dedup`, and every object when there was none.

        Returns
        -------
        objects : `pandas.DataFrame`
            The latest version of each object whose ``validityStartMjdTai >=
            since``, ordered by ``diaObjectId``; columns ``diaObjectId,
            validityStartMjdTai, ra, dec, nDiaSources, firstDiaSourceMjdTai``
            (Rubin's default subset).  Earlier versions and objects closed by
            `set_validity_end` are not returned.
        """

    @abstractmethod
    def reset_dedup(self, dedup_time: Time | None = None) -> None:
        """Record the time of the last deduplication (now by default).

        The time is kept in `metadata` under ``status:deduplication.json`` and
        becomes the default ``since`` of `get_dia_objects_for_dedup`.  This
        SQL APDB keeps no separate deduplication data, so nothing is deleted.
        """

    @abstractmethod
    def get_dia_sources_for_dia_objects(
        self,
        objects: pd.DataFrame | Iterable[int] | np.ndarray,
        start_time: Time,
        max_dist_arcsec: float = 1.0,
    ) -> pd.DataFrame:
        """Return the DiaSources of given DiaObjects since ``start_time``.

        Meant for deduplication (daytime), not the visit cycle.

        Parameters
        ----------
        objects : `pandas.DataFrame` or array-like of `int`
            DiaObjects (a frame with ``diaObjectId``, e.g. from
            `get_dia_objects_for_dedup`) or their ids.
        start_time : `astropy.time.Time`
            Lower bound (inclusive) of ``midpointMjdTai``; no upper bound.
        max_dist_arcsec : `float`, optional
            Rubin's hint for spatially partitioned backends; checked (finite,
            non-negative) but not needed here: sources are found by the
            ``diaObjectId`` index wherever they are.

        Returns
        -------
        sources : `pandas.DataFrame`
            Every DiaSource column; withdrawn sources are included (with
            ``timeWithdrawnMjdTai`` set) so that a merge can move them too.
        """

    @abstractmethod
    def reassign_dia_sources_to_dia_objects(
        self,
        id_map: Mapping[int, int] | pd.DataFrame,
        *,
        increment_n_dia_sources: bool = True,
        decrement_n_dia_sources: bool = True,
    ) -> None:
        """Move DiaSources to other DiaObjects (deduplication), in one transaction.

        Call it before `set_validity_end` closes the objects merged away.

        Parameters
        ----------
        id_map : mapping or `pandas.DataFrame`
            ``{diaSourceId: new diaObjectId}``, or a frame with those columns.
        increment_n_dia_sources : `bool`, optional
            Add one to ``nDiaSources`` of the target's latest version for each
            source moved to it.
        decrement_n_dia_sources : `bool`, optional
            Take one from ``nDiaSources`` of the latest version of the object
            each source leaves (none for a source that had no DiaObject).

        Raises
        ------
        UnknownIdError
            A ``diaSourceId`` is not stored, or a target DiaObject has no open
            version; nothing is changed.
        ApdbInputError
            Malformed map (non-integer or negative ids, a source mapped twice).

        Notes
        -----
        Only ``diaObjectId`` of the sources changes (``ssObjectId`` is kept,
        as in Rubin's APDB); earlier, closed object versions keep their counts.
        """

    @abstractmethod
    def set_validity_end(
        self,
        objects: pd.DataFrame | Iterable[int] | np.ndarray,
        validity_end: Time,
        raise_on_missing_id: bool = False,
    ) -> int:
        """Close the validity interval of DiaObjects (they stop being current).

        Parameters
        ----------
        objects : `pandas.DataFrame` or array-like of `int`
            DiaObjects (a frame with ``diaObjectId``) or their ids.
        validity_end : `astropy.time.Time`
            Stored as ``validityEndMjdTai`` of each object's open version.
        raise_on_missing_id : `bool`, optional
            Raise if an id has no open version, instead of skipping it.

        Returns
        -------
        count : `int`
            Number of versions closed: objects already closed or unknown are
            not counted, so a repeat returns 0.

        Raises
        ------
        UnknownIdError
            ``raise_on_missing_id`` and some ids have no open version; nothing
            is changed.
        ApdbInputError
            ``validity_end`` is before an open version's start; nothing is
            changed.
        """

    @abstractmethod
    def withdraw_dia_sources(
        self, ids: pd.DataFrame | Iterable[int] | np.ndarray, *, time_withdrawn: Time | None = None
    ) -> int:
        """Withdraw DiaSources: set ``timeWithdrawnMjdTai`` (now by default).

        Withdrawn sources stay in the database but are no longer returned by
        `get_dia_sources` (unless ``include_withdrawn=True``).  Idempotent: a
        source withdrawn earlier keeps its first time.

        Parameters
        ----------
        ids : `pandas.DataFrame` or array-like of `int`
            ``diaSourceId`` values (or a frame with that column).
        time_withdrawn : `astropy.time.Time`, optional
            Withdrawal time.

        Returns
        -------
        count : `int`
            Sources newly withdrawn by this call.

        Raises
        ------
        UnknownIdError
            Some ids are not stored; nothing is changed.
        """

    @abstractmethod
    def withdraw_dia_forced_sources(
        self, ids: pd.DataFrame | Iterable[int] | np.ndarray, *, time_withdrawn: Time | None = None
    ) -> int:
        """Withdraw DiaForcedSources (by ``diaForcedSourceId``).

        Same semantics as `withdraw_dia_sources`, for `get_dia_forced_sources`.
        """

    # -- replica chunks (snake_case of Rubin's ApdbReplica) ------------------
    # An APDB created with ``replication.enabled`` records, in the transaction
    # of every store and update operation, what it changed into the replica
    # chunk of the current time (`apdb.replica_schema`).  Without replication
    # these methods raise `apdb.errors.ReplicationDisabledError`.
    @abstractmethod
    def get_replica_chunks(self) -> list[ReplicaChunk]:
        """Return the replica chunks that hold changes, oldest first."""

    @abstractmethod
    def get_table_data_chunks(
        self, table: str, chunk_ids: Iterable[int] | np.ndarray
    ) -> pd.DataFrame:
        """Return the rows of ``table`` stored or modified by a store in the chunks.

        ``table`` is ``DiaObject`` (new versions and the versions a store
        closed), ``DiaSource``, ``DiaForcedSource``, ``SSSource`` or
        ``SSObject`` (written by `store_ss_objects`).  The rows have their
        current values plus a ``chunkId`` column.
        """

    @abstractmethod
    def get_update_record_chunks(self, chunk_ids: Iterable[int] | np.ndarray) -> list[UpdateRecord]:
        """Return the update records of the chunks, ordered by chunk, time and order."""

    @abstractmethod
    def delete_replica_chunks(self, chunk_ids: Iterable[int] | np.ndarray) -> None:
        """Delete the chunks (after replication) and everything recorded in them."""

    @abstractmethod
    def fill_history_chunks(self) -> int:
        """Write the history chunks of visits stored without them; return how many.

        Revision 0008 writes the chunks of the rows already stored; visits that
        the previous code stored while it ran, or before the new code was
        rolled out, have none.  Run this once the new code runs everywhere
        (idempotent: a visit-detector that has its chunks is left alone).
        """


def _as_config(config: ApdbConfig | str) -> ApdbConfig:
    if isinstance(config, ApdbConfig):
        return config
    return ApdbConfig(db_url=str(config))
