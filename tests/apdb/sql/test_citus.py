"""The sky partition column (every backend) and the Citus layout: pruning, 2PC faults."""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from astropy.time import Time

from apdb import Apdb, ApdbConfig
from apdb.config import CitusConfig
from apdb.errors import ApdbConfigError, ApdbConfigMismatchError, ApdbDatabaseError
from apdb.sky import Cone, pixel_index
from apdb.sql.citus import explain_tasks, region_partitions
from apdb.testing.catalogs import (
    make_dia_forced_sources,
    make_dia_objects,
    make_dia_sources,
    random_positions,
)
from apdb.testing.citus import TemporaryCitus

ORDER = 6  # default sky.partition_order
ARCSEC = 1.0 / 3600.0


def _mjd(mjd: float) -> Time:
    return Time(mjd, format="mjd", scale="tai")


def _across_a_boundary() -> tuple[float, float, float]:
    """(ra, dec, ra2): two points 0.5 arcsec apart in different order-6 pixels."""
    ra = np.arange(30.0, 31.0, 0.1 * ARCSEC)
    pix = pixel_index(ra, np.full(ra.size, 5.0), ORDER)
    i = int(np.flatnonzero(np.diff(pix))[0])
    return float(ra[i] - 0.25 * ARCSEC), 5.0, float(ra[i] + 0.25 * ARCSEC)


def test_partition_is_fixed_when_the_object_is_created(apdb):
    ra, dec, ra2 = _across_a_boundary()
    first, moved = (int(pixel_index(np.array([r]), np.array([dec]), ORDER)[0]) for r in (ra, ra2))
    assert first != moved
    rng = np.random.default_rng(1)
    ids = np.array([7], dtype=np.int64)
    for visit, (mjd, r) in enumerate([(60000.0, ra), (60001.0, ra2)], start=1):
        objects = make_dia_objects(ids, np.array([r]), np.array([dec]), rng, n_sources=visit)
        sources = make_dia_sources(ids * 100 + visit, ids, [r], [dec], visit, 1, mjd, rng)
        forced = make_dia_forced_sources(ids * 100 + visit, ids, [r], [dec], visit, 1, mjd, rng)
        apdb.store(_mjd(mjd), objects, sources, forced)
    # The mean position moved into the neighbouring pixel; the partition did not.
    got = apdb.get_dia_objects(Cone(ra2, dec, 10 * ARCSEC))
    assert got["ra"].tolist() == [ra2]
    assert got["partitionId"].tolist() == [first]
    history = apdb.get_dia_sources(_mjd(60002.0), region=Cone(ra2, dec, 10 * ARCSEC))
    assert sorted(history["diaSourceId"]) == [701, 702]
    assert set(history["partitionId"]) == {first}
    forced = apdb.get_dia_forced_sources(_mjd(60002.0), object_ids=[7])
    assert set(forced["partitionId"]) == {first}


def test_sources_without_object_use_their_own_position(apdb):
    rng = np.random.default_rng(2)
    ra, dec = random_positions(20, 120.0, -30.0, 0.3, rng)
    sources = make_dia_sources(
        np.arange(1, 21), np.zeros(20, np.int64), ra, dec, 3, 2, 60000.0, rng
    )
    sources["diaObjectId"] = pd.array([None] * 20, dtype="Int64")
    sources["ssObjectId"] = pd.array(np.arange(500, 520), dtype="Int64")
    ss = pd.DataFrame(
        {
            "diaSourceId": np.arange(1, 21, dtype=np.int64),
            "ssObjectId": np.arange(500, 520, dtype=np.int64),
            "eclLambda": 0.0,
            "eclBeta": 0.0,
            "galLon": 0.0,
            "galLat": 0.0,
        }
    )
    apdb.store(_mjd(60000.0), None, sources, ss_sources=ss)
    got = apdb.get_dia_sources(_mjd(60001.0), region=Cone(120.0, -30.0, 0.5))
    got = got.sort_values("diaSourceId")
    assert got["partitionId"].tolist() == pixel_index(ra, dec, ORDER).tolist()
    with apdb.engine.connect() as conn:
        rows = conn.execute(
            sa.text('SELECT "diaSourceId", "partitionId" FROM "SSSource" ORDER BY 1')
        ).fetchall()
    # An SSSource lives with its DiaSource.
    assert [p for _, p in rows] == got["partitionId"].tolist()


def test_region_partitions_pad_the_cover():
    cone = Cone(30.0, 5.0, 0.1)
    parts = region_partitions(cone, ORDER)
    rng = np.random.default_rng(3)
    ra, dec = random_positions(2000, 30.0, 5.0, 0.1 + 60 * ARCSEC, rng)
    # Every position within an arcminute of the cone is in one of its partitions.
    assert set(pixel_index(ra, dec, ORDER).tolist()) <= set(parts.tolist())
    assert len(parts) <= 9


