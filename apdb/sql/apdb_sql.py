"""`ApdbSql`: the `Apdb` interface on PostgreSQL (production) and SQLite (embedded)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import sqlalchemy as sa
from astropy.time import Time

from apdb import history_chunks, schema
from apdb.apdb import Apdb
from apdb.config import ApdbConfig
from apdb.errors import (
    AlreadyStoredError,
    ApdbDatabaseError,
    ApdbInputError,
    ColumnTypeError,
    InvalidIdError,
    InvalidTimeError,
    MissingColumnsError,
    ReplicationDisabledError,
)
from apdb.frames import Batch, prepare, to_frame
from apdb.replica import ReplicaChunk, UpdateRecord
from apdb.schema import ApdbTables
from apdb.sky import Region
from apdb.sql import admin, analysis, citus, history
from apdb.sql.engine import WRITE, make_engine
from apdb.sql.errors_map import translate_methods
from apdb.sql.reads import (
    check_object_refs,
    history_window,
    id_filter,
    read_frame,
    region_filter,
)
from apdb.sql.replica import REPLICATED_TABLES, ApdbReplicaSql, ReplicaWriter
from apdb.sql.transaction import lock_objects, write_transaction
from apdb.sql.updates import ApdbMetadataSql, ApdbSqlUpdates
from apdb.sql.writes import insert_batch, update_objects

__all__ = ["ApdbSql"]

_DAYS_PER_MONTH = 30.0


@translate_methods  # every public method raises only ApdbError subclasses
class ApdbSql(Apdb):
    """APDB on a SQL database.

    Parameters
    ----------
    config : `ApdbConfig`
        Configuration; the database must already hold an APDB at the head
        revision with matching frozen settings.
    """

    def __init__(self, config: ApdbConfig, *, _check: bool = True):
        self._config = config
        # Only create_database (unchecked) may create a missing SQLite file.
        self._engine = make_engine(config, create=not _check)
        self._md = schema.make_metadata()
        self._use_settings({})
        if _check:
            try:
                self._use_settings(admin.check_database(self._engine, self._md, config))
            except BaseException:
                self._engine.dispose()
                raise

    def _use_settings(self, stored: dict[str, str]) -> None:
        """Take the partition order and the backend from the database's frozen settings."""
        order = stored.get("config:sky.partition_order")
        self._partition_order = self._config.sky.partition_order if order is None else int(order)
        backend = stored.get("config:backend", self._config.backend or "sql")
        self._citus = backend == "citus"
        enabled = stored.get("config:replication.enabled") == "true"
        seconds = int(stored.get("config:replication.chunk_seconds", 0) or 0)
        seconds = seconds or self._config.replication.chunk_seconds
        self._replica = ReplicaWriter(self._md, seconds) if enabled else None
        index_order = int(stored.get("config:sky.index_order", self._config.sky.index_order))
        self._history_writer = history.HistoryWriter(self._md, index_order)
        # History reads with a region read the chunks when they are big enough
        # (tests compare with the rows: min_rows_per_chunk 0 forces the chunks).
        # A PPDB has no chunks (the replicator copies rows): it reads the rows.
        self.read_history_chunks = stored.get(history.CHUNKS_KEY) != "false"
        self.min_rows_per_chunk = history_chunks.MIN_ROWS_PER_CHUNK

    @property
    def is_citus(self) -> bool:
        """Whether the APDB is distributed on a Citus cluster (``config:backend``)."""
        return self._citus

    @classmethod
    def create_database(cls, config: ApdbConfig, *, exist_ok: bool = False) -> ApdbSql:
        """Create the schema and return the opened database (see `Apdb.create`)."""
        apdb = cls(config, _check=False)
        try:
            with apdb._engine.connect() as conn:
                exists = admin.has_apdb(conn)
            if not (exists and exist_ok):
                admin.create_schema(apdb._engine, apdb._md, config)
            apdb._use_settings(admin.check_database(apdb._engine, apdb._md, config))
        except sa.exc.OperationalError as exc:
            # e.g. an SQLite file in a missing directory, or a server that is down
            apdb.close()
            raise ApdbDatabaseError(f"cannot create the APDB: {exc.orig or exc}") from exc
        except BaseException:
            apdb.close()
            raise
        return apdb

    @property
    def config(self) -> ApdbConfig:
        """The configuration."""
        return self._config

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for administration and tests)."""
        return self._engine

    @property
    def schema_metadata(self) -> sa.MetaData:
        """The SQLAlchemy `MetaData` of the schema (the key/value table is `metadata`)."""
        return self._md

    def close(self) -> None:
        """Dispose of the connection pool."""
        self._engine.dispose()

    def _table(self, name: ApdbTables) -> sa.Table:
        return self._md.tables[name.value]

    # -- reads --------------------------------------------------------------------
    def _ranges(self, region: Region) -> np.ndarray:
        sky = self._config.sky
        return region.ranges(sky.index_order, sky.max_ranges, sky.max_cover_order)

    def get_dia_objects(self, region: Region) -> pd.DataFrame:
        """Return the latest version of every DiaObject inside ``region``."""
        table = self._table(ApdbTables.DiaObject)
        where = sa.and_(table.c.validityEndMjdTai.is_(None), self._region_filter(table, region))
        with self._connect() as conn:
            return read_frame(conn, table, where, region)

    def _region_filter(
        self, table: sa.Table, region: Region, ranges: np.ndarray | None = None
    ) -> sa.ColumnElement[bool]:
        """``pixelId`` ranges of the region; on Citus also its partitions (shard pruning)."""
        where = region_filter(table, self._ranges(region) if ranges is None else ranges)
        if self._citus:
            parts = citus.region_partitions(region, self._partition_order)
            where = sa.and_(citus.partition_filter(table.c.partitionId, parts), where)
        return where

    def _history(
        self,
        name: ApdbTables,
        visit_time: Time,
        region: Region | None,
        object_ids: Iterable[int] | np.ndarray | None,
        months: int | None,
        start_time: Time | None = None,
        include_withdrawn: bool = False,
    ) -> pd.DataFrame:
        if months is not None and start_time is not None:
            raise ApdbInputError(name.value, "give months or start_time, not both")
        if months is None:
            months = (
                self._config.dia_source_history_months
                if name is ApdbTables.DiaSource
                else self._config.dia_forced_source_history_months
            )
        table = self._table(name)
        start, end = history_window(name.value, _mjd_tai(visit_time), months)
        if start_time is not None:  # an explicit window start overrides months
            start = _window_start(name, start_time, end)
        ranges = None if region is None else self._ranges(region)
        if region is not None and self.read_history_chunks:
            frame = self._history_from_chunks(
                name, region, ranges, start, end, include_withdrawn, object_ids
            )
            if frame is not None:
                return frame
        clauses = [table.c.midpointMjdTai >= start, table.c.midpointMjdTai < end]
        if not include_withdrawn:
            clauses.append(table.c.timeWithdrawnMjdTai.is_(None))
        if object_ids is not None:
            ids = _as_ids(name.value, object_ids)
            if ids.size == 0:
                clauses.append(sa.false())
            else:
                clauses.append(id_filter(table.c.diaObjectId, ids, self._engine.dialect.name))
        if region is not None:
            clauses.append(self._region_filter(table, region, ranges))
        with self._connect() as conn:
            if self._citus and region is None and object_ids is not None and ids.size:
                # Only the shards of the objects' partitions (see object_partitions).
                objects = self._table(ApdbTables.DiaObject)
                parts = citus.object_partitions(conn, objects, ids, self._partition_order)
                clauses.append(citus.partition_filter(table.c.partitionId, parts))
            return read_frame(conn, table, sa.and_(*clauses), region)

    def _history_from_chunks(
        self,
        name: ApdbTables,
        region: Region,
        ranges: np.ndarray,
        start: float,
        end: float,
        include_withdrawn: bool,
        object_ids: Iterable[int] | np.ndarray | None,
    ) -> pd.DataFrame | None:
        """Read a history with a region from the history chunks of its cells.

        Returns `None` when the chunks are too small to be worth it (read the rows).
        """
        writer = self._history_writer
        cells = history_chunks.region_cells(ranges, writer.index_order)
        parts = None
        if self._citus:
            partitions = citus.region_partitions(region, self._partition_order)
            parts = citus.partition_filter(writer.chunks.c.partitionId, partitions)
        flt = history_chunks.HistoryFilter(
            start=start,
            end=end,
            include_withdrawn=include_withdrawn,
            object_ids=None if object_ids is None else _as_ids(name.value, object_ids),
            ranges=ranges,
            region=region,
        )
        with self._connect() as conn:
            blobs = history.read_chunks(
                conn,
                writer.chunks,
                name.value,
                cells,
                start,
                end,
                partitions=parts,
                min_rows_per_chunk=self.min_rows_per_chunk,
            )
        if blobs is None:  # small chunks: the rows are cheaper
            return None
        return to_frame(name.value, history_chunks.decode(name.value, blobs, flt))

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
        """Return DiaSources in ``[visit_time - 30 * months days, visit_time)``.

        ``start_time`` replaces the months window start; withdrawn rows are
        left out unless ``include_withdrawn`` (see `Apdb.get_dia_sources`).
        """
        return self._history(
            ApdbTables.DiaSource,
            visit_time,
            region,
            object_ids,
            months,
            start_time=start_time,
            include_withdrawn=include_withdrawn,
        )

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
        """Return DiaForcedSources in ``[visit_time - 30 * months days, visit_time)``.

        ``start_time`` replaces the months window start; withdrawn rows are
        left out unless ``include_withdrawn`` (see `Apdb.get_dia_sources`).
        """
        return self._history(
            ApdbTables.DiaForcedSource,
            visit_time,
            region,
            object_ids,
            months,
            start_time=start_time,
            include_withdrawn=include_withdrawn,
        )

    def get_ss_objects(self) -> pd.DataFrame:
        """Return every SSObject."""
        with self._connect() as conn:
            return read_frame(conn, self._table(ApdbTables.SSObject), None)

    def contains_visit_detector(self, visit: int, detector: int) -> bool:
        """Whether this visit/detector has been stored."""
        table = self._table(ApdbTables.ApdbVisitDetector)
        stmt = sa.select(sa.func.count()).where(
            table.c.visit == int(visit), table.c.detector == int(detector)
        )
        with self._connect() as conn:
            return bool(conn.execute(stmt).scalar())

    def count_unassociated_objects(self) -> int:
        """Return the number of latest DiaObjects with exactly one DiaSource."""
        table = self._table(ApdbTables.DiaObject)
        stmt = sa.select(sa.func.count()).where(
            table.c.validityEndMjdTai.is_(None), table.c.nDiaSources == 1
        )
        with self._connect() as conn:
            return int(conn.execute(stmt).scalar())

    def get_light_curve(self, dia_object_id: int) -> pd.DataFrame:
        """Return every measurement of a DiaObject (see `Apdb.get_light_curve`)."""
        dia_object_id = _as_id("DiaObject", "diaObjectId", dia_object_id)
        with self._connect() as conn:
            return analysis.light_curve(conn, dia_object_id)

    def get_busiest_dia_objects(self, n: int = 5) -> pd.DataFrame:
        """Return the ``n`` DiaObjects with the most measurements."""
        with self._connect() as conn:
            return analysis.busiest_dia_objects(conn, n)

    # -- writes ---------------------------------------------------------------------
    def _prepare(
        self,
        name: ApdbTables,
        df: pd.DataFrame | None,
        visit_mjd: float,
        now_mjd: float | None = None,
    ) -> Batch:
        return prepare(
            name.value,
            df,
            visit_mjd=visit_mjd,
            now_mjd=_mjd_tai(Time.now()) if now_mjd is None else now_mjd,
            bands=self._config.bands,
            sql_strings=self._config.sql_strings,
            index_order=self._config.sky.index_order,
            max_midpoint_offset_days=self._config.max_midpoint_offset_days,
        )

    def store(
        self,
        visit_time: Time,
        dia_objects: pd.DataFrame | None,
        dia_sources: pd.DataFrame | None = None,
        dia_forced_sources: pd.DataFrame | None = None,
        ss_sources: pd.DataFrame | None = None,
    ) -> None:
        """Store one visit-detector's catalogs in one transaction (see `Apdb.store`).

        Stores may arrive in any order and concurrently.  Each new DiaObject
        version starts at ``visit_time``; the version that was valid at that
        time ends there.  A late store (an older visit than the object's
        latest version) slots its version into the history, ending at the
        start of the next newer version, and leaves the newer versions, the
        latest one included, exactly as they were: the late version keeps
        the ``nDiaSources`` and summary columns its task computed (Rubin's
        rule: the storing task's values stand), and the newer versions are
        not recomputed.  A second store at the same visit time replaces that
        visit's version.  On PostgreSQL the transaction locks the stored
        DiaObject ids (sorted advisory locks); deadlocks, serialization and
        lock failures, SQLite busy timeouts and unique violations from a
        concurrent writer are retried a bounded number of times, then
        `ApdbConcurrencyError` names the visit and objects.

        Raises
        ------
        ApdbInputError
            Bad input, or the visit/detector or ids are already stored.
        ApdbConcurrencyError
            Concurrent writers kept colliding; nothing was written.
        ApdbDatabaseError
            Any other database error; nothing was written.
        """
        visit_mjd = _mjd_tai(visit_time)
        now = _mjd_tai(Time.now())  # once per store (astropy's UTC->TAI costs ~0.3 ms)
        objects = self._prepare(ApdbTables.DiaObject, dia_objects, visit_mjd, now)
        sources = self._prepare(ApdbTables.DiaSource, dia_sources, visit_mjd, now)
        forced = self._prepare(ApdbTables.DiaForcedSource, dia_forced_sources, visit_mjd, now)
        ss = self._prepare(ApdbTables.SSSource, ss_sources, visit_mjd, now)
        visits = _visit_detectors(sources, forced, objects.n, visit_mjd)
        steps = [
            (ApdbTables.ApdbVisitDetector, visits),
            (ApdbTables.DiaSource, sources),
            (ApdbTables.DiaForcedSource, forced),
            (ApdbTables.SSSource, ss),
        ]

        def work(conn: sa.Connection) -> None:
            # Sources must refer to stored objects or to this call's objects.
            check_object_refs(
                conn,
                self._table(ApdbTables.DiaObject),
                [sources, forced],
                objects.values.get("diaObjectId", np.zeros(0, np.int64)),
            )
            # The partition of a committed object never changes: no lock needed.
            citus.assign_partitions(
                conn,
                {t: self._table(ApdbTables(t)) for t in ("DiaObject", "DiaSource")},
                objects,
                sources,
                forced,
                ss,
                index_order=self._config.sky.index_order,
                partition_order=self._partition_order,
                citus=self._citus,
            )
            for step, batch in steps:
                if self._citus:  # keys include partitionId there: ids reused elsewhere
                    citus.refuse_ids_stored_elsewhere(
                        conn, {step.value: self._table(step)}, [batch]
                    )
                try:
                    insert_batch(conn, self._table(step), batch)
                except sa.exc.IntegrityError as exc:
                    # Rows that are already there: a re-stored visit (bad input).
                    raise self._conflict(step, batch) from exc
            # The DiaObjects last: their locks (sorted ids) are held only for
            # the version fix-up and the commit, not for the source inserts.
            # A unique violation here can only come from a concurrent writer
            # of the same objects: write_transaction retries it.
            # With the objects' partitions: a store of more objects than the
            # lock budget holds off only the writers of its partitions.
            lock_objects(conn, object_ids, objects.values.get("partitionId"))
            # On Citus only the shards of the objects' partitions.
            parts = objects.values.get("partitionId") if self._citus else None
            update_objects(
                conn, self._table(ApdbTables.DiaObject), objects, visit_mjd, partitions=parts
            )
            if self._replica is not None:  # in the same transaction
                self._replica.record_store(
                    conn, object_ids, visit_mjd, sources, forced, ss, partitions=parts
                )
            self._history_writer.record_store(conn, sources, forced)

        object_ids = objects.values.get("diaObjectId", np.zeros(0, np.int64))
        write_transaction(
            self._engine,
            work,
            what=_store_name(visits, visit_mjd),
            object_ids=object_ids,
            lock_first=False,
        )

    def _conflict(self, name: ApdbTables, batch: Batch) -> ApdbInputError:
        """Describe which rows of a failed insert were already stored."""
        table = self._table(name)
        if name == ApdbTables.ApdbVisitDetector:
            pairs = set(
                zip(batch.values["visit"].tolist(), batch.values["detector"].tolist(), strict=True)
            )
            stmt = sa.select(table.c.visit, table.c.detector)
            with self._connect() as conn:
                found = [tuple(r) for r in conn.execute(stmt) if tuple(r) in pairs]
            return AlreadyStoredError(name.value, "visit/detector", sorted(found))
        key = {"DiaSource": "diaSourceId", "DiaForcedSource": "diaForcedSourceId"}.get(
            name.value, "diaSourceId"
        )
        column = table.c[key]
        stmt = sa.select(column).where(
            id_filter(column, batch.values[key], self._engine.dialect.name)
        )
        with self._connect() as conn:
            found = sorted(r[0] for r in conn.execute(stmt))
        if not found and name == ApdbTables.DiaForcedSource:
            return AlreadyStoredError(name.value, "diaObjectId/visit/detector", ["(see cause)"])
        return AlreadyStoredError(name.value, key, found)

    def store_ss_objects(self, ss_objects: pd.DataFrame) -> None:
        """Insert or replace SSObjects (keyed by ``ssObjectId``)."""
        batch = self._prepare(ApdbTables.SSObject, ss_objects, 0.0)
        if batch.n == 0:
            return
        table = self._table(ApdbTables.SSObject)
        dialect = self._engine.dialect.name
        try:
            with self._connect(write=True) as conn, conn.begin():
                ids = batch.values["ssObjectId"]
                conn.execute(sa.delete(table).where(id_filter(table.c.ssObjectId, ids, dialect)))
                insert_batch(conn, table, batch)
                if self._replica is not None:  # in the same transaction
                    self._replica.record_ss_objects(conn, ids)
        except sa.exc.SQLAlchemyError as exc:
            raise ApdbDatabaseError(f"storing SSObjects failed: {exc}") from exc

    def reassign_dia_sources(self, id_map: Mapping[int, int] | pd.DataFrame) -> None:
        """Move DiaSources from their DiaObject to a Solar System object."""
        if isinstance(id_map, pd.DataFrame):
            missing = {"diaSourceId", "ssObjectId"} - set(id_map.columns)
            if missing:
                raise MissingColumnsError("DiaSource", sorted(missing))
            pairs = dict(zip(id_map["diaSourceId"], id_map["ssObjectId"], strict=True))
        else:
            pairs = dict(id_map)
        src_ids = _as_ids("DiaSource", list(pairs))
        ss_ids = _as_ids("DiaSource", [pairs[k] for k in pairs])
        if src_ids.size == 0:
            return
        table = self._table(ApdbTables.DiaSource)
        dialect = self._engine.dialect.name
        now = _mjd_tai(Time.now())
        with self._connect(write=True) as conn, conn.begin():
            found = {
                r[0]
                for r in conn.execute(
                    sa.select(table.c.diaSourceId).where(
                        id_filter(table.c.diaSourceId, src_ids, dialect)
                    )
                )
            }
            unknown = sorted(set(src_ids.tolist()) - found)
            if unknown:
                raise ApdbInputError("DiaSource", f"unknown diaSourceId {unknown[:10]}")
            stmt = (
                sa.update(table)
                .where(table.c.diaSourceId == sa.bindparam("src"))
                .values(
                    ssObjectId=sa.bindparam("ss"),
                    diaObjectId=None,
                    ssObjectReassocTimeMjdTai=now,
                )
            )
            conn.execute(
                stmt,
                [{"src": int(a), "ss": int(b)} for a, b in zip(src_ids, ss_ids, strict=True)],
            )
            self._history_writer.record_update(
                conn,
                "DiaSource",
                id_filter(table.c.diaSourceId, src_ids, dialect),
                ("diaObjectId", "ssObjectId", "ssObjectReassocTimeMjdTai"),
            )
            if self._replica is not None:
                self._replica.record_update(
                    conn,
                    "reassign_dia_sources_to_ss_objects",
                    "DiaSource",
                    ("diaSourceId",),
                    ("diaObjectId", "ssObjectId", "ssObjectReassocTimeMjdTai"),
                    id_filter(table.c.diaSourceId, src_ids, dialect),
                )

    # -- administration ---------------------------------------------------------------
    def row_counts(self) -> dict[str, int]:
        """Return the number of rows of each table."""
        with self._connect() as conn:
            return admin.row_counts(conn, self._md)

    def schema_version(self) -> str | None:
        """Return the alembic revision of the database."""
        from apdb import migrate

        with self._connect() as conn:
            return migrate.current_revision(conn)

    def metadata_values(self) -> dict[str, str]:
        """Return the ``metadata`` table (schema version, frozen settings)."""
        with self._connect() as conn:
            return admin.read_metadata(conn, self._md)

    def _connect(self, write: bool = False) -> sa.Connection:
        conn = self._engine.connect()
        return conn.execution_options(**{WRITE: True}) if write else conn

    # -- Rubin operations (daytime: deduplication, validity, withdrawal) ----------
    @property
    def _updates(self) -> ApdbSqlUpdates:
        return ApdbSqlUpdates(
            self._engine, self._md, replica=self._replica, history=self._history_writer
        )

    @property
    def metadata(self) -> ApdbMetadataSql:
        """The ``metadata`` key/value table (see `Apdb.metadata`)."""
        return self._updates.metadata

    def get_dia_objects_for_dedup(self, since: Time | None = None) -> pd.DataFrame:
        """Return latest DiaObjects started since ``since`` (see `Apdb`)."""
        return self._updates.get_dia_objects_for_dedup(since)

    def reset_dedup(self, dedup_time: Time | None = None) -> None:
        """Record the time of the last deduplication (see `Apdb.reset_dedup`)."""
        self._updates.reset_dedup(dedup_time)

    def get_dia_sources_for_dia_objects(
        self,
        objects: pd.DataFrame | Iterable[int] | np.ndarray,
        start_time: Time,
        max_dist_arcsec: float = 1.0,
    ) -> pd.DataFrame:
        """Return the DiaSources of ``objects`` since ``start_time`` (see `Apdb`)."""
        return self._updates.get_dia_sources_for_dia_objects(objects, start_time, max_dist_arcsec)

    def reassign_dia_sources_to_dia_objects(
        self,
        id_map: Mapping[int, int] | pd.DataFrame,
        *,
        increment_n_dia_sources: bool = True,
        decrement_n_dia_sources: bool = True,
    ) -> None:
        """Move DiaSources to other DiaObjects (see `Apdb`)."""
        self._updates.reassign_dia_sources_to_dia_objects(
            id_map, increment=bool(increment_n_dia_sources), decrement=bool(decrement_n_dia_sources)
        )

    def set_validity_end(
        self,
        objects: pd.DataFrame | Iterable[int] | np.ndarray,
        validity_end: Time,
        raise_on_missing_id: bool = False,
    ) -> int:
        """Close the validity of DiaObjects (see `Apdb.set_validity_end`)."""
        return self._updates.set_validity_end(objects, validity_end, bool(raise_on_missing_id))

    def withdraw_dia_sources(
        self, ids: pd.DataFrame | Iterable[int] | np.ndarray, *, time_withdrawn: Time | None = None
    ) -> int:
        """Withdraw DiaSources (see `Apdb.withdraw_dia_sources`)."""
        return self._updates.withdraw(ApdbTables.DiaSource, "diaSourceId", ids, time_withdrawn)

    def withdraw_dia_forced_sources(
        self, ids: pd.DataFrame | Iterable[int] | np.ndarray, *, time_withdrawn: Time | None = None
    ) -> int:
        """Withdraw DiaForcedSources (see `Apdb.withdraw_dia_forced_sources`)."""
        table = ApdbTables.DiaForcedSource
        return self._updates.withdraw(table, "diaForcedSourceId", ids, time_withdrawn)

    # -- replica chunks (the change stream of `apdb ppdb replicate`) ---------------
    @property
    def replication_enabled(self) -> bool:
        """Whether this APDB records replica chunks (``config:replication.enabled``)."""
        return self._replica is not None

    def _replica_reader(self, what: str) -> ApdbReplicaSql:
        if self._replica is None:
            raise ReplicationDisabledError(what)
        return ApdbReplicaSql(self._engine, self._md, self._replica.chunk_seconds)

    def get_replica_chunks(self) -> list[ReplicaChunk]:
        """Return the replica chunks holding changes, oldest first (see `Apdb`)."""
        return self._replica_reader("get_replica_chunks").get_replica_chunks()

    def get_table_data_chunks(
        self, table: str, chunk_ids: Iterable[int] | np.ndarray
    ) -> pd.DataFrame:
        """Return the rows of ``table`` recorded in the chunks (see `Apdb`)."""
        reader = self._replica_reader("get_table_data_chunks")
        if str(table) not in REPLICATED_TABLES:
            raise ApdbInputError(str(table), f"replica chunks hold {', '.join(REPLICATED_TABLES)}")
        return reader.get_table_data_chunks(str(table), _as_ids("chunk_ids", chunk_ids))

    def get_update_record_chunks(self, chunk_ids: Iterable[int] | np.ndarray) -> list[UpdateRecord]:
        """Return the update records of the chunks, in order (see `Apdb`)."""
        reader = self._replica_reader("get_update_record_chunks")
        return reader.get_update_record_chunks(_as_ids("chunk_ids", chunk_ids))

    def delete_replica_chunks(self, chunk_ids: Iterable[int] | np.ndarray) -> None:
        """Delete replicated chunks and what they recorded (see `Apdb`)."""
        reader = self._replica_reader("delete_replica_chunks")
        reader.delete_replica_chunks(_as_ids("chunk_ids", chunk_ids))

    # -- history chunks ------------------------------------------------------------------
    def fill_history_chunks(self) -> int:
        """Write the history chunks of visits stored without them (see `Apdb`)."""
        with self._connect(write=True) as conn, conn.begin():
            return history.fill_missing(conn, self._md, self._history_writer.index_order)


def _window_start(name: ApdbTables, start_time: Time, end_mjd: float) -> float:
    """MJD TAI of an explicit history window start, checked against its end."""
    if not isinstance(start_time, Time) or not start_time.isscalar:
        got = type(start_time).__name__
        raise ColumnTypeError(name.value, "start_time", "astropy.time.Time", got)
    start = float(start_time.tai.mjd)
    if start > end_mjd:
        raise InvalidTimeError(
            name.value, f"start_time (MJD TAI {start}) is after visit_time (MJD TAI {end_mjd})"
        )
    return start


def _mjd_tai(t: Time) -> float:
    if not isinstance(t, Time):
        raise ColumnTypeError("visit_time", "visit_time", "astropy.time.Time", type(t).__name__)
    return float(t.tai.mjd)


def _as_id(table: str, column: str, value: object) -> int:
    """One id, checked: an integer in ``0 .. 2**63 - 1`` (a BIGINT)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ColumnTypeError(table, column, "int64", type(value).__name__)
    if value < 0:
        raise InvalidIdError(table, column, [value])
    if value > np.iinfo(np.int64).max:
        raise ApdbInputError(table, f"{column} {value} does not fit a 64-bit integer")
    return int(value)


def _as_ids(table: str, ids: Iterable[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        raise ColumnTypeError(table, "object_ids", "int64", str(arr.dtype))
    arr = arr.astype(np.int64).ravel()
    if arr.size and arr.min() < 0:
        raise InvalidIdError(table, "object_ids", arr[arr < 0].tolist())
    return arr


def _store_name(visits: Batch, visit_mjd: float) -> str:
    """``store of visit V detector D`` (for error messages)."""
    if visits.n == 0:
        return f"store at MJD {visit_mjd:.6f}"
    pairs = [
        f"visit {v} detector {d}"
        for v, d in zip(visits.values["visit"], visits.values["detector"], strict=True)
    ]
    return "store of " + ", ".join(pairs[:3]) + (f" (+{len(pairs) - 3})" if len(pairs) > 3 else "")


def _visit_detectors(sources: Batch, forced: Batch, n_objects: int, visit_mjd: float) -> Batch:
    """One ApdbVisitDetector row per (visit, detector) present in the input."""
    parts = [b for b in (sources, forced) if b.n]
    if not parts:
        return Batch("ApdbVisitDetector", 0)
    visit = np.concatenate([b.values["visit"] for b in parts]).astype(np.int64)
    det = np.concatenate([b.values["detector"] for b in parts]).astype(np.int16)
    if visit.min() == visit.max() and det.min() == det.max():  # one visit-detector: no sort
        pairs = np.array([[visit[0], det[0]]], dtype=np.int64)
    else:
        pairs = np.unique(np.stack([visit, det.astype(np.int64)], axis=1), axis=0)

    def count(b: Batch, v: int, d: int) -> int:
        if not b.n:
            return 0
        return int(np.count_nonzero((b.values["visit"] == v) & (b.values["detector"] == d)))

    n = len(pairs)
    values = {
        "visit": pairs[:, 0].astype(np.int64),
        "detector": pairs[:, 1].astype(np.int16),
        "midpointMjdTai": np.full(n, visit_mjd),
        "timeProcessedMjdTai": np.full(n, _mjd_tai(Time.now())),
        "nDiaSources": np.array([count(sources, v, d) for v, d in pairs], dtype=np.int32),
        "nDiaForcedSources": np.array([count(forced, v, d) for v, d in pairs], dtype=np.int32),
        "nDiaObjects": np.full(n, n_objects if n == 1 else 0, dtype=np.int32),
    }
    return Batch("ApdbVisitDetector", n, values)
