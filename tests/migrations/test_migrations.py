"""Migrations and `apdb.schema` agree, round trips keep data, non-head databases are refused."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from astropy.time import Time

from apdb import Apdb, migrate
from apdb.errors import ApdbNotFoundError, ApdbSchemaVersionError
from apdb.schema import make_metadata, metadata
from apdb.sky import Cone
from apdb.testing.catalogs import make_dia_objects, make_dia_sources, random_positions


def _diff(conn: sa.Connection) -> list:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    # A Citus APDB's keys start with its distribution column (revision 0004).
    citus = (
        conn.dialect.name == "postgresql"
        and conn.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'citus'").scalar()
    )
    return compare_metadata(ctx, make_metadata(citus=True) if citus else metadata)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request, tmp_path):
    """An empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/empty.sqlite3"
    return request.getfixturevalue("postgres_url")


def test_upgrade_from_empty_matches_metadata(empty_url):
    engine = sa.create_engine(empty_url)
    with engine.begin() as conn:
        migrate.upgrade(conn, "head")
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
        assert _diff(conn) == []
        views = set(sa.inspect(conn).get_view_names())
    assert {"DiaObjectLatest", "DiaLightCurve"} <= views
    engine.dispose()


def test_history_is_linear_and_documented():
    revs = migrate.history()
    assert [r[0] for r in revs][-1] == "0001"
    assert revs[0][0] == migrate.head_revision()
    assert all(msg.strip() for _, _, msg in revs)


def _store_some(url: str) -> tuple[np.ndarray, Time]:
    rng = np.random.default_rng(3)
    ids = np.arange(1, 31, dtype=np.int64)
    ra, dec = random_positions(30, 45.0, 10.0, 0.05, rng)
    t = Time(60000.0, format="mjd", scale="tai")
    with Apdb.from_url(url) as db:
        db.store(
            t,
            make_dia_objects(ids, ra, dec, rng),
            make_dia_sources(ids + 100, ids, ra, dec, 1, 1, t.mjd, rng),
        )
    return ids, t


def test_downgrade_upgrade_round_trip_keeps_data(apdb_url):
    ids, t = _store_some(apdb_url)
    engine = sa.create_engine(apdb_url)
    with engine.begin() as conn:
        migrate.downgrade(conn, "0001")
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == "0001"
        assert "DiaLightCurve" not in sa.inspect(conn).get_view_names()
    with engine.begin() as conn:
        migrate.upgrade(conn, "head")
    with engine.connect() as conn:
        n_curve = conn.execute(sa.text('SELECT count(*) FROM "DiaLightCurve"')).scalar()
        assert _diff(conn) == []
    engine.dispose()
    assert n_curve == 30
    with Apdb.from_url(apdb_url) as db:
        got = db.get_dia_objects(Cone(45.0, 10.0, 0.2))
        assert sorted(got["diaObjectId"]) == ids.tolist()
        assert (
            len(db.get_dia_sources(Time(60001.0, format="mjd", scale="tai"), object_ids=ids)) == 30
        )


def test_0003_round_trip_keeps_rows_and_withdrawals(apdb_url):
    """0003 (DiaObject_To_Object_Match, dedup index) down and up with data in place."""
    ids, t = _store_some(apdb_url)
    later = Time(t.mjd + 1.0, format="mjd", scale="tai")
    with Apdb.from_url(apdb_url) as db:
        assert db.withdraw_dia_sources(ids[:5] + 100, time_withdrawn=later) == 5
        assert db.set_validity_end(ids[-3:], later) == 3
        db.metadata.set("operator:note", "before 0003 round trip")
        counts = db.row_counts()
    engine = sa.create_engine(apdb_url)
    match = sa.text('INSERT INTO "DiaObject_To_Object_Match" VALUES (1, 77, 0.5, -1.0)')
    withdrawn = sa.text('SELECT count(*) FROM "DiaSource" WHERE "timeWithdrawnMjdTai" IS NOT NULL')
    closed = sa.text('SELECT count(*) FROM "DiaObject" WHERE "validityEndMjdTai" IS NOT NULL')
    try:
        with engine.begin() as conn:
            conn.execute(match)
        with engine.begin() as conn:
            migrate.downgrade(conn, "0002")
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            assert migrate.current_revision(conn) == "0002"
            assert not insp.has_table("DiaObject_To_Object_Match")
            names = {ix["name"] for ix in insp.get_indexes("DiaObject")}
            assert "IDX_DiaObject_last_validityStartMjdTai" not in names
            assert conn.execute(withdrawn).scalar() == 5
            assert conn.execute(closed).scalar() == 3
        with engine.begin() as conn:
            migrate.upgrade(conn, "head")
        with engine.connect() as conn:
            assert _diff(conn) == []
            assert conn.execute(withdrawn).scalar() == 5
            assert conn.execute(closed).scalar() == 3
    finally:
        engine.dispose()
    with Apdb.from_url(apdb_url) as db:
        after = db.row_counts()
        # Only the match table's rows went with the downgrade.
        assert after == {**counts, "DiaObject_To_Object_Match": 0}
        assert db.metadata.get("operator:note") == "before 0003 round trip"
        read_at = Time(t.mjd + 2.0, format="mjd", scale="tai")
        got = db.get_dia_sources(read_at, object_ids=ids)
        assert sorted(got["diaSourceId"]) == (ids[5:] + 100).tolist()
        assert sorted(db.get_dia_objects_for_dedup()["diaObjectId"]) == ids[:-3].tolist()


def test_non_head_revision_is_refused(apdb_url):
    engine = sa.create_engine(apdb_url)
    with engine.begin() as conn:
        migrate.downgrade(conn, "0001")
    engine.dispose()
    with pytest.raises(ApdbSchemaVersionError, match="'0001'") as info:
        Apdb.from_url(apdb_url)
    assert info.value.expected == migrate.head_revision()


def test_database_without_apdb_is_refused(empty_url):
    with pytest.raises(ApdbNotFoundError, match="holds no APDB"):
        Apdb.from_url(empty_url)