# -- Citus only ---------------------------------------------------------------------
@pytest.fixture
def citus_url(citus_cluster, citus_template):
    """A fresh Citus APDB (8 shards per distributed table)."""
    name = f"citus_only_{np.random.default_rng().integers(1 << 30)}"
    url = citus_cluster.create_database(name, template=citus_template)
    yield url
    citus_cluster.drop_database(name, wait=False)


@pytest.mark.postgres
@pytest.mark.citus
def test_layout_and_settings_are_frozen(citus_url):
    with Apdb.from_url(citus_url) as db:
        assert db.is_citus
        with db.engine.connect() as conn:
            kinds = dict(
                conn.exec_driver_sql(
                    "SELECT CAST(logicalrelid AS text), partmethod FROM pg_dist_partition"
                ).fetchall()
            )
            colocated = conn.exec_driver_sql(
                "SELECT count(DISTINCT colocationid) FROM pg_dist_partition WHERE partmethod = 'h'"
            ).scalar()
    assert {kinds[f'"{t}"'] for t in ("DiaObject", "DiaSource", "DiaForcedSource", "SSSource")} == {
        "h"
    }
    assert kinds['"ApdbVisitDetector"'] == "n" and kinds["metadata"] == "n"
    assert colocated == 1
    with pytest.raises(ApdbConfigMismatchError, match="backend"):
        Apdb.from_config(ApdbConfig(db_url=citus_url, backend="sql"))
    Apdb.from_config(
        ApdbConfig(db_url=citus_url, backend="citus", citus=CitusConfig(shard_count=8))
    ).close()


@pytest.mark.postgres
def test_citus_backend_needs_the_extension(postgres_url):
    with pytest.raises(ApdbConfigError, match="no citus extension"):
        Apdb.create(ApdbConfig(db_url=postgres_url, backend="citus"))
    with pytest.raises(ApdbConfigError, match="PostgreSQL URL"):
        ApdbConfig.from_yaml("backend: citus\ndb_url: sqlite:///x.sqlite3")


def _fill_field(db: Apdb, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3000 objects over a 3-degree field (dozens of partitions) with one source each."""
    ids = np.arange(1, 3001, dtype=np.int64)
    ra, dec = random_positions(3000, 200.0, 20.0, 3.0, rng)
    objects = make_dia_objects(ids, ra, dec, rng)
    sources = make_dia_sources(ids + 10_000, ids, ra, dec, 1, 1, 60000.0, rng)
    db.store(_mjd(60000.0), objects, sources)
    return ids, ra, dec


@pytest.mark.postgres
@pytest.mark.citus
def test_a_detector_read_prunes_to_few_shards(citus_url):
    rng = np.random.default_rng(4)
    with Apdb.from_url(citus_url) as db:
        ids, ra, dec = _fill_field(db, rng)
        region = Cone(200.5, 20.5, 0.15)  # a detector-sized region
        got = db.get_dia_objects(region)
        truth = ids[region.contains(ra, dec)]
        assert len(truth) > 5
        assert sorted(got["diaObjectId"]) == sorted(truth)
        table = db.schema_metadata.tables["DiaObject"]
        latest = table.c.validityEndMjdTai.is_(None)
        with db.engine.connect() as conn:
            pruned, plan = explain_tasks(
                conn, sa.select(table.c.diaObjectId).where(latest, db._region_filter(table, region))
            )
            full, _ = explain_tasks(conn, sa.select(table.c.diaObjectId).where(latest))
            shards = conn.exec_driver_sql(
                "SELECT count(*) FROM citus_shards WHERE table_name = '\"DiaObject\"'::regclass"
            ).scalar()
        # Without the partition filter every shard is read; with it one or two.
        assert full == shards == 8
        assert 1 <= pruned <= 2, plan
        sources = db.get_dia_sources(_mjd(60001.0), region=region)
        assert sorted(sources["diaObjectId"]) == sorted(truth)


def _worker_rows(cluster: TemporaryCitus, dbname: str, table: str) -> list[int]:
    """Rows of ``table`` held by each worker (summed over its shards)."""
    out = []
    for worker in cluster.workers:
        with psycopg.connect(worker.dsn(dbname), autocommit=True) as conn:
            conn.execute("SET citus.override_table_visibility TO off")
            shards = [
                r[0]
                for r in conn.execute(
                    "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ %s",
                    (f"^{table}_[0-9]+$",),
                ).fetchall()
            ]
            out.append(
                sum(conn.execute(f'SELECT count(*) FROM "{s}"').fetchone()[0] for s in shards)
            )
    return out


@pytest.mark.postgres
@pytest.mark.citus
def test_a_worker_lost_before_commit_leaves_nothing(citus_cluster, monkeypatch):
    """A store that wrote to both workers loses one before COMMIT: nothing anywhere."""
    del citus_cluster  # Citus installed (or skip/fail like the others)
    import apdb.sql.apdb_sql as apdb_sql

    rng = np.random.default_rng(5)
    with TemporaryCitus(workers=2) as cluster:
        url = cluster.create_database("fault")
        config = ApdbConfig(db_url=url, backend="citus", citus=CitusConfig(shard_count=8))
        Apdb.create(config).close()
        ids = np.arange(1, 2001, dtype=np.int64)
        ra, dec = random_positions(2000, 10.0, -40.0, 3.0, rng)
        objects = make_dia_objects(ids, ra, dec, rng)
        sources = make_dia_sources(ids + 5000, ids, ra, dec, 9, 1, 60000.0, rng)
        original = apdb_sql.update_objects

        def then_lose_a_worker(*args, **kwargs):
            original(*args, **kwargs)  # the last write of the store, on both workers
            cluster.stop_worker(1)

        monkeypatch.setattr(apdb_sql, "update_objects", then_lose_a_worker)
        with Apdb.from_url(url) as db, pytest.raises(ApdbDatabaseError):
            db.store(_mjd(60000.0), objects, sources)
        monkeypatch.setattr(apdb_sql, "update_objects", original)
        cluster.start_worker(1)
        with Apdb.from_url(url) as db:
            counts = db.row_counts()
            assert counts["DiaObject"] == counts["DiaSource"] == counts["ApdbVisitDetector"] == 0
            assert _worker_rows(cluster, "fault", "DiaSource") == [0, 0]
            assert _worker_rows(cluster, "fault", "DiaObject") == [0, 0]
            with psycopg.connect(cluster.dsn("fault"), autocommit=True) as conn:
                conn.execute("SELECT recover_prepared_transactions()")
            prepared = cluster.worker_rows("fault", "SELECT count(*) FROM pg_prepared_xacts")
            assert [p[0][0] for p in prepared] == [0, 0]
            # The same store, once the worker is back, is stored whole.
            db.store(_mjd(60000.0), objects, sources)
            counts = db.row_counts()
            assert counts["DiaObject"] == counts["DiaSource"] == 2000
            per_worker = _worker_rows(cluster, "fault", "DiaSource")
            assert sum(per_worker) == 2000 and min(per_worker) > 0
            got = db.get_dia_objects(Cone(10.0, -40.0, 3.5))
            assert sorted(got["diaObjectId"]) == ids.tolist()


@pytest.mark.postgres
@pytest.mark.citus
def test_a_read_by_object_ids_prunes_to_their_partitions(citus_url, monkeypatch):
    import apdb.sql.apdb_sql as apdb_sql

    captured = []
    original = apdb_sql.read_frame

    def spy(conn, table, where, region):
        captured.append((table, where))
        return original(conn, table, where, region)

    monkeypatch.setattr(apdb_sql, "read_frame", spy)
    rng = np.random.default_rng(5)
    with Apdb.from_url(citus_url) as db:
        ids, ra, dec = _fill_field(db, rng)
        wanted = ids[Cone(200.5, 20.5, 0.1).contains(ra, dec)]
        assert len(wanted) > 3
        got = db.get_dia_sources(_mjd(60001.0), object_ids=wanted)
        # Known truth: each object's one source, diaSourceId = diaObjectId + 10000.
        assert sorted(got["diaSourceId"]) == sorted(wanted + 10_000)
        table, where = captured[-1]
        assert table.name == "DiaSource"
        with db.engine.connect() as conn:
            pruned, plan = explain_tasks(conn, sa.select(table.c.diaSourceId).where(where))
            unpruned = sa.select(table.c.diaSourceId).where(
                table.c.diaObjectId.in_(wanted.tolist())
            )
            full, _ = explain_tasks(conn, unpruned)
            # The shards of the partitions within 3.4 arcmin of the objects.
            mask = np.isin(ids, wanted)
            parts = np.unique(
                np.concatenate(
                    [
                        region_partitions(Cone(r, d, 1e-6), ORDER)
                        for r, d in zip(ra[mask], dec[mask], strict=True)
                    ]
                )
            )
            shards = {
                conn.execute(
                    sa.text("SELECT get_shard_id_for_distribution_column('\"DiaSource\"', :p)"),
                    {"p": int(p)},
                ).scalar()
                for p in parts
            }
        assert full == 8
        assert pruned == len(shards) < full, plan

        # A source moved (deduplication) to an object across a partition boundary
        # is still found by the new object's id.
        ra1, dec1, ra2 = _across_a_boundary()
        pair = np.array([90_001, 90_002], dtype=np.int64)
        db.store(
            _mjd(60000.5),
            make_dia_objects(pair, np.array([ra1, ra2]), np.array([dec1, dec1]), rng),
            make_dia_sources(
                pair + 10_000,
                pair,
                np.array([ra1, ra2]),
                np.array([dec1, dec1]),
                2,
                1,
                60000.5,
                rng,
            ),
        )
        db.reassign_dia_sources_to_dia_objects({90_001 + 10_000: 90_002})
        moved = db.get_dia_sources(_mjd(60001.0), object_ids=[90_002])
        assert sorted(moved["diaSourceId"]) == [100_001, 100_002]
